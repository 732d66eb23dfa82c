"""The one rule for each identifier: model names, versions and the current user.

Every command and API that takes a name or a version checks it here, so a bad one gets the
same message and the same exit code wherever it is given. Names and versions are the
registry's identifiers (a version is stored under ``<name>/<version>/``), so a bad one is
``InvalidName`` / ``InvalidVersion``, exit 4 (SPEC: "registry error: ... invalid name"), from
``train`` and ``save`` as from ``registry add``. Both also subclass ``UsageError``, so code
that catches bad arguments still catches them.

Versions are strict ``MAJOR.MINOR.PATCH`` everywhere (no pre-release, no build metadata):
the registry orders versions numerically and a version is its directory name, so a form
the registry cannot order is refused at the start (``train``, ``save``, a card) rather than
after training, when the registry would refuse it.
"""

from __future__ import annotations

import os
import re

from toolkit import env
from toolkit.errors import InvalidName, InvalidVersion

__all__ = [
    "AUTHOR_ENV",
    "NAME_PATTERN",
    "NAME_RE",
    "VERSION_RE",
    "current_user",
    "is_name",
    "is_version",
    "parse_version",
    "validate_name",
    "validate_version",
]

NAME_PATTERN = "^[a-z0-9][a-z0-9._-]{0,63}$"
# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")
# No leading zeros; at most 9 digits a part so every part fits the index's integer columns.
VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\Z")
AUTHOR_ENV = env.AUTHOR
# Names that would land on the registry index's own files in its root directory.
_RESERVED = frozenset({"registry.db", "registry.db-wal", "registry.db-shm", "registry.db-journal"})
_SHOWN_MAX = 80


def is_name(value: object) -> bool:
    """Whether ``value`` is a valid model name."""
    return isinstance(value, str) and NAME_RE.match(value) is not None and value not in _RESERVED


def is_version(value: object) -> bool:
    """Whether ``value`` is a valid version ``X.Y.Z``."""
    return isinstance(value, str) and VERSION_RE.match(value) is not None


def validate_name(name: object, *, what: str = "model name") -> str:
    """Return ``name`` if valid. Raises: InvalidName (exit 4), naming the value and the rule."""
    if not is_name(name):
        raise InvalidName(f"invalid {what} {_shown(name)}: must match {NAME_PATTERN}")
    assert isinstance(name, str)
    return name


def validate_version(version: object) -> str:
    """Return ``version`` if valid. Raises: InvalidVersion (exit 4)."""
    parse_version(version)
    assert isinstance(version, str)
    return version


def parse_version(version: object) -> tuple[int, int, int]:
    """``"1.10.0"`` -> ``(1, 10, 0)``: versions are ordered by this, never by text.

    Raises:
        InvalidVersion: not ``X.Y.Z`` (no leading zeros, no pre-release or build suffix).
    """
    m = VERSION_RE.match(version) if isinstance(version, str) else None
    if m is None:
        raise InvalidVersion(
            f"invalid version {_shown(version)}: must be a semantic version X.Y.Z such as 1.0.0 "
            "(no pre-release or build suffix)"
        )
    return int(m[1]), int(m[2]), int(m[3])


def current_user() -> str:
    """Who is acting: ``$TOOLKIT_AUTHOR``, else the login name, else ``"unknown"``.

    A container user with no passwd entry and no ``$USER`` has no login name; "unknown" is
    recorded rather than failing a save or a promotion over it.
    """
    override = os.environ.get(AUTHOR_ENV, "").strip()
    if override:
        return override
    import getpass

    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError, ImportError):
        return "unknown"


def _shown(value: object) -> str:
    if isinstance(value, str) and len(value) > _SHOWN_MAX:
        return repr(value[:_SHOWN_MAX]) + "..."
    return repr(value)
