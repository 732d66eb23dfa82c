"""The model card: a typed record, its strict JSON form, and its Markdown rendering.

A card is read and checked without unpickling anything. Parsing is strict on purpose:
an unknown ``schema_version``, a missing or unknown field, a duplicate key, NaN or a
wrong type is refused with a message that names the field (``data.features[2].dtype``).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit import _json
from toolkit import identifiers as _identifiers
from toolkit.errors import CardError, UsageError
from toolkit.fingerprint import BASE_IMAGE_RE, Fingerprint
from toolkit.pickle_audit import LocalModule, denied

__all__ = [
    "MAX_CARD_BYTES",
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
    "References",
    "Training",
    "jsonable",
    "lineage_from",
    "parse_card",
    "require_schema2",
    "training_from",
]

# What save writes. Every schema in SCHEMAS is read, so an older artifact stays valid.
SCHEMA_VERSION = 2
SCHEMAS = (1, 2)
# A card is shallow (environment.blas[i].field is 4 levels); anything far deeper is an
# attack on the parser (and on every json.dumps after it), refused as a card error.
MAX_DEPTH = 64
# Checked before a card is read: a card is small (the probe is a few rows), so anything
# larger is not a card and must not be parsed into memory.
MAX_CARD_BYTES = 4 * 1024 * 1024

# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
# One rule per identifier (toolkit.identifiers); kept under these names for importers.
NAME_RE = _identifiers.NAME_RE
SEMVER_RE = _identifiers.VERSION_RE
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_PARENT_RE = re.compile(r"^(?P<name>[^@]+)@(?P<version>[^@]+)\Z")

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
class DataInfo:
    """Where the training data came from, and its version (sha256)."""

    source: str | None = None
    sha256: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    features: tuple[Feature, ...] = ()
    target: str | None = None
    classes: tuple[Scalar, ...] | None = None
    split: Mapping[str, Any] | None = None  # e.g. {"test_size": 0.2, "seed": 42}: rebuilds the held-out set

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sha256": self.sha256,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "features": [{"name": f.name, "dtype": f.dtype} for f in self.features],
            "target": self.target,
            "classes": None if self.classes is None else list(self.classes),
            "split": None if self.split is None else dict(self.split),
        }


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

    def to_dict(self) -> dict[str, Any]:
        environment = self.environment.to_dict()
        artifact = {"file": self.artifact.file, "sha256": self.artifact.sha256, "size": self.artifact.size}
        if self.schema_version < 2:  # a schema 1 card keeps its exact fields and bytes
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
        return d

    def to_json(self) -> bytes:
        """Canonical bytes: same card, same bytes (reproducible artifacts depend on it)."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, raw: Any) -> ModelCard:
        """Validate and build. Raises: CardError naming the offending field."""
        top = _Obj(raw, "card")
        schema = top.req("schema_version", int)
        if schema not in SCHEMAS:
            raise CardError(
                f"card: unsupported schema_version {schema!r} (this toolkit reads {', '.join(map(str, SCHEMAS))})"
            )
        card = cls(
            schema_version=schema,
            name=top.req("name", str, check=_match(NAME_RE, "a registry name")),
            version=top.req("version", str, check=_match(SEMVER_RE, "a semantic version X.Y.Z")),
            algorithm=top.req("algorithm", str),
            created_at=top.req("created_at", str),
            author=top.req("author", str),
            intended_use=top.req("intended_use", str),
            limitations=top.req("limitations", str),
            artifact=_artifact(top.obj("artifact")),
            data=_data(top.obj("data")),
            metrics=_metrics(top.obj("metrics")),
            params=top.obj("params").raw,
            preprocessing=tuple(top.list("preprocessing", str)),
            environment=_environment(top.obj("environment"), schema),
            references=_references(top.obj("references"), schema),
            probe=_probe(top.obj("probe")),
            training=_nullable(top, "training", _training) if schema >= 2 else None,
            lineage=_nullable(top, "lineage", _lineage) if schema >= 2 else None,
        )
        top.done()
        return card

    def to_markdown(self) -> str:
        """The card for people. The rendering of each schema version is fixed: ``verify``
        holds the ``.card.md`` beside an artifact to exactly these bytes."""
        env = self.environment
        lines = [
            f"# Model card: {self.name} {self.version}",
            "",
            f"- **Algorithm:** {self.algorithm}",
            f"- **Created:** {self.created_at} by {self.author}",
            f"- **Artifact:** `{self.artifact.file}` ({self.artifact.size} bytes)",
            f"- **sha256:** `{self.artifact.sha256}`",
            "",
            "## Intended use",
            "",
            self.intended_use or "_not stated_",
            "",
            "## Limitations",
            "",
            self.limitations or "_not stated_",
            "",
            "## Metrics",
            "",
            "| section | metric | value |",
            "| --- | --- | --- |",
            *(f"| {s} | {m} | {v:.4f} |" for s, ms in self.metrics.items() for m, v in ms.items()),
            "",
            "## Data",
            "",
            f"- **Source:** {self.data.source or '_unknown_'}",
            f"- **Dataset sha256:** `{self.data.sha256 or 'unknown'}`",
            f"- **Samples:** {self.data.n_train} train, {self.data.n_test} test",
            f"- **Target:** {self.data.target or '_unknown_'}; classes: {_join(self.data.classes)}",
            "",
            "| feature | dtype |",
            "| --- | --- |",
            *(f"| {f.name} | {f.dtype} |" for f in self.data.features),
            "",
            "## Preprocessing",
            "",
            *(f"- {step}" for step in self.preprocessing),
            "",
            "## Hyperparameters",
            "",
            "```json",
            json.dumps(dict(self.params), indent=2, sort_keys=True),
            "```",
            "",
            "## Environment",
            "",
            f"- **Python:** {env.python_implementation} {env.python_version}",
            f"- **Platform:** {env.os} {env.machine}, {env.libc}",
            f"- **In a container:** {'yes' if env.in_container else 'no'}",
            f"- **Base image:** `{env.base_image or 'none'}`",
            f"- **requirements.lock sha256:** `{env.lock_sha256 or 'none'}`",
            f"- **Pickle references:** {', '.join(self.references.distributions) or 'none'}",
            "",
            "| distribution | version |",
            "| --- | --- |",
            *(f"| {n} | {v} |" for n, v in env.packages.items()),
            "",
            f"Probe: {len(self.probe.rows)} reference predictions, tolerance {self.probe.tolerance:g}.",
            "",
        ]
        if self.schema_version >= 2:  # a schema 1 card renders exactly as it always did
            lines += self._markdown_schema2()
        return "\n".join(lines)

    def _markdown_schema2(self) -> list[str]:
        refs = self.references
        lines = ["## Training recipe", ""]
        if self.training is None:
            lines += ["_none recorded (saved through the API without one)_", ""]
        else:
            lines += ["```json", json.dumps(self.training.to_dict(), indent=2, sort_keys=True), "```", ""]
        lines += ["## Lineage", ""]
        if self.lineage is None:
            lines += ["_none_", ""]
        else:
            lines += [f"- **Parent:** {self.lineage.parent}", f"- **Reason:** {self.lineage.reason}", ""]
        lines += [
            "## What loading imports",
            "",
            f"{len(refs.globals or ())} globals; local modules: "
            + (", ".join(f"`{m.module}` (sha256 `{m.sha256}`)" for m in refs.local_modules or ()) or "none"),
            "",
        ]
        if self.environment.lock is not None:
            lines += [
                "<details><summary>requirements.lock</summary>",
                "",
                "```",
                self.environment.lock,
                "```",
                "",
                "</details>",
                "",
            ]
        return lines


