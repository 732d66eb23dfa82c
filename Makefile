# toolkit: the README's two commands are `make train` (the main job) and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELHOUSE := wheelhouse

# Only PyPI and the lock decide what gets installed: ignore machine-wide pip config
# (extra indexes, find-links) so every machine resolves the same files.
# A make run inside another (CI's make test, a test running make train) prints no
# "Entering directory" lines: what the user reads is the toolkit's own story.
MAKEFLAGS += --no-print-directory
export PIP_CONFIG_FILE := /dev/null
unexport PIP_FIND_LINKS
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Reproducible timestamps in cards: the last commit's time unless the caller sets one.
export SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: help venv wheelhouse lock lint test test-unit test-fast bench clean

help:
	@echo "make train | test | lint | lock | image | base | check-env MODEL=... | bench | clean"

# Two locks, layered as pip-tools does it: requirements.lock is the image's runtime (and only that);
# requirements-dev.lock, constrained by it, adds what only the host runs (tests, linters, pip-tools).
LOCKS := requirements.lock requirements-dev.lock

# The locked wheels of both, downloaded once on the host: the venv and the image install from here
# (the image takes only the runtime lock's).
wheelhouse: $(WHEELHOUSE)/.stamp
$(WHEELHOUSE)/.stamp: $(LOCKS)
	$(PY) -m pip download --quiet --only-binary=:all: --no-deps --require-hashes \
	    $(foreach lock,$(LOCKS),-r $(lock)) -d $(WHEELHOUSE)
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: $(LOCKS) pyproject.toml $(WHEELHOUSE)/.stamp
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-index --find-links $(WHEELHOUSE) --require-hashes $(foreach lock,$(LOCKS),-r $(lock))
	# compat mode: a plain .pth entry instead of an import-hook finder, which would cost
	# every `toolkit` start-up (the gate's included) ~15 ms.
	$(BIN)/pip install --quiet --no-index --no-deps --no-build-isolation -e . --config-settings editable_mode=compat
	$(MAKE) --no-print-directory bytecode
	touch $@

# An editable install is never byte-compiled, and with PYTHONDONTWRITEBYTECODE set (as on these
# machines) nothing ever writes the .pyc: every `toolkit` run would compile the package again
# (benchmarks/bench_gate.py). Compiled once here, with the variable unset for this step only.
.PHONY: bytecode
bytecode:
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m compileall -q toolkit

# --- Docker (the Dockerfile and base recipe ship in the package: toolkit/docker/) ---------------
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

# The packaged recipe (what `toolkit base` runs), with its state in this repository's .cache/.
base: engine
	@bash toolkit/docker/base.sh >/dev/null

# V=1 shows every build step (a failed build always shows its log's tail).
V ?=
image: $(VENV)/.stamp $(WHEELHOUSE)/.stamp engine $(if $(BASE_IMAGE),,base)
	@$(TOOLKIT) image build --tag $(IMAGE) $(if $(BASE_IMAGE),--base-image '$(BASE_IMAGE)') \
	    $(if $(V),--verbose) $(if $(CI),--quiet)

# The main job: wheelhouse -> base -> image -> train inside the container -> register into $(REGISTRY).
train: image
	@$(TOOLKIT) image train --image $(IMAGE) $(if $(TRAIN_SCRIPT),--script '$(TRAIN_SCRIPT)',--config $(TRAIN_CONFIG)) \
	    --registry $(REGISTRY) $(if $(SIGNING_KEY),--sign-key '$(SIGNING_KEY)') $(TRAIN_ARGS)

# The gate, inside the image: exit 0 match, 1 mismatch, 3 integrity failure. It checks the image
# that exists (the one the model was trained in), and builds one only when there is none, saying so.
check-env: $(VENV)/.stamp
	@test -n "$(MODEL)" || { echo "usage: make check-env MODEL=models/NAME/VERSION/NAME-VERSION.joblib" >&2; exit 2; }
	@docker image inspect $(IMAGE) >/dev/null 2>&1 || { \
	    echo "no image $(IMAGE) here: building it first (make image)" >&2; $(MAKE) --no-print-directory image; }
	@$(TOOLKIT) image check --image $(IMAGE) '$(MODEL)'

PIP_COMPILE = $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links
# The runtime first: the dev lock is constrained by it (`-c requirements.lock` in requirements-dev.in).
lock: $(VENV)/.stamp
	$(PIP_COMPILE) -o requirements.lock requirements.in
	$(PIP_COMPILE) -o requirements-dev.lock requirements-dev.in

# Types and lint, from the dev lock; any finding fails `make test`.
lint: $(VENV)/.stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict toolkit

# The whole suite, Docker end-to-end included: starts an engine when none answers. Two runs:
# what shares nothing runs on both cores (pytest-xdist); what shares the one Docker engine or
# kills processes runs alone. The union is every test, and no test runs twice
# (tests/test_make_parts.py holds both, from this file).
SERIAL := docker or slow or process
# PostgreSQL and the loopback OCI registry: each xdist worker starts its own, on free ports
# and in fresh folders, so these run in parallel; left out of test-unit.
SERVICES := team or oci
# Parallel-safe but seconds each (a real uvicorn per test, a follow under load): in make test's
# xdist run, left out of test-unit.
HEAVY := serve or install
test: $(VENV)/.stamp lint engine
	$(BIN)/python -m pytest -p xdist -n 2 -m "not ($(SERIAL))"
	$(BIN)/python -m pytest -m "$(SERIAL)"

# The loop while developing: no engine, no PostgreSQL, no registry, no kill loops, no servers
# (target < 60 s on 2 cores).
test-unit: $(VENV)/.stamp
	$(BIN)/python -m pytest -p xdist -n 2 -m "not ($(SERIAL) or $(SERVICES) or $(HEAVY))"

# Everything but the Docker and cross-version end-to-end tests (the loop before test-unit).
test-fast: $(VENV)/.stamp
	$(BIN)/python -m pytest -m "not docker and not slow"

# Every benchmark, with what they need built or started first (the engine, the pinned base, the
# wheelhouse), as `make test` does; a failing one does not stop the others, and the end says which.
bench: $(VENV)/.stamp $(WHEELHOUSE)/.stamp engine base
	@failed=""; for b in benchmarks/bench_*.py; do \
	    echo "== $$b"; $(BIN)/python $$b || failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench: FAILED:$$failed" >&2; exit 1; fi

clean:
	rm -rf $(VENV) $(WHEELHOUSE) .pytest_cache build *.egg-info
