"""The signature's format: an OpenSSF model-signing v1.0 bundle (key mode), written and parsed.

``<stem>.sig`` is a Sigstore bundle v0.3 (JSON) holding a DSSE envelope whose payload is an
in-toto statement v1 with predicate type ``https://model_signing/signature/v1.0``: one
``{name, algorithm, digest}`` resource per file, sorted by name, and a subject digest over
them. Nothing here knows about keys being trusted or about artifacts: the trust rules are in
``toolkit.signing``. ``cryptography`` is imported only inside the functions that sign.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from toolkit.errors import SignatureError

__all__ = [
    "MAX_BUNDLE_BYTES",
    "MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "envelope",
    "hash_for",
    "is_hex64",
    "pae",
    "parse_bundle",
    "parse_statement",
    "public_pem",
    "shown",
    "statement",
    "strict_json",
]

MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# A bundle over three files is ~2 KB; anything near this is hostile, not a signature.
MAX_BUNDLE_BYTES = 256 * 1024
_MAX_RESOURCES = 64
# What the reference signer records as ignored beside the signature itself.
_GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
_HEX64 = frozenset("0123456789abcdef")


def statement(subject: str, digests: Mapping[str, str], sig_name: str) -> bytes:
    names = sorted(digests)
    root = hashlib.sha256(b"".join(bytes.fromhex(digests[n]) for n in names)).hexdigest()
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "resources": [{"algorithm": "sha256", "name": n, "digest": digests[n]} for n in names],
            "serialization": {
                "allow_symlinks": False,
                "method": "files",
                "hash_type": "sha256",
                "ignore_paths": sorted([*_GIT_PATHS, sig_name]),
            },
        },
    }
    return json.dumps(statement, indent=2).encode()


def envelope(private: Any, payload: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = private.public_key()
    signature = private.sign(pae(payload), ec.ECDSA(hash_for(public)))
    bundle = {
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": hashlib.sha256(public_pem(public)).hexdigest()},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def pae(payload: bytes) -> bytes:
    # DSSE v1 pre-authentication encoding: what is signed is never the bare payload.
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


def parse_bundle(raw: bytes, sig: Path) -> tuple[bytes, list[bytes], str | None]:
    where = f"{sig}: malformed signature bundle"
    bundle = strict_json(raw, where)
    if not isinstance(bundle, dict) or bundle.get("mediaType") != MEDIA_TYPE:
        raise SignatureError(f"{where}: not a Sigstore bundle v0.3 (mediaType)")
    material = bundle.get("verificationMaterial")
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(material, dict) or not isinstance(envelope, dict):
        raise SignatureError(f"{where}: verificationMaterial and dsseEnvelope must be objects")
    public = material.get("publicKey")
    if not isinstance(public, dict) or material.get("tlogEntries", []) != []:
        raise SignatureError(f"{where}: not a key-mode bundle (publicKey with no tlogEntries)")
    hint = public.get("hint")
    if hint is not None and not isinstance(hint, str):
        raise SignatureError(f"{where}: publicKey.hint must be a string")
    payload_type = envelope.get("payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"{where}: payloadType {shown(payload_type)} is not {PAYLOAD_TYPE}")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= 4:
        raise SignatureError(f"{where}: dsseEnvelope.signatures must list 1 to 4 signatures")
    raw_sigs = []
    for s in signatures:
        if not isinstance(s, dict):
            raise SignatureError(f"{where}: a signature must be an object")
        raw_sigs.append(_b64(s.get("sig"), f"{where}: signature"))
    return _b64(envelope.get("payload"), f"{where}: payload"), raw_sigs, hint


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise SignatureError(f"{where} must be a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"{where} is not valid base64") from e


def parse_statement(payload: bytes, sig: Path) -> dict[str, str]:
    where = f"{sig}: malformed signature bundle"
    statement = strict_json(payload, f"{where}: payload")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"{where}: payload is not an in-toto statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"{where}: predicateType {shown(statement.get('predicateType'))} is not {PREDICATE_TYPE}")
    predicate = statement.get("predicate")
    subjects = statement.get("subject")
    if not isinstance(predicate, dict) or not isinstance(subjects, list) or len(subjects) != 1:
        raise SignatureError(f"{where}: the statement needs one subject and a predicate")
    subject = subjects[0]
    digest_map = subject.get("digest") if isinstance(subject, dict) else None
    root = digest_map.get("sha256") if isinstance(digest_map, dict) else None
    if not is_hex64(root):
        raise SignatureError(f"{where}: the subject has no sha256 digest")
    serialization = predicate.get("serialization")
    if (
        not isinstance(serialization, dict)
        or serialization.get("method") != "files"
        or serialization.get("hash_type") != "sha256"
    ):
        raise SignatureError(f"{where}: only per-file sha256 serialization is supported")
    resources = predicate.get("resources")
    if not isinstance(resources, list) or not 1 <= len(resources) <= _MAX_RESOURCES:
        raise SignatureError(f"{where}: predicate.resources must list 1 to {_MAX_RESOURCES} files")
    signed: dict[str, str] = {}
    for r in resources:
        if not isinstance(r, dict) or r.get("algorithm") != "sha256":
            raise SignatureError(f"{where}: each resource needs algorithm sha256")
        name, digest = r.get("name"), r.get("digest")
        if not isinstance(name, str) or not name or len(name) > 255 or not is_hex64(digest):
            raise SignatureError(f"{where}: each resource needs a name and a sha256 hex digest")
        if name in signed:
            raise SignatureError(f"{where}: resource {shown(name)} is listed twice")
        signed[name] = str(digest)
    # The subject digest is over the resources' digests in listed order (as the reference checks).
    computed = hashlib.sha256(b"".join(bytes.fromhex(d) for d in signed.values())).hexdigest()
    if computed != root:
        raise SignatureError(f"{where}: the subject digest does not match the resources")
    return signed


def strict_json(raw: bytes, what: str) -> Any:
    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            raise ValueError("duplicate key")
        return obj

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=no_constant, object_pairs_hook=unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise SignatureError(f"{what}: {_one_line(e)}") from e


def hash_for(key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    size = key.curve.key_size
    return hashes.SHA256() if size == 256 else hashes.SHA384() if size == 384 else hashes.SHA512()


def public_pem(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
