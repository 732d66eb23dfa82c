"""Certifications: "this model was checked safe in that runtime", recorded once, honoured by the gate.

``upgrade-check --certify DIR`` writes one for each model whose verdict is ``safe``
under a candidate lock: the model's sha256, the candidate lock's sha256, the base image digest,
the reference-set result and when. With a signing key it is signed as an artifact is (an
OpenSSF model-signing bundle, DSSE, over the certification file). The gate, under the
``certified`` policy with ``--certifications DIR``, compares as ``strict``; when that finds
differences, a certification for exactly this model (sha256), this runtime's lock
(``$TOOLKIT_LOCK_SHA256``) and base image (``$TOOLKIT_BASE_IMAGE``) accepts the runtime, and the
report names it. One for another model, another lock or base, an edited one, or (with trust
configured) one without a valid trusted signature is refused, and the refusal says why.

A file is ``<model sha256[:16]>-<lock sha256[:16]>.cert.json`` (and ``.cert.json.sig``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit.errors import IntegrityError, SignatureError, UsageError

__all__ = ["CERT_SUFFIX", "Certification", "Found", "find", "write"]

CERT_SUFFIX = ".cert.json"
SIG_SUFFIX = ".sig"  # beside it: <name>.cert.json.sig
FORMAT = "toolkit-certification/1"
_MAX_BYTES = 64 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_BASE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}\Z")
_KEYS = ("format", "name", "version", "model_sha256", "lock_sha256", "base_image", "verdict", "result", "at")


@dataclass(frozen=True, kw_only=True, slots=True)
class Certification:
    """One model checked safe in one runtime (a lock on a base)."""

    name: str
    version: str
    model_sha256: str
    lock_sha256: str
    base_image: str | None
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


@dataclass(frozen=True, kw_only=True, slots=True)
class Found:
    """What ``find`` saw: the certification that applies, or why none did."""

    certification: Certification | None
    refused: tuple[str, ...]  # one line per certification file that was refused, and why


def find(
    directory: Path,
    *,
    model_sha256: str,
    lock_sha256: str | None,
    base_image: str | None,
    trusted_keys: Any = None,
) -> Found:
    """The certification in ``directory`` for this model and this runtime, checked; never raises
    for a bad file (it is listed in ``refused``). Raises: UsageError (no such directory)."""
    from toolkit.signing import trusted_keys_from_env

    if not directory.is_dir():
        raise UsageError(f"--certifications {directory}: no such folder")
    keys = trusted_keys_from_env(trusted_keys)
    refused: list[str] = []
    for path in sorted(directory.glob(f"*{CERT_SUFFIX}")):
        try:
            data = _files.read_regular(path, "certification", limit=_MAX_BYTES)
            cert = _parse(data, path)
            if keys:
                _check_signature(path, data, keys)
        except (IntegrityError, SignatureError) as e:
            refused.append(str(e))
            continue
        if cert.model_sha256 != model_sha256:
            if path.name.startswith(model_sha256[:16]):
                refused.append(f"{path}: certifies model sha256 {cert.model_sha256[:12]}…, not this one")
            continue
        if cert.lock_sha256 != lock_sha256:
            refused.append(
                f"{path}: certifies lock {cert.lock_sha256[:12]}…, this runtime has {(lock_sha256 or 'none')[:12]}"
            )
            continue
        if cert.base_image != base_image:
            refused.append(f"{path}: certifies base {cert.base_image}, this runtime has {base_image}")
            continue
        if path.name != cert.file_name:
            refused.append(f"{path}: its name is not its content's ({cert.file_name}); refused")
            continue
        return Found(certification=cert, refused=tuple(refused))
    return Found(certification=None, refused=tuple(refused))


def _parse(data: bytes, path: Path) -> Certification:
    from toolkit import _json

    try:
        raw = _json.loads(data)
    except _json.JsonError as e:
        raise IntegrityError(f"{path}: not a certification (not strict JSON: {e})") from e
    if not isinstance(raw, dict) or tuple(raw) != _KEYS or raw["format"] != FORMAT:
        raise IntegrityError(f"{path}: not a certification (its fields are wrong)")
    ok = (
        all(isinstance(raw[k], str) for k in ("name", "version", "model_sha256", "lock_sha256", "verdict", "at"))
        and _HEX64.match(raw["model_sha256"])
        and _HEX64.match(raw["lock_sha256"])
        and (raw["base_image"] is None or (isinstance(raw["base_image"], str) and _BASE_RE.match(raw["base_image"])))
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
