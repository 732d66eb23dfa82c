"""Certifications: "this model was checked safe in that runtime", recorded once, honoured by every gate.

``upgrade-check --certify DIR`` writes one for each model whose verdict is ``safe`` under a
candidate lock: the model's sha256, the candidate lock's sha256, the base image digest, the
candidate runtime as the check saw it from inside (interpreter, platform, every distribution,
the Debian packages), the reference-set result and when. With a signing key it is signed as an
artifact is (an OpenSSF model-signing bundle, DSSE, over the certification file).

The rule (``decide``, the one place every gate asks: ``check-env``, ``toolkit.load``/``check_env``,
``registry promote``/``rollback``, ``serve``/``image serve``): under the ``certified`` policy the
card is compared as ``strict``; when that finds differences, a certification accepts them if it is
for exactly this model (sha256), this runtime's declared lock (``$TOOLKIT_LOCK_SHA256``) and base
(``$TOOLKIT_BASE_IMAGE``), and this very runtime: the running interpreter, platform, distributions
and Debian packages compare ``strict``-equal to the ones it certified (an environment variable
naming the lock is not evidence that the lock is what is installed). A local module (user code)
that changed is never accepted. One for another model, lock, base or runtime, an edited one, or
(with trust configured) one without a valid trusted signature is refused, the refusal says why,
and the gate stays strict. Under ``strict``, a certification that would apply is named in the
remedy. Where they are read from: ``locate``.

A file is ``<model sha256[:16]>-<lock sha256[:16]>.cert.json`` (and ``.cert.json.sig``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit import env as _env
from toolkit.errors import Difference, IntegrityError, SignatureError, UsageError
from toolkit.fingerprint import Fingerprint, SystemPackage

__all__ = [
    "CERT_SUFFIX",
    "REGISTRY_FOLDER",
    "Certification",
    "Decision",
    "Found",
    "certified_runtime",
    "decide",
    "find",
    "locate",
    "runtime_from_dict",
    "runtime_to_dict",
    "write",
]

CERT_SUFFIX = ".cert.json"
SIG_SUFFIX = ".sig"  # beside it: <name>.cert.json.sig
# Format 2 records the certified runtime itself; format 1 (only the lock's sha256) is refused:
# a variable naming a lock does not show that the lock is what runs.
FORMAT = "toolkit-certification/2"
# <local registry>/.certifications: where promote and rollback look. A leading dot: never a model
# name (toolkit.identifiers.NAME_RE), so the folder cannot collide with a registered model.
REGISTRY_FOLDER = ".certifications"
_MAX_BYTES = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_BASE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}\Z")
_KEYS = (
    "format", "name", "version", "model_sha256", "lock_sha256", "base_image", "runtime", "verdict", "result", "at",
)  # fmt: skip
_RUNTIME_KEYS = ("python_implementation", "python_version", "os", "machine", "libc", "packages", "system_packages")


@dataclass(frozen=True, kw_only=True, slots=True)
class Certification:
    """One model checked safe in one runtime (a lock on a base)."""

    name: str
    version: str
    model_sha256: str
    lock_sha256: str
    base_image: str | None
    # The candidate runtime as upgrade-check saw it from inside (base_image and lock_sha256 are
    # this record's own); compared strict with the running one before the certification applies.
    runtime: Fingerprint
    verdict: str  # "safe"
    result: Mapping[str, Any]  # the reference (or probe) result, as check-env --json shows it
    at: str  # UTC ISO-8601

    @property
    def file_name(self) -> str:
        return f"{self.model_sha256[:16]}-{self.lock_sha256[:16]}{CERT_SUFFIX}"

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "model_sha256": self.model_sha256,
            "lock_sha256": self.lock_sha256,
            "base_image": self.base_image,
            "runtime": runtime_to_dict(self.runtime),
            "verdict": self.verdict,
            "result": dict(self.result),
            "at": self.at,
        }
        return (json.dumps(doc, indent=2, sort_keys=False, allow_nan=False) + "\n").encode()

    def __str__(self) -> str:
        lock = self.lock_sha256[:12]
        return f"{self.file_name} ({self.name} {self.version} {self.verdict} under lock {lock}, {self.at})"


def write(directory: Path, cert: Certification, *, key: str | os.PathLike[str] | None = None) -> Path:
    """Write ``cert`` into ``directory`` (made if missing), signed when ``key`` is given.

    Raises: UsageError (the directory or the key cannot be used).
    """
    from toolkit.signing import load_signing_key
    from toolkit.signing._bundle import envelope, statement

    private = load_signing_key(key) if key is not None else None  # a bad key fails before any write
    try:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / cert.file_name
        data = cert.to_json()
        if private is not None:
            sig = target.with_name(target.name + SIG_SUFFIX)
            digest = hashlib.sha256(data).hexdigest()
            bundle = envelope(private, statement(target.name, {target.name: digest}, sig.name))
            _files.save(sig, bundle)
        _files.save(target, data)
    except OSError as e:  # the folder cannot be made
        raise UsageError(f"--certify {directory}: cannot write the certification: {e.strerror or e}") from e
    return target


def certified_runtime(runtime: Fingerprint) -> Fingerprint:
    """What a certification records of ``runtime``: what ``strict`` compares, nothing informational."""
    return Fingerprint(
        python_implementation=runtime.python_implementation,
        python_version=runtime.python_version,
        os=runtime.os,
        os_release="",
        machine=runtime.machine,
        libc=runtime.libc,
        packages=dict(sorted(runtime.packages.items())),
        base_image=runtime.base_image,
        lock_sha256=runtime.lock_sha256,
        system_packages=runtime.system_packages,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Found:
    """What ``find`` saw: the certification that applies, or why none did."""

    certification: Certification | None
    refused: tuple[str, ...]  # one line per certification file that was refused, and why


def find(
    directory: Path,
    *,
    model_sha256: str,
    runtime: Fingerprint,
    trusted_keys: Any = None,
    checker: Iterable[str] = (),
) -> Found:
    """The certification in ``directory`` for this model and this very runtime, checked; never
    raises for a bad file (it is listed in ``refused``). ``checker``: distributions the checking
    process brought (a server's), not compared when the certified runtime does not have them.

    Raises: UsageError (no such directory; an unusable trusted key).
    """
    from toolkit.policy import differences
    from toolkit.signing import trusted_keys_from_env

    if not directory.is_dir():
        raise UsageError(f"certifications {directory}: no such folder")
    keys = trusted_keys_from_env(trusted_keys)
    refused: list[str] = []
    for path in sorted(directory.glob(f"*{CERT_SUFFIX}")):
        try:
            data = _files.read_regular(path, "certification", limit=_MAX_BYTES)
            cert = _parse(data, path)
            if keys:
                _check_signature(path, data, keys)
        except (IntegrityError, SignatureError) as e:
            if not path.name.startswith(model_sha256[:16]):
                continue  # refused, but named for another model: not this gate's to report
            refused.append(str(e))
            continue
        if cert.model_sha256 != model_sha256:
            if path.name.startswith(model_sha256[:16]):
                refused.append(f"{path}: certifies model sha256 {cert.model_sha256[:12]}…, not this one")
            continue
        if path.name != cert.file_name:
            refused.append(f"{path}: its name is not its content's ({cert.file_name}); refused")
            continue
        if cert.lock_sha256 != runtime.lock_sha256:
            have = (runtime.lock_sha256 or "none")[:12]
            refused.append(f"{path}: certifies lock {cert.lock_sha256[:12]}…, this runtime has {have}")
            continue
        if cert.base_image != runtime.base_image:
            refused.append(f"{path}: certifies base {cert.base_image}, this runtime has {runtime.base_image}")
            continue
        moved = differences(cert.runtime, runtime, policy="strict", checker=checker)
        if moved:
            shown = ", ".join(_said(d) for d in moved[:3]) + (f" and {len(moved) - 3} more" if len(moved) > 3 else "")
            refused.append(
                f"{path}: this runtime is not the one it certifies under lock {cert.lock_sha256[:12]}: {shown}"
            )
            continue
        return Found(certification=cert, refused=tuple(refused))
    return Found(certification=None, refused=tuple(refused))


def _said(d: Difference) -> str:
    return f"{d.name} {d.actual or 'absent'} (certified {d.expected or 'absent'})"


def locate(given: str | os.PathLike[str] | None, *, registry: Path | None = None) -> Path | None:
    """Where a gate reads certifications: ``given`` (``--certifications``, ``certifications=``),
    else ``$TOOLKIT_CERTIFICATIONS`` (a deployment sets it once), else, for a local registry's
    promote and rollback, ``<registry>/.certifications`` when it exists; else None (none configured).

    Raises: UsageError (the variable is set to something that is not a folder path).
    """
    if given is not None:
        return Path(given)
    raw = os.environ.get(_env.CERTIFICATIONS)
    if raw is not None and raw.strip():
        if "\0" in raw or len(raw) > 4096:
            raise UsageError(f"${_env.CERTIFICATIONS}: not a folder path")
        return Path(raw)
    if registry is not None and (registry / REGISTRY_FOLDER).is_dir():
        return registry / REGISTRY_FOLDER
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision:
    """The gate's answer once certifications are weighed: what still refuses, and why."""

    differences: tuple[Difference, ...]  # what still refuses the runtime (empty: it passes)
    certification: Certification | None = None  # the one that accepted ``accepted``
    accepted: tuple[Difference, ...] = ()
    refused: tuple[str, ...] = ()  # certifications refused, one line each, with the reason
    remedy: str | None = None  # the certification that applies, or how to get one


def decide(
    differences: tuple[Difference, ...],
    *,
    model_sha256: str,
    policy: str,
    runtime: Fingerprint,
    certifications: Path | None,
    trusted_keys: Any = None,
    checker: Iterable[str] = (),
) -> Decision:
    """The one rule every gate applies (module docstring): ``differences`` are the card's from
    ``runtime`` under ``policy`` (``certified`` compares as ``strict``); ``certifications`` the
    folder ``locate`` found. Under ``certified``, an applicable certification accepts every
    difference but a changed local module. Under ``strict``, one that would apply is named in
    the remedy. Nothing is read when there is no difference.

    Raises: UsageError (under certified: the folder does not exist; an unusable trusted key).
    """
    if not differences or policy == "compatible":
        return Decision(differences=differences)
    if policy != "certified":
        if certifications is None or not certifications.is_dir():
            return Decision(differences=differences)
        would = find(
            certifications, model_sha256=model_sha256, runtime=runtime, trusted_keys=trusted_keys, checker=checker
        ).certification
        if would is None:
            return Decision(differences=differences)
        remedy = f"or accept it with --policy certified: certification {would} in {certifications} applies"
        return Decision(differences=differences, remedy=remedy)
    if certifications is None:
        remedy = (
            "--policy certified honours certifications: give --certifications DIR "
            f"(or ${_env.CERTIFICATIONS}); none is configured"
        )
        return Decision(differences=differences, remedy=remedy)
    found = find(certifications, model_sha256=model_sha256, runtime=runtime, trusted_keys=trusted_keys, checker=checker)
    if found.certification is None:
        remedy = (
            "certify this model under this runtime's lock "
            f"(toolkit upgrade-check --lock LOCK --certify {certifications}): "
            f"model sha256 {model_sha256[:12]}, lock {(runtime.lock_sha256 or 'none')[:12]}"
        )
        return Decision(differences=differences, refused=found.refused, remedy=remedy)
    kept = tuple(d for d in differences if d.field == "local_module")  # user code is not the runtime's
    return Decision(
        differences=kept,
        certification=found.certification,
        accepted=tuple(d for d in differences if d.field != "local_module"),
        refused=found.refused,
    )


def _parse(data: bytes, path: Path) -> Certification:
    from toolkit import _json

    try:
        raw = _json.loads(data)
    except _json.JsonError as e:
        raise IntegrityError(f"{path}: not a certification (not strict JSON: {e})") from e
    if isinstance(raw, dict) and raw.get("format") == "toolkit-certification/1":
        raise IntegrityError(f"{path}: an older certification format (it does not record the runtime); certify again")
    if not isinstance(raw, dict) or tuple(raw) != _KEYS or raw["format"] != FORMAT:
        raise IntegrityError(f"{path}: not a certification (its fields are wrong)")
    ok = (
        all(isinstance(raw[k], str) for k in ("name", "version", "model_sha256", "lock_sha256", "verdict", "at"))
        and _HEX64.match(raw["model_sha256"])
        and _HEX64.match(raw["lock_sha256"])
        and (raw["base_image"] is None or (isinstance(raw["base_image"], str) and _BASE_RE.match(raw["base_image"])))
        and isinstance(raw["runtime"], dict)
        and raw["verdict"] == "safe"
        and isinstance(raw["result"], dict)
        and raw["result"].get("ok") is True
    )
    if not ok:
        raise IntegrityError(f"{path}: not a certification of a safe verdict (a field is malformed)")
    return Certification(
        name=raw["name"],
        version=raw["version"],
        model_sha256=raw["model_sha256"],
        lock_sha256=raw["lock_sha256"],
        base_image=raw["base_image"],
        runtime=runtime_from_dict(raw["runtime"], path, base_image=raw["base_image"], lock_sha256=raw["lock_sha256"]),
        verdict=raw["verdict"],
        result=raw["result"],
        at=raw["at"],
    )


def _check_signature(path: Path, data: bytes, keys: Any) -> None:
    """As an artifact's signature is checked: a trusted key's valid DSSE signature over a
    statement whose one resource is this file with these bytes. Raises: SignatureError."""
    from toolkit.signing import _check_signed
    from toolkit.signing._bundle import parse_bundle, parse_statement

    sig = path.with_name(path.name + SIG_SUFFIX)
    try:
        raw = _files.read_regular(sig, "certification signature", limit=1024 * 1024)
    except IntegrityError as e:
        raise SignatureError(f"{sig}: no valid signature; trust is configured, so {path.name} is refused") from e
    payload, signatures, hint = parse_bundle(raw, sig)
    _check_signed(keys, payload, signatures, hint, sig)
    signed = parse_statement(payload, sig)
    if signed != {path.name: hashlib.sha256(data).hexdigest()}:
        raise SignatureError(f"{sig}: {path.name} changed since it was signed; refused")


def runtime_to_dict(runtime: Fingerprint) -> dict[str, Any]:
    return {
        "python_implementation": runtime.python_implementation,
        "python_version": runtime.python_version,
        "os": runtime.os,
        "machine": runtime.machine,
        "libc": runtime.libc,
        "packages": dict(sorted(runtime.packages.items())),
        "system_packages": None
        if runtime.system_packages is None
        else [{"name": p.name, "version": p.version} for p in runtime.system_packages],
    }


def runtime_from_dict(raw: Any, path: Path | str, *, base_image: str | None, lock_sha256: str) -> Fingerprint:
    """The certified runtime, strictly: every field a string, packages a str->str map.
    Raises: IntegrityError."""
    bad = IntegrityError(f"{path}: not a certification (its runtime is malformed)")
    if not isinstance(raw, dict) or tuple(raw) != _RUNTIME_KEYS:
        raise bad
    scalars = _RUNTIME_KEYS[:5]
    packages, system = raw["packages"], raw["system_packages"]
    if not all(isinstance(raw[k], str) and 0 < len(raw[k]) <= 200 for k in scalars):
        raise bad
    if not isinstance(packages, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in packages.items()
    ):
        raise bad
    if system is not None and not (
        isinstance(system, list)
        and all(
            isinstance(p, dict)
            and tuple(p) == ("name", "version")
            and isinstance(p["name"], str)
            and isinstance(p["version"], str)
            and p["name"]
            for p in system
        )
    ):
        raise bad
    return Fingerprint(
        python_implementation=raw["python_implementation"],
        python_version=raw["python_version"],
        os=raw["os"],
        os_release="",
        machine=raw["machine"],
        libc=raw["libc"],
        packages=packages,
        base_image=base_image,
        lock_sha256=lock_sha256,
        system_packages=None
        if system is None
        else tuple(SystemPackage(name=p["name"], version=p["version"]) for p in system),
    )
