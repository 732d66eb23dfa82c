#!/usr/bin/env bash
# Start or stop a Docker engine for this project.
#
#   scripts/engine.sh start   no-op when an engine already answers; otherwise installs Debian's
#                             docker.io when dockerd is missing, starts dockerd in the background
#                             and waits until `docker info` answers
#   scripts/engine.sh stop    stops the dockerd that `start` started, and nothing else
#
# State (pid file, log) lives in .cache/engine/ so that `stop` knows exactly what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

state=.cache/engine
pidfile=$state/dockerd.pid
log=$state/dockerd.log
timeout=${ENGINE_TIMEOUT:-60}

say() { echo "engine: $*" >&2; }

answers() { docker info >/dev/null 2>&1; }

install_engine() {
    if [ "$(id -u)" != 0 ]; then
        say "dockerd is not installed and this is not root: install docker.io (or any Docker engine) first"
        exit 5
    fi
    say "installing docker.io from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
}

start() {
    if answers; then
        say "an engine already answers; nothing started"
        return 0
    fi
    command -v dockerd >/dev/null 2>&1 || install_engine
    mkdir -p "$state"
    # setsid: the engine must outlive this script and not get the caller's signals (Ctrl-C in make).
    setsid dockerd >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local waited=0
    until answers; do
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            say "dockerd exited during start-up; last lines of $log:"
            tail -n 20 "$log" >&2
            rm -f "$pidfile"
            exit 5
        fi
        if [ "$waited" -ge "$((timeout * 10))" ]; then
            say "dockerd did not answer within ${timeout}s; see $log"
            exit 5
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    say "dockerd started (pid $(cat "$pidfile"), log $log)"
}

stop() {
    if [ ! -f "$pidfile" ]; then
        say "no engine started by this script; nothing stopped"
        return 0
    fi
    local pid
    pid=$(cat "$pidfile")
    # Only the process we started, and only if it still is a dockerd (pids get reused).
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        kill -TERM "$pid"
        for _ in $(seq 1 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "dockerd (pid $pid) did not stop within 20s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "dockerd (pid $pid) stopped"
    else
        say "dockerd (pid $pid) was no longer running"
    fi
    rm -f "$pidfile"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
