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

# ---- the locked virtualenv (the wheelhouse never reaches the final image) ------------------
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
# requirements.lock is the image's runtime only (tests, linters and lock tools are in the host's
# requirements-dev.lock). What never runs here is removed in this stage, which is thrown away, so
# no layer of the image carries it (benchmarks/bench_image_size.py measures what is left):
#  - the packages' own test suites (`tests` folders) and type stubs (*.pyi);
#  - pyarrow's C++ headers and Cython sources (for compiling against it), and its Flight RPC and
#    S3 libraries: network features (containers run with no network) that load only on
#    `import pyarrow.flight` or an s3:// path, never for a local Parquet file;
#  - bytecode: installed with --no-compile, then written only for what training, prediction and
#    the gate import (the import line below; a module left out only compiles in memory when used),
#    and all of setuptools, which builds the toolkit on every code change (and never reaches the image).
#  - a wheel cannot hold symlinks, so pyarrow ships each libarrow_python*.so three times under
#    its three names: the copies become symlinks to the file named by its SONAME (lib*.so.N).
ARG DEDUPE_SONAMES="import hashlib, os, pathlib, re, sys; \
groups = {}; \
[groups.setdefault(hashlib.sha256(p.read_bytes()).hexdigest(), []).append(p) \
 for p in sorted(pathlib.Path(sys.argv[1]).glob('lib*.so*')) if p.is_file() and not p.is_symlink()]; \
[(q.unlink(), q.symlink_to(keep[0].name)) for paths in groups.values() \
 for keep in [[p for p in paths if re.search(r'[.]so[.][0-9]+$', p.name)]] if len(paths) > 1 and keep \
 for q in paths if q != keep[0]]"
RUN PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/python -m pip install --quiet \
        --no-compile --no-index --find-links /tmp/build/wheelhouse --require-hashes -r /tmp/build/requirements.lock \
    && cd /opt/venv/lib/python3*/site-packages \
    && find . -type d -name tests -prune -exec rm -rf {} + \
    && find . -name '*.pyi' -delete \
    && rm -rf pyarrow/include pyarrow/includes pyarrow/src pyarrow/*.pyx pyarrow/*.pxd pyarrow/*.pxi \
        pyarrow/libarrow_flight.so* pyarrow/libarrow_python_flight.so* pyarrow/_flight.cpython-* \
        pyarrow/libarrow_s3.so* pyarrow/_s3fs.cpython-* \
    && /opt/venv/bin/python -c "$DEDUPE_SONAMES" pyarrow \
    && /opt/venv/bin/python -c 'import numpy, scipy.stats, pandas, pyarrow.parquet, pyarrow.dataset, joblib, \
        threadpoolctl, typer, rich.console, rich.table, packaging.requirements, cryptography.hazmat.primitives.asymmetric.ec, \
        cryptography.hazmat.primitives.serialization, psycopg, sklearn.base, sklearn.compose, sklearn.datasets, \
        sklearn.ensemble, sklearn.impute, sklearn.linear_model, sklearn.metrics, sklearn.model_selection, \
        sklearn.pipeline, sklearn.preprocessing, sklearn.utils.validation' \
    && /opt/venv/bin/python -m compileall -q setuptools pkg_resources _distutils_hack

# ---- the toolkit, built and installed into a staging root (pip and setuptools stay behind) -----
FROM deps AS toolkit
COPY pyproject.toml README.md* /opt/toolkit-src/
COPY toolkit/ /opt/toolkit-src/toolkit/
RUN cd /opt/toolkit-src \
    && PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/python -m pip install --quiet \
        --no-deps --no-index --no-build-isolation --no-warn-script-location --root /staging . \
    && PYTHONPATH="$(echo /staging/opt/venv/lib/python3*/site-packages)" /opt/venv/bin/python -m toolkit --help >/dev/null

# ---- the runtime venv: without the installer and the build backend, which only the build uses ----
FROM deps AS venv
RUN /opt/venv/bin/python -m pip uninstall --quiet --yes pip setuptools

# ---- the runtime image ------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG BASE_DIGEST
ARG LOCK_SHA256
# A fixed uid/gid, so that files written into mounts are predictable. Written into the passwd
# files directly: a minbase root filesystem has no useradd.
RUN grep -q '^toolkit:' /etc/group || echo 'toolkit:x:10001:' >>/etc/group; \
    grep -q '^toolkit:' /etc/passwd || echo 'toolkit:x:10001:10001:toolkit:/home/toolkit:/bin/sh' >>/etc/passwd; \
    mkdir -p /home/toolkit /out /work && chown 10001:10001 /home/toolkit /out /work
COPY --from=venv /opt/venv /opt/venv
# The lock itself, so a card records its full text (card schema 2: rebuild from the card alone).
COPY requirements.lock /opt/toolkit/requirements.lock
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/toolkit \
    LANG=C.UTF-8 \
    PYTHONHASHSEED=0 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOOLKIT_IN_CONTAINER=1 \
    TOOLKIT_BASE_IMAGE=${BASE_IMAGE} \
    TOOLKIT_LOCK_SHA256=${LOCK_SHA256} \
    TOOLKIT_LOCK_FILE=/opt/toolkit/requirements.lock

# ---- the toolkit itself: last, so a code change rebuilds only from here ----------------------
# (checked with `toolkit --help` in its stage: one container step less on every code change)
COPY --from=toolkit /staging/ /

ARG REVISION=unknown
LABEL org.opencontainers.image.title="toolkit" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}" \
      org.opencontainers.image.revision="${REVISION}"
USER toolkit
WORKDIR /work
ENTRYPOINT ["toolkit"]
CMD ["--help"]
