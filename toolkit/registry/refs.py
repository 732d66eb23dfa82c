"""Models named by registry reference: ``NAME@production``, ``NAME@staging``, ``NAME:X.Y.Z``.

Every command that takes an artifact takes one of these too; the rule for telling a
reference from a path lives here, once. A value is a **path** when it exists, contains a
``/`` or ends in ``.joblib`` (so ``./iris@production`` or ``iris.joblib`` is always a file);
otherwise a valid model name followed by ``@production``, ``@staging`` or ``:X.Y.Z`` is a
**reference**, resolved to the registered ``.joblib`` in the registry. Anything else is a
path, and fails as a missing artifact would.

Only the registry's public reading methods are used (``get``, ``list_versions``), so a
reference resolves the same whatever index backs the registry.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import RegistryError, UsageError
from toolkit.identifiers import is_name, parse_version

if TYPE_CHECKING:
    from toolkit.registry.registry import Entry

__all__ = ["STAGES", "Reference", "parse_reference", "resolve_artifact"]

STAGES = ("production", "staging")
# NAME, then "@" or ":" and the rest; the name rule itself is identifiers.is_name.
_REF_RE = re.compile(r"^([^@:/]+)([@:])(.*)\Z", re.DOTALL)


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    """A parsed reference: a name and either a stage or a version."""

    name: str
    stage: str | None = None  # "production" | "staging"
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.stage}" if self.stage else f"{self.name}:{self.version}"


def parse_reference(value: str) -> Reference | None:
    """``value`` as a reference, or ``None`` when it is a path (see the module's rule).

    Raises:
        UsageError: a model name followed by ``@`` and something other than a stage.
        InvalidVersion: a model name followed by ``:`` and not ``X.Y.Z`` (exit 4, as everywhere).
    """
    if not value or "/" in value or value.endswith(".joblib") or os.path.lexists(value):
        return None
    m = _REF_RE.match(value)
    if m is None or not is_name(m[1]):
        return None
    name, sep, rest = m[1], m[2], m[3]
    if sep == "@":
        if rest not in STAGES:
            raise UsageError(
                f"invalid reference {value!r}: use NAME@production, NAME@staging or NAME:X.Y.Z (or a .joblib path)"
            )
        return Reference(name=name, stage=rest)
    parse_version(rest)
    return Reference(name=name, version=rest)


def resolve_artifact(value: str | os.PathLike[str], registry: Path | str | None) -> Path:
    """The ``.joblib`` that ``value`` names: itself when a path, else the registered file it refers to.

    ``registry`` is the root (None: ``$TOOLKIT_REGISTRY``, else ``./models``; see
    ``toolkit.registry.resolve_root``). ``NAME@staging`` is the newest staging version.

    Raises:
        UsageError: a malformed reference.
        RegistryError: an unknown name or version, or no version at that stage (exit 4).
    """
    if not isinstance(value, str):
        return Path(value)
    ref = parse_reference(value)
    if ref is None:
        return Path(value)
    from toolkit.registry.registry import Registry, resolve_root

    with Registry(resolve_root(registry)) as reg:
        if ref.version is not None:
            return _local(reg.get(ref.name, ref.version))
        # list_versions is newest first: the first at the stage is the one meant.
        for entry in reg.list_versions(ref.name):
            if entry.status == ref.stage:
                return _local(entry)
        raise RegistryError(f"{ref.name} has no {ref.stage} version in the registry {reg.location}")


def _local(entry: Entry) -> Path:
    if entry.path is None:  # a team registry: the files are in its OCI store, not on this machine
        raise UsageError(
            f"{entry.name} {entry.version} is in a team registry's store; pull it first: toolkit pull {entry.location}"
        )
    return entry.path
