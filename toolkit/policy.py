"""Policies: which differences between a card's runtime and this one refuse a load."""

from __future__ import annotations

from collections.abc import Iterable

from toolkit.errors import Difference, UsageError
from toolkit.fingerprint import Fingerprint

__all__ = ["POLICIES", "differences", "validate_policy"]

POLICIES = ("strict", "compatible")


def validate_policy(policy: str) -> str:
    """Return ``policy`` if known. Raises: UsageError."""
    if policy not in POLICIES:
        raise UsageError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}")
    return policy


def differences(
    recorded: Fingerprint, runtime: Fingerprint, *, policy: str, referenced: Iterable[str] = ()
) -> tuple[Difference, ...]:
    """What in ``runtime`` differs from ``recorded`` under ``policy``; empty means a match.

    strict: interpreter, OS, machine, libc, every distribution, and the base image.
    compatible: interpreter and Python major.minor, plus the exact versions of the
    distributions the pickle references (``referenced``, already closed over their
    dependencies when the card was written).
    """
    validate_policy(policy)
    found = [_field("python_implementation", recorded.python_implementation, runtime.python_implementation)]
    if policy == "strict":
        found += [
            _field("python_version", recorded.python_version, runtime.python_version),
            _field("os", recorded.os, runtime.os),
            _field("machine", recorded.machine, runtime.machine),
            _field("libc", recorded.libc, runtime.libc),
        ]
        names: Iterable[str] = sorted(set(recorded.packages) | set(runtime.packages))
    else:
        found.append(_field("python_version", recorded.python_minor, runtime.python_minor))
        names = sorted(set(referenced))
    found += [_package(name, recorded.packages.get(name), runtime.packages.get(name)) for name in names]
    if policy == "strict":
        found.append(_field("base_image", recorded.base_image, runtime.base_image))
    return tuple(d for d in found if d is not None)


def _field(name: str, expected: str | None, actual: str | None) -> Difference | None:
    if expected == actual:
        return None
    return Difference(field=name, name=name, expected=expected, actual=actual)


def _package(name: str, expected: str | None, actual: str | None) -> Difference | None:
    if expected == actual:
        return None
    return Difference(field="package", name=name, expected=expected, actual=actual)
