"""A project's settings, ``toolkit.toml``: found by walking up from the current folder; a flag wins.

As pytest and ruff find theirs, every command looks for ``toolkit.toml`` in the current folder
and then in each parent. The file is small, flat and strict: an unknown key, a value of the
wrong type or an unpinned base is one line naming the key (exit 2), never a guess. Relative
paths in it (``requirements``, ``lock``, a directory ``registry``) mean relative to its folder.
Without a file every key has its documented default (:data:`DEFAULTS`).

Order of precedence, the same for every key: the command's flag, then the environment variable
the command already read (``TOOLKIT_IMAGE``, ``BASE_IMAGE``, ``TOOLKIT_REGISTRY``), then
``toolkit.toml``, then the built-in default.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit.errors import ProjectError, UsageError

__all__ = [
    "DEBIAN_NAME_RE",
    "DEFAULTS",
    "FILE_NAME",
    "Project",
    "current",
    "find",
    "init",
    "load",
    "record",
]

FILE_NAME = "toolkit.toml"
# Debian policy 5.6.1: lower case, digits, + - . ; at least two characters, starting alphanumeric.
DEBIAN_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+\Z")
_PINNED_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}\Z")
_MAX_BYTES = 64 * 1024
DEFAULTS: Mapping[str, Any] = {
    "image": None,  # commands fall back to $TOOLKIT_IMAGE, then toolkit:latest
    "base_image": None,  # `toolkit base` or `toolkit image pin REF` records it
    "registry": None,  # $TOOLKIT_REGISTRY, then ./models
    "requirements": "requirements.in",
    "lock": "requirements.lock",
    "system_packages": [],
}
_TYPES: Mapping[str, str] = {
    "image": "str",
    "base_image": "str",
    "registry": "str",
    "requirements": "str",
    "lock": "str",
    "system_packages": "list",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class Project:
    """A project's settings, with its paths resolved against the folder of its ``toolkit.toml``."""

    root: Path  # the folder holding toolkit.toml (the current folder when there is none)
    path: Path | None  # the toolkit.toml read, or None: every key at its default
    image: str | None
    base_image: str | None
    registry: str | None  # a directory (absolute) or a postgresql:// URL
    requirements: Path
    lock: Path
    system_packages: tuple[str, ...]


def find(start: Path | None = None) -> Path | None:
    """The nearest ``toolkit.toml`` in ``start`` (default: the current folder) or a parent, or None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def current(start: Path | None = None) -> Project:
    """The project the current folder is in: its ``toolkit.toml``, or the defaults. Raises: ProjectError."""
    path = find(start)
    if path is None:
        return _project((start or Path.cwd()).resolve(), None, {})
    return load(path)


def load(path: Path) -> Project:
    """Read and check ``path``. Raises: ProjectError (unreadable, not TOML, a bad key), one line each."""
    tomllib = _tomllib()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ProjectError(f"{path}: cannot read it ({e.strerror or e})") from e
    if len(raw) > _MAX_BYTES:
        raise ProjectError(f"{path}: larger than {_MAX_BYTES} bytes; not a toolkit.toml")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProjectError(f"{path}: not UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ProjectError(f"{path}: invalid TOML: {e}") from e
    return _project(path.parent.resolve(), path, _check(data, path))


def init(folder: Path) -> list[Path]:
    """Write ``toolkit.toml`` and ``requirements.in`` into ``folder`` (created if needed); return them.

    Never overwrites: when either file exists, nothing is written. Raises: ProjectError naming it;
    UsageError (the one line) when one cannot be written.
    """
    targets = {folder / FILE_NAME: _TEMPLATE.format(image=_image_name(folder)), folder / "requirements.in": _REQS}
    for target in targets:
        if target.exists() or target.is_symlink():
            raise ProjectError(f"{target}: already exists; not overwriting it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ProjectError(f"{folder}: cannot create it ({e.strerror or e})") from e
    written: list[Path] = []
    for target, text in targets.items():
        try:
            # Never overwrite: a file that appeared since the check above is still kept.
            _files.save(
                target, text.encode("utf-8"), overwrite=False, exists=f"{target}: already exists; not overwriting it"
            )
        except UsageError:
            for done in written:  # all or nothing
                done.unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def record(path: Path, key: str, value: str) -> None:
    """Set ``key = "value"`` in ``path``, keeping every other line (comments too) as it is; atomic.

    Raises: ProjectError (unreadable file, or the result would not parse), UsageError (cannot be written).
    """
    if key not in _TYPES or _TYPES[key] != "str":
        raise ProjectError(f"{path}: cannot record {key!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ProjectError(f"{path}: cannot read it ({e.strerror or e})") from e
    line = f"{key} = {_toml_string(value)}"
    lines = text.splitlines()
    # A top-level key sits before the first [table]: replace it there, else add it just before.
    tables = [n for n, item in enumerate(lines) if item.lstrip().startswith("[")]
    top = tables[0] if tables else len(lines)
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    found = [n for n in range(top) if pattern.match(lines[n])]
    # Else the template's commented-out line for it becomes the real one.
    found = found or [n for n in range(top) if re.match(rf"^#\s*{re.escape(key)}\s*=", lines[n])]
    if found:
        lines[found[0]] = line
    else:
        lines.insert(top, line)
    new = "\n".join(lines) + "\n"
    _check(_tomllib().loads(new), path)  # what is written must read back
    _files.save(path, new.encode("utf-8"))


# --- helpers -------------------------------------------------------------------------------

_TEMPLATE = """\
# toolkit.toml: this project's settings; every toolkit command run in this folder (or below it)
# reads them, and a command's flag wins. See `toolkit init --help`.

