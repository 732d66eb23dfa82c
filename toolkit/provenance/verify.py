"""``toolkit verify-provenance`` and the gate's ``--require-provenance``.

The order is the cheap checks first and the subject check always: the envelope's signature
by a trusted key (nothing in the payload is read before it passes), the statement's shape,
the expectations, the set of files on disk against the subjects, and then every file's
digest, each file hashed once. There is no switch that skips the subject check: a valid
signature over a statement about other bytes proves nothing about these.
Imports neither scikit-learn nor joblib: the gate runs it before anything is unpickled.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import _files
from toolkit.errors import IntegrityError, ProvenanceError, UsageError
from toolkit.provenance.envelope import MAX_ENVELOPE_BYTES, open_envelope
from toolkit.provenance.statement import (
    DEP_BASE_IMAGE,
    DEP_DATASET,
    DEP_LOCK,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    base_image_digest,
)
from toolkit.provenance.subjects import artifact_files, digests_of
from toolkit.signing import TrustedKey, TrustedKeys, trusted_keys_from_env
from toolkit.signing._bundle import shown, strict_json

if TYPE_CHECKING:
    from toolkit.artifact import ArtifactPaths
    from toolkit.card import ModelCard

__all__ = ["Expectations", "Verified", "require_provenance", "require_trust", "verify_provenance"]

_HEX64_RE = re.compile(r"^[0-9a-f]{64}\Z")
_MAX_SUBJECTS = 64
_MAX_DEPENDENCIES = 10_000
_MAX_NAME = 255


@dataclass(frozen=True, kw_only=True, slots=True)
class Expectations:
    """What the caller requires the provenance to name (each None: not checked)."""

    base: str | None = None  # name@sha256:HEX, sha256:HEX or HEX
    lock: str | None = None  # sha256 hex of the requirements.lock
    dataset: str | None = None  # sha256 hex of the training data


@dataclass(frozen=True, kw_only=True, slots=True)
class Verified:
    """A provenance that passed: its file, its subjects, and the dependencies it names."""

    path: Path
    subjects: Mapping[str, str]  # file name -> sha256, each matched on disk
    base_image: str | None  # the base image dependency's uri without docker://, or None
    base_digest: str | None
    lock_sha256: str | None
    dataset_sha256: str | None
    statement: Mapping[str, Any]


def verify_provenance(
    artifact: str | os.PathLike[str],
    trusted_keys: TrustedKeys = None,
    *,
    expect: Expectations | None = None,
    provenance: str | os.PathLike[str] | None = None,
    known: Mapping[Path, str] | None = None,
) -> Verified:
    """Check an artifact's provenance (``<stem>.provenance.json``, or ``provenance``).

    ``known`` maps files the caller already hashed to their sha256 (the gate's ``.joblib``).
    Raises: UsageError (no trusted key, bad expectation), ProvenanceError/SignatureError (exit 3,
    one line per kind: missing, malformed, unsigned, untrusted key, altered, a subject added,
    missing or changed, an expectation not met).
    """
    from toolkit.names import artifact_paths

    expectations = _checked(expect or Expectations())
    keys = require_trust(trusted_keys)
    paths = artifact_paths(artifact)
    where = Path(provenance) if provenance is not None else paths.provenance
    raw = _read(where, paths)
    statement = _parse_statement(open_envelope(raw, keys, where), where)
    subjects = _subjects(statement, where)
    deps = _dependencies(statement, where)
    verified = Verified(
        path=where,
        subjects=subjects,
        base_image=_base_uri(deps.get(DEP_BASE_IMAGE)),
        base_digest=_sha256_of(deps.get(DEP_BASE_IMAGE), DEP_BASE_IMAGE, where),
        lock_sha256=_sha256_of(deps.get(DEP_LOCK), DEP_LOCK, where),
        dataset_sha256=_sha256_of(deps.get(DEP_DATASET), DEP_DATASET, where),
        statement=statement,
    )
    _check_expectations(verified, expectations, where)
    _check_subjects(paths, subjects, known, where)
    return verified


def require_provenance(
    paths: ArtifactPaths, card: ModelCard, trusted_keys: TrustedKeys = None, *, known: Mapping[Path, str] | None = None
) -> Verified:
    """The gate's rule: a signed provenance whose subjects are these files and whose base image,
    lock and dataset are the card's own. Raises: as ``verify_provenance``."""
    verified = verify_provenance(paths.model, trusted_keys, known=known)
    env = card.environment
    card_base = base_image_digest(env.base_image)[1] if env.base_image else None
    card_dataset = card.training.dataset_sha256 if card.training is not None else card.data.sha256
    for what, theirs, ours in (
        ("base image", verified.base_digest, card_base),
        ("requirements.lock", verified.lock_sha256, env.lock_sha256),
        ("dataset", verified.dataset_sha256, card_dataset),
    ):
        if theirs != ours:
            raise ProvenanceError(f"{verified.path}: names {what} {_short(theirs)}, its card {_short(ours)}; refused")
    if verified.base_image is not None and env.base_image is not None and verified.base_image != env.base_image:
        raise ProvenanceError(
            f"{verified.path}: names base image {shown(verified.base_image)}, its card {shown(env.base_image)}; refused"
        )
    return verified


def require_trust(trusted_keys: TrustedKeys = None) -> tuple[TrustedKey, ...]:
    """The trusted keys (given, or ``$TOOLKIT_TRUSTED_KEYS``); a provenance check without any is
    a usage error, raised before anything is read or fetched. Raises: UsageError."""
    keys = trusted_keys_from_env(trusted_keys)
    if not keys:
        raise UsageError("checking provenance needs a trusted key: --trusted-key PUB (or $TOOLKIT_TRUSTED_KEYS)")
    return keys


# -- the steps ----------------------------------------------------------------------------------


def _read(where: Path, paths: ArtifactPaths) -> bytes:
    try:
        return _files.read_regular(where, "provenance", limit=MAX_ENVELOPE_BYTES)
    except IntegrityError as e:
        if not os.path.lexists(where):
            raise ProvenanceError(
                f"{where}: no provenance for {paths.model.name} (write it with `toolkit provenance`); refused"
            ) from e
        raise ProvenanceError(f"{where}: malformed provenance: {e}") from e


def _parse_statement(payload: bytes, where: Path) -> dict[str, Any]:
    bad = f"{where}: malformed provenance"
    try:
        statement = strict_json(payload, f"{bad}: payload")
    except IntegrityError as e:
        raise ProvenanceError(str(e)) from e
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(f"{bad}: the payload is not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise ProvenanceError(f"{bad}: predicateType {shown(statement.get('predicateType'))} is not {PREDICATE_TYPE}")
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict) or not isinstance(predicate.get("buildDefinition"), dict):
        raise ProvenanceError(f"{bad}: the predicate has no buildDefinition")
    return statement


def _subjects(statement: Mapping[str, Any], where: Path) -> dict[str, str]:
    bad = f"{where}: malformed provenance"
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not 1 <= len(subjects) <= _MAX_SUBJECTS:
        raise ProvenanceError(f"{bad}: subject must list 1 to {_MAX_SUBJECTS} files")
    out: dict[str, str] = {}
    for s in subjects:
        name = s.get("name") if isinstance(s, dict) else None
        digest = s.get("digest") if isinstance(s, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not _plain_name(name) or not isinstance(sha, str) or not _HEX64_RE.match(sha):
            raise ProvenanceError(f"{bad}: each subject needs a plain file name and a sha256 digest")
        assert isinstance(name, str)
        if name in out:
            raise ProvenanceError(f"{bad}: subject {shown(name)} is listed twice")
        out[name] = sha
    return out


def _dependencies(statement: Mapping[str, Any], where: Path) -> dict[str, Mapping[str, Any]]:
    bad = f"{where}: malformed provenance"
    deps = statement["predicate"]["buildDefinition"].get("resolvedDependencies", [])
    if not isinstance(deps, list) or len(deps) > _MAX_DEPENDENCIES:
        raise ProvenanceError(f"{bad}: resolvedDependencies must be a list of at most {_MAX_DEPENDENCIES}")
    out: dict[str, Mapping[str, Any]] = {}
    for d in deps:
        if not isinstance(d, dict):
            raise ProvenanceError(f"{bad}: each resolved dependency must be an object")
        name = d.get("name")
        if name in (DEP_BASE_IMAGE, DEP_LOCK, DEP_DATASET):
            if name in out:  # two answers to "which base?" is no answer
                raise ProvenanceError(f"{bad}: resolved dependency {name!r} is listed twice")
            out[str(name)] = d
    return out


def _sha256_of(dep: Mapping[str, Any] | None, name: str, where: Path) -> str | None:
    if dep is None:
        return None
    digest = dep.get("digest")
    sha = digest.get("sha256") if isinstance(digest, dict) else None
    if not isinstance(sha, str) or not _HEX64_RE.match(sha):
        raise ProvenanceError(f"{where}: malformed provenance: resolved dependency {name!r} has no sha256 digest")
    return sha


def _base_uri(dep: Mapping[str, Any] | None) -> str | None:
    uri = dep.get("uri") if dep is not None else None
    return uri.removeprefix("docker://") if isinstance(uri, str) and uri.startswith("docker://") else None


def _check_expectations(verified: Verified, expect: Expectations, where: Path) -> None:
    if expect.base is not None:
        name, hex_digest = base_image_digest(expect.base)
        if verified.base_digest != hex_digest or (name is not None and verified.base_image != expect.base):
            named = verified.base_image or _short(verified.base_digest)
            raise ProvenanceError(f"{where}: base image is {shown(named)}, expected {expect.base}; refused")
    for what, theirs, wanted in (
        ("requirements.lock", verified.lock_sha256, expect.lock),
        ("dataset", verified.dataset_sha256, expect.dataset),
    ):
        if wanted is not None and theirs != wanted:
            raise ProvenanceError(f"{where}: {what} sha256 is {_short(theirs)}, expected {_short(wanted)}; refused")


def _check_subjects(
    paths: ArtifactPaths, subjects: Mapping[str, str], known: Mapping[Path, str] | None, where: Path
) -> None:
    on_disk = {p.name: p for p in artifact_files(paths, present_only=True)}
    # A file the caller already hashed counts as present (the remote gate: the model stays in
    # the registry, its digest the manifest's, which the card's sha256 must equal).
    on_disk |= {p.name: p for p in known or {} if p.parent == paths.model.parent}
    missing = sorted(set(subjects) - set(on_disk))
    if missing:
        names = ", ".join(shown(n) for n in missing[:5])
        raise ProvenanceError(f"{where}: subject {names} is not beside the artifact (a subject removed); refused")
    extra = sorted(set(on_disk) - set(subjects))
    if extra:
        raise ProvenanceError(f"{where}: {', '.join(extra)} is beside the artifact but not a subject; refused")
    digests = digests_of(list(on_disk.values()), known)
    changed = [n for n in sorted(subjects) if digests[n] != subjects[n]]
    if changed:
        raise ProvenanceError(f"{where}: {', '.join(changed)} changed since its provenance was written; refused")


def _checked(expect: Expectations) -> Expectations:
    if expect.base is not None:
        name, hex_digest = base_image_digest(expect.base)
        if not _HEX64_RE.match(hex_digest) or name == "":
            raise UsageError(f"--expect-base {expect.base!r}: give name@sha256:<64 hex>, sha256:<64 hex> or the hex")
    for flag, value in (("--expect-lock", expect.lock), ("--expect-dataset", expect.dataset)):
        if value is not None and not _HEX64_RE.match(value):
            raise UsageError(f"{flag} {value!r}: give a lowercase sha256 hex digest (64 characters)")
    return expect


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= _MAX_NAME
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and name.isprintable()
    )


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12] + "…"
