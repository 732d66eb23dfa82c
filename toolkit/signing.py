"""Signatures: OpenSSF model-signing v1.0 bundles (key mode) over an artifact's three files.

``<stem>.sig`` is a Sigstore bundle v0.3 (JSON) holding a DSSE envelope whose payload is an
in-toto statement v1 with predicate type ``https://model_signing/signature/v1.0``: one
``{name, algorithm, digest}`` resource per file (``.card.json``, ``.card.md``, ``.joblib``,
sorted by name, relative to the artifact's directory) and a subject digest over them. That is
what the reference ``model_signing sign key`` writes for a directory holding exactly those
files, so its ``verify key`` accepts ours and we accept its bundles. ``cryptography`` is
imported only when a key is used: the gate's start-up without trust never pays for it.

Trust: ``--trusted-key`` (the caller's list) and ``$TOOLKIT_TRUSTED_KEYS`` (``:``-separated
PEM paths) together. With any trusted key configured, ``require_signature`` is called at each
read point, after the big file was hashed (its digest is passed in, so it is hashed once) and
before anything is unpickled.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from toolkit import _files
from toolkit.errors import IntegrityError, UsageError

if TYPE_CHECKING:
    from toolkit.artifact import ArtifactPaths

__all__ = [
    "ENV_VAR",
    "MAX_BUNDLE_BYTES",
    "PREDICATE_TYPE",
    "SIG_SUFFIX",
    "SignatureError",
    "TrustedKey",
    "TrustedKeys",
    "copy_signature",
    "keygen",
    "load_public_key",
    "load_signing_key",
    "require_signature",
    "sign",
    "signature_path",
    "trusted_keys_from_env",
]

ENV_VAR = "TOOLKIT_TRUSTED_KEYS"
SIG_SUFFIX = ".sig"  # the signature beside an artifact (toolkit.artifact re-exports it)
MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# A bundle over three files is ~2 KB; anything near this is hostile, not a signature.
MAX_BUNDLE_BYTES = 256 * 1024
_MAX_KEY_BYTES = 64 * 1024
_MAX_RESOURCES = 64
# What the reference signer records as ignored beside the signature itself.
_GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
_HEX64 = frozenset("0123456789abcdef")


class SignatureError(IntegrityError):
    """No signature, a malformed bundle, an untrusted key, or a covered file changed (exit 3)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TrustedKey:
    """A public key trusted to sign artifacts, with the hint bundles use to name it."""

    key: Any  # cryptography EllipticCurvePublicKey
    hint: str  # sha256 hex of the PEM SubjectPublicKeyInfo, as the reference records it
    source: str  # the file it came from, for messages


# What the read points accept: public key paths or loaded keys; None means "only the environment's".
TrustedKeys: TypeAlias = "Iterable[str | os.PathLike[str] | TrustedKey] | None"


# -- keys ---------------------------------------------------------------------------------------


