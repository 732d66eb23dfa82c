#!/usr/bin/env bash
# The Debian tools the OCI tests and benchmark use, installed only when missing:
#   docker-registry (the CNCF distribution registry the tests run on loopback),
#   skopeo (a third-party client that reads what `toolkit push` wrote),
#   apache2-utils (htpasswd, for the registry with authentication).
# `apt-get update` runs at most once, and only when something is missing.
set -euo pipefail

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "oci-deps: missing ${missing[*]}: install these Debian packages (needs root)" >&2
    exit 5
fi
echo "oci-deps: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
