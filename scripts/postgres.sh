#!/usr/bin/env bash
# A throwaway PostgreSQL server for the team registry's tests and for development.
#
#   scripts/postgres.sh start [DIR] [PORT]   installs Debian's postgresql when no server binaries
#                                            exist, runs initdb in DIR (default: a new temporary
#                                            directory) with trust auth for the user `toolkit`, starts
#                                            the server on 127.0.0.1:PORT (default 55432) and prints
#                                            two lines: the connection string and DIR
#   scripts/postgres.sh stop DIR             stops the server running from DIR and deletes DIR
#   scripts/postgres.sh url DIR              prints the connection string of the server in DIR
#
# initdb refuses to run as root, so as root the server runs as the `postgres` user (Debian's
# package creates it). It listens on loopback only; the socket lives in DIR, never in /run.
set -euo pipefail

say() { echo "postgres: $*" >&2; }

bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

install_server() {
    if [ "$(id -u)" != 0 ]; then
        say "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin and this is not root: install postgresql first"
        exit 6
    fi
    say "installing postgresql from Debian"
    apt-get update -qq
    # The package's own cluster would start on 5432 via systemd/pg_ctlcluster; we never use it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

# Run a server binary as the user that owns the data directory.
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    local dir=${1:-} port=${2:-55432} bin
    bin=$(bindir) || { install_server; bin=$(bindir) || { say "postgresql installed but no initdb found"; exit 6; }; }
    if [ -z "$dir" ]; then dir=$(mktemp -d /tmp/toolkit-pg.XXXXXX); fi
    mkdir -p "$dir"
    # The server user must reach its data directory: the parents of a mktemp dir are 1777/755.
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; chmod 700 "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -A trust -U toolkit --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
            || { say "initdb failed in $dir (see $dir/initdb.log)"; cat "$dir/initdb.log" >&2; exit 6; }
    fi
    # fsync stays on: the kill tests check what a committed transaction leaves behind.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null \
        || { say "the server in $dir did not start on 127.0.0.1:$port (see $dir/log)"; tail -5 "$dir/log" >&2; exit 6; }
    echo "$port" >"$dir/port"
    echo "postgresql://toolkit@127.0.0.1:$port/postgres"
    echo "$dir"
}

stop() {
    local dir=${1:?usage: postgres.sh stop DIR} bin
    bin=$(bindir) || { say "no PostgreSQL binaries"; exit 6; }
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    url) echo "postgresql://toolkit@127.0.0.1:$(cat "${2:?usage: postgres.sh url DIR}/port")/postgres" ;;
    *) echo "usage: scripts/postgres.sh start [DIR] [PORT] | stop DIR | url DIR" >&2; exit 2 ;;
esac
