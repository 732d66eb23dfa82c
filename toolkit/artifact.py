"""Save and load artifacts: ``<stem>.joblib`` beside ``<stem>.card.json`` and ``<stem>.card.md``.

``load`` reads the file once, hashes exactly those bytes, checks the runtime against the
card, and only then unpickles the same bytes from memory. Nothing is unpickled before
its checksum and environment check pass, and there is no fallback to a plain joblib.load.
"""

from __future__ import annotations

import getpass
import hashlib
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit.card import (
    MAX_CARD_BYTES,
    NAME_RE,
    SEMVER_RE,
    ArtifactInfo,
    DataInfo,
    Feature,
    ModelCard,
    References,
    jsonable,
    parse_card,
)
from toolkit.errors import Difference, EnvironmentMismatch, IntegrityError, ProbeMismatch, UsageError
from toolkit.fingerprint import capture
from toolkit.policy import differences, validate_policy
from toolkit.source_date import source_date_epoch
from toolkit.signing import TrustedKeys, require_signature

__all__ = [
    "ArtifactPaths",
    "EnvironmentMismatchWarning",
    "Loaded",
    "artifact_paths",
    "load",
    "load_verified",
    "read_card",
    "save",
    "verify",
]

_MODEL_SUFFIX = ".joblib"
_CARD_JSON_SUFFIX = ".card.json"
_CARD_MD_SUFFIX = ".card.md"


class EnvironmentMismatchWarning(UserWarning):
    """Emitted when ``load(..., allow_mismatch=True)`` loads in a runtime that differs."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ArtifactPaths:
    """The three files of one artifact."""

    model: Path
    card_json: Path
    card_md: Path


def artifact_paths(path: str | os.PathLike[str]) -> ArtifactPaths:
    """The three paths for an artifact given its ``.joblib`` (or ``.card.json``) path.

    Raises: UsageError for any other file name.
    """
    p = Path(path)
    name = p.name
    if name.endswith(_MODEL_SUFFIX):
        stem = name[: -len(_MODEL_SUFFIX)]
    elif name.endswith(_CARD_JSON_SUFFIX):
        stem = name[: -len(_CARD_JSON_SUFFIX)]
    else:
        raise UsageError(f"{p}: an artifact path ends in {_MODEL_SUFFIX}")
    if not stem:
        raise UsageError(f"{p}: the artifact file name has no stem")
    return ArtifactPaths(
        model=p.with_name(stem + _MODEL_SUFFIX),
        card_json=p.with_name(stem + _CARD_JSON_SUFFIX),
        card_md=p.with_name(stem + _CARD_MD_SUFFIX),
    )


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The card beside an artifact, parsed strictly; nothing is unpickled.

    Raises: IntegrityError (missing, refused or unreadable file), CardError (invalid card).
    """
    card_path = artifact_paths(path).card_json
    data = _files.read_regular(card_path, "card", limit=MAX_CARD_BYTES)
    return parse_card(data, where=str(card_path))


def verify(path: str | os.PathLike[str], *, trusted_keys: TrustedKeys = None) -> ModelCard:
    """Integrity only: the card is valid and the artifact's size and sha256 match it; with
    trusted keys (or $TOOLKIT_TRUSTED_KEYS), also its signature, from the same hash pass.

    Raises: IntegrityError, CardError, SignatureError.
    """
    paths = artifact_paths(path)
    card = read_card(paths.model)
    digest, size = _files.sha256_file(paths.model, "artifact")
    require_signature(paths, trusted_keys, known={paths.model: digest})
    _check_digest(paths.model, card.artifact, digest, size)
    return card


