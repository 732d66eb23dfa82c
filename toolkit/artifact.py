"""Save and load artifacts: ``<stem>.joblib`` beside ``<stem>.card.json`` and ``<stem>.card.md``.

``load`` reads the file once, hashes exactly those bytes, checks the runtime against the
card, and only then unpickles the same bytes from memory. Nothing is unpickled before
its checksum and environment check pass, and there is no fallback to a plain joblib.load.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit.card import (
    MAX_CARD_BYTES,
    REFERENCE_SUFFIX,
    ArtifactInfo,
    DataInfo,
    Feature,
    Lineage,
    ModelCard,
    References,
    ReferenceSet,
    Training,
    jsonable,
    lineage_from,
    parse_card,
    split_from,
    training_from,
)
from toolkit.errors import (
    CardError,
    CertifiedRuntimeWarning,
    Difference,
    EnvironmentMismatch,
    EnvironmentMismatchWarning,
    IntegrityError,
    ProbeMismatch,
    UsageError,
)
from toolkit.fingerprint import Fingerprint, capture
from toolkit.identifiers import current_user, validate_name, validate_version
from toolkit.names import (
    CARD_JSON_SUFFIX,
    CARD_MD_SUFFIX,
    MODEL_SUFFIX,
    PROVENANCE_SUFFIX,
    SIG_SUFFIX,
    ArtifactPaths,
    artifact_paths,
)
from toolkit.policy import differences, validate_policy
from toolkit.signing import TrustedKeys, require_signature, write_signature
from toolkit.source_date import source_date_epoch

__all__ = [
    "CARD_JSON_SUFFIX",
    "CARD_MD_SUFFIX",
    "MODEL_SUFFIX",
    "PROVENANCE_SUFFIX",
    "REFERENCE_SUFFIX",
    "SIG_SUFFIX",
    "ArtifactPaths",
    "EnvironmentMismatchWarning",
    "Loaded",
    "artifact_paths",
    "check_companions",
    "load",
    "load_verified",
    "read_card",
    "read_reference",
    "runtime_differences",
    "save",
    "sign",
    "verify",
]


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The card beside an artifact, parsed strictly; nothing is unpickled.

    Raises: IntegrityError (missing, refused or unreadable file), CardError (invalid card).
    """
    card_path = artifact_paths(path).card_json
    data = _files.read_regular(card_path, "card", limit=MAX_CARD_BYTES)
    return parse_card(data, where=str(card_path))


def verify(path: str | os.PathLike[str], *, trusted_keys: TrustedKeys = None) -> ModelCard:
    """Integrity only: the card is valid, names this file, the ``.card.md`` is its rendering,
    and the artifact's size and sha256 match it; with trusted keys (or $TOOLKIT_TRUSTED_KEYS),
    also its signature, from the same hash pass.

    Raises: IntegrityError, CardError, SignatureError.
    """
    paths = artifact_paths(path)
    card, md, card_digests = _read_cards(paths)
    digest, size = _files.sha256_file(paths.model, "artifact")
    # With trust, the signature speaks first: it names the file that changed. It checks the
    # digests of the very bytes parsed and compared here, never a second read.
    require_signature(paths, trusted_keys, known={paths.model: digest, **card_digests})
    _check_companions(paths, card, md)
    _check_digest(paths.model, card.artifact, digest, size)
    _reference_bytes(paths, card)
    return card


def read_reference(path: str | os.PathLike[str], card: ModelCard) -> Any:
    """The reference set beside an artifact (``toolkit.reference.Recorded``), its size and
    sha256 checked against ``card`` before it is parsed; None when the card has none.

    Raises: IntegrityError.
    """
    from toolkit import reference

    paths = artifact_paths(path)
    data = _reference_bytes(paths, card)
    if data is None or card.reference is None:
        return None
    return reference.decode(data, card.reference, where=str(paths.reference))


