"""Build, cross-validate, fit, score and save a full scikit-learn pipeline, all seeded.

The pipeline holds only scikit-learn classes (no toolkit code), so loading it never
imports the toolkit and the card's ``references`` stay scikit-learn's own (unless the
config names an estimator from a module it allows explicitly).

The task (classification or regression) is, in this order: the config's ``task``; the one
the model fixes (``logistic_regression`` and classifier classes classify, ``ridge`` and
regressor classes regress); else the target's values (``datasets.infer_task``).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import _files
from toolkit.errors import ConfigError, DataError, UsageError
from toolkit.metrics import REGRESSION_METRICS
from toolkit.source_date import source_date_epoch
from toolkit.training.config import CLASSIFIER_KINDS, ESTIMATOR_PATH, MODEL_KINDS, REGRESSOR_KINDS, TrainConfig
from toolkit.training.datasets import TASKS, Dataset, load_dataset, split

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
    "check_model",
    "check_output_dir",
    "cross_validate",
    "describe_preprocessing",
    "estimate_card_bytes",
    "fit_and_save",
    "model_params",
    "score",
    "select_probe",
    "task_of",
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
# hyperparameters whatever scikit-learn version trained it. Per task, then per named kind.
_HIST = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20}
DEFAULT_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "classification": {
        "gradient_boosting": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0},
        "random_forest": {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt"},
        "logistic_regression": {"C": 1.0, "max_iter": 1000},
        # early_stopping off: "auto" switches it on above 10,000 rows, so the data's size
        # would silently change the algorithm.
        "hist_gradient_boosting": {**_HIST, "early_stopping": False},
    },
    "regression": {
        "ridge": {"alpha": 1.0},
        "gradient_boosting": {"n_estimators": 100, "learning_rate": 0.1, "max_depth": 3, "subsample": 1.0},
        "random_forest": {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1, "max_features": 1.0},
        "hist_gradient_boosting": {**_HIST, "early_stopping": False},
    },
}
_CLASSES = {
    "classification": {
        "gradient_boosting": ("sklearn.ensemble", "GradientBoostingClassifier"),
        "random_forest": ("sklearn.ensemble", "RandomForestClassifier"),
        "logistic_regression": ("sklearn.linear_model", "LogisticRegression"),
        "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingClassifier"),
    },
    "regression": {
        "ridge": ("sklearn.linear_model", "Ridge"),
        "gradient_boosting": ("sklearn.ensemble", "GradientBoostingRegressor"),
        "random_forest": ("sklearn.ensemble", "RandomForestRegressor"),
        "hist_gradient_boosting": ("sklearn.ensemble", "HistGradientBoostingRegressor"),
    },
}
_KINDS = {"classification": CLASSIFIER_KINDS, "regression": REGRESSOR_KINDS}


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
    # Model, parameters and task are checked before a byte of data is read.
    task = check_model(config)

    with _stage("data", emit, timings) as note:
        dataset = load_dataset(config.dataset, config.target, task=task)
        note(
            f"{dataset.source}: {len(dataset.X)} rows, {dataset.X.shape[1]} features, {dataset.task}, "
            f"sha256 {dataset.sha256[:12]}"
        )
    model = build_model(
        config.model, config.params, seed=config.seed, task=dataset.task, allow_modules=config.allow_modules
    )
    with _stage("split", emit, timings) as note:
        X_train, X_test, y_train, y_test = split(dataset, test_size=config.test_size, seed=config.seed)
        if dataset.task == "classification":
            _check_class_counts(y_train, config.cv_folds, dataset.source)
        elif len(X_train) < 2 * config.cv_folds:
            raise DataError(f"{dataset.source}: {len(X_train)} training rows are too few for {config.cv_folds}-fold CV")
        how = "stratified" if dataset.task == "classification" else "shuffled"
        note(f"{len(X_train)} train / {len(X_test)} test, {how}, seed {config.seed}")
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
    from toolkit.card import DataInfo, Feature, Split

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
            classes=tuple(_native(c) for c in pipeline.classes_) if hasattr(pipeline, "classes_") else (),
            split=Split(test_size=config.test_size, seed=config.seed),
        )
        # save makes the folder, and turns a full or read-only disk into one UsageError naming the path.
        card = artifact.save(
            pipeline,
            path,
            name=config.model_name,
            version=config.version,
            probe=select_probe(X_test),
            reference=X_test,  # the held-out rows: up to toolkit.reference.CAP of them, beside the card
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
        task=dataset.task,
        allow_modules=config.allow_modules,
    )


def check_model(config: TrainConfig) -> str | None:
    """Check the config's model and parameters without any data; return the task if it is decided.

    The task is decided by the config's ``task``, or by a model that exists for one task only;
    None leaves it to the target's values.
    Raises:
        ConfigError: unknown kind, an estimator path that does not import or is not a
            classifier or regressor, a module not allowed, an unknown or invalid parameter,
            a model that contradicts ``task``.
    """
    if ESTIMATOR_PATH.match(config.model) and config.model not in MODEL_KINDS:
        estimator = build_model(
            config.model, config.params, seed=config.seed, task=config.task, allow_modules=config.allow_modules
        )
        return task_of(estimator)
    tasks = [config.task] if config.task is not None else [t for t in TASKS if config.model in _KINDS[t]]
    failures: list[ConfigError] = []
    for task in tasks:
        try:
            build_model(config.model, config.params, seed=config.seed, task=task)
        except ConfigError as e:
            failures.append(e)
    if len(failures) == len(tasks):
        raise failures[0] if failures else ConfigError(f"model: unknown kind {config.model!r}")
    return tasks[0] if len(tasks) == 1 else None


def task_of(estimator: Any) -> str:
    """``"classification"`` or ``"regression"`` for a classifier or regressor (or a pipeline ending in one).

    Raises:
        ConfigError: neither.
    """
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        return "classification"
    if is_regressor(estimator):
        return "regression"
    raise ConfigError(f"model: {type(estimator).__name__} is neither a classifier nor a regressor")


def build_model(
    kind: str,
    params: Mapping[str, Any],
    *,
    seed: int,
    task: str | None = "classification",
    allow_modules: tuple[str, ...] = (),
) -> Any:
    """The unfitted estimator for ``kind`` with the default hyperparameters, ``params`` and ``seed``.

    ``kind`` is a named kind for ``task`` or an estimator's import path (``module.Class``): a
    scikit-learn class, or one from a package listed in ``allow_modules``; nothing is imported
    from anywhere else. Its own defaults stand, except ``random_state`` (the seed).
    Raises:
        ConfigError: unknown kind, a kind or class that is not for ``task``, an import path that
            does not import or is not an estimator, a key that is not a hyperparameter, or a bad
            value (the message names ``params.<key>``).
    """
    if kind in MODEL_KINDS:
        task = task or "classification"
        if kind not in _KINDS[task]:
            raise ConfigError(f"model: {kind} is not a {task} model (choose {', '.join(_KINDS[task])})")
        module, name = _CLASSES[task][kind]
        estimator = getattr(importlib.import_module(module), name)()
        defaults = DEFAULT_PARAMS[task][kind]
        label = f"model {kind}"
    elif ESTIMATOR_PATH.match(kind):
        estimator = _estimator_from_path(kind, allow_modules)
        own = task_of(estimator)
        if task is not None and own != task:
            raise ConfigError(f"model: {kind} is a {own} model, but the task is {task}")
        defaults = {}
        label = kind
    else:
        raise ConfigError(
            f"model: unknown kind {kind!r} (choose {', '.join(MODEL_KINDS)}, or an estimator's import path)"
        )
    known = estimator.get_params(deep=False)
    for key in params:
        if key not in known:
            raise ConfigError(f"params.{key}: not a hyperparameter of {type(estimator).__name__} ({label})")
    if "random_state" in params:
        raise ConfigError("params.random_state: set the top-level 'seed' instead; it seeds everything")
    seeded = {"random_state": seed} if "random_state" in known else {}
    try:
        estimator.set_params(**_same_objects({**defaults, **params, **seeded}, known))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"params: {e}") from e
    validate = getattr(estimator, "_validate_params", None)
    if callable(validate):  # scikit-learn >= 1.2 checks types and ranges here, before any fitting
        try:
            validate()
        except (ValueError, TypeError) as e:
            raise ConfigError(f"params: {e}") from e
    return estimator


def _same_objects(params: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` without the ones equal to the estimator's own default, and with text interned.

    Why: pickle writes an object seen before as a reference to it (its memo is by identity),
    so two equal strings that are two objects pickle to other bytes than one object twice. A
    retrain passes every hyperparameter from the card's JSON, where training left the
    defaults alone: the card's ``"sqrt"`` is not the library's ``"sqrt"``, and the pickles
    differed by one frame. Keeping the default object, and interning the rest (as the
    library's literals are), makes a retrain in the same runtime byte-identical to its parent.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        default = current.get(key, _MISSING)
        if _equal(default, value):
            continue  # the object the estimator already holds
        out[key] = sys.intern(value) if isinstance(value, str) else value
    return out


_MISSING = object()


def _equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # an array's == is elementwise: not a plain value
        return False


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
    """Shuffled, seeded k-fold CV of a clone of ``pipeline``: mean and ``*_std`` of each score.

    Stratified for a classifier; plain k-fold for a regressor.
    """
    import numpy as np
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import KFold, StratifiedKFold

    emit = progress or _silent
    per_fold: list[dict[str, float]] = []
    kfold = StratifiedKFold if is_classifier(pipeline) else KFold
    splitter = kfold(n_splits=folds, shuffle=True, random_state=seed)
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
    """Held-out scores of a fitted model.

    A classifier: ``roc_auc`` (one-vs-rest if multiclass), ``accuracy``, ``f1`` (for the second
    (greater) class when binary, macro-averaged when multiclass). A regressor: ``rmse``, ``mae``
    and ``r2`` (``toolkit.metrics`` says which way each is better).
    Raises:
        DataError: ``y`` has classes the model never saw, or a single class (no ROC AUC);
            a metric is undefined on these rows.
    """
    import numpy as np
    from sklearn.base import is_regressor
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    if is_regressor(pipeline):
        return _score_regression(pipeline, X, y)
    classes = list(pipeline.classes_)
    unseen = sorted({str(v) for v in y.unique()} - {str(c) for c in classes})
    if unseen:
        raise DataError(f"cannot score: classes {', '.join(unseen)} are not among the model's classes")
    proba = pipeline.predict_proba(X)
    predicted = pipeline.predict(X)
    # The same values as the Series, without scikit-learn's dataframe detection on each of the
    # three metrics (a fifth of a score's time).
    truth = np.asarray(y)
    try:
        if len(classes) == 2:
            auc = roc_auc_score(truth, proba[:, 1], labels=classes)
            f1 = f1_score(truth, predicted, pos_label=classes[1], average="binary", zero_division=0)
        else:
            auc = roc_auc_score(truth, proba, multi_class="ovr", labels=classes)
            f1 = f1_score(truth, predicted, labels=classes, average="macro", zero_division=0)
    except ValueError as e:
        raise DataError(f"cannot score on {len(y)} rows: {e}") from e
    result = {"roc_auc": float(auc), "accuracy": float(accuracy_score(truth, predicted)), "f1": float(f1)}
    if any(math.isnan(v) for v in result.values()):
        raise DataError(f"cannot score on {len(y)} rows: a metric is undefined")
    return result


def _score_regression(pipeline: Any, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    if len(y) < 2:
        raise DataError(f"cannot score on {len(y)} row(s): R² needs at least two")
    try:
        truth = np.asarray(y, dtype="float64")
    except (TypeError, ValueError) as e:
        raise DataError(f"cannot score: the target is not numeric ({e})") from e
    predicted = np.asarray(pipeline.predict(X), dtype="float64")
    # sqrt of MSE by hand: mean_squared_error's `squared` flag came and went across versions.
    values = (
        math.sqrt(float(mean_squared_error(truth, predicted))),
        float(mean_absolute_error(truth, predicted)),
        float(r2_score(truth, predicted)),
    )
    result = dict(zip(REGRESSION_METRICS, values, strict=True))
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
        probe, f = _files.create_temp(existing / "out-check")
    except OSError as e:
        raise UsageError(f"out: {out} cannot be written: {existing}: {e.strerror or e}") from e
    f.close()
    probe.unlink()


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
    from toolkit.artifact import artifact_paths

    paths = artifact_paths(path)
    siblings = (paths.model, paths.reference, paths.card_json, paths.card_md)
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


def _estimator_from_path(path: str, allow_modules: tuple[str, ...]) -> Any:
    from sklearn.base import BaseEstimator

    module_name, _, attr = path.rpartition(".")
    allowed = ("sklearn", *allow_modules)
    if not any(module_name == a or module_name.startswith(a + ".") for a in allowed):
        top = module_name.split(".")[0]
        raise ConfigError(
            f"model: {path} is not from scikit-learn; allow its package explicitly "
            f'with allow_modules = ["{top}"] in the config'
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"model: cannot import {path}: {e}") from e
    except Exception as e:  # an allowed module that fails on import: its error, one line
        raise ConfigError(f"model: importing {module_name} failed: {type(e).__name__}: {e}") from e
    cls = getattr(module, attr, None)
    if cls is None:
        raise ConfigError(f"model: cannot import {path}: {module_name} has no {attr!r}")
    if not isinstance(cls, type) or not issubclass(cls, BaseEstimator):
        raise ConfigError(f"model: {path} is not a scikit-learn estimator class")
    try:
        estimator = cls()
    except Exception as e:  # a meta-estimator that needs arguments, say
        raise ConfigError(f"model: {path} cannot be made without arguments: {e}") from e
    task_of(estimator)  # a transformer or a clusterer is refused here
    return estimator


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
