"""Build, cross-validate, fit, score and save a full scikit-learn pipeline, all seeded.

The pipeline holds only scikit-learn classes (no toolkit code), so loading it never
imports the toolkit and the card's ``references`` stay scikit-learn's own.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.config import MODEL_KINDS, TrainConfig
from toolkit.datasets import Dataset, load_dataset, split
from toolkit.errors import ConfigError, DataError, UsageError
from toolkit.source_date import source_date_epoch

if TYPE_CHECKING:
    import pandas as pd

    from toolkit.card import Lineage, ModelCard, Training

__all__ = [
    "DEFAULT_PARAMS",
    "PROBE_ROWS",
    "Progress",
    "TrainResult",
    "artifact_path",
    "build_model",
    "build_pipeline",
    "check_card_size",
    "check_output_dir",
    "cross_validate",
    "describe_preprocessing",
    "estimate_card_bytes",
    "fit_and_save",
    "model_params",
    "score",
    "select_probe",
    "train",
    "training_recipe",
]

# (stage, event, detail): stage is "data", "split", "cv", "fit", "evaluate" or "save";
# event is "start" or "done"; for "cv", detail starts with "fold i/n".
Progress = Callable[[str, str, str], None]

PROBE_ROWS = 16
# Card parts that do not grow with the data (metrics, params, references, BLAS, names,
# digests) are a few KiB; this bounds them with room to spare.
_CARD_ALLOWANCE = 64 * 1024
# The longest repr a probability in [0, 1] can have; stands in for those not yet computed.
_WIDEST_PROBABILITY = 1.2345678901234567e-300

# Written out in full (not left to scikit-learn's defaults) so a card means the same
# hyperparameters whatever scikit-learn version trained it.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "gradient_boosting": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0},
    "random_forest": {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt"},
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
}


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """What one training run produced."""

    path: Path  # the .joblib
    card: ModelCard
    dataset: Dataset
    metrics: dict[str, dict[str, float]]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


def train(config: TrainConfig, *, progress: Progress | None = None, lineage: Lineage | None = None) -> TrainResult:
    """Run the whole job for ``config``: data, split, CV, fit, evaluate, save (with ``lineage``
    when it is a retrain of another model).

    Everything that can be checked before fitting is: a dataset this accepts yields a card
    the toolkit accepts, and the artifact can be written where it is going.
    Raises:
        ConfigError, DataError: bad config or data, or a card that would be over the card
            size limit (before any fitting).
        UsageError: the artifact already exists in ``config.out``, ``config.out`` cannot
            be written, a bad ``SOURCE_DATE_EPOCH`` (all before any work), or writing the
            artifact failed (disk full: the message names the path).
    """
    emit = progress or _silent
    timings: dict[str, float] = {}
    source_date_epoch()
    check_output_dir(config.out)
    path = artifact_path(config.out, config.model_name, config.version)
    _refuse_existing(path)
    model = build_model(config.model, config.params, seed=config.seed)

    with _stage("data", emit, timings) as note:
        dataset = load_dataset(config.dataset, config.target)
        note(f"{dataset.source}: {len(dataset.X)} rows, {dataset.X.shape[1]} features, sha256 {dataset.sha256[:12]}")
    with _stage("split", emit, timings) as note:
        X_train, X_test, y_train, y_test = split(dataset, test_size=config.test_size, seed=config.seed)
        _check_class_counts(y_train, config.cv_folds, dataset.source)
        note(f"{len(X_train)} train / {len(X_test)} test, stratified, seed {config.seed}")
    pipeline = build_pipeline(X_train, model, scaler=config.scaler)
    check_card_size(config, dataset, pipeline, X_train, X_test)

    started = time.perf_counter()
    cv = cross_validate(pipeline, X_train, y_train, folds=config.cv_folds, seed=config.seed, progress=emit)
    timings["cv"] = time.perf_counter() - started

    result = fit_and_save(
        pipeline,
        config=config,
        dataset=dataset,
        parts=(X_train, X_test, y_train, y_test),
        cv=cv,
        path=path,
        progress=emit,
        timings=timings,
        lineage=lineage,
    )
    return result


def fit_and_save(
    pipeline: Any,
    *,
    config: TrainConfig,
    dataset: Dataset,
    parts: tuple[Any, Any, Any, Any],
    cv: Mapping[str, float],
    path: Path,
    progress: Progress | None = None,
    timings: dict[str, float] | None = None,
    lineage: Lineage | None = None,
) -> TrainResult:
    """Fit ``pipeline`` on the training part, score it on the test part and save it with its card."""
    from toolkit import artifact
    from toolkit.card import DataInfo, Feature

    emit = progress or _silent
    timings = {} if timings is None else timings
    X_train, X_test, y_train, y_test = parts
    with _stage("fit", emit, timings) as note:
        pipeline.fit(X_train, y_train)
        note(type(pipeline[-1]).__name__)
    with _stage("evaluate", emit, timings) as note:
        test = score(pipeline, X_test, y_test)
        note(_format_metrics(test))
    metrics = {"cv": dict(cv), "test": test}
    with _stage("save", emit, timings) as note:
        data = DataInfo(
            source=dataset.source,
            sha256=dataset.sha256,
            n_train=len(X_train),
            n_test=len(X_test),
            features=tuple(Feature(name=str(c), dtype=str(X_train[c].dtype)) for c in X_train.columns),
            target=dataset.target,
            classes=tuple(_native(c) for c in pipeline.classes_),
            split={"test_size": config.test_size, "seed": config.seed},
        )
        # save makes the folder, and turns a full or read-only disk into one UsageError naming the path.
        card = artifact.save(
            pipeline,
            path,
            name=config.model_name,
            version=config.version,
            probe=select_probe(X_test),
            data=data,
            metrics=metrics,
            params=model_params(pipeline[-1]),
            preprocessing=describe_preprocessing(pipeline),
            algorithm=type(pipeline[-1]).__name__,
            intended_use=config.intended_use,
            limitations=config.limitations,
            author=config.author,
            training=training_recipe(config, dataset, pipeline[-1]),
            lineage=lineage,
        )
        note(str(path))
    return TrainResult(path=path, card=card, dataset=dataset, metrics=metrics, timings=timings)


def training_recipe(config: TrainConfig, dataset: Dataset, estimator: Any) -> Training:
    """The card's ``training``: the resolved recipe, enough to retrain the same model from the card.

    ``params`` are every hyperparameter of the fitted estimator as it was set (scikit-learn's
    defaults written out, ``random_state`` left out: ``seed`` sets it), so a newer
    scikit-learn's different defaults cannot silently change a retrained model.
    """
    from toolkit.card import Training, jsonable

    every = estimator.get_params(deep=False)
    every.pop("random_state", None)
    return Training(
        dataset_source=config.dataset,
        dataset_sha256=dataset.sha256,
        target=dataset.target,
        model=config.model,
        params=jsonable(dict(sorted(every.items()))),
        preprocessing={"scaler": config.scaler},
        test_size=config.test_size,
        seed=config.seed,
        cv_folds=config.cv_folds,
    )


def build_model(kind: str, params: Mapping[str, Any], *, seed: int) -> Any:
    """The unfitted estimator for ``kind`` with the default hyperparameters, ``params`` and ``seed``.

    Raises:
        ConfigError: unknown kind, a key that is not a hyperparameter, or a bad value
            (the message names ``params.<key>``).
    """
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    classes = {
        "gradient_boosting": GradientBoostingClassifier,
        "random_forest": RandomForestClassifier,
        "logistic_regression": LogisticRegression,
    }
    if kind not in classes:
        raise ConfigError(f"model: unknown kind {kind!r} (choose {', '.join(MODEL_KINDS)})")
    estimator = classes[kind]()
    known = estimator.get_params(deep=False)
    for key in params:
        if key not in known:
            raise ConfigError(f"params.{key}: not a hyperparameter of {type(estimator).__name__} (model {kind})")
    if "random_state" in params:
        raise ConfigError("params.random_state: set the top-level 'seed' instead; it seeds everything")
    estimator.set_params(**{**DEFAULT_PARAMS[kind], **params, "random_state": seed})
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate):  # scikit-learn >= 1.2 checks types and ranges here, before any fitting
        try:
            validate()
        except (ValueError, TypeError) as e:
            raise ConfigError(f"params: {e}") from e
    return estimator


def build_pipeline(X: pd.DataFrame, model: Any, *, scaler: str = "standard") -> Any:
    """``Pipeline([("preprocess", ColumnTransformer(...)), ("model", model)])`` for ``X``'s dtypes.

    Numeric columns: median imputation, then standard scaling or a Yeo-Johnson power
    transform; other columns: most-frequent imputation, then one-hot encoding that
    ignores unknown categories.
    """
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, PowerTransformer, StandardScaler

    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c].dtype)]
    categorical = [c for c in X.columns if c not in numeric]
    scale = PowerTransformer(method="yeo-johnson") if scaler == "power" else StandardScaler()
    transformers = []
    if numeric:
        steps = [("impute", SimpleImputer(strategy="median")), ("scale", scale)]
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        steps = [
            ("impute", SimpleImputer(strategy="most_frequent")),
            # No sparse/sparse_output argument: its name changed in 1.2; the
            # ColumnTransformer densifies (sparse_threshold=0) on every version.
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
        transformers.append(("categorical", Pipeline(steps), categorical))
    preprocess = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("preprocess", preprocess), ("model", model)])


def cross_validate(
    pipeline: Any, X: pd.DataFrame, y: pd.Series, *, folds: int, seed: int, progress: Progress | None = None
) -> dict[str, float]:
    """Stratified, shuffled, seeded k-fold CV of a clone of ``pipeline``: mean and ``*_std`` of each score."""
    import numpy as np
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    emit = progress or _silent
    per_fold: list[dict[str, float]] = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for i, (fit_idx, val_idx) in enumerate(splitter.split(X, y), start=1):
        emit("cv", "start", f"fold {i}/{folds}")
        model = clone(pipeline).fit(X.iloc[fit_idx], y.iloc[fit_idx])
        scores = score(model, X.iloc[val_idx], y.iloc[val_idx])
        per_fold.append(scores)
        emit("cv", "done", f"fold {i}/{folds}: {_format_metrics(scores)}")
    summary: dict[str, float] = {}
    for key in per_fold[0]:
        values = np.array([s[key] for s in per_fold], dtype=float)
        summary[key] = float(values.mean())
        summary[f"{key}_std"] = float(values.std())
    return summary


def score(pipeline: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """Held-out scores of a fitted classifier: ``roc_auc`` (one-vs-rest if multiclass), ``accuracy``, ``f1``.

    F1 is for the second (greater) class when binary and macro-averaged when multiclass.
    Raises:
        DataError: ``y`` has classes the model never saw, or a single class (no ROC AUC).
    """
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    classes = list(pipeline.classes_)
    unseen = sorted({str(v) for v in y.unique()} - {str(c) for c in classes})
    if unseen:
        raise DataError(f"cannot score: classes {', '.join(unseen)} are not among the model's classes")
    proba = pipeline.predict_proba(X)
    predicted = pipeline.predict(X)
    try:
        if len(classes) == 2:
            auc = roc_auc_score(y, proba[:, 1], labels=classes)
            f1 = f1_score(y, predicted, pos_label=classes[1], average="binary", zero_division=0)
        else:
            auc = roc_auc_score(y, proba, multi_class="ovr", labels=classes)
            f1 = f1_score(y, predicted, labels=classes, average="macro", zero_division=0)
    except ValueError as e:
        raise DataError(f"cannot score on {len(y)} rows: {e}") from e
    result = {"roc_auc": float(auc), "accuracy": float(accuracy_score(y, predicted)), "f1": float(f1)}
    if any(math.isnan(v) for v in result.values()):
        raise DataError(f"cannot score on {len(y)} rows: a metric is undefined")
    return result


def describe_preprocessing(pipeline: Any) -> tuple[str, ...]:
    """One human-readable line per preprocessing branch of a pipeline made by ``build_pipeline``."""
    lines = []
    for name, branch, columns in pipeline.named_steps["preprocess"].transformers:
        steps = " -> ".join(_describe_step(step) for _, step in branch.steps)
        lines.append(f"{name} columns ({', '.join(map(str, columns))}): {steps}")
    return tuple(lines)


def model_params(estimator: Any) -> dict[str, Any]:
    """The estimator's own hyperparameters, JSON-safe (non-finite floats and objects become text)."""
    return {key: _json_safe(value) for key, value in sorted(estimator.get_params(deep=False).items())}