def require_schema2(card: ModelCard, what: str) -> None:
    """Refuse, in one line, a command that needs a schema 2 field of a schema 1 card.

    Raises: UsageError.
    """
    if card.schema_version < 2:
        raise UsageError(
            f"{what} needs a card of schema 2; {card.name} {card.version} has schema {card.schema_version} "
            "(save or train it again with this toolkit to get one)"
        )


def training_from(value: Training | Mapping[str, Any] | None) -> Training | None:
    """A recipe given to ``save`` as a Training or its JSON form. Raises: UsageError naming the field."""
    if value is None or isinstance(value, Training):
        return value
    try:
        return _training(_Obj(jsonable(dict(value)), "training"))
    except CardError as e:
        raise UsageError(f"training: {e}") from e


def lineage_from(value: Lineage | Mapping[str, Any] | None) -> Lineage | None:
    """A lineage given to ``save`` as a Lineage or its JSON form. Raises: UsageError naming the field."""
    if value is None or isinstance(value, Lineage):
        return value
    try:
        return _lineage(_Obj(dict(value), "lineage"))
    except CardError as e:
        raise UsageError(f"lineage: {e}") from e


def parse_card(data: bytes, *, where: str = "card") -> ModelCard:
    """Parse card bytes strictly. Raises: CardError."""
    if len(data) > MAX_CARD_BYTES:
        raise CardError(f"{where}: {len(data)} bytes is over the {MAX_CARD_BYTES}-byte card limit")
    try:
        raw = _json.loads(data, max_depth=MAX_DEPTH)
    except _json.JsonError as e:
        raise CardError(f"{where}: {e}") from e
    try:
        return ModelCard.from_dict(raw)
    except CardError as e:
        raise CardError(f"{where}: {e}") from e


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


