#!/usr/bin/env bash
# `make base` from this repository: the recipe ships inside the package (toolkit/docker/base.sh,
# what `toolkit base` runs); run here, its state and the pin stay in this repository's .cache/.
cd "$(dirname "$0")/.." && exec bash toolkit/docker/base.sh "$@"