# The image `toolkit image build` tags, and that image train/run/check/predict run.
image = "{image}"

# The digest-pinned base image (name@sha256:<64 hex>): `toolkit base` or `toolkit image pin REF`
# writes it here.
# base_image = ""

# Where models are registered: a directory (relative to this file) or postgresql://...
registry = "models"

# Your Python packages, one per line (pip-tools format), and the hash-locked lock that
# `toolkit lock` compiles from them (with the toolkit's own runtime added).
requirements = "requirements.in"
lock = "requirements.lock"

# Debian packages your packages need at run time (e.g. "libgomp1" for LightGBM), installed
# in the image at the exact version the base's release has.
system_packages = []
"""

_REQS = """\
# This project's Python packages, one per line (pip-tools format). `toolkit lock` compiles them,
# plus what the toolkit itself needs in the image, into the hash-locked requirements.lock.
scikit-learn
"""


def _image_name(folder: Path) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", folder.resolve().name.lower()).strip("._-") or "project"
    return f"{name}:latest"


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in escaped):
        raise ProjectError(f"{value!r}: control characters cannot go into toolkit.toml")
    return f'"{escaped}"'


def _check(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TYPES:
            known = ", ".join(_TYPES)
            raise ProjectError(f"{path}: unknown key {key!r} (known: {known})")
        if _TYPES[key] == "str":
            if not isinstance(value, str) or not value.strip():
                raise ProjectError(f"{path}: {key} must be a non-empty string")
            value = value.strip()
        else:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ProjectError(f"{path}: {key} must be a list of strings")
            for item in value:
                if not DEBIAN_NAME_RE.match(item):
                    raise ProjectError(f"{path}: {key}: {item!r} is not a Debian package name")
            if len(set(value)) != len(value):
                raise ProjectError(f"{path}: {key}: a package is listed twice")
        values[key] = value
    if "base_image" in values and not _PINNED_RE.match(values["base_image"]):
        raise ProjectError(
            f"{path}: base_image must be pinned by digest as name@sha256:<64 hex>; got {values['base_image']!r}"
        )
    return values


def _project(root: Path, path: Path | None, values: Mapping[str, Any]) -> Project:
    merged = {**DEFAULTS, **values}
    registry = merged["registry"]
    if registry is not None and not registry.startswith(("postgresql:", "postgres:")):
        registry = str(root / Path(registry).expanduser())
    return Project(
        root=root,
        path=path,
        image=merged["image"],
        base_image=merged["base_image"],
        registry=registry,
        requirements=root / merged["requirements"],
        lock=root / merged["lock"],
        system_packages=tuple(merged["system_packages"]),
    )


def _tomllib() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli
