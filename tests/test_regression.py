"""Regression in `toolkit train`: the task rule, each regressor, metrics against the card,
reproducible artifacts, predictions, and promote/compare with lower-is-better metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import toolkit
from toolkit import probe as probe_mod
from toolkit.cli import app
from toolkit.errors import ConfigError, DataError
from toolkit.metrics import direction, is_better
from toolkit.registry import Registry
from toolkit.training.config import REGRESSOR_KINDS, resolve_config
from toolkit.training.datasets import infer_task, load_dataset, split
from toolkit.training.train import build_model, score, train

SMALL: dict[str, dict[str, Any]] = {
    "ridge": {"alpha": 0.5},
    "random_forest": {"n_estimators": 15},
    "gradient_boosting": {"n_estimators": 20},
    "hist_gradient_boosting": {"max_iter": 20},
}
EPOCH = "1700000000"


def _numeric_csv(tmp_path: Path, rows: int = 240) -> Path:
    """A user CSV with a numeric target: a linear signal, a category and noise."""
    rng = np.random.RandomState(7)
    x1 = rng.normal(0, 1, rows)
    x2 = rng.uniform(0, 10, rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    price = 3.5 * x1 + 1.2 * x2 + np.where(colour == "red", 4.0, 0.0) + rng.normal(0, 0.5, rows)
    path = tmp_path / "houses.csv"
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "price": price.round(3)}).to_csv(path, index=False)
    return path


def _rescore(result: Any) -> dict[str, float]:
    """Load the saved artifact and score it on the same held-out rows the card describes."""
    card = result.card
    dataset = load_dataset(card.data.source, card.data.target, task="regression")
    _, X_test, _, y_test = split(dataset, test_size=card.data.split.test_size, seed=card.data.split.seed)
    return score(toolkit.load(result.path), X_test, y_test)


# --- the task rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0.5, 1.25, 2.0, 3.0], "regression"),  # non-integer numbers
        (list(range(21)), "regression"),  # more than 20 distinct integers
        (list(range(20)), "classification"),  # 20 distinct integers: classes
        ([0, 1, 0, 1], "classification"),
        ([True, False, True], "classification"),
        (["a", "b", "a"], "classification"),
        ([str(v / 3) for v in range(30)], "regression"),  # numbers read as text
    ],
)
def test_infer_task(values: list[Any], task: str) -> None:
    assert infer_task(pd.Series(values, name="y")) == task


def test_infer_task_refuses_a_numeric_target_with_stray_text() -> None:
    values = [str(v / 3) for v in range(30)] + ["n/a"]
    with pytest.raises(DataError, match=r"target column 'y' is numeric but has text: 'n/a' \(row 31\)"):
        infer_task(pd.Series(values, name="y"), "data.csv")


def test_diabetes_is_a_regression_dataset() -> None:
    dataset = load_dataset("builtin:diabetes")
    assert dataset.task == "regression" and dataset.target == "target"
    assert dataset.X.shape == (442, 10) and dataset.y.dtype == "float64"
    # The dataset version is fixed by the values scikit-learn ships.
    assert dataset.sha256 == load_dataset("builtin:diabetes").sha256


def test_explicit_task_overrides_the_rule(tmp_path: Path) -> None:
    wine = load_dataset("builtin:wine", task="regression")
    assert wine.task == "regression" and wine.y.dtype == "float64"
    with pytest.raises(DataError, match="non-integer numbers, which are not classes"):
        load_dataset(str(_numeric_csv(tmp_path)), "price", task="classification")


# --- each regressor, on builtin:diabetes and on a user CSV -----------------------------------


@pytest.mark.parametrize("kind", REGRESSOR_KINDS)
@pytest.mark.parametrize("source", ["builtin:diabetes", "csv"])
def test_each_regressor_trains_and_its_metrics_match_the_card(kind: str, source: str, tmp_path: Path) -> None:
    dataset, target = (str(_numeric_csv(tmp_path)), "price") if source == "csv" else (source, None)
    # 2 folds: the CV metrics' keys are the point here, not the folds (their count has its own test).
    cfg = resolve_config(
        dataset=dataset, target=target, model=kind, params=SMALL[kind], out=tmp_path / "out", register=False, cv_folds=2
    )
    result = train(cfg)
    card = json.loads(result.path.with_suffix(".card.json").read_text())
    assert result.dataset.task == "regression"
    assert card["data"]["classes"] == []
    assert card["algorithm"].endswith("Regressor") or card["algorithm"] == "Ridge"
    assert set(card["metrics"]["test"]) == {"rmse", "mae", "r2"}
    assert set(card["metrics"]["cv"]) == {"rmse", "mae", "r2", "rmse_std", "mae_std", "r2_std"}
    assert card["metrics"] == result.metrics
    # The card's test metrics are what the saved model scores on the held-out rows.
    assert _rescore(result) == pytest.approx(card["metrics"]["test"], rel=1e-12)
    assert card["metrics"]["test"]["rmse"] >= card["metrics"]["test"]["mae"] > 0
    if source == "csv":  # a real signal: every kind must find it
        assert card["metrics"]["test"]["r2"] > 0.5
    # The probe holds numbers, no probabilities, and re-checks clean after a load.
    assert card["probe"]["probabilities"] is None
    assert all(isinstance(v, float) for v in card["probe"]["predictions"])
    assert probe_mod.check(result.card.probe, toolkit.load(result.path)).ok
    # The recipe (card schema 2) records the task, and rebuilds the same estimator.
    recipe = result.card.training
    assert recipe is not None and recipe.task == "regression" and card["training"]["task"] == "regression"
    rebuilt = build_model(recipe.model, recipe.params, seed=recipe.seed, task=recipe.task)
    assert rebuilt.get_params(deep=False) == toolkit.load(result.path)[-1].get_params(deep=False)


def test_a_recipe_task_must_be_one_of_the_two() -> None:
    from toolkit.card import training_from
    from toolkit.errors import UsageError

    recipe = {
        "dataset": {"source": "builtin:diabetes", "sha256": "c" * 64},
        "target": "target",
        "model": "ridge",
        "params": {"alpha": 1.0},
        "preprocessing": {"scaler": "standard"},
        "test_size": 0.2,
        "seed": 0,
        "cv_folds": 3,
    }
    training = training_from({**recipe, "task": "regression", "allow_modules": ["mypkg"]})
    assert training is not None and training.task == "regression" and training.allow_modules == ("mypkg",)
    assert training.to_dict() == {**recipe, "task": "regression", "allow_modules": ["mypkg"]}
    with pytest.raises(UsageError, match=r"'training\.task' is not classification or regression: 'clustering'"):
        training_from({**recipe, "task": "clustering"})


def test_hist_gradient_boosting_classifies_too(tmp_path: Path) -> None:
    cfg = resolve_config(
        dataset="builtin:wine",
        model="hist_gradient_boosting",
        params={"max_iter": 15},
        out=tmp_path,
        register=False,
        cv_folds=2,
    )
    result = train(cfg)
    assert result.card.algorithm == "HistGradientBoostingClassifier"
    assert set(result.metrics["test"]) == {"roc_auc", "accuracy", "f1"}
    assert result.card.data.classes == (0, 1, 2)


def test_regression_cv_is_plain_kfold_and_the_split_is_not_stratified(tmp_path: Path) -> None:
    events: list[tuple[str, str, str]] = []
    cfg = resolve_config(dataset="builtin:diabetes", model="ridge", out=tmp_path, register=False, cv_folds=3)
    train(cfg, progress=lambda *e: events.append(e))
    split_note = next(d for s, e, d in events if s == "split" and e == "done")
    assert "shuffled" in split_note and "stratified" not in split_note
    assert [d for s, e, d in events if s == "cv" and e == "start"] == ["fold 1/3", "fold 2/3", "fold 3/3"]


def test_a_second_run_is_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    paths = []
    for run in ("a", "b"):
        cfg = resolve_config(
            dataset="builtin:diabetes",
            model="hist_gradient_boosting",
            params=SMALL["hist_gradient_boosting"],
            out=tmp_path / run,
            register=False,
            cv_folds=2,  # the same recipe twice is the point, not the folds: a third of the time
        )
        paths.append(train(cfg).path)
    for suffix in (".joblib", ".card.json", ".card.md"):
        first, second = (p.with_suffix(suffix) if suffix != ".joblib" else p for p in paths)
        assert first.read_bytes() == second.read_bytes(), suffix


def test_classifier_kinds_are_refused_for_regression_before_any_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="logistic_regression is not a regression model"):
        resolve_config(dataset=str(tmp_path / "missing.csv"), model="logistic_regression", task="regression")
    cfg = resolve_config(dataset=str(tmp_path / "missing.csv"), target="y", model="ridge", params={"alpah": 1.0})
    with pytest.raises(ConfigError, match=r"params\.alpah: not a hyperparameter of Ridge"):
        train(cfg)  # the file does not exist: the parameter is refused before it is read


# --- predict, promote, compare ---------------------------------------------------------------


def test_predict_writes_numeric_predictions(tmp_path: Path, runner: CliRunner) -> None:
    data = _numeric_csv(tmp_path)
    cfg = resolve_config(
        dataset=str(data), target="price", model="ridge", out=tmp_path / "out", register=False, cv_folds=2
    )
    result = train(cfg)
    out = tmp_path / "pred.csv"
    done = runner.invoke(app, ["predict", str(result.path), str(data), "--out", str(out), "--policy", "compatible"])
    assert done.exit_code == 0, done.output
    predicted = pd.read_csv(out)
    assert list(predicted.columns) == ["prediction"]
    frame = pd.read_csv(data)
    expected = toolkit.load(result.path).predict(frame.drop(columns=["price"]))
    assert np.allclose(predicted["prediction"].to_numpy(), expected, rtol=0, atol=1e-9)
    assert len(predicted) == len(frame)


def test_metric_direction() -> None:
    assert [direction(k) for k in ("rmse", "mae", "r2", "roc_auc", "accuracy", "rmse_std")] == [
        "lower",
        "lower",
        "higher",
        "higher",
        "higher",
        "lower",
    ]
    assert is_better("rmse", 1.0, 2.0) and not is_better("r2", 0.1, 0.2) and not is_better("mae", 1.0, 1.0)


@pytest.fixture(scope="module")
def regression_registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, float]]]:
    """Three versions of one regression model, different kinds, registered; their test metrics."""
    root = tmp_path_factory.mktemp("registry")
    metrics = {}
    for version, kind in (("1.0.0", "ridge"), ("1.1.0", "random_forest"), ("1.2.0", "hist_gradient_boosting")):
        out = tmp_path_factory.mktemp("out")
        # 2 folds: promote and compare read the test metrics, which the folds do not change.
        cfg = resolve_config(
            dataset="builtin:diabetes",
            model=kind,
            params=SMALL[kind],
            name="sugar",
            version=version,
            out=out,
            cv_folds=2,
        )
        result = train(cfg)
        with Registry(root) as reg:
            reg.add(result.path)
        metrics[version] = result.metrics["test"]
    return root, metrics


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_promote_best_by_knows_lower_is_better(
    regression_registry: tuple[Path, dict[str, dict[str, float]]], runner: CliRunner, metric: str, tmp_path: Path
) -> None:
    import shutil

    source, metrics = regression_registry
    root = tmp_path / "reg"
    shutil.copytree(source, root)  # each promotion on its own copy
    pick = min if direction(metric) == "lower" else max
    best = pick(metrics, key=lambda v: metrics[v][metric])
    worst = (max if pick is min else min)(metrics, key=lambda v: metrics[v][metric])
    assert best != worst  # the three kinds do differ, so the direction matters
    done = runner.invoke(
        app, ["registry", "promote", "sugar", "--best-by", metric, "--registry", str(root), "--policy", "compatible"]
    )
    assert done.exit_code == 0, done.output
    assert f"production -> {best}" in done.stdout
    assert f"({direction(metric)} is better)" in done.stdout
    with Registry(root) as reg:
        assert reg.get("sugar", best).status == "production"


def test_compare_rescores_and_says_the_direction(
    regression_registry: tuple[Path, dict[str, dict[str, float]]], runner: CliRunner
) -> None:
    root, metrics = regression_registry
    # Scores and directions, not intervals, are what this test is about: a few resamples do
    # (regression metrics are re-scored by scikit-learn per resample, ~1000x the work at the default).
    few = ["--resamples", "20"]
    done = runner.invoke(
        app, ["registry", "compare", "sugar", "1.0.0", "1.1.0", "--registry", str(root), "--json", *few]
    )
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["better"] == {"rmse": "lower", "mae": "lower", "r2": "higher"}
    assert report["data"]["how"] == "held-out test split"
    for version in ("1.0.0", "1.1.0"):
        assert report["scores"][version] == pytest.approx(metrics[version], rel=1e-12)
    table = runner.invoke(app, ["registry", "compare", "sugar", "1.0.0", "1.1.0", "--registry", str(root), *few])
    assert table.exit_code == 0 and "lower" in table.stdout