def select_probe(X_test: pd.DataFrame, rows: int = PROBE_ROWS) -> pd.DataFrame:
    """The probe: the first ``rows`` complete rows of the test set (all its first rows if too few are complete)."""
    # Complete rows only: a missing value goes through the card's JSON as null, and a
    # null read back into a text column is not the NaN the imputer was fitted to replace.
    complete = X_test[X_test.notna().all(axis=1)]
    chosen = complete if len(complete) >= min(rows, len(X_test)) else X_test
    return chosen.head(rows).reset_index(drop=True)


def check_output_dir(out: Path) -> None:
    """Refuse an output folder the artifact could not be written to, before any training.

    ``out`` may not exist yet (saving creates it); then the nearest existing ancestor
    must be a folder that takes a new file. Writability is tried with a real temp file:
    ``os.access`` says yes to root for anything but a read-only mount.
    Raises: UsageError naming ``out``.
    """
    existing = out
    while True:
        try:
            st = os.stat(existing)
            break
        except (FileNotFoundError, NotADirectoryError):
            if existing.parent == existing:
                raise UsageError(f"out: {out} cannot be created") from None
            existing = existing.parent
        except OSError as e:
            raise UsageError(f"out: {out} cannot be used: {e.strerror or e}") from e
    if not stat.S_ISDIR(st.st_mode):
        if existing == out:
            raise UsageError(f"out: {out} is a file, not a folder")
        raise UsageError(f"out: {out} cannot be created: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".toolkit-out-check-", dir=existing)
    except OSError as e:
        raise UsageError(f"out: {out} cannot be written: {existing}: {e.strerror or e}") from e
    os.close(fd)
    os.unlink(probe)


def estimate_card_bytes(config: TrainConfig, dataset: Dataset, pipeline: Any, X_train: Any, X_test: Any) -> int:
    """An upper bound of the size of the card JSON that training ``pipeline`` would write.

    Everything that grows with the data is laid out exactly as the card lays it out
    (feature names and dtypes, the probe rows, the preprocessing lines, the classes),
    with the widest float standing in for each probability not yet computed; the parts
    that do not grow with the data (metrics, params, references, BLAS) get a fixed allowance.
    """
    from toolkit.card import jsonable
    from toolkit.fingerprint import capture

    probe = select_probe(X_test)
    classes = [jsonable(c) for c in sorted(dataset.y.unique().tolist(), key=str)]
    widest_label = max(classes, key=lambda c: _json_size(c, 0))
    # Column-wise to objects, then rows: itertuples is ~100x slower on a frame 15,000 columns wide.
    rows = [[jsonable(v) for v in row] for row in probe.astype(object).to_numpy().tolist()]
    skeleton = {
        "author": config.author or "",
        "intended_use": config.intended_use,
        "limitations": config.limitations,
        "data": {
            "source": dataset.source,
            "features": [
                {"name": str(c), "dtype": str(t)} for c, t in zip(X_train.columns, X_train.dtypes, strict=True)
            ],
            "target": dataset.target,
            "classes": classes,
        },
        "preprocessing": list(describe_preprocessing(pipeline)),
        "environment": capture(blas=False).to_dict(),
        "probe": {
            "columns": [str(c) for c in probe.columns],
            "dtypes": [str(t) for t in probe.dtypes],
            "rows": rows,
            "predictions": [widest_label] * len(probe),
            "probabilities": [[_WIDEST_PROBABILITY] * len(classes)] * len(probe),
        },
    }
    return _json_size(skeleton, 0) + _CARD_ALLOWANCE


def check_card_size(config: TrainConfig, dataset: Dataset, pipeline: Any, X_train: Any, X_test: Any) -> None:
    """Refuse, before fitting, a dataset whose card would be over ``card.MAX_CARD_BYTES``.

    Raises: DataError (exit 2), which names the size, the limit and the feature count.
    """
    from toolkit.card import MAX_CARD_BYTES

    size = estimate_card_bytes(config, dataset, pipeline, X_train, X_test)
    if size > MAX_CARD_BYTES:
        raise DataError(
            f"{dataset.source}: its model card would be about {size / 2**20:.1f} MiB, over the "
            f"{MAX_CARD_BYTES / 2**20:g} MiB card limit ({X_train.shape[1]} feature columns); "
            "train on fewer columns (or shorter names and text values)"
        )


def artifact_path(out: Path, name: str, version: str) -> Path:
    """``<out>/<name>-<version>.joblib``."""
    return out / f"{name}-{version}.joblib"


# --- helpers -------------------------------------------------------------------------------


def _json_size(value: Any, depth: int) -> int:
    """Bytes of ``json.dumps(value, indent=2, ensure_ascii=False)`` at nesting ``depth``, in UTF-8.

    Computed from compact dumps (the C encoder) and the indentation each item adds:
    ``indent=2`` runs the pure-Python encoder, seconds on a card 15,000 features wide.
    """
    item_head = 2 * (depth + 1) + 1  # newline and indentation before each item
    tail = 2 * depth + 1  # newline and indentation before the closing bracket
    if isinstance(value, dict):
        if not value:
            return 2
        keys_and_values = sum(_json_size(str(k), 0) + 2 + _json_size(v, depth + 1) for k, v in value.items())
        return 2 + tail + len(value) * item_head + (len(value) - 1) + keys_and_values
    if isinstance(value, list):
        if not value:
            return 2
        n = len(value)
        if any(isinstance(v, (dict, list)) for v in value):
            items = sum(_json_size(v, depth + 1) for v in value)
        else:  # scalars: one compact dump is their lengths plus n - 1 commas and two brackets
            items = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")) - (n - 1) - 2
        return 2 + tail + n * item_head + (n - 1) + items
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _silent(stage: str, event: str, detail: str) -> None:
    del stage, event, detail


@contextmanager
def _stage(name: str, emit: Progress, timings: dict[str, float]) -> Iterator[Callable[[str], None]]:
    detail = [""]

    def note(text: str) -> None:
        detail[0] = text

    emit(name, "start", "")
    started = time.perf_counter()
    yield note
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
    emit(name, "done", detail[0])


def _refuse_existing(path: Path) -> None:
    siblings = (path, path.with_suffix(".card.json"), path.with_suffix(".card.md"))
    existing = [p for p in siblings if p.exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists; a version is never overwritten (choose another --version)")


def _check_class_counts(y_train: pd.Series, folds: int, source: str) -> None:
    counts = y_train.value_counts()
    if counts.min() < folds:
        label = counts.idxmin()
        raise DataError(
            f"{source}: class {label!r} has only {int(counts.min())} training row(s); {folds}-fold CV needs {folds}"
        )


def _describe_step(step: Any) -> str:
    name = type(step).__name__
    shown = {
        "SimpleImputer": ("strategy",),
        "OneHotEncoder": ("handle_unknown",),
        "PowerTransformer": ("method",),
    }.get(name, ())
    args = ", ".join(f"{k}={getattr(step, k)!r}" for k in shown)
    return f"{name}({args})"


def _format_metrics(scores: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in scores.items() if not k.endswith("_std"))


def _native(value: Any) -> Any:
    # numpy scalars -> Python scalars, so classes serialise as JSON numbers/strings/bools.
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _json_safe(value: Any) -> Any:
    value = _native(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    return repr(value)