def _reference_bytes(paths: ArtifactPaths, card: ModelCard) -> bytes | None:
    """The reference file's bytes, checked against the card; a file the card does not
    describe is refused too (it would change what a signature or a copy covers)."""
    import hashlib

    from toolkit.card.records import MAX_REFERENCE_BYTES

    info = card.reference
    if info is None:
        if os.path.lexists(paths.reference):
            raise IntegrityError(f"{paths.reference}: the card records no reference set; refused")
        return None
    if info.file != paths.reference.name:
        raise IntegrityError(f"{paths.card_json} names reference {info.file!r}, not {paths.reference.name!r}; refused")
    data = _files.read_regular(paths.reference, "reference set", limit=min(info.size, MAX_REFERENCE_BYTES))
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != info.size or digest != info.sha256:
        raise IntegrityError(
            f"{paths.reference}: sha256 {digest[:12]}… does not match the card's {info.sha256[:12]}…; refused"
        )
    return data


def _read_cards(paths: ArtifactPaths) -> tuple[ModelCard, bytes, dict[Path, str]]:
    """The card parsed from one read of ``.card.json``, the ``.card.md`` bytes from one read,
    and the sha256 of exactly those bytes: what is signature-checked is what is parsed and
    compared (no swap between the check and the use).

    Raises: IntegrityError, CardError.
    """
    import hashlib

    data = _files.read_regular(paths.card_json, "card", limit=MAX_CARD_BYTES)
    card = parse_card(data, where=str(paths.card_json))
    md = _files.read_regular(paths.card_md, "card markdown", limit=2 * MAX_CARD_BYTES)
    digests = {paths.card_json: hashlib.sha256(data).hexdigest(), paths.card_md: hashlib.sha256(md).hexdigest()}
    return card, md, digests


