"""The error hierarchy. Every error carries the exit code the CLI turns it into.

Every error class the toolkit raises on purpose is here, so the exit codes are read in one
place; the CLI maps them once (``cli._common.ToolkitGroup``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EXIT_INTERNAL",
    "CardError",
    "CertifiedRuntimeWarning",
    "ConfigError",
    "DataError",
    "Difference",
    "DockerError",
    "EnvironmentMismatch",
    "EnvironmentMismatchWarning",
    "IntegrityError",
    "InvalidIdentifier",
    "InvalidName",
    "InvalidVersion",
    "ProbeMismatch",
    "ProjectError",
    "ProvenanceError",
    "ReadOnlyRegistry",
    "RegistryError",
    "RemoteError",
    "SignatureError",
    "ToolkitError",
    "UsageError",
]

# Anything but a ToolkitError (a bug of ours, an unexpected library error): never 0 or 1, which
# mean "the gate says yes / no"; 70 is EX_SOFTWARE (sysexits.h).
EXIT_INTERNAL = 70


class ToolkitError(Exception):
    """Root of every error the toolkit raises on purpose."""

    exit_code = 1


class UsageError(ToolkitError):
    """Bad arguments: a flag, a path or a value the command cannot use."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file that is unreadable, has an unknown key or a wrong type."""


class ProjectError(ConfigError):
    """A project's toolkit.toml or its files: unreadable, a bad key, a file that must not be overwritten."""


class DataError(UsageError):
    """A dataset that cannot be used for training or prediction."""


class IntegrityError(ToolkitError):
    """The artifact or its card is missing, unreadable, tampered with or refused."""

    exit_code = 3


class CardError(IntegrityError):
    """The card is not valid; the message names the offending field."""


class SignatureError(IntegrityError):
    """No signature, a malformed bundle, an untrusted key, or a covered file changed (exit 3)."""


class ProvenanceError(IntegrityError):
    """Provenance missing, malformed, unsigned, untrusted, or not matching the files, the card or an expectation."""


class RegistryError(ToolkitError):
    """Unknown name or version, a conflict, or an invalid name."""

    exit_code = 4


class ReadOnlyRegistry(RegistryError):
    """The registry's directory or index cannot be written (read-only mount, permissions)."""


class RemoteError(ToolkitError):
    """A remote (OCI registry, PostgreSQL) cannot be reached, refuses the credentials or fails."""

    exit_code = 6


class InvalidIdentifier(RegistryError, UsageError):
    """A model name or version that breaks its rule (``toolkit.identifiers``).

    Exit 4 from every command, because names and versions are the registry's identifiers
    (SPEC: 4 = "invalid name"); also a ``UsageError`` so callers catching bad arguments see it.
    """

    exit_code = 4


class InvalidName(InvalidIdentifier):
    """A model name outside ``^[a-z0-9][a-z0-9._-]{0,63}$`` (or one of the index's own file names)."""


class InvalidVersion(InvalidIdentifier):
    """A version that is not ``X.Y.Z``."""


class DockerError(ToolkitError):
    """No Docker engine answers, or a Docker step failed."""

    exit_code = 5


@dataclass(frozen=True, kw_only=True, slots=True)
class Difference:
    """One way in which this runtime differs from the one recorded in a card."""

    field: str  # "python_version", "os", "machine", "libc", "package", "base_image", ...
    name: str  # the distribution name for packages, else the field name again
    expected: str | None  # what the card recorded (None: absent there)
    actual: str | None  # what this runtime has (None: absent here)

    def to_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "name": self.name, "expected": self.expected, "actual": self.actual}

    def __str__(self) -> str:
        return f"{self.name}: card {self.expected or '(absent)'}, runtime {self.actual or '(absent)'}"


class EnvironmentMismatch(ToolkitError):
    """This runtime does not match the card under the policy; carries the differences."""

    exit_code = 1

    def __init__(self, differences: Iterable[Difference], *, policy: str = "strict", detail: str = "") -> None:
        self.differences = tuple(differences)
        self.policy = policy
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"environment mismatch under policy {self.policy!r}"
        if self.detail:
            head += f": {self.detail}"
        shown = "; ".join(str(d) for d in self.differences[:5])
        more = len(self.differences) - 5
        if shown:
            head += f" ({shown}{f'; and {more} more' if more > 0 else ''})"
        return head


class EnvironmentMismatchWarning(UserWarning):
    """Emitted when ``load(..., allow_mismatch=True)`` loads in a runtime that differs."""


class CertifiedRuntimeWarning(UserWarning):
    """Emitted when ``load(..., policy="certified")`` loads because a certification accepted the
    runtime's differences from the card; it names the certification."""


class ProbeMismatch(EnvironmentMismatch):
    """The pipeline loaded but no longer reproduces its reference predictions."""
