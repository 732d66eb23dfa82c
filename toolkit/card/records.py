"""The card's records: what one saved pipeline is, as typed frozen values, and their JSON form.

The strict parser is ``toolkit.card.parse``; the fixed Markdown rendering is
``toolkit.card.render``. Nothing here imports the loader (``toolkit.pickle_audit``): the
loader imports ``LocalModule`` from here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit import identifiers as _identifiers
from toolkit.errors import UsageError
from toolkit.fingerprint import Fingerprint

__all__ = [
    "MAX_CARD_BYTES",
    "MAX_REFERENCE_BYTES",
    "NAME_RE",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "SEMVER_RE",
    "ArtifactInfo",
    "DataInfo",
    "Feature",
    "Lineage",
    "LocalModule",
    "ModelCard",
    "Probe",
    "ReferenceSet",
    "References",
    "Split",
    "Training",
    "jsonable",
    "require_schema2",
    "require_schema3",
]

# What save writes. Every schema in SCHEMAS is read, so an older artifact stays valid.
SCHEMA_VERSION = 3
SCHEMAS = (1, 2, 3)
# A card is shallow (environment.blas[i].field is 4 levels); anything far deeper is an
# attack on the parser (and on every json.dumps after it), refused as a card error.
MAX_DEPTH = 64
# Checked before a card is read: a card is small (the probe is a few rows), so anything
# larger is not a card and must not be parsed into memory.
MAX_CARD_BYTES = 4 * 1024 * 1024
# The reference-set file beside the card (toolkit.reference): 2,000 rows of a few hundred
# columns compress to a few MB; anything far larger is not ours and is not read.
MAX_REFERENCE_BYTES = 64 * 1024 * 1024

# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
# One rule per identifier (toolkit.identifiers); kept under these names for importers.
NAME_RE = _identifiers.NAME_RE
SEMVER_RE = _identifiers.VERSION_RE

Scalar = str | int | float | bool


@dataclass(frozen=True, kw_only=True, slots=True)
class ArtifactInfo:
    """The pickled pipeline the card describes."""

    file: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Feature:
    """One input column and its dtype at training time."""

    name: str
    dtype: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Split:
    """How the held-out set was cut from the dataset: rebuilds it exactly."""

    test_size: float  # between 0 and 1
    seed: int  # >= 0

    def to_dict(self) -> dict[str, Any]:
        return {"test_size": self.test_size, "seed": self.seed}


@dataclass(frozen=True, kw_only=True, slots=True)
class DataInfo:
    """Where the training data came from, and its version (sha256)."""

    source: str | None = None
    sha256: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    features: tuple[Feature, ...] = ()
    target: str | None = None
    classes: tuple[Scalar, ...] | None = None
    split: Split | None = None  # rebuilds the held-out set

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "features": [{"name": f.name, "dtype": f.dtype} for f in self.features],
            "target": self.target,
            "classes": None if self.classes is None else list(self.classes),
            "split": None if self.split is None else self.split.to_dict(),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class LocalModule:
    """A module the pickle needs that no installed distribution provides, and its source's sha256."""

    module: str
    sha256: str


@dataclass(frozen=True, kw_only=True, slots=True)
class References:
    """What unpickling the artifact imports, recorded while it was pickled."""

    modules: tuple[str, ...]  # every module a GLOBAL/STACK_GLOBAL opcode names
    distributions: tuple[str, ...]  # the distributions providing them, closed over their requirements
    globals: tuple[tuple[str, str], ...] | None = None  # schema 2: every (module, name) pair, sorted
    local_modules: tuple[LocalModule, ...] | None = None  # schema 2: user code no distribution provides

    def to_dict(self, schema: int) -> dict[str, Any]:
        d: dict[str, Any] = {"modules": list(self.modules), "distributions": list(self.distributions)}
        if schema >= 2:
            d["globals"] = [list(pair) for pair in self.globals or ()]
            d["local_modules"] = [{"module": m.module, "sha256": m.sha256} for m in self.local_modules or ()]
        return d


@dataclass(frozen=True, kw_only=True, slots=True)
class Training:
    """The resolved training recipe: enough to retrain the same model from the card alone."""

    dataset_source: str  # as given to the trainer: builtin:NAME or a path
    dataset_sha256: str
    target: str | None
    model: str  # the model kind (gradient_boosting, random_forest, ...)
    params: Mapping[str, Any]  # every hyperparameter of that kind, defaults filled in
    preprocessing: Mapping[str, Any]  # e.g. {"scaler": "standard"}
    test_size: float
    seed: int
    cv_folds: int
    # Optional keys, written only when set (a recipe without them reads back the same): the
    # task ("classification" or "regression"; null: decided by the data's rule again), and the
    # packages besides scikit-learn that an estimator import path in ``model`` was allowed from.
    task: str | None = None
    allow_modules: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "dataset": {"source": self.dataset_source, "sha256": self.dataset_sha256},
            "target": self.target,
            "model": self.model,
            "params": dict(self.params),
            "preprocessing": dict(self.preprocessing),
            "test_size": self.test_size,
            "seed": self.seed,
            "cv_folds": self.cv_folds,
        }
        if self.task is not None:
            d["task"] = self.task
        if self.allow_modules:
            d["allow_modules"] = list(self.allow_modules)
        return d


