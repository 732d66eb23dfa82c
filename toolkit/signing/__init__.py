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

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from toolkit import _files, env
from toolkit.errors import IntegrityError, SignatureError, UsageError
from toolkit.signing._bundle import (
    MAX_BUNDLE_BYTES,
    PREDICATE_TYPE,
    envelope,
    hash_for,
    is_hex64,
    pae,
    parse_bundle,
    parse_statement,
    public_pem,
    shown,
    statement,
)

if TYPE_CHECKING:
    from toolkit.artifact import ArtifactPaths

__all__ = [
    "ENV_VAR",
    "MAX_BUNDLE_BYTES",
    "PREDICATE_TYPE",
    "SignatureError",
    "TrustedKey",
    "TrustedKeys",
    "copy_signature",
    "keygen",
    "load_public_key",
    "load_signing_key",
    "require_signature",
    "trusted_keys_from_env",
    "write_signature",
]

ENV_VAR = env.TRUSTED_KEYS
_MAX_KEY_BYTES = 64 * 1024
_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}


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
    _create_exclusive(key_path, key_pem, mode=0o600)
    try:
        _create_exclusive(pub_path, public_pem(private.public_key()), mode=0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)  # never leave half a key pair
        raise
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
    return TrustedKey(key=key, hint=hashlib.sha256(public_pem(key)).hexdigest(), source=str(p))


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


def write_signature(
    paths: ArtifactPaths,
    key_path: str | os.PathLike[str],
    *,
    model_sha256: str,
    model_size: int,
    reference: tuple[str, int] | None = None,
) -> Path:
    """Sign an artifact's files (the three, and the reference set when there is one) with a
    private key; write ``<stem>.sig`` atomically.

    Each file is hashed once; the ``.joblib``'s digest is also checked against the card's
    (``model_sha256``, ``model_size``, which the caller read), and the reference set's against
    ``reference`` (the card's sha256 and size, or None: the card has none), so a tampered
    artifact is never signed. ``toolkit.artifact.sign`` is the entry point that reads the card.
    Raises: UsageError (bad key or path), IntegrityError (the artifact fails its card).
    """
    private = load_signing_key(key_path)
    digests = {}
    for p in paths.files():  # the three, and the reference set when there is one
        digest, size = _files.sha256_file(p, "artifact file")
        digests[p.name] = digest
        if p == paths.model and (digest != model_sha256 or size != model_size):
            raise IntegrityError(f"{p}: sha256 does not match its card; refusing to sign it")
        if p == paths.reference and (reference is None or (digest, size) != reference):
            raise IntegrityError(f"{p}: sha256 does not match its card; refusing to sign it")
    if reference is not None and paths.reference.name not in digests:
        raise IntegrityError(f"{paths.reference}: missing; its card records a reference set; refusing to sign it")
    target = paths.signature
    bundle = envelope(private, statement(paths.stem, digests, target.name))
    try:
        _files.publish(_files.write_temp(target, bundle), target, overwrite=True)
    except OSError as e:  # write_temp and publish leave no temp behind
        raise _files.write_failed(target, e) from e
    return target


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
    sig = paths.signature
    try:
        raw = _files.read_regular(sig, "signature", limit=MAX_BUNDLE_BYTES)
    except IntegrityError as e:
        if not os.path.lexists(sig):
            raise SignatureError(f"{sig}: no signature; trust is configured, so {paths.model.name} is refused") from e
        raise SignatureError(f"{sig}: malformed signature bundle: {e}") from e
    payload, signatures, hint = parse_bundle(raw, sig)
    _check_signed(keys, payload, signatures, hint, sig)
    signed = parse_statement(payload, sig)
    covered = {p.name: p for p in sorted(paths.files(), key=lambda p: p.name)}  # messages name them in this order
    extra = sorted(set(signed) - set(covered))
    missing = sorted(set(covered) - set(signed))
    if extra or missing:
        parts = []
        if extra:
            # Names from the payload are shown quoted: a newline in one must not make a second line.
            listed = ", ".join(n if n.isprintable() and len(n) <= 80 else shown(n) for n in extra[:5])
            parts.append(f"signed set has {listed}{', ...' if len(extra) > 5 else ''}, which the artifact does not")
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
    src: ArtifactPaths,
    dest: ArtifactPaths,
    trusted_keys: TrustedKeys = None,
    *,
    known: Mapping[Path, str] | None = None,
) -> None:
    """Copy ``<stem>.sig`` (if there is one) beside ``dest``, where the three files were copied,
    then require the signature of the copies: what is checked is what stays (the registry's add).

    ``known`` maps the copies already hashed (the ``.joblib``) to their digests.
    Raises: as ``require_signature``; IntegrityError for a signature that is not a regular file.
    """
    sig = src.signature
    if os.path.lexists(sig):
        data = _files.read_regular(sig, "signature", limit=MAX_BUNDLE_BYTES)
        try:
            with open(dest.signature, "xb") as f:
                _files.write_all(f, data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # the copy is in the caller's staging folder, which it removes
            raise _files.write_failed(dest.signature, e) from e
    require_signature(dest, trusted_keys, known=known)


def _check_signed(
    keys: tuple[TrustedKey, ...], payload: bytes, signatures: list[bytes], hint: str | None, sig: Path
) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    # The hint names the signer's key; try that one first, but never take the hint's word for it.
    candidates = sorted(keys, key=lambda k: k.hint != hint)
    message = pae(payload)
    for key in candidates:
        for raw in signatures:
            try:
                key.key.verify(raw, message, ec.ECDSA(hash_for(key.key)))
            except (InvalidSignature, ValueError):
                continue
            if hint and hint != key.hint:  # as the reference verifier: a hint must name the signing key
                raise SignatureError(f"{sig}: malformed signature bundle: the key hint does not match the signing key")
            return
    if hint and all(k.hint != hint for k in keys):
        named = hint[:16] + "…" if is_hex64(hint) else shown(hint)  # the hint is not signed: quote it
        raise SignatureError(f"{sig}: signed by an untrusted key (key sha256 {named}); refused")
    raise SignatureError(f"{sig}: the signature does not verify with any trusted key (bundle altered); refused")


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


def _create_exclusive(final: Path, data: bytes, *, mode: int) -> None:
    # Born with `mode` (0600 for a private key); the hard link publishes it only if the name is free.
    _files.save(final, data, overwrite=False, mode=mode, exists=f"{final} already exists; refusing to overwrite a key")
