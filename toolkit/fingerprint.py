"""The environment fingerprint: what a runtime is, as a model card records it.

Capturing it is cheap (metadata only): it never imports scikit-learn, so the
``check-env`` gate can run on every deploy. BLAS details need numpy loaded and are
captured only when asked for (at save time, and by ``toolkit fingerprint``).
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit import _json, env

if TYPE_CHECKING:
    from importlib import metadata

__all__ = [
    "BASE_IMAGE_RE",
    "IMAGE_ID_RE",
    "SYSTEM_PACKAGES_FILE",
    "THREAD_VARIABLES",
    "Fingerprint",
    "ImageInfo",
    "SystemPackage",
    "Threads",
    "capture",
    "capture_threads",
    "installed_distributions",
    "metadata_state",
    "read_system_packages",
]

# `name@sha256:<64 hex>`; the name may carry a registry host with a port.
BASE_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}\Z")

_SEPARATORS = re.compile(r"[-_.]+")

# What `pip freeze` leaves out on Python < 3.12: installer tooling, not runtime.
_FREEZE_EXCLUDED = frozenset({"pip", "setuptools", "wheel", "distribute"})

# Set by the Dockerfile; a runtime outside the image has none of them.
ENV_BASE_IMAGE = env.BASE_IMAGE
ENV_LOCK_SHA256 = env.LOCK_SHA256
# The requirements.lock the runtime was installed from (the image keeps a copy there), so
# a card can carry its full text and the runtime can be rebuilt from the card alone.
ENV_LOCK_FILE = env.LOCK_FILE
# A lock is a few hundred KB at most; the card has a 4 MiB limit.
_MAX_LOCK_BYTES = 1024 * 1024
ENV_IN_CONTAINER = env.IN_CONTAINER
# Set by the host when it starts a container (image train/run/retrain): the image the
# model is trained in. Informational (card schema 3): no policy compares it.
ENV_IMAGE = env.IMAGE
ENV_IMAGE_ID = env.IMAGE_ID
IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
# The Debian packages a project added on top of the base, written by the image build.
SYSTEM_PACKAGES_FILE = "/opt/toolkit/system-packages.json"
_MAX_SYSTEM_PACKAGES_BYTES = 1024 * 1024
# The variables that set BLAS and OpenMP thread pools, recorded as the runtime has them.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageInfo:
    """The image a model was trained in, as the host that started the container named it."""

    ref: str | None  # the tag or name as given, or None
    id: str  # "sha256:<64 hex>"

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "id": self.id}


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemPackage:
    """One Debian package a project added on top of the base image."""

    name: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True, kw_only=True, slots=True)
class Threads:
    """The runtime's thread settings, and the limit reference outputs are computed under.

    ``variables`` are the thread environment variables as set (None: unset); ``blas`` and
    ``openmp`` the largest pool threadpoolctl saw (None: no such library loaded); ``cpus``
    the CPUs the process may use. Recorded, never compared: the reference outputs are
    computed and re-checked under ``limit`` threads whatever the machine has.
    """

    variables: Mapping[str, str | None]
    blas: int | None
    openmp: int | None
    cpus: int | None
    limit: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "variables": dict(self.variables),
            "blas": self.blas,
            "openmp": self.openmp,
            "cpus": self.cpus,
            "limit": self.limit,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Fingerprint:
    """A runtime: interpreter, platform, every installed distribution, and its image."""

    python_implementation: str  # "CPython"
    python_version: str  # "3.11.7"
    os: str  # "Linux"
    os_release: str  # kernel release; recorded, never compared (containers share the host's kernel)
    machine: str  # "x86_64"
    libc: str  # "glibc 2.36"
    packages: Mapping[str, str]  # canonical distribution name -> version, sorted by name
    blas: tuple[Mapping[str, Any], ...] | None = None  # threadpoolctl's view; None when not captured
    in_container: bool = False
    base_image: str | None = None  # "name@sha256:<digest>" of the image's base, or None
    lock_sha256: str | None = None  # sha256 of the requirements.lock the image was built from
    lock: str | None = None  # that lock's full text (card schema 2); captured only when asked for
    # Card schema 3 (None: not recorded; an older card, or not captured):
    image: ImageInfo | None = None  # informational, never compared
    system_packages: tuple[SystemPackage, ...] | None = None  # compared under strict
    threads: Threads | None = None  # informational, never compared

    @property
    def python_minor(self) -> str:
        return ".".join(self.python_version.split(".")[:2])

    def to_dict(self) -> dict[str, Any]:
        return {
            "python_implementation": self.python_implementation,
            "python_version": self.python_version,
            "os": self.os,
            "os_release": self.os_release,
            "machine": self.machine,
            "libc": self.libc,
            "packages": dict(self.packages),
            "blas": None if self.blas is None else [dict(b) for b in self.blas],
            "in_container": self.in_container,
            "base_image": self.base_image,
            "lock_sha256": self.lock_sha256,
            "lock": self.lock,
            "image": None if self.image is None else self.image.to_dict(),
            "system_packages": None if self.system_packages is None else [p.to_dict() for p in self.system_packages],
            "threads": None if self.threads is None else self.threads.to_dict(),
        }


def capture(*, blas: bool = True, lock: bool = False, thread_limit: int | None = None) -> Fingerprint:
    """Fingerprint this runtime; ``blas=False`` skips importing numpy (fast path for the gate);
    ``lock=True`` also reads the lock file's text and the image the host named (what a card
    records); ``thread_limit`` (with ``blas``) records the thread settings and that limit.

    Raises: IntegrityError when ``lock`` and the lock file is unreadable or is not the
    lock whose sha256 the runtime declares, or when the system packages file or the image
    variables are malformed.
    """
    lock_sha256 = os.environ.get(ENV_LOCK_SHA256) or None
    lock_text = None
    if lock:
        lock_sha256, lock_text = _lock(lock_sha256)
    pools = _thread_pools() if blas else None  # one scan of the loaded libraries for both records
    return Fingerprint(
        python_implementation=platform.python_implementation(),
        python_version=platform.python_version(),
        os=platform.system(),
        os_release=platform.release(),
        machine=platform.machine(),
        libc=_libc(),
        packages=installed_distributions(),
        blas=_blas_info(pools) if pools is not None else None,
        in_container=_in_container(),
        base_image=os.environ.get(ENV_BASE_IMAGE) or None,
        lock_sha256=lock_sha256,
        lock=lock_text,
        image=_image() if lock else None,
        system_packages=read_system_packages(),
        threads=capture_threads(thread_limit, pools) if pools is not None and thread_limit is not None else None,
    )


def _image() -> ImageInfo | None:
    from toolkit.errors import IntegrityError

    image_id = os.environ.get(ENV_IMAGE_ID) or None
    ref = os.environ.get(ENV_IMAGE) or None
    if image_id is None:
        return None  # not started by the toolkit's host side: nothing to record
    if not IMAGE_ID_RE.match(image_id):
        raise IntegrityError(f"{ENV_IMAGE_ID}={image_id[:80]!r} is not sha256:<64 hex>")
    if ref is not None and (len(ref) > 512 or not ref.isprintable()):
        raise IntegrityError(f"{ENV_IMAGE}: not an image reference")
    return ImageInfo(ref=ref, id=image_id)


def read_system_packages(path: str = SYSTEM_PACKAGES_FILE) -> tuple[SystemPackage, ...]:
    """The Debian packages the image build added on top of the base (absent file: none).

    Raises: IntegrityError when the file is unreadable or not a JSON list of
    ``{"name": str, "version": str}`` objects.
    """

    from toolkit.errors import IntegrityError

    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SYSTEM_PACKAGES_BYTES + 1)
    except FileNotFoundError:
        return ()
    except OSError as e:
        raise IntegrityError(f"{path}: unreadable: {e.strerror}") from e
    if len(data) > _MAX_SYSTEM_PACKAGES_BYTES:
        raise IntegrityError(f"{path}: over {_MAX_SYSTEM_PACKAGES_BYTES} bytes, not a package list")
    try:
        raw = _json.loads(data)
    except _json.JsonError as e:
        raise IntegrityError(f"{path}: not a JSON package list") from e
    ok = isinstance(raw, list) and all(
        isinstance(p, dict)
        and set(p) == {"name", "version"}
        and isinstance(p["name"], str)
        and isinstance(p["version"], str)
        and p["name"]
        for p in raw
    )
    if not ok:
        raise IntegrityError(f'{path}: must be a JSON list of {{"name": str, "version": str}} objects')
    packages = sorted((p["name"], p["version"]) for p in raw)
    if len({name for name, _ in packages}) != len(packages):
        raise IntegrityError(f"{path}: a package is listed twice")
    return tuple(SystemPackage(name=n, version=v) for n, v in packages)


def _refuse_constant(name: str) -> Any:
    raise ValueError(name)


def _thread_pools() -> list[dict[str, Any]]:
    """threadpoolctl's report of the BLAS and OpenMP libraries loaded (numpy imported first,
    which loads its BLAS); none without numpy or threadpoolctl."""
    try:
        import numpy  # noqa: F401  (loads the BLAS that threadpoolctl then reports)
        import threadpoolctl
    except ImportError:
        return []
    pools: list[dict[str, Any]] = threadpoolctl.threadpool_info()
    return pools


def capture_threads(limit: int, pools: list[dict[str, Any]] | None = None) -> Threads:
    """The thread settings of this runtime (numpy and threadpoolctl loaded), and ``limit``;
    ``pools`` is ``_thread_pools()`` when the caller has it already."""
    found = _thread_pools() if pools is None else pools

    def widest(api: str) -> int | None:
        sizes = [int(p["num_threads"]) for p in found if p.get("user_api") == api and p.get("num_threads")]
        return max(sizes) if sizes else None

    try:
        cpus: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count()
    return Threads(
        variables={name: os.environ.get(name) for name in THREAD_VARIABLES},
        blas=widest("blas"),
        openmp=widest("openmp"),
        cpus=cpus,
        limit=limit,
    )


def _lock(declared: str | None) -> tuple[str | None, str | None]:
    import hashlib

    from toolkit.errors import IntegrityError

    path = os.environ.get(ENV_LOCK_FILE)
    if not path:
        return declared, None
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_LOCK_BYTES + 1)
    except OSError as e:
        raise IntegrityError(f"{ENV_LOCK_FILE}={path}: unreadable: {e.strerror}") from e
    if len(data) > _MAX_LOCK_BYTES:
        raise IntegrityError(f"{ENV_LOCK_FILE}={path}: over {_MAX_LOCK_BYTES} bytes, not a lock file")
    digest = hashlib.sha256(data).hexdigest()
    if declared is not None and digest != declared:
        raise IntegrityError(
            f"{ENV_LOCK_FILE}={path}: sha256 {digest} is not the runtime's {ENV_LOCK_SHA256} {declared}"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IntegrityError(f"{ENV_LOCK_FILE}={path}: not UTF-8") from e
    return digest, text


def installed_distributions(path: list[str] | None = None) -> dict[str, str]:
    """Every distribution importable from ``path`` (default sys.path) as pip freeze sees it.

    A direct scan of ``*.dist-info`` / ``*.egg-info`` entries rather than
    importlib.metadata: importing that (email parser included) and parsing whole METADATA
    files is most of what the gate would otherwise spend. Same answer, checked by a test.
    """
    found: dict[str, str] = {}
    for entry in path if path is not None else sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue  # a missing directory or a zip file: no installed distributions there
        for item in names:
            if not item.endswith((".dist-info", ".egg-info")):
                continue
            name, version = _installed_header(os.path.join(entry, item))
            if not name or not version:
                continue  # a broken .dist-info: pip freeze skips it too
            key = canonical_name(name)
            # The first one on sys.path wins, exactly as it would on import.
            if key not in _FREEZE_EXCLUDED and key not in found:
                found[key] = version
    return dict(sorted(found.items()))


def canonical_name(name: str) -> str:
    """PEP 503 normalisation, as packaging.utils.canonicalize_name (whose import the gate skips)."""
    return _SEPARATORS.sub("-", name).lower()


def _name_and_version(dist: metadata.Distribution) -> tuple[str | None, str | None]:
    return _header(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")


def _header(text: str) -> tuple[str | None, str | None]:
    # Name and Version lead the metadata header: no need to parse the whole file.
    name = version = None
    for line in text.splitlines():
        if not line:
            break  # end of the header
        if name is None and line.startswith("Name:"):
            name = line[5:].strip()
        elif version is None and line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            break
    return name, version


# What a metadata folder said, by its state: installed_distributions runs on every save and
# every gate, and reading some 90 METADATA headers was most of a fingerprint's time.
_HEADERS: dict[tuple[str, int], tuple[str | None, str | None]] = {}


def metadata_state(path: str) -> tuple[str, int] | None:
    """A key for what an installed distribution's metadata folder (or egg-info file) holds: its
    path and mtime. pip replaces the folder on every install, upgrade and removal, so a changed
    distribution never has an old key; None when it cannot be read."""
    try:
        return path, os.stat(path).st_mtime_ns
    except OSError:
        return None


def _installed_header(path: str) -> tuple[str | None, str | None]:
    """Name and Version of the ``*.dist-info`` / ``*.egg-info`` at ``path``."""
    key = metadata_state(path)
    if key is not None and key in _HEADERS:
        return _HEADERS[key]
    if path.endswith(".dist-info"):
        file = os.path.join(path, "METADATA")
    else:
        file = os.path.join(path, "PKG-INFO") if os.path.isdir(path) else path
    found = _header(_read_text(file))
    if key is not None:
        _HEADERS[key] = found
    return found


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(8192)  # the header is at the top; descriptions can be huge
    except OSError:
        return ""


def _libc() -> str:
    try:
        # Instant, unlike platform.libc_ver() which scans the interpreter binary.
        value = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        value = None
    if value:
        return value
    lib, version = platform.libc_ver()
    return f"{lib} {version}".strip() or "unknown"


def _in_container() -> bool:
    if os.environ.get(ENV_IN_CONTAINER) == "1":
        return True
    return os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")


def _blas_info(pools: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    keep = ("user_api", "internal_api", "prefix", "version", "threading_layer", "architecture", "num_threads")
    info = [{k: lib.get(k) for k in keep if k in lib} for lib in pools]
    # Sort on every field: two copies of one BLAS (numpy's and scipy's) tie on the API names,
    # and their load order can change between processes, which would change the card's bytes.
    return tuple(sorted(info, key=lambda d: tuple(str(d.get(k)) for k in keep)))
