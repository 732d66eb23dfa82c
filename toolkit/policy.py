"""Policies: which differences between a card's runtime and this one refuse a load."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from toolkit.errors import Difference, UsageError
from toolkit.fingerprint import Fingerprint

if TYPE_CHECKING:
    from toolkit.card.records import LocalModule

__all__ = ["POLICIES", "SELF_DISTRIBUTION", "differences", "validate_policy"]

# certified: compared as strict; a certification for this model and this runtime (see
# toolkit.certification), where the caller gives certifications, accepts the differences.
POLICIES = ("strict", "compatible", "certified")

# The toolkit is the checker, not the payload: its own version is recorded in the card for
# information but is not compared under strict, so a newer toolkit can gate (and rebuild the
# runtime of) an artifact an older one saved. It is compared when the pickle itself
# references toolkit code (then it is in ``referenced``, under either policy).
SELF_DISTRIBUTION = "toolkit"


def validate_policy(policy: str) -> str:
    """Return ``policy`` if known. Raises: UsageError."""
    if policy not in POLICIES:
        raise UsageError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}")
    return policy


def differences(
    recorded: Fingerprint,
    runtime: Fingerprint,
    *,
    policy: str,
    referenced: Iterable[str] = (),
    local_modules: Iterable[LocalModule] = (),
    checker: Iterable[str] = (),
) -> tuple[Difference, ...]:
    """What in ``runtime`` differs from ``recorded`` under ``policy``; empty means a match.

    strict: interpreter, OS, machine, libc, every distribution, the base image, and (card
    schema 3) the Debian packages a project added on top of it.
    compatible: interpreter and Python major.minor, plus the exact versions of the
    distributions the pickle references (``referenced``, already closed over their
    dependencies when the card was written).
    Both: every local module (user code no distribution provides) must be found here with
    the sha256 its source had at save time.
    ``checker``: distributions the checking process brought along (``toolkit serve``'s HTTP
    server): under strict, one that the card does not record is not a difference, exactly as the
    toolkit's own distribution is not; one the card records is compared as usual.
    """
    validate_policy(policy)
    referenced = set(referenced)
    if policy == "certified":
        policy = "strict"  # the certifications are the gate's to weigh, on top of these differences
    found = [_field("python_implementation", recorded.python_implementation, runtime.python_implementation)]
    if policy == "strict":
        found += [
            _field("python_version", recorded.python_version, runtime.python_version),
            _field("os", recorded.os, runtime.os),
            _field("machine", recorded.machine, runtime.machine),
            _field("libc", recorded.libc, runtime.libc),
        ]
        every = set(recorded.packages) | set(runtime.packages)
        brought = (set(checker) - set(recorded.packages)) | {SELF_DISTRIBUTION}
        names: Iterable[str] = sorted((every - brought) | (every & referenced))
    else:
        found.append(_field("python_version", recorded.python_minor, runtime.python_minor))
        names = sorted(referenced)
    found += [_package(name, recorded.packages.get(name), runtime.packages.get(name)) for name in names]
    if policy == "strict":
        found.append(_field("base_image", recorded.base_image, runtime.base_image))
        if recorded.system_packages is not None:  # card schema 3: the Debian packages a project added
            found += _system_packages(recorded, runtime)
    found += [_local(m.module, m.sha256) for m in local_modules]
    return tuple(d for d in found if d is not None)


def _system_packages(recorded: Fingerprint, runtime: Fingerprint) -> list[Difference | None]:
    expected = {p.name: p.version for p in recorded.system_packages or ()}
    actual = {p.name: p.version for p in runtime.system_packages or ()}
    return [
        None
        if expected.get(name) == actual.get(name)
        else Difference(field="system_package", name=name, expected=expected.get(name), actual=actual.get(name))
        for name in sorted(set(expected) | set(actual))
    ]


def _local(module: str, expected: str) -> Difference | None:
    from toolkit.pickle_audit import local_module_sha256

    actual = local_module_sha256(module)
    if actual == expected:
        return None
    return Difference(field="local_module", name=module, expected=expected, actual=actual)


def _field(name: str, expected: str | None, actual: str | None) -> Difference | None:
    if expected == actual:
        return None
    return Difference(field=name, name=name, expected=expected, actual=actual)


def _package(name: str, expected: str | None, actual: str | None) -> Difference | None:
    if expected == actual:
        return None
    return Difference(field="package", name=name, expected=expected, actual=actual)
