"""DSSE envelopes for provenance, signed and checked with the keys and the DSSE code of ``toolkit.signing``.

``<stem>.provenance.json`` is one bare DSSE envelope on one line (``payloadType``
``application/vnd.in-toto+json``, base64 ``payload``, ``signatures[].keyid`` = the key's
sha256 hint as the ``.sig`` bundles record it): the form in-toto verifiers, slsa-verifier and
``cosign verify-blob-attestation`` read, and, being one line, also a valid ``.intoto.jsonl``.
The pre-authentication encoding, the ECDSA hash choice and the trust check are signing's own,
so a key that signs ``.sig`` bundles signs provenance the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from toolkit.errors import ProvenanceError, SignatureError
from toolkit.signing import TrustedKey, _check_signed
from toolkit.signing._bundle import PAYLOAD_TYPE, _b64, hash_for, pae, public_pem, shown, strict_json

__all__ = ["MAX_ENVELOPE_BYTES", "MAX_PAYLOAD_BYTES", "open_envelope", "seal"]

# A statement over a few files with a lock's worth of dependencies is a few KB; a card is at
# most 4 MiB, so nothing derived from one is near this: anything larger is hostile.
MAX_ENVELOPE_BYTES = 2 * 1024 * 1024
MAX_PAYLOAD_BYTES = MAX_ENVELOPE_BYTES * 3 // 4
_MAX_SIGNATURES = 4


def seal(private: Any, payload: bytes) -> bytes:
    """``payload`` signed by ``private`` in a DSSE envelope: one JSON line, newline-terminated."""
    from cryptography.hazmat.primitives.asymmetric import ec

    public = private.public_key()
    signature = private.sign(pae(payload), ec.ECDSA(hash_for(public)))
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": hashlib.sha256(public_pem(public)).hexdigest(), "sig": base64.b64encode(signature).decode()}
        ],
    }
    return (json.dumps(envelope, separators=(",", ":")) + "\n").encode()


def open_envelope(raw: bytes, keys: tuple[TrustedKey, ...], where: Path) -> bytes:
    """The payload of an envelope signed by one of ``keys``; nothing in it is read before that.

    Raises: ProvenanceError (malformed, unsigned), SignatureError (untrusted key, or a
    signature that does not verify: the statement was edited).
    """
    bad = f"{where}: malformed provenance"
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise ProvenanceError(f"{bad}: {len(raw)} bytes is over the {MAX_ENVELOPE_BYTES}-byte limit")
    try:
        envelope = strict_json(raw, bad)
    except SignatureError as e:
        raise ProvenanceError(str(e)) from e
    if not isinstance(envelope, dict) or set(envelope) - {"payloadType", "payload", "signatures"}:
        raise ProvenanceError(f"{bad}: not a DSSE envelope (payloadType, payload, signatures)")
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise ProvenanceError(f"{bad}: payloadType {shown(envelope.get('payloadType'))} is not {PAYLOAD_TYPE}")
    signatures = envelope.get("signatures")
    if signatures is None or signatures == []:
        raise ProvenanceError(f"{where}: provenance is unsigned (no DSSE signature); refused")
    if not isinstance(signatures, list) or len(signatures) > _MAX_SIGNATURES:
        raise ProvenanceError(f"{bad}: signatures must list 1 to {_MAX_SIGNATURES} signatures")
    try:
        payload = _b64(envelope.get("payload"), f"{bad}: payload")
        sigs: list[bytes] = []
        hints: set[str] = set()
        for s in signatures:
            if not isinstance(s, dict):
                raise ProvenanceError(f"{bad}: a signature must be an object")
            keyid = s.get("keyid", "")
            if not isinstance(keyid, str):
                raise ProvenanceError(f"{bad}: a signature's keyid must be a string")
            if keyid:
                hints.add(keyid)
            sigs.append(_b64(s.get("sig"), f"{bad}: signature"))
    except SignatureError as e:  # _b64's one line, as a provenance error
        raise ProvenanceError(str(e)) from e
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProvenanceError(f"{bad}: payload is over the {MAX_PAYLOAD_BYTES}-byte limit")
    # One key id names the signer (as the .sig bundle's hint does); several say nothing usable.
    hint = next(iter(hints)) if len(hints) == 1 else None
    _check_signed(keys, payload, sigs, hint, where)
    return payload