def save(
    pipeline: Any,
    path: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    probe: Any,
    data: DataInfo | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    params: Mapping[str, Any] | None = None,
    preprocessing: Sequence[str] = (),
    algorithm: str | None = None,
    intended_use: str = "",
    limitations: str = "",
    author: str | None = None,
    overwrite: bool = False,
) -> ModelCard:
    """Pickle ``pipeline`` with joblib and write it with its card, each file atomically.

    ``probe`` is a small fixed DataFrame of inputs whose outputs the card records. The
    card JSON is written last: an artifact without its card is refused on load, so a
    crash part-way never leaves something loadable and wrong.
    Raises: UsageError (bad name, version or path; files exist and not ``overwrite``).
    """
    import joblib

    from toolkit import probe as probe_mod
    from toolkit._pickle_refs import distributions_for, referenced_modules

    if not NAME_RE.match(name):
        raise UsageError(f"invalid name {name!r}: use lowercase letters, digits, '.', '_' or '-' (max 64)")
    if not SEMVER_RE.match(version):
        raise UsageError(f"invalid version {version!r}: use a semantic version such as 1.0.0")
    paths = artifact_paths(path)
    if not paths.model.name.endswith(_MODEL_SUFFIX):
        raise UsageError(f"{path}: save to a {_MODEL_SUFFIX} path")
    if not overwrite:
        for p in (paths.model, paths.card_json, paths.card_md):
            if os.path.lexists(p):
                raise UsageError(f"{p} already exists; refusing to overwrite it")
    paths.model.parent.mkdir(parents=True, exist_ok=True)

    buffer = io.BytesIO()
    joblib.dump(pipeline, buffer)
    blob = buffer.getvalue()

    environment = capture(blas=True)
    modules = referenced_modules(pipeline)
    # joblib's own array wrapper is in the file but not in a plain pickle.
    modules = tuple(sorted({*modules, "joblib.numpy_pickle"}))
    card = ModelCard(
        name=name,
        version=version,
        algorithm=algorithm or _algorithm_of(pipeline),
        created_at=_created_at(),
        author=author or _author(),
        intended_use=intended_use,
        limitations=limitations,
        artifact=ArtifactInfo(file=paths.model.name, sha256=hashlib.sha256(blob).hexdigest(), size=len(blob)),
        data=data or DataInfo(features=_features_of(probe)),
        metrics={section: {k: float(v) for k, v in values.items()} for section, values in (metrics or {}).items()},
        params=jsonable(dict(params)) if params is not None else _params_of(pipeline),
        preprocessing=tuple(preprocessing),
        environment=environment,
        references=References(modules=modules, distributions=distributions_for(modules, dict(environment.packages))),
        probe=probe_mod.record(pipeline, probe),
    )
    card_json = card.to_json()
    parse_card(card_json, where="card being saved")  # never write a card this toolkit would refuse

    # Model first, card JSON last: the card is what makes the artifact loadable.
    for target, content in (
        (paths.model, blob),
        (paths.card_md, card.to_markdown().encode()),
        (paths.card_json, card_json),
    ):
        _files.publish(_files.write_temp(target, content), target, overwrite=overwrite)
    return card


def load(
    path: str | os.PathLike[str],
    *,
    policy: str = "strict",
    allow_mismatch: bool = False,
    trusted_keys: TrustedKeys = None,
) -> Any:
    """Unpickle an artifact only after its checksum and this runtime pass the card.

    With ``allow_mismatch=True`` a mismatched runtime loads anyway, with an
    ``EnvironmentMismatchWarning``, and the probe predictions are re-checked.
    With ``trusted_keys`` (public key paths; $TOOLKIT_TRUSTED_KEYS adds to them) a valid
    signature by one of them is required before anything is unpickled.
    Raises: IntegrityError, CardError, EnvironmentMismatch (also when unpickling fails in
    a mismatched runtime), ProbeMismatch (loaded, but the probe predictions disagree),
    SignatureError (trust configured and no valid trusted signature).
    """
    from toolkit import probe

    loaded = load_verified(path, policy=policy, allow_mismatch=allow_mismatch, trusted_keys=trusted_keys)
    if loaded.differences:
        result = probe.check(loaded.card.probe, loaded.pipeline)
        if not result.ok:
            raise ProbeMismatch(loaded.differences, policy=policy, detail=str(result))
    return loaded.pipeline