def keygen(prefix: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (ECDSA P-256, PKCS#8 PEM, mode 0600) and ``PREFIX.pub``.

    Neither file is ever overwritten: each is created beside a temp file and hard-linked
    into place, which fails when the name exists.
    Raises: UsageError (either file exists, or the directory is not writable).
    """
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    base = Path(prefix)
    key_path, pub_path = Path(f"{base}.key"), Path(f"{base}.pub")
    for p in (key_path, pub_path):
        if os.path.lexists(p):
            raise UsageError(f"{p} already exists; refusing to overwrite a key")
    private = ec.generate_private_key(ec.SECP256R1())
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        _create_exclusive(key_path, key_pem, mode=0o600)
        try:
            _create_exclusive(pub_path, _public_pem(private.public_key()), mode=0o644)
        except BaseException:
            key_path.unlink(missing_ok=True)  # never leave half a key pair
            raise
    except OSError as e:
        raise UsageError(f"cannot write the key pair {base}.key/.pub: {e.strerror or e}") from e
    return key_path, pub_path


def load_public_key(path: str | os.PathLike[str]) -> TrustedKey:
    """A trusted public key from a PEM file. Raises: UsageError (unreadable, not an EC P-256/384/521 key)."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization

    p = Path(path)
    try:
        data = _files.read_regular(p, "trusted key", limit=_MAX_KEY_BYTES)
        key = serialization.load_pem_public_key(data)
    except IntegrityError as e:
        raise UsageError(str(e)) from e
    except (ValueError, TypeError) as e:
        raise UsageError(f"trusted key {p}: not a PEM public key") from e
    _check_curve(key, f"trusted key {p}")
    return TrustedKey(key=key, hint=hashlib.sha256(_public_pem(key)).hexdigest(), source=str(p))


def trusted_keys_from_env(cli_keys: TrustedKeys = None) -> tuple[TrustedKey, ...]:
    """The keys given (paths or loaded keys) plus those in ``$TOOLKIT_TRUSTED_KEYS``, loaded once each.

    The environment always counts: a deployment that sets it cannot be bypassed by a caller
    passing a shorter list. Raises: UsageError (a key file that cannot be used).
    """
    items: list[str | os.PathLike[str] | TrustedKey] = list(cli_keys or ())
    raw = os.environ.get(ENV_VAR)
    if raw is not None and raw.strip() and not [p for p in raw.split(":") if p.strip()]:
        # "TOOLKIT_TRUSTED_KEYS=:" names no key: someone meant to require signatures and
        # would get none silently. An empty or unset variable stays "no trust from the env".
        raise UsageError(f"${ENV_VAR}={raw!r} names no key file; unset it, or list PEM paths separated by ':'")
    items += [p for p in (raw or "").split(":") if p]
    keys: dict[str, TrustedKey] = {}
    for item in items:
        key = item if isinstance(item, TrustedKey) else load_public_key(item)
        keys.setdefault(key.hint, key)
    return tuple(keys.values())


# -- signing ------------------------------------------------------------------------------------


def signature_path(paths: ArtifactPaths) -> Path:
    """``<stem>.sig`` beside the artifact."""
    return paths.signature


def sign(artifact: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Path:
    """Sign an artifact's three files with a private key; write ``<stem>.sig`` atomically.

    Each file is hashed once; the ``.joblib``'s digest is also checked against its card, so
    a tampered artifact is never signed.
    Raises: UsageError (bad key or path), IntegrityError/CardError (the artifact fails its card).
    """
    from toolkit.artifact import artifact_paths, read_card

    private = load_signing_key(key_path)
    paths = artifact_paths(artifact)
    card = read_card(paths.model)
    digests = {}
    for p in (paths.card_json, paths.card_md, paths.model):
        digest, size = _files.sha256_file(p, "artifact file")
        digests[p.name] = digest
        if p == paths.model and (digest != card.artifact.sha256 or size != card.artifact.size):
            raise IntegrityError(f"{p}: sha256 does not match its card; refusing to sign it")
    target = signature_path(paths)
    bundle = _bundle(private, _statement(paths.stem, digests, target.name))
    _files.publish(_files.write_temp(target, bundle), target, overwrite=True)
    return target


def _statement(subject: str, digests: Mapping[str, str], sig_name: str) -> bytes:
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


def _bundle(private: Any, payload: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec

    public = private.public_key()
    signature = private.sign(_pae(payload), ec.ECDSA(_hash_for(public)))
    bundle = {
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": hashlib.sha256(_public_pem(public)).hexdigest()},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def _pae(payload: bytes) -> bytes:
    # DSSE v1 pre-authentication encoding: what is signed is never the bare payload.
    return b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)


# -- verifying ----------------------------------------------------------------------------------


def require_signature(
    paths: ArtifactPaths,
    trusted_keys: TrustedKeys = None,
    *,
    known: Mapping[Path, str] | None = None,
) -> dict[str, str] | None:
    """With trust configured, require ``<stem>.sig`` by a trusted key covering exactly the three files.

    ``known`` maps files the caller already hashed to their sha256, so no file is hashed
    twice; the others (the two small cards) are hashed here. Returns the verified
    name -> digest map, or None when no trusted key is configured (nothing is checked).
    Raises: SignatureError, one line saying which: no signature, malformed bundle, untrusted
    key, invalid signature, a covered file changed, or a file added to / missing from the set.
    UsageError for a trusted key file that cannot be used.
    """
    keys = trusted_keys_from_env(trusted_keys)
    if not keys:
        return None
    sig = signature_path(paths)
    try:
        raw = _files.read_regular(sig, "signature", limit=MAX_BUNDLE_BYTES)
    except IntegrityError as e:
        if not os.path.lexists(sig):
            raise SignatureError(f"{sig}: no signature; trust is configured, so {paths.model.name} is refused") from e
        raise SignatureError(f"{sig}: malformed signature bundle: {e}") from e
    payload, signatures, hint = _parse_bundle(raw, sig)
    _check_signed(keys, payload, signatures, hint, sig)
    signed = _parse_statement(payload, sig)
    covered = {p.name: p for p in (paths.card_json, paths.card_md, paths.model)}
    extra = sorted(set(signed) - set(covered))
    missing = sorted(set(covered) - set(signed))
    if extra or missing:
        parts = []
        if extra:
            # Names from the payload are shown quoted: a newline in one must not make a second line.
            shown = ", ".join(n if n.isprintable() and len(n) <= 80 else _shown(n) for n in extra[:5])
            parts.append(f"signed set has {shown}{', ...' if len(extra) > 5 else ''}, which the artifact does not")
        if missing:
            parts.append(f"{', '.join(missing)} is not in the signed set")
        raise SignatureError(f"{sig}: {'; '.join(parts)}; refused")
    digests = dict(known or {})
    changed = []
    for name, p in covered.items():
        digest = digests.get(p)
        if digest is None:
            digest, _ = _files.sha256_file(p, "artifact file")
        if digest != signed[name]:
            changed.append(name)
    if changed:
        raise SignatureError(f"{sig}: {', '.join(changed)} changed since it was signed; refused")
    return signed


def copy_signature(
    src: ArtifactPaths, dest_dir: Path, trusted_keys: TrustedKeys = None, *, known: Mapping[Path, str] | None = None
) -> None:
    """Copy ``<stem>.sig`` (if there is one) into ``dest_dir``, where the three files were copied,
    then require the signature of the copies: what is checked is what stays (the registry's add).

    ``known`` maps the copies already hashed (the ``.joblib``) to their digests.
    Raises: as ``require_signature``; IntegrityError for a signature that is not a regular file.
    """
    from toolkit.artifact import artifact_paths

    sig = signature_path(src)
    if os.path.lexists(sig):
        data = _files.read_regular(sig, "signature", limit=MAX_BUNDLE_BYTES)
        with open(dest_dir / sig.name, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    require_signature(artifact_paths(dest_dir / src.model.name), trusted_keys, known=known)


def _strict_json(raw: bytes, what: str) -> Any:
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


def _parse_bundle(raw: bytes, sig: Path) -> tuple[bytes, list[bytes], str | None]:
    where = f"{sig}: malformed signature bundle"
    bundle = _strict_json(raw, where)
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
        raise SignatureError(f"{where}: payloadType {_shown(payload_type)} is not {PAYLOAD_TYPE}")
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


def _check_signed(
    keys: tuple[TrustedKey, ...], payload: bytes, signatures: list[bytes], hint: str | None, sig: Path
) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    # The hint names the signer's key; try that one first, but never take the hint's word for it.
    candidates = sorted(keys, key=lambda k: k.hint != hint)
    message = _pae(payload)
    for key in candidates:
        for raw in signatures:
            try:
                key.key.verify(raw, message, ec.ECDSA(_hash_for(key.key)))
            except (InvalidSignature, ValueError):
                continue
            if hint and hint != key.hint:  # as the reference verifier: a hint must name the signing key
                raise SignatureError(f"{sig}: malformed signature bundle: the key hint does not match the signing key")
            return
    if hint and all(k.hint != hint for k in keys):
        shown = hint[:16] + "…" if _is_hex64(hint) else _shown(hint)  # the hint is not signed: quote it
        raise SignatureError(f"{sig}: signed by an untrusted key (key sha256 {shown}); refused")
    raise SignatureError(f"{sig}: the signature does not verify with any trusted key (bundle altered); refused")


def _parse_statement(payload: bytes, sig: Path) -> dict[str, str]:
    where = f"{sig}: malformed signature bundle"
    statement = _strict_json(payload, f"{where}: payload")
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"{where}: payload is not an in-toto statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"{where}: predicateType {_shown(statement.get('predicateType'))} is not {PREDICATE_TYPE}")
    predicate = statement.get("predicate")
    subjects = statement.get("subject")
    if not isinstance(predicate, dict) or not isinstance(subjects, list) or len(subjects) != 1:
        raise SignatureError(f"{where}: the statement needs one subject and a predicate")
    subject = subjects[0]
    digest_map = subject.get("digest") if isinstance(subject, dict) else None
    root = digest_map.get("sha256") if isinstance(digest_map, dict) else None
    if not _is_hex64(root):
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
        if not isinstance(name, str) or not name or len(name) > 255 or not _is_hex64(digest):
            raise SignatureError(f"{where}: each resource needs a name and a sha256 hex digest")
        if name in signed:
            raise SignatureError(f"{where}: resource {_shown(name)} is listed twice")
        signed[name] = str(digest)
    # The subject digest is over the resources' digests in listed order (as the reference checks).
    computed = hashlib.sha256(b"".join(bytes.fromhex(d) for d in signed.values())).hexdigest()
    if computed != root:
        raise SignatureError(f"{where}: the subject digest does not match the resources")
    return signed


# -- helpers ------------------------------------------------------------------------------------


def load_signing_key(key_path: str | os.PathLike[str]) -> Any:
    """The private key from ``toolkit keygen`` (unencrypted PEM, NIST curve); callers check it
    before long work (training) rather than after. Raises: UsageError."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization

    path = Path(key_path)
    try:
        data = _files.read_regular(path, "signing key", limit=_MAX_KEY_BYTES)
        key = serialization.load_pem_private_key(data, password=None)
    except IntegrityError as e:
        raise UsageError(str(e)) from e
    except (ValueError, TypeError) as e:
        raise UsageError(f"signing key {path}: not an unencrypted PEM private key") from e
    _check_curve(key, f"signing key {path}")
    return key


def _require_cryptography() -> None:
    # Only signing and trust need it; an image built from an older lock still gates without it.
    try:
        import cryptography  # noqa: F401
    except ImportError as e:
        raise UsageError("signatures need the `cryptography` package, which is not installed here") from e


def _check_curve(key: Any, what: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    curve = getattr(key, "curve", None)
    if not isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) or curve is None:
        raise UsageError(f"{what}: not an ECDSA key (NIST P-256, P-384 or P-521)")
    if curve.name not in _CURVES:
        raise UsageError(f"{what}: curve {curve.name} is not NIST P-256, P-384 or P-521")


def _hash_for(key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    size = key.curve.key_size
    return hashes.SHA256() if size == 256 else hashes.SHA384() if size == 384 else hashes.SHA512()


def _public_pem(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def _create_exclusive(final: Path, data: bytes, *, mode: int) -> None:
    # The temp file is born with `mode` (0600 for a private key: never readable by others,
    # not even for an instant); the hard link publishes it only if the name is free.
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, final)
        except FileExistsError as e:
            raise UsageError(f"{final} already exists; refusing to overwrite a key") from e
    finally:
        tmp.unlink(missing_ok=True)
    _files.fsync_dir(final.parent)


def _is_hex64(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
