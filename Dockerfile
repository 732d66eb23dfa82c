# The pinned training and gating image. Build it with `make image` (or `toolkit image build`),
# which fills in every build argument; by hand, from the repository root, with no network:
#
#   ref=$(cat .cache/base-image)     # name@sha256:<64 hex>, from `make base` or `toolkit image pin`
#   docker build --network none -t toolkit:latest \
#       --build-arg BASE_IMAGE="$ref" --build-arg BASE_DIGEST="${ref#*@}" \
#       --build-arg LOCK_SHA256="$(sha256sum requirements.lock | cut -d' ' -f1)" \
#       --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Needs ./wheelhouse (`make wheelhouse`): every locked wheel, downloaded on the host. Layers go
# from slow-and-stable to fast-and-changing: base check, venv + locked wheels, then the toolkit's
# own code, so a code change rebuilds in seconds. Works with the classic builder (dockerd 20.10).

# Must be pinned by digest: name@sha256:<64 hex>. Checked first thing below.
ARG BASE_IMAGE

# ---- stage 1: the locked virtualenv (the wheelhouse never reaches the final image) ----------
FROM ${BASE_IMAGE} AS deps
ARG BASE_IMAGE
ARG BASE_DIGEST
# An unpinned base would make every image a different one: refuse before doing any work.
RUN if ! printf '%s\n' "$BASE_IMAGE" | grep -Eq '^[^@[:space:]]+@sha256:[0-9a-f]{64}$'; then \
        echo "error: BASE_IMAGE must be pinned by digest as name@sha256:<64 hex>, got '$BASE_IMAGE'" >&2; exit 1; \
    fi; \
    if [ "$BASE_DIGEST" != "${BASE_IMAGE##*@}" ]; then \
        echo "error: BASE_DIGEST must be the digest of BASE_IMAGE (${BASE_IMAGE##*@}), got '$BASE_DIGEST'" >&2; exit 1; \
    fi
RUN python3 -m venv /opt/venv
COPY requirements.lock /tmp/build/requirements.lock
ARG LOCK_SHA256
# The lock hash baked into the image must be the hash of the lock it was built from.
RUN echo "${LOCK_SHA256:-unset}  /tmp/build/requirements.lock" | sha256sum --quiet -c - 2>/dev/null \
    || { echo "error: LOCK_SHA256 must be the sha256 of requirements.lock ($(sha256sum < /tmp/build/requirements.lock | cut -d' ' -f1)), got '${LOCK_SHA256}'" >&2; exit 1; }
COPY wheelhouse/ /tmp/build/wheelhouse/
RUN PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/python -m pip install --quiet \
        --no-index --find-links /tmp/build/wheelhouse --require-hashes -r /tmp/build/requirements.lock

# ---- stage 2: the runtime -------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG BASE_DIGEST
ARG LOCK_SHA256
# A fixed uid/gid, so that files written into mounts are predictable. Written into the passwd
# files directly: a minbase root filesystem has no useradd.
RUN grep -q '^toolkit:' /etc/group || echo 'toolkit:x:10001:' >>/etc/group; \
    grep -q '^toolkit:' /etc/passwd || echo 'toolkit:x:10001:10001:toolkit:/home/toolkit:/bin/sh' >>/etc/passwd; \
    mkdir -p /home/toolkit /out /work && chown 10001:10001 /home/toolkit /out /work
COPY --from=deps /opt/venv /opt/venv
# The lock itself, so a card records its full text (card schema 2: rebuild from the card alone).
COPY requirements.lock /opt/toolkit/requirements.lock
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/toolkit \
    LANG=C.UTF-8 \
    PYTHONHASHSEED=0 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_CONFIG_FILE=/dev/null \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    TOOLKIT_IN_CONTAINER=1 \
    TOOLKIT_BASE_IMAGE=${BASE_IMAGE} \
    TOOLKIT_LOCK_SHA256=${LOCK_SHA256} \
    TOOLKIT_LOCK_FILE=/opt/toolkit/requirements.lock

# ---- the toolkit itself: last, so a code change rebuilds only from here ----------------------
COPY pyproject.toml README.md* /opt/toolkit-src/
COPY toolkit/ /opt/toolkit-src/toolkit/
RUN cd /opt/toolkit-src \
    && /opt/venv/bin/python -m pip install --quiet --no-deps --no-index --no-build-isolation . \
    && rm -rf /opt/toolkit-src/build /opt/toolkit-src/*.egg-info \
    && toolkit --help >/dev/null

ARG REVISION=unknown
LABEL org.opencontainers.image.title="toolkit" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}" \
      org.opencontainers.image.revision="${REVISION}"
USER toolkit
WORKDIR /work
ENTRYPOINT ["toolkit"]
CMD ["--help"]