@dataclass(frozen=True, kw_only=True, slots=True)
class Lineage:
    """Where a retrained model came from."""

    parent: str  # NAME@VERSION
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"parent": self.parent, "reason": self.reason}


@dataclass(frozen=True, kw_only=True, slots=True)
class Probe:
    """A few fixed inputs and the pipeline's outputs on them, to re-check behaviour later."""

    columns: tuple[str, ...]
    dtypes: tuple[str, ...]
    rows: tuple[tuple[Scalar | None, ...], ...]
    predictions: tuple[Scalar | None, ...]
    probabilities: tuple[tuple[float, ...], ...] | None
    tolerance: float  # max absolute difference allowed on numeric outputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "dtypes": list(self.dtypes),
            "rows": [list(r) for r in self.rows],
            "predictions": list(self.predictions),
            "probabilities": None if self.probabilities is None else [list(p) for p in self.probabilities],
            "tolerance": self.tolerance,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ReferenceSet:
    """The reference-set file beside the card (schema 3): held-out rows and the pipeline's
    outputs on them, computed in fixed batches under a fixed thread limit (``toolkit.reference``).
    """

    file: str  # "<stem>.reference.json.gz", beside the card
    sha256: str
    size: int
    rows: int  # rows in the file
    source_rows: int  # held-out rows it was taken from (rows < source_rows: sampled)
    seed: int | None  # the sampling seed (None: every row kept, in order)
    batch_size: int  # rows per predict call, at save and at every re-check
    thread_limit: int  # BLAS and OpenMP threads, at save and at every re-check
    outputs: tuple[str, ...]  # "labels", "probabilities", "decision_values", "values"
    tolerance: float  # max absolute difference (relative beyond 1) allowed on numeric outputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "size": self.size,
            "rows": self.rows,
            "source_rows": self.source_rows,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "thread_limit": self.thread_limit,
            "outputs": list(self.outputs),
            "tolerance": self.tolerance,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelCard:
    """Everything known about one saved pipeline (the README's card section describes each field)."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    algorithm: str
    created_at: str
    author: str
    intended_use: str
    limitations: str
    artifact: ArtifactInfo
    data: DataInfo
    metrics: Mapping[str, Mapping[str, float]]
    params: Mapping[str, Any]
    preprocessing: tuple[str, ...]
    environment: Fingerprint
    references: References
    probe: Probe
    training: Training | None = None  # schema 2
    lineage: Lineage | None = None  # schema 2
    reference: ReferenceSet | None = None  # schema 3

    def to_dict(self) -> dict[str, Any]:
        environment = self.environment.to_dict()
        artifact = {"file": self.artifact.file, "sha256": self.artifact.sha256, "size": self.artifact.size}
        if self.schema_version < 3:  # an older card keeps its exact fields and bytes
            for key in ("image", "system_packages", "threads"):
                del environment[key]
        if self.schema_version < 2:
            del environment["lock"]
        d = {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "algorithm": self.algorithm,
            "created_at": self.created_at,
            "author": self.author,
            "intended_use": self.intended_use,
            "limitations": self.limitations,
            "artifact": artifact,
            "data": self.data.to_dict(),
            "metrics": {k: dict(v) for k, v in self.metrics.items()},
            "params": dict(self.params),
            "preprocessing": list(self.preprocessing),
            "environment": environment,
            "references": self.references.to_dict(self.schema_version),
            "probe": self.probe.to_dict(),
        }
        if self.schema_version >= 2:
            d["training"] = None if self.training is None else self.training.to_dict()
            d["lineage"] = None if self.lineage is None else self.lineage.to_dict()
        if self.schema_version >= 3:
            d["reference"] = None if self.reference is None else self.reference.to_dict()
        return d

    def to_json(self) -> bytes:
        """Canonical bytes: same card, same bytes (reproducible artifacts depend on it)."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")

    def to_markdown(self) -> str:
        """The card for people. The rendering of each schema version is fixed: ``verify``
        holds the ``.card.md`` beside an artifact to exactly these bytes."""
        from toolkit.card.render import markdown

        return markdown(self)


def require_schema2(card: ModelCard, what: str) -> None:
    """Refuse, in one line, a command that needs a schema 2 field of a schema 1 card.

    Raises: UsageError.
    """
    if card.schema_version < 2:
        raise UsageError(
            f"{what} needs a card of schema 2; {card.name} {card.version} has schema {card.schema_version} "
            "(save or train it again with this toolkit to get one)"
        )


def require_schema3(card: ModelCard, what: str) -> None:
    """Refuse, in one line, a command that needs a schema 3 field of an older card.

    Raises: UsageError.
    """
    if card.schema_version < 3:
        raise UsageError(
            f"{what} needs a card of schema 3; {card.name} {card.version} has schema {card.schema_version} "
            "(save or train it again with this toolkit to get one)"
        )


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value``: numpy scalars unwrapped, NaN -> None, objects -> repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars; pandas' NA has none and falls through
    if callable(item) and getattr(value, "ndim", None) == 0:
        return jsonable(item())
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return repr(value)