# --- parsing helpers ------------------------------------------------------------------


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "an object",
    }
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(names.get(x, x.__name__) for x in ts)


def _is(value: Any, t: type | tuple[type, ...]) -> bool:
    ts = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool):  # bool is an int in Python, never in a card
        return bool in ts
    if float in ts and isinstance(value, int):
        return True
    return isinstance(value, ts)


def _match(pattern: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    return lambda v: None if pattern.match(v) else f"is not {what}"


class _Obj:
    """A JSON object being read: typed getters that put the key path into errors."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise CardError(f"'{path}' must be an object")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.seen: set[str] = set()

    def _where(self, key: str) -> str:
        return key if self.path == "card" else f"{self.path}.{key}"

    def req(
        self,
        key: str,
        t: type | tuple[type, ...],
        *,
        null: bool = False,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            raise CardError(f"missing field '{self._where(key)}'")
        value = self.raw[key]
        if value is None and null:
            return None
        if not _is(value, t):
            raise CardError(
                f"'{self._where(key)}' must be {_type_name(t)}{' or null' if null else ''}, got {type(value).__name__}"
            )
        if check is not None and (problem := check(value)):
            raise CardError(f"'{self._where(key)}' {problem}: {value!r}")
        return value

    def obj(self, key: str, *, null: bool = False) -> _Obj:
        value = self.req(key, dict, null=null)
        return _Obj(value, self._where(key)) if value is not None else _Obj({}, self._where(key))

    def list(self, key: str, item: type | tuple[type, ...], *, item_null: bool = False) -> builtins.list[Any]:
        value = self.list_or_null(key, item, item_null=item_null, null=False)
        assert value is not None  # null=False: req refused a null
        return value

    def list_or_null(
        self, key: str, item: type | tuple[type, ...], *, null: bool = True, item_null: bool = False
    ) -> builtins.list[Any] | None:
        value = self.req(key, list, null=null)
        if value is None:
            return None
        for i, v in enumerate(value):
            if not (_is(v, item) or (item_null and v is None)):
                raise CardError(f"'{self._where(key)}[{i}]' must be {_type_name(item)}, got {type(v).__name__}")
        return list(value)

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise CardError(f"unknown field '{self._where(unknown[0])}'")


_SCALAR = (str, int, float, bool)


def _sha256(v: str) -> str | None:
    return None if _SHA256_RE.match(v) else "is not a lowercase hex sha256"


def _non_negative(v: int) -> str | None:
    return None if v >= 0 else "must not be negative"


def _artifact(o: _Obj) -> ArtifactInfo:
    info = ArtifactInfo(
        file=o.req(
            "file",
            str,
            check=lambda v: None if v.endswith(".joblib") and "/" not in v else "is not a .joblib file name",
        ),
        sha256=o.req("sha256", str, check=_sha256),
        size=o.req("size", int, check=_non_negative),
    )
    o.done()
    return info


def _data(o: _Obj) -> DataInfo:
    features = []
    for i, raw in enumerate(o.list("features", dict)):
        f = _Obj(raw, f"{o.path}.features[{i}]")
        features.append(Feature(name=f.req("name", str), dtype=f.req("dtype", str)))
        f.done()
    classes = o.list_or_null("classes", _SCALAR)
    split = o.req("split", dict, null=True)
    info = DataInfo(
        source=o.req("source", str, null=True),
        sha256=o.req("sha256", str, null=True, check=_sha256),
        n_train=o.req("n_train", int, null=True, check=_non_negative),
        n_test=o.req("n_test", int, null=True, check=_non_negative),
        features=tuple(features),
        target=o.req("target", str, null=True),
        classes=None if classes is None else tuple(classes),
        split=split,
    )
    o.done()
    return info


def _metrics(o: _Obj) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for section in o.raw:
        s = o.obj(section)
        out[section] = {name: float(s.req(name, float)) for name in s.raw}
    return out


def _environment(o: _Obj, schema: int) -> Fingerprint:
    packages = o.obj("packages")
    blas = o.list_or_null("blas", dict)
    env = Fingerprint(
        python_implementation=o.req("python_implementation", str),
        python_version=o.req("python_version", str),
        os=o.req("os", str),
        os_release=o.req("os_release", str),
        machine=o.req("machine", str),
        libc=o.req("libc", str),
        packages={name: packages.req(name, str) for name in packages.raw},
        blas=None if blas is None else tuple(blas),
        in_container=o.req("in_container", bool),
        base_image=o.req("base_image", str, null=True, check=_match(BASE_IMAGE_RE, "name@sha256:<64 hex>")),
        lock_sha256=o.req("lock_sha256", str, null=True, check=_sha256),
        lock=o.req("lock", str, null=True) if schema >= 2 else None,
    )
    if env.lock is not None and hashlib.sha256(env.lock.encode("utf-8")).hexdigest() != env.lock_sha256:
        raise CardError(f"'{o.path}.lock' does not match '{o.path}.lock_sha256'")
    o.done()
    return env


def _references(o: _Obj, schema: int) -> References:
    modules = tuple(o.list("modules", str))
    distributions = tuple(o.list("distributions", str))
    for i, module in enumerate(modules):
        if denied(module, ""):  # a whole denied module (os, subprocess, ...) can never be allowed
            raise CardError(f"'{o.path}.modules[{i}]' lists {module!r}, which only an attack needs; refused")
    if schema < 2:
        o.done()
        return References(modules=modules, distributions=distributions)
    pairs = []
    for i, pair in enumerate(o.list("globals", list)):
        where = f"{o.path}.globals[{i}]"
        if len(pair) != 2 or not all(isinstance(v, str) for v in pair):
            raise CardError(f"'{where}' must be a [module, name] pair of strings")
        module, name = pair
        if not _MODULE_RE.match(module) or not name:
            raise CardError(f"'{where}' is not a module and a name: {pair!r}")
        if denied(module, name):
            raise CardError(f"'{where}' lists {module}.{name}, which only an attack needs; refused")
        pairs.append((module, name))
    if pairs != sorted(set(pairs)):
        raise CardError(f"'{o.path}.globals' must be sorted and without duplicates")
    if tuple(sorted({m for m, _ in pairs})) != modules:
        raise CardError(f"'{o.path}.modules' must be exactly the modules of '{o.path}.globals'")
    local = []
    for i, raw in enumerate(o.list("local_modules", dict)):
        lm = _Obj(raw, f"{o.path}.local_modules[{i}]")
        module = lm.req("module", str, check=lambda v: None if v in modules else f"is not in '{o.path}.modules'")
        local.append(LocalModule(module=module, sha256=lm.req("sha256", str, check=_sha256)))
        lm.done()
    refs = References(modules=modules, distributions=distributions, globals=tuple(pairs), local_modules=tuple(local))
    o.done()
    return refs


def _nullable(top: _Obj, key: str, build: Callable[[_Obj], Any]) -> Any:
    raw = top.req(key, dict, null=True)
    return None if raw is None else build(_Obj(raw, key))


def _training(o: _Obj) -> Training:
    dataset = o.obj("dataset")
    params = o.obj("params")
    preprocessing = o.obj("preprocessing")
    training = Training(
        dataset_source=dataset.req("source", str, check=lambda v: None if v else "must not be empty"),
        dataset_sha256=dataset.req("sha256", str, check=_sha256),
        target=o.req("target", str, null=True),
        model=o.req("model", str, check=lambda v: None if v else "must not be empty"),
        params=params.raw,
        preprocessing={k: preprocessing.req(k, _SCALAR, null=True) for k in preprocessing.raw},
        test_size=float(o.req("test_size", float, check=lambda v: None if 0 < v < 1 else "must be between 0 and 1")),
        seed=o.req("seed", int, check=_non_negative),
        cv_folds=o.req("cv_folds", int, check=lambda v: None if v >= 2 else "must be at least 2"),
        task=o.req("task", str, check=_task) if "task" in o.raw else None,
        allow_modules=tuple(o.list("allow_modules", str)) if "allow_modules" in o.raw else (),
    )
    dataset.done()
    o.done()
    return training


def _task(v: str) -> str | None:
    return None if v in ("classification", "regression") else "is not classification or regression"


def _lineage(o: _Obj) -> Lineage:
    lineage = Lineage(parent=o.req("parent", str, check=_parent), reason=o.req("reason", str))
    o.done()
    return lineage


def _parent(v: str) -> str | None:
    m = _PARENT_RE.match(v)
    if m is None or not NAME_RE.match(m["name"]) or not SEMVER_RE.match(m["version"]):
        return "is not NAME@VERSION"
    return None


def _probe(o: _Obj) -> Probe:
    columns = o.list("columns", str)
    dtypes = o.list("dtypes", str)
    if len(dtypes) != len(columns):
        raise CardError(f"'{o.path}.dtypes' has {len(dtypes)} entries for {len(columns)} columns")
    rows = []
    for i, row in enumerate(o.list("rows", list)):
        if len(row) != len(columns) or not all(v is None or _is(v, _SCALAR) for v in row):
            raise CardError(f"'{o.path}.rows[{i}]' must be {len(columns)} scalars or nulls")
        rows.append(tuple(row))
    predictions = o.list("predictions", _SCALAR, item_null=True)
    probabilities = o.list_or_null("probabilities", list)
    if probabilities is not None:
        for i, p in enumerate(probabilities):
            if not all(_is(v, float) for v in p):
                raise CardError(f"'{o.path}.probabilities[{i}]' must be a list of numbers")
    for what, n in (("predictions", len(predictions)), ("probabilities", len(probabilities or rows))):
        if n != len(rows):
            raise CardError(f"'{o.path}.{what}' has {n} entries for {len(rows)} rows")
    probe = Probe(
        columns=tuple(columns),
        dtypes=tuple(dtypes),
        rows=tuple(rows),
        predictions=tuple(predictions),
        probabilities=None if probabilities is None else tuple(tuple(float(v) for v in p) for p in probabilities),
        tolerance=float(o.req("tolerance", float, check=lambda v: None if v >= 0 else "must not be negative")),
    )
    o.done()
    return probe


def _join(values: Sequence[Any] | None) -> str:
    return ", ".join(map(str, values)) if values else "_none_"
