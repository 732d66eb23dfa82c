#!/usr/bin/env bash
# The offline pinned base image (`toolkit base`, `make base`), shipped inside the toolkit package.
#
# Debian bookworm minbase + python3, python3-venv, ca-certificates, built with debootstrap from
# Debian's packages (nothing is pulled from any image registry), `docker import`ed, pushed to a
# docker-registry on loopback (an imported image has no repository digest until it is pushed),
# and the pinned reference `name@sha256:<digest>` written to $BASE_FILE and printed on stdout.
#
# Runs from any folder: $BASE_FILE (default .cache/base-image) and $TOOLKIT_STATE (default
# ./.cache: the loopback registry's storage, debootstrap's package cache) say where it writes.
#
# Idempotent and fast: when $BASE_FILE names an image the engine has, nothing happens; when the
# engine lost it but the loopback registry's storage still has it, it is pulled back from there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

BASE_FILE=${BASE_FILE:-.cache/base-image}
REGISTRY_ADDR=${BASE_REGISTRY:-127.0.0.1:5000}
REPO=$REGISTRY_ADDR/python-base
TAG=bookworm
SUITE=bookworm
# The Debian mirror: $DEBIAN_MIRROR, else the one this machine's apt sources name for $SUITE (a
# company mirror or a snapshot works as apt does); resolved only when debootstrap needs it.
MIRROR=${DEBIAN_MIRROR:-}
cache=${TOOLKIT_STATE:-$PWD/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
state=$cache/registry

say() { echo "base: $*" >&2; }
die() { say "$*"; exit 5; }

docker info >/dev/null 2>&1 || die "no Docker engine answers (start one: dockerd, or scripts/engine.sh start in the toolkit repository)"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [ -z "${BASE_REBUILD:-}" ] && [ -s "$BASE_FILE" ] && have_image "$(cat "$BASE_FILE")"; then
    say "up to date: $(cat "$BASE_FILE")"
    cat "$BASE_FILE"
    exit 0
fi

repo_digest() {  # the pushed digest of $REPO:$TAG in this engine, if it has one
    docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$REPO:$TAG" 2>/dev/null \
        | grep "^$REPO@sha256:" | head -n 1 || true
}

write_ref() {  # write the pinned reference atomically, then print it
    mkdir -p "$(dirname "$BASE_FILE")"
    printf '%s\n' "$1" >"$BASE_FILE.tmp"
    mv "$BASE_FILE.tmp" "$BASE_FILE"
    say "pinned: $1"
    printf '%s\n' "$1"
}

# A fresh clone on a machine that built the base before (CI): the engine still has it, pinned.
# BASE_REBUILD=1 forces a new base (e.g. for Debian security updates).
if [ -z "${BASE_REBUILD:-}" ] && [ ! -s "$BASE_FILE" ] && [ -n "$(repo_digest)" ]; then
    say "reusing the engine's $REPO:$TAG"
    write_ref "$(repo_digest)"
    exit 0
fi

apt_updated=""
need() {  # need COMMAND PACKAGE: install the Debian package when the command is missing
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$(id -u)" = 0 ] || die "$1 is missing: install the Debian package $2"
    if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null 2>&1 || true; apt_updated=1; fi
    say "installing $2"
    # apt's own chatter (debconf, needrestart) goes to a log, shown only when the install fails.
    mkdir -p "$cache"
    DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a \
        apt-get install -y -qq "$2" >"$cache/apt.log" 2>&1 \
        || { tail -n 20 "$cache/apt.log" >&2; die "apt-get install $2 failed; see $cache/apt.log"; }
}

# --- the loopback registry: started here with a config of its own, stopped on exit ------------
registry_pid=""
registry_answers() {
    python3 - "$REGISTRY_ADDR" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}/v2/", timeout=2) as r:
    sys.exit(0 if r.headers.get("Docker-Distribution-Api-Version") else 1)
EOF
}
start_registry() {
    if registry_answers; then return 0; fi
    need docker-registry docker-registry
    mkdir -p "$state/data"
    cat >"$state/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $state/data}, delete: {enabled: true}}
http: {addr: $REGISTRY_ADDR}
EOF
    docker-registry serve "$state/config.yml" >"$state/registry.log" 2>&1 &
    registry_pid=$!
    for _ in $(seq 1 100); do
        registry_answers && return 0
        kill -0 "$registry_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 5 "$state/registry.log" >&2 || true
    die "the loopback registry on $REGISTRY_ADDR did not start; see $state/registry.log"
}
stop_registry() {
    if [ -n "$registry_pid" ]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    if [ -n "${rootfs:-}" ]; then rm -rf "$rootfs"; fi
}
trap stop_registry EXIT

start_registry

# The engine lost the image but the registry still has it: pulling back beats rebuilding.
if [ -s "$BASE_FILE" ] && docker pull -q "$(cat "$BASE_FILE")" >/dev/null 2>&1; then
    say "restored from the loopback registry"
    write_ref "$(cat "$BASE_FILE")"
    exit 0
fi

# --- build the rootfs from Debian packages ----------------------------------------------------
need debootstrap debootstrap
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
if [ -z "$MIRROR" ]; then
    MIRROR=$(python3 "$here/debian_mirror.py" "$SUITE") \
        || die "set DEBIAN_MIRROR to a Debian mirror serving $SUITE (none found in /etc/apt)"
fi
mkdir -p "$cache/debootstrap"
rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
say "debootstrap $SUITE from $MIRROR (minbase + python3, python3-venv, ca-certificates)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --cache-dir="$cache/debootstrap" "$SUITE" "$rootfs" "$MIRROR" >"$state.debootstrap.log" 2>&1 \
    || { tail -n 20 "$state.debootstrap.log" >&2; die "debootstrap failed; see $state.debootstrap.log"; }
# Package lists and downloaded .debs only make the image bigger.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log

say "docker import"
tar --numeric-owner -C "$rootfs" -c . \
    | docker import --change 'CMD ["/bin/bash"]' - "$REPO:$TAG" >/dev/null
rm -rf "$rootfs"
rootfs=""

say "push to $REGISTRY_ADDR"
docker push -q "$REPO:$TAG" >/dev/null
digest=$(repo_digest)
[ -n "$digest" ] || die "the pushed image has no repository digest for $REPO"
write_ref "$digest"
