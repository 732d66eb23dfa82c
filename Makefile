# toolkit: the README's two commands are `make train` (the main job) and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELHOUSE := wheelhouse

# Only PyPI and the lock decide what gets installed: ignore machine-wide pip config
# (extra indexes, find-links) so every machine resolves the same files.
export PIP_CONFIG_FILE := /dev/null
unexport PIP_FIND_LINKS
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Reproducible timestamps in cards: the last commit's time unless the caller sets one.
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: help venv wheelhouse lock test test-fast bench clean

help:
	@echo "make train | test | lock | image | base | check-env MODEL=... | bench | clean"

# The locked wheels, downloaded once on the host: the venv and the image install from here.
wheelhouse: $(WHEELHOUSE)/.stamp
$(WHEELHOUSE)/.stamp: requirements.lock
	$(PY) -m pip download --quiet --only-binary=:all: --no-deps --require-hashes -r requirements.lock -d $(WHEELHOUSE)
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.lock pyproject.toml $(WHEELHOUSE)/.stamp
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-index --find-links $(WHEELHOUSE) --require-hashes -r requirements.lock
	# compat mode: a plain .pth entry instead of an import-hook finder, which would cost
	# every `toolkit` start-up (the gate's included) ~15 ms.
	$(BIN)/pip install --quiet --no-index --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	touch $@

# --- Docker (see Dockerfile, scripts/engine.sh, scripts/base.sh) -------------------------------
# BASE_IMAGE=name@sha256:<digest> pins a base of your own (e.g. a public python:3.11-slim-bookworm
# digest); without it `make base` builds one offline from Debian packages and pins it.
BASE_IMAGE ?=
IMAGE ?= toolkit:latest
REGISTRY ?= models
TRAIN_CONFIG ?= configs/train.toml
TRAIN_ARGS ?=
# Your own training script instead of the built-in recipe (e.g. examples/custom/train.py): it runs
# in the image as `toolkit image run` runs it, and every artifact it saves is registered.
TRAIN_SCRIPT ?=
# A private key from `toolkit keygen`: the artifact is signed on this host after training
# (the key never enters the container). TOOLKIT_SIGNING_KEY in the environment works too.
SIGNING_KEY ?=
MODEL ?=
TOOLKIT := $(BIN)/toolkit

.PHONY: engine base image train check-env

# Starts (installing if needed) a Docker engine only when none answers; a no-op otherwise.
engine:
	@docker info >/dev/null 2>&1 || scripts/engine.sh start

base: engine
	@scripts/base.sh >/dev/null

image: $(VENV)/.stamp $(WHEELHOUSE)/.stamp engine $(if $(BASE_IMAGE),,base)
	$(TOOLKIT) image build --tag $(IMAGE) $(if $(BASE_IMAGE),--base-image '$(BASE_IMAGE)') $(if $(CI),--quiet)

# The main job: wheelhouse -> base -> image -> train inside the container -> register into $(REGISTRY).
train: image
	$(TOOLKIT) image train --image $(IMAGE) $(if $(TRAIN_SCRIPT),--script '$(TRAIN_SCRIPT)',--config $(TRAIN_CONFIG)) \
	    --registry $(REGISTRY) $(if $(SIGNING_KEY),--sign-key '$(SIGNING_KEY)') $(TRAIN_ARGS)

# The gate, inside the image: exit 0 match, 1 mismatch, 3 integrity failure.
check-env: $(if $(MODEL),image)
	@test -n "$(MODEL)" || { echo "usage: make check-env MODEL=models/NAME/VERSION/NAME-VERSION.joblib" >&2; exit 2; }
	$(TOOLKIT) image check --image $(IMAGE) '$(MODEL)'

lock: $(VENV)/.stamp
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links -o requirements.lock requirements.in

# The whole suite, Docker end-to-end included: starts an engine when none answers.
test: $(VENV)/.stamp engine
	$(BIN)/python -m pytest

# Everything but the Docker and cross-version end-to-end tests: a quick loop while developing.
test-fast: $(VENV)/.stamp
	$(BIN)/python -m pytest -m "not docker and not slow"

bench: $(VENV)/.stamp
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(WHEELHOUSE) .pytest_cache build *.egg-info