@dataclass(frozen=True, kw_only=True, slots=True)
class Loaded:
    """A pipeline unpickled by ``load_verified``, with its card and the differences allowed."""

    pipeline: Any
    card: ModelCard
    differences: tuple[Difference, ...]


def load_verified(
    path: str | os.PathLike[str], *, policy: str, allow_mismatch: bool, trusted_keys: TrustedKeys = None
) -> Loaded:
    """The guarded unpickle shared by ``load`` and the gate; does not re-check the probe.

    Raises: as ``load``, except ProbeMismatch. Warns: EnvironmentMismatchWarning.
    """
    validate_policy(policy)
    paths = artifact_paths(path)
    card = read_card(paths.model)
    blob = _read_verified(paths.model, card.artifact)
    # _read_verified proved the bytes in memory hash to the card's sha256: no second pass.
    require_signature(paths, trusted_keys, known={paths.model: card.artifact.sha256})
    diffs = differences(card.environment, capture(blas=False), policy=policy, referenced=card.references.distributions)
    if diffs and not allow_mismatch:
        raise EnvironmentMismatch(diffs, policy=policy)
    if diffs:  # before unpickling, so the warning is seen even if unpickling then fails
        warnings.warn(EnvironmentMismatchWarning(str(EnvironmentMismatch(diffs, policy=policy))), stacklevel=3)
    return Loaded(pipeline=_unpickle(blob, paths.model, diffs, policy), card=card, differences=diffs)


def _unpickle(blob: Any, where: Path, diffs: tuple[Difference, ...], policy: str) -> Any:
    import joblib

    try:
        with warnings.catch_warnings():
            # The version warnings scikit-learn may print are what the card already told us.
            warnings.simplefilter("ignore")
            return joblib.load(_files.MemoryReader(blob))
    except Exception as e:
        reason = f"unpickling failed: {type(e).__name__}: {e}"
        if diffs:
            raise EnvironmentMismatch(diffs, policy=policy, detail=reason) from e
        raise IntegrityError(f"{where}: {reason}") from e


def _read_verified(path: Path, info: ArtifactInfo) -> Any:
    """The artifact's bytes, read once into private memory; these exact bytes are hashed
    here and later unpickled, so a file swapped after the check changes nothing."""
    buffer, digest = _files.read_and_hash(path, "artifact", info.size)
    _check_digest(path, info, digest, info.size)
    return buffer


def _check_digest(path: Path, info: ArtifactInfo, digest: str, size: int) -> None:
    if size != info.size:
        raise IntegrityError(f"{path}: size {size} does not match the card's {info.size}; refused")
    if digest != info.sha256:
        raise IntegrityError(f"{path}: sha256 {digest[:12]}… does not match the card's {info.sha256[:12]}…; refused")


def _created_at() -> str:
    epoch = source_date_epoch()  # the one rule for it (toolkit.source_date); raises UsageError
    if epoch is not None:
        moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    else:
        moment = datetime.now(tz=timezone.utc).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def _author() -> str:
    try:
        return os.environ.get("TOOLKIT_AUTHOR") or getpass.getuser()
    except (KeyError, OSError):  # a container uid with no passwd entry
        return "unknown"


def _final_estimator(pipeline: Any) -> Any:
    steps = getattr(pipeline, "steps", None)
    return steps[-1][1] if steps else pipeline


def _algorithm_of(pipeline: Any) -> str:
    return type(_final_estimator(pipeline)).__name__


def _params_of(pipeline: Any) -> dict[str, Any]:
    estimator = _final_estimator(pipeline)
    get_params = getattr(estimator, "get_params", None)
    return jsonable(get_params(deep=False)) if callable(get_params) else {}


def _features_of(frame: Any) -> tuple[Feature, ...]:
    return tuple(Feature(name=str(c), dtype=str(t)) for c, t in zip(frame.columns, frame.dtypes))