def sign(path: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> Path:
    """Sign an artifact's three files with a private key; write ``<stem>.sig`` atomically.

    The ``.joblib``'s digest is checked against its card first, so a tampered artifact is
    never signed. Raises: UsageError (bad key or path), IntegrityError/CardError (the artifact
    fails its card).
    """
    paths = artifact_paths(path)
    card = read_card(paths.model)
    ref = None if card.reference is None else (card.reference.sha256, card.reference.size)
    return write_signature(
        paths, key_path, model_sha256=card.artifact.sha256, model_size=card.artifact.size, reference=ref
    )


def save(
    pipeline: Any,
    path: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    probe: Any = None,
    reference: Any = None,
    held_out: tuple[Any, Any] | None = None,
    data: DataInfo | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    params: Mapping[str, Any] | None = None,
    preprocessing: Sequence[str] = (),
    algorithm: str | None = None,
    intended_use: str = "",
    limitations: str = "",
    author: str | None = None,
    overwrite: bool = False,
    training: Training | Mapping[str, Any] | None = None,
    lineage: Lineage | Mapping[str, Any] | None = None,
) -> ModelCard:
    """Pickle ``pipeline`` with joblib and write it with its card (schema 3), each file atomically.

    ``reference`` is the held-out rows (a DataFrame or a 2-D numpy array): up to
    ``toolkit.reference.CAP`` of them (a seeded sample beyond) and the pipeline's outputs on them
    go to ``<stem>.reference.json.gz``, which the card describes and hashes. ``held_out=(X, y)``
    is the same with the rows' true target: it is kept beside them in that file, and the card's
    ``data`` records the held-out set (sha256, rows, features, target, classes), so that
    ``registry compare``, ``card --plots`` and ``diff`` work on the model as on a recipe's
    (``data``'s source, n_train and split are kept; its sha256 is the held-out set's). ``probe``
    is a small fixed DataFrame or array of inputs whose outputs the card itself records
    (default: the reference's first 16 rows); one of them is required. An array's columns are
    named as the pipeline saw them (``feature_names_in_``), else ``x0``, ``x1``, ...
    ``training`` is the recipe that made the pipeline (null in the card when not given);
    ``lineage`` is ``{"parent": "NAME@VERSION", "reason": ...}`` for a retrained model.
    The pipeline is pickled once, straight into a temp file, hashing as it goes and
    recording every global the pickle imports. The card JSON is published last; if
    anything fails, every file this call wrote is removed, so a retry starts clean.
    Raises: UsageError (bad name, version, path, metric, recipe or pipeline; a reference to
    ``__main__`` or to a callable only an attack needs; files exist and not ``overwrite``;
    the disk is full or not writable, naming the path).
    """
    from concurrent.futures import ThreadPoolExecutor

    from toolkit import inputs, pickle_audit
    from toolkit import probe as probe_mod

    validate_name(name)
    validate_version(version)
    if not Path(path).name.endswith(MODEL_SUFFIX):  # artifact_paths also takes the .card.json
        raise UsageError(f"{path}: save to a {MODEL_SUFFIX} path")
    paths = artifact_paths(path)
    recipe = training_from(training)
    parent = lineage_from(lineage)
    scores = _metrics_of(metrics)
    created_at = _created_at()
    _check_pipeline(pipeline)
    target_values = None
    reference_what = "reference"
    if held_out is not None:
        if reference is not None:
            raise UsageError("give held_out=(X, y) or reference=X, not both: the held-out rows are the reference set")
        reference, target_values = _held_out_pair(pipeline, held_out)
        reference_what = "held_out"
    elif reference is not None:
        reference = inputs.as_frame(pipeline, reference, what="reference")
    if probe is not None:
        probe = inputs.as_frame(pipeline, probe, what="probe")
    elif reference is not None:
        probe = reference.head(_PROBE_ROWS)
    else:
        raise UsageError("save needs held_out=(X, y), reference= (the held-out rows) or probe= (a few input rows)")
    if not overwrite:
        for p in (paths.model, paths.reference, paths.card_json, paths.card_md):
            if os.path.lexists(p):
                raise UsageError(f"{p} already exists; refusing to overwrite it")
    try:
        paths.model.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create {paths.model.parent}: {e.strerror or e}") from e
    _files.sweep_stale_temps(paths.model.parent)
    try:
        recorded_probe = probe_mod.record(pipeline, probe)
    except Exception as e:  # an unfitted or broken pipeline, or probe rows it cannot take
        raise inputs.cannot_predict("probe", probe, e) from e
    card_fields: dict[str, Any] = {
        "name": name,
        "version": version,
        "algorithm": algorithm,
        "created_at": created_at,
        "author": author,
        "intended_use": intended_use,
        "limitations": limitations,
        "data": _data_of(data, probe)
        if target_values is None
        else _held_out_data(data, pipeline, reference, target_values),
        "metrics": scores,
        "params": params,
        "preprocessing": tuple(preprocessing),
        "probe": recorded_probe,
        "training": recipe,
        "lineage": parent,
    }

    temps: list[Path] = []
    published: list[Path] = []
    target = paths.model
    # Hashing, then fsync, beside the main thread's work; and the reference set (its outputs,
    # the file's bytes, their write and fsync), which needs nothing of the pickle, while the
    # model is being pickled and written: a model's predict and the disk release the GIL.
    pool = ThreadPoolExecutor(max_workers=3)
    reference_temp = None
    if reference is not None:
        reference_temp = pool.submit(
            _reference_temp, pipeline, reference, target_values, paths.reference, what=reference_what
        )
    try:
        tmp, f = _files.create_temp(paths.model)
        temps.append(tmp)
        with f:
            writer = _files.HashingWriter(f, pool)
            pairs = pickle_audit.dump(pipeline, writer)  # type: ignore[arg-type]
            writer.flush()
            digest = writer.hexdigest()
            # The model's fsync runs while the card is being made; it is waited for before
            # anything is published (and before the file is closed).
            synced = pool.submit(os.fsync, f.fileno())
            try:
                # Before the card: the card records the runtime's thread settings, which the
                # reference set's thread limit changes while it runs.
                reference_info = None
                if reference_temp is not None:
                    pending, reference_temp = reference_temp, None
                    try:
                        reference_tmp, reference_info = pending.result()
                    except OSError:
                        # Both files fail on a full disk, in whichever order the threads meet it:
                        # the model's own failure, when there is one, is the one named.
                        synced.result()
                        target = paths.reference
                        raise
                    temps.append(reference_tmp)
                card, card_json = _make_card(
                    pipeline, paths, pairs, digest, writer.size, reference=reference_info, **card_fields
                )
            finally:
                synced.result()
        order = [paths.model]
        if reference_info is not None:
            order.append(paths.reference)
        contents = [(paths.card_md, card.to_markdown().encode()), (paths.card_json, card_json)]
        for target, content in contents:
            temps.append(_files.write_temp(target, content))
            order.append(target)
        if reference is None and overwrite:  # an older save's reference set is not this card's
            target = paths.reference
            paths.reference.unlink(missing_ok=True)
        # Model first, card JSON last: the card is what makes the artifact loadable.
        for target, tmp in zip(order, temps, strict=True):
            _files.publish(tmp, target, overwrite=overwrite)
            published.append(target)
    except BaseException as e:
        if reference_temp is not None:  # written, or failing, on the pool's thread: never left behind
            with contextlib.suppress(BaseException):
                temps.append(reference_temp.result()[0])
        for leftover in temps:
            leftover.unlink(missing_ok=True)
        if not overwrite:  # what this call created; with overwrite the old files are gone anyway
            for done in published:
                done.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UsageError(f"cannot save {target}: {e.strerror or e}") from e
        if isinstance(e, CardError):
            raise UsageError(f"cannot save {target}: {e}") from e
        raise
    finally:
        pool.shutdown(wait=True)
    return card


def _reference_temp(pipeline: Any, rows: Any, target: Any, path: Path, *, what: str) -> tuple[Path, ReferenceSet]:
    """The reference set of ``rows`` written to a temp file beside ``path`` (fsynced), and the
    card's record of it. Raises: UsageError (rows the pipeline cannot predict), OSError."""
    import hashlib

    from toolkit import inputs
    from toolkit import reference as reference_mod

    try:
        recorded, seed = reference_mod.record(pipeline, rows, target=target)
    except Exception as e:  # rows the pipeline cannot take
        raise inputs.cannot_predict(what, rows, e) from e
    data = reference_mod.encode(recorded)
    info = reference_mod.describe(
        recorded,
        file=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        source_rows=len(rows),
        seed=seed,
    )
    return _files.write_temp(path, data), info


def _make_card(
    pipeline: Any, paths: ArtifactPaths, pairs: tuple[tuple[str, str], ...], digest: str, size: int, **fields: Any
) -> tuple[ModelCard, bytes]:
    """The card of a just-pickled pipeline, and its JSON (checked by this toolkit's own parser)."""
    from toolkit import pickle_audit
    from toolkit.reference import THREAD_LIMIT

    environment = capture(blas=True, lock=True, thread_limit=THREAD_LIMIT)
    modules = tuple(sorted({module for module, _ in pairs}))
    distributions, provided = pickle_audit.distributions_for(modules, dict(environment.packages))
    params = fields.pop("params")
    card = ModelCard(
        algorithm=fields.pop("algorithm") or _algorithm_of(pipeline),
        author=fields.pop("author") or current_user(),
        artifact=ArtifactInfo(file=paths.model.name, sha256=digest, size=size),
        params=jsonable(dict(params)) if params is not None else _params_of(pipeline),
        environment=environment,
        references=References(
            modules=modules,
            distributions=distributions,
            globals=pairs,
            local_modules=pickle_audit.local_modules(modules, provided),
        ),
        **fields,
    )
    card_json = card.to_json()
    parse_card(card_json, where="card being saved")  # never write a card this toolkit would refuse
    return card, card_json


def load(
    path: str | os.PathLike[str],
    *,
    policy: str = "strict",
    allow_mismatch: bool = False,
    trusted_keys: TrustedKeys = None,
    require_provenance: bool = False,
    checker_packages: Iterable[str] = (),
    trusted: Iterable[str] = (),
    certifications: str | os.PathLike[str] | None = None,
) -> Any:
    """Unpickle an artifact only after its checksum and this runtime pass the card.

    With ``allow_mismatch=True`` a mismatched runtime loads anyway, with an
    ``EnvironmentMismatchWarning``, and the probe predictions are re-checked.
    With ``trusted_keys`` (public key paths; $TOOLKIT_TRUSTED_KEYS adds to them) a valid
    signature by one of them is required before anything is unpickled, and the card's
    record of globals is then trusted as the signer's word. ``trusted`` names callables
    (``"MODULE.NAME"``) the loading side trusts beyond what ``toolkit.trust`` trusts by
    default (a FunctionTransformer's own function, a custom scorer).
    Raises: IntegrityError (also: a global refused, or an object that is not an estimator),
    CardError, EnvironmentMismatch (also when unpickling fails in
    a mismatched runtime), ProbeMismatch (loaded, but the probe predictions disagree),
    SignatureError (trust configured and no valid trusted signature). With ``require_provenance``,
    ProvenanceError as the gate's ``--require-provenance`` (checked before anything is unpickled).
    ``checker_packages``: distributions the loading process itself needs (a server's), not
    compared under strict when the card does not record them (``toolkit.policy.differences``).
    ``policy="certified"``: compared as strict, and a certification in ``certifications`` (a
    folder; None: $TOOLKIT_CERTIFICATIONS) for this model and this very runtime accepts the
    differences (``toolkit.certification.decide``, the gate's rule); the load then says which
    one in a ``CertifiedRuntimeWarning``. Refused certifications are named in the mismatch.
    """
    loaded = load_verified(
        path,
        policy=policy,
        allow_mismatch=allow_mismatch,
        trusted_keys=trusted_keys,
        require_provenance=require_provenance,
        checker_packages=checker_packages,
        trusted=trusted,
        certifications=certifications,
    )
    if loaded.differences:
        result = check_outputs(path, loaded)
        if not result.ok:
            raise ProbeMismatch(loaded.differences, policy=policy, detail=str(result))
    return loaded.pipeline


def check_outputs(path: str | os.PathLike[str], loaded: Loaded) -> Any:
    """Re-check a loaded pipeline: on its reference set when the card has one (same batches,
    same thread limit as at save), else on the card's probe rows. Returns a
    ``toolkit.reference.ReferenceResult`` or a ``toolkit.probe.ProbeResult``.

    Raises: IntegrityError (the reference file fails its card).
    """
    from toolkit import probe, reference

    recorded = read_reference(path, loaded.card)
    if recorded is None or loaded.card.reference is None:
        return probe.check(loaded.card.probe, loaded.pipeline)
    return reference.check(loaded.card.reference, recorded, loaded.pipeline)


@dataclass(frozen=True, kw_only=True, slots=True)
class Loaded:
    """A pipeline unpickled by ``load_verified``, with its card and the differences allowed."""

    pipeline: Any
    card: ModelCard
    differences: tuple[Difference, ...]


def load_verified(
    path: str | os.PathLike[str],
    *,
    policy: str,
    allow_mismatch: bool,
    trusted_keys: TrustedKeys = None,
    require_provenance: bool = False,
    checker_packages: Iterable[str] = (),
    trusted: Iterable[str] = (),
    certifications: str | os.PathLike[str] | None = None,
) -> Loaded:
    """The guarded unpickle shared by ``load`` and the gate; does not re-check the probe.

    Raises: as ``load``, except ProbeMismatch. Warns: EnvironmentMismatchWarning.
    """
    from toolkit import trust

    validate_policy(policy)
    trust.parse_trusted(trusted)  # a bad --trust value is a usage error before anything is read
    paths = artifact_paths(path)
    card, md, card_digests = _read_cards(paths)
    blob = _read_verified(paths.model, card.artifact)
    # _read_verified proved the bytes in memory hash to the card's sha256: no second pass;
    # the cards' digests are of the bytes parsed above.
    known = {paths.model: card.artifact.sha256, **card_digests}
    signed = require_signature(paths, trusted_keys, known=known) is not None
    guard = trust.policy_for(card.references, trusted=trusted, signed=signed)
    _check_companions(paths, card, md)
    if require_provenance:
        from toolkit.provenance.verify import require_provenance as check_provenance

        check_provenance(paths, card, trusted_keys, known=known)
    _reference_bytes(paths, card)
    diffs, why = _gate(card, policy, checker_packages, certifications, trusted_keys)
    if diffs and not allow_mismatch:
        raise EnvironmentMismatch(diffs, policy=policy, detail=why)
    if diffs:  # before unpickling, so the warning is seen even if unpickling then fails
        warnings.warn(EnvironmentMismatchWarning(str(EnvironmentMismatch(diffs, policy=policy))), stacklevel=3)
    pipeline = _unpickle(blob, paths.model, guard, diffs, policy)
    if not callable(getattr(pipeline, "predict", None)):
        raise IntegrityError(f"{paths.model}: the pickle holds a {type(pipeline).__name__}, not an estimator; refused")
    return Loaded(pipeline=pipeline, card=card, differences=diffs)


def _gate(
    card: ModelCard,
    policy: str,
    checker: Iterable[str],
    certifications: str | os.PathLike[str] | None,
    trusted_keys: TrustedKeys,
) -> tuple[tuple[Difference, ...], str]:
    """What still refuses this runtime once certifications are weighed (the gate's one rule,
    ``toolkit.certification.decide``), and under certified why none applied (the refusals, the
    remedy). Warns: CertifiedRuntimeWarning (a certification accepted it)."""
    from toolkit.certification import decide, locate

    runtime = capture(blas=False)
    diffs = runtime_differences(card, policy=policy, runtime=runtime, checker=checker)
    if not diffs or policy != "certified":
        return diffs, ""
    decision = decide(
        diffs,
        model_sha256=card.artifact.sha256,
        policy=policy,
        runtime=runtime,
        certifications=locate(certifications),
        trusted_keys=trusted_keys,
        checker=checker,
    )
    if decision.certification is None:
        return diffs, "; ".join((*decision.refused, *((decision.remedy,) if decision.remedy else ())))
    if decision.accepted:
        warnings.warn(
            CertifiedRuntimeWarning(
                f"{card.name} {card.version}: {len(decision.accepted)} runtime difference(s) accepted "
                f"by certification {decision.certification}"
            ),
            stacklevel=4,
        )
    return decision.differences, ""


def runtime_differences(
    card: ModelCard, *, policy: str, runtime: Fingerprint | None = None, checker: Iterable[str] = ()
) -> tuple[Difference, ...]:
    """How this runtime (``runtime``, else captured now) differs from the card's under ``policy``,
    local modules included (``checker``: see ``toolkit.policy.differences``)."""
    return differences(
        card.environment,
        runtime or capture(blas=False),
        policy=policy,
        referenced=card.references.distributions,
        local_modules=card.references.local_modules or (),
        checker=checker,
    )


def check_companions(paths: ArtifactPaths, card: ModelCard) -> None:
    """The card describes this very file, and the ``.card.md`` beside it is the card's own
    rendering (an edited one would tell people something the card does not say).

    Raises: IntegrityError.
    """
    _check_companions(paths, card, _files.read_regular(paths.card_md, "card markdown", limit=2 * MAX_CARD_BYTES))


def _check_companions(paths: ArtifactPaths, card: ModelCard, md: bytes) -> None:
    """``check_companions`` on ``.card.md`` bytes already read."""
    if card.artifact.file != paths.model.name:
        raise IntegrityError(f"{paths.card_json} describes {card.artifact.file!r}, not {paths.model.name!r}; refused")
    if md != card.to_markdown().encode():
        raise IntegrityError(f"{paths.card_md} is not the rendering of {paths.card_json.name}: edited; refused")


def _unpickle(blob: Any, where: Path, guard: Any, diffs: tuple[Difference, ...], policy: str) -> Any:
    from toolkit import pickle_audit

    try:
        with warnings.catch_warnings():
            # The version warnings scikit-learn may print are what the card already told us.
            warnings.simplefilter("ignore")
            return pickle_audit.load(blob, guard, where=str(where))
    except IntegrityError:
        raise
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


def _metrics_of(metrics: Mapping[str, Mapping[str, float]] | None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for section, values in (metrics or {}).items():
        out[str(section)] = {}
        for key, value in values.items():
            try:
                number = float(value)
            except (TypeError, ValueError) as e:
                raise UsageError(f"metric {section}.{key} is not a number: {value!r}") from e
            if isinstance(value, bool) or not math.isfinite(number):
                raise UsageError(f"metric {section}.{key} must be a finite number, got {value!r}")
            out[str(section)][str(key)] = number
    return out


def _check_pipeline(pipeline: Any) -> None:
    """A fitted estimator that predicts; anything else is one UsageError, not a raw traceback."""
    if not callable(getattr(pipeline, "predict", None)) or not callable(getattr(pipeline, "fit", None)):
        raise UsageError(f"cannot save a {type(pipeline).__name__}: save takes a fitted scikit-learn pipeline")
    try:
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted
    except ImportError:  # no scikit-learn: the probe run below is the check
        return
    try:
        check_is_fitted(pipeline)
    except NotFittedError as e:
        raise UsageError(f"cannot save an unfitted {type(pipeline).__name__}: fit it first") from e
    except TypeError as e:
        raise UsageError(f"cannot save a {type(pipeline).__name__}: {e}") from e


def _final_estimator(pipeline: Any) -> Any:
    steps = getattr(pipeline, "steps", None)
    return steps[-1][1] if steps else pipeline


def _algorithm_of(pipeline: Any) -> str:
    return type(_final_estimator(pipeline)).__name__


def _params_of(pipeline: Any) -> dict[str, Any]:
    estimator = _final_estimator(pipeline)
    get_params = getattr(estimator, "get_params", None)
    return jsonable(get_params(deep=False)) if callable(get_params) else {}


def _data_of(data: DataInfo | None, probe: Any) -> DataInfo:
    """The card's data section; a split given as a mapping is parsed strictly into a Split.

    Raises: UsageError naming the field.
    """
    if data is None:
        return DataInfo(features=_features_of(probe))
    split = split_from(data.split)
    return data if split is data.split else dataclasses.replace(data, split=split)


_PROBE_ROWS = 16  # the card's own few rows when only a reference set is given


def _held_out_pair(pipeline: Any, held_out: Any) -> tuple[Any, Any]:
    """``held_out=(X, y)`` as a frame the pipeline takes and a Series of as many values. Raises: UsageError."""
    from toolkit import inputs

    if not isinstance(held_out, tuple) or len(held_out) != 2:
        size = f" of {len(held_out)}" if isinstance(held_out, (tuple, list)) else ""
        raise UsageError(f"held_out must be a pair (X_test, y_test), got a {type(held_out).__name__}{size}")
    X = inputs.as_frame(pipeline, held_out[0], what="held_out")
    y = inputs.as_target(held_out[1], len(X), what="held_out")
    classes = getattr(pipeline, "classes_", None)
    if classes is not None:  # a classifier is scored on labels it can give: the others are not its held-out rows
        known = {jsonable(c) for c in classes}
        unknown = sorted({str(v) for v in jsonable(y.tolist()) if v not in known})
        if unknown:
            shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise UsageError(f"held_out: the target holds labels the classifier was not fitted on: {shown}")
    return X, y


def _held_out_data(data: DataInfo | None, pipeline: Any, X: Any, y: Any) -> DataInfo:
    """The card's ``data`` for ``held_out=(X, y)``: the held-out set's sha256 (its canonical CSV,
    then the target's), rows, features, target name and classes; ``data``'s source, n_train and
    split as given. Raises: UsageError (``data`` names another sha256, n_test or classes)."""
    import hashlib

    from toolkit.training.datasets import canonical_csv

    given = _data_of(data, X) if data is not None else DataInfo()
    target = given.target or (str(y.name) if y.name is not None else "target")
    digest = hashlib.sha256(canonical_csv(X) + canonical_csv(y.rename(target).to_frame())).hexdigest()
    classes = tuple(jsonable(c) for c in pipeline.classes_) if hasattr(pipeline, "classes_") else ()
    for field, value in (("sha256", digest), ("n_test", len(X)), ("classes", classes)):
        if getattr(given, field) not in (None, value):
            raise UsageError(f"data.{field} is the held-out set's when held_out= is given; leave it out of data")
    return dataclasses.replace(
        given, sha256=digest, n_test=len(X), features=_features_of(X), target=target, classes=classes
    )


def _features_of(frame: Any) -> tuple[Feature, ...]:
    return tuple(Feature(name=str(c), dtype=str(t)) for c, t in zip(frame.columns, frame.dtypes, strict=True))
