"""Questions asked across a registry's versions: would each load here (``registry check``), and
which versions hold the same bytes (``registry add``'s note).

``registry check``: would each registered version load in this runtime, and if not, why and what to do.

The gate (``toolkit.gate.check_env``) is run on every version's registered files, so nothing
is unpickled. Every version is checked and reported, whatever an earlier one did: a
registry with one tampered version still tells you which of the others would load.
Only the registry's public reading methods are used (``list_names``, ``list_versions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import EnvironmentMismatch, IntegrityError, UsageError
from toolkit.policy import validate_policy

if TYPE_CHECKING:
    from toolkit.gate import Report
    from toolkit.registry.registry import Entry, Registry
    from toolkit.signing import TrustedKeys

__all__ = ["RegistryCheck", "VersionCheck", "check_registry", "same_bytes"]


@dataclass(frozen=True, kw_only=True, slots=True)
class VersionCheck:
    """The gate's verdict on one registered version: it loads, it would not (a report), or its files fail."""

    name: str
    version: str
    status: str
    path: Path
    report: Report | None = None  # None when the files failed integrity
    error: str | None = None  # the integrity failure

    @property
    def exit_code(self) -> int:
        if self.report is None:
            return IntegrityError.exit_code
        return self.report.exit_code

    @property
    def verdict(self) -> str:
        """``loads``, ``mismatch`` or ``integrity``."""
        if self.report is None:
            return "integrity"
        return "loads" if self.report.ok else "mismatch"

    def to_dict(self) -> dict[str, Any]:
        report = self.report
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "path": str(self.path),
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "differences": [] if report is None else [d.to_dict() for d in report.differences],
            "remedies": [] if report is None else list(report.remedies),
            "error": self.error,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class RegistryCheck:
    """Every checked version; the exit code is the worst: 3 (integrity) over 1 (mismatch) over 0."""

    root: Path
    policy: str
    versions: tuple[VersionCheck, ...]

    @property
    def exit_code(self) -> int:
        codes = {v.exit_code for v in self.versions}
        if IntegrityError.exit_code in codes:
            return IntegrityError.exit_code
        return EnvironmentMismatch.exit_code if EnvironmentMismatch.exit_code in codes else 0

    def count(self, verdict: str) -> int:
        return sum(1 for v in self.versions if v.verdict == verdict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == 0,
            "exit_code": self.exit_code,
            "root": str(self.root),
            "policy": self.policy,
            "versions": [v.to_dict() for v in self.versions],
        }


def check_registry(
    registry: Registry, name: str | None = None, *, policy: str = "compatible", trusted_keys: TrustedKeys = None
) -> RegistryCheck:
    """Run the gate on every registered version (or NAME's), newest first within each name.

    Raises:
        UsageError: an unknown policy or an unreadable trusted key; a team registry.
        RegistryError: NAME is invalid or unknown; the index cannot be read.
    """
    validate_policy(policy)
    if registry.root is None:
        # The gate reads local files; a team registry's live in its OCI store (not checked here yet).
        raise UsageError(
            "registry check runs on a directory registry; on a team registry, `registry recover` pulls and "
            "verifies every version"
        )
    if name is not None:
        entries = registry.list_versions(name)
    else:
        entries = [e for n in registry.list_names() for e in registry.list_versions(n.name)]
    return RegistryCheck(
        root=registry.root,
        policy=policy,
        versions=tuple(_check(e, policy, trusted_keys) for e in entries),
    )


def same_bytes(registry: Registry, entry: Entry) -> list[str]:
    """The other versions of ``entry``'s name whose pickle has the same sha256, newest first.

    Registering the same bytes twice is allowed (a retrain can be byte-identical on purpose,
    e.g. a version bump for a card-only change) but usually a mistake worth a note.
    """
    return [
        e.version for e in registry.list_versions(entry.name) if e.sha256 == entry.sha256 and e.version != entry.version
    ]


def _check(entry: Entry, policy: str, trusted_keys: TrustedKeys) -> VersionCheck:
    from toolkit.gate import check_env

    assert entry.path is not None  # check_registry refuses registries without local files
    common: dict[str, Any] = {"name": entry.name, "version": entry.version, "status": entry.status, "path": entry.path}
    try:
        report = check_env(entry.path, policy=policy, trusted_keys=trusted_keys)
    except IntegrityError as e:  # CardError, SignatureError too: the files are not what was registered
        return VersionCheck(**common, error=str(e))
    if report.sha256 != entry.sha256:
        # The pickle and its card were swapped together: consistent, but not what was registered.
        return VersionCheck(**common, error=f"card sha256 {report.sha256} differs from the registered {entry.sha256}")
    return VersionCheck(**common, report=report)
