"""Training: model kinds, pipeline, scores, the card's fields, reproducibility, the CLI and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.errors import ConfigError, DataError, UsageError
from toolkit.training.config import CLASSIFIER_KINDS, resolve_config
from toolkit.training.datasets import load_dataset, split
from toolkit.training.train import (
    PROBE_ROWS,
    build_model,
    build_pipeline,
    cross_validate,
    describe_preprocessing,
    score,
    select_probe,
    train,
)

REPO = Path(__file__).resolve().parents[1]
SMALL: dict[str, dict[str, Any]] = {
    "gradient_boosting": {"n_estimators": 15},
    "random_forest": {"n_estimators": 15},
    "logistic_regression": {},
    "hist_gradient_boosting": {"max_iter": 15},
}


@pytest.fixture(scope="module")
def wine_parts() -> tuple[Any, Any, Any, Any]:
    return split(load_dataset("builtin:wine"), test_size=0.25, seed=0)


@pytest.fixture(scope="module")
def credit_result(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The default job (builtin:credit, gradient boosting), trained once for this module."""
    out = tmp_path_factory.mktemp("credit")
    cfg = resolve_config(REPO / "configs" / "train.toml", out=out, register=False)
    events: list[tuple[str, str, str]] = []
    result = train(cfg, progress=lambda *e: events.append(e))
    return result, events


# --- building blocks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("gradient_boosting", "GradientBoostingClassifier"),
        ("random_forest", "RandomForestClassifier"),
        ("logistic_regression", "LogisticRegression"),
    ],
)
def test_build_model_kinds(kind: str, cls: str) -> None:
    model = build_model(kind, {}, seed=11)
    assert type(model).__name__ == cls
    assert model.get_params()["random_state"] == 11


def test_build_model_takes_params() -> None:
    assert build_model("random_forest", {"n_estimators": 7, "max_depth": 4}, seed=0).n_estimators == 7


@pytest.mark.parametrize(
    ("kind", "params", "needle"),
    [
        ("svm", {}, "model: unknown kind 'svm'"),
        ("gradient_boosting", {"n_trees": 5}, "params.n_trees: not a hyperparameter of GradientBoostingClassifier"),
        ("random_forest", {"n_estimators": "many"}, "n_estimators"),
        ("logistic_regression", {"C": -1.0}, "'C' parameter"),
        ("logistic_regression", {"random_state": 3}, "params.random_state"),
    ],
)
def test_build_model_refuses(kind: str, params: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(kind, params, seed=0)
    assert needle in str(info.value)


def test_pipeline_splits_columns_by_dtype() -> None:
    X = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2], "c": ["x", "y"]})
    pipeline = build_pipeline(X, build_model("logistic_regression", {}, seed=0))
    branches = {name: cols for name, _, cols in pipeline.named_steps["preprocess"].transformers}
    assert branches == {"numeric": ["a", "b"], "categorical": ["c"]}
    lines = describe_preprocessing(pipeline)
    assert lines[0] == "numeric columns (a, b): SimpleImputer(strategy='median') -> StandardScaler()"
    assert "OneHotEncoder(handle_unknown='ignore')" in lines[1]
    power = build_pipeline(X, build_model("logistic_regression", {}, seed=0), scaler="power")
    assert "PowerTransformer(method='yeo-johnson')" in describe_preprocessing(power)[0]


def test_pipeline_handles_missing_values_and_unknown_categories() -> None:
    X = pd.DataFrame({"n": [1.0, None, 3.0, 4.0] * 5, "c": ["a", "b", None, "a"] * 5})
    y = pd.Series([0, 1, 0, 1] * 5)
    pipeline = build_pipeline(X, build_model("logistic_regression", {}, seed=0)).fit(X, y)
    new = pd.DataFrame({"n": [None], "c": ["never seen"]})
    assert pipeline.predict_proba(new).shape == (1, 2)


def test_score_multiclass(wine_parts: tuple[Any, Any, Any, Any]) -> None:
    X_train, X_test, y_train, y_test = wine_parts
    pipeline = build_pipeline(X_train, build_model("logistic_regression", {}, seed=0)).fit(X_train, y_train)
    scores = score(pipeline, X_test, y_test)
    assert set(scores) == {"roc_auc", "accuracy", "f1"}
    assert scores["roc_auc"] > 0.95 and scores["accuracy"] > 0.9 and scores["f1"] > 0.9


def test_score_binary_with_text_labels() -> None:
    X = pd.DataFrame({"n": list(range(40))})
    y = pd.Series(["no"] * 20 + ["yes"] * 20)
    pipeline = build_pipeline(X, build_model("logistic_regression", {}, seed=0)).fit(X, y)
    assert score(pipeline, X, y) == {"roc_auc": 1.0, "accuracy": 1.0, "f1": 1.0}


def test_score_refuses_unseen_classes(wine_parts: tuple[Any, Any, Any, Any]) -> None:
    X_train, X_test, y_train, y_test = wine_parts
    pipeline = build_pipeline(X_train, build_model("logistic_regression", {}, seed=0)).fit(X_train, y_train)
    with pytest.raises(DataError, match="not among the model's classes"):
        score(pipeline, X_test, y_test + 10)


def test_cross_validate_is_seeded(wine_parts: tuple[Any, Any, Any, Any]) -> None:
    X_train, _, y_train, _ = wine_parts
    # A forest (random itself, unlike a logistic regression) of a few trees, on 3 folds: the seed
    # must fix both the folds and the model, and 3 folds show the per-fold progress as 5 do.
    pipeline = build_pipeline(X_train, build_model("random_forest", {"n_estimators": 3}, seed=1))
    events: list[tuple[str, str, str]] = []
    first = cross_validate(pipeline, X_train, y_train, folds=3, seed=1, progress=lambda *e: events.append(e))
    assert set(first) == {"roc_auc", "roc_auc_std", "accuracy", "accuracy_std", "f1", "f1_std"}
    assert [e[2] for e in events if e[1] == "start"] == [f"fold {i}/3" for i in range(1, 4)]
    assert cross_validate(pipeline, X_train, y_train, folds=3, seed=1) == first


def test_select_probe_prefers_complete_rows() -> None:
    X = pd.DataFrame({"n": [None, 1.0, 2.0, 3.0] * 10, "c": ["a", None, "b", "c"] * 10})
    probe = select_probe(X)
    assert len(probe) == PROBE_ROWS
    assert probe.notna().all().all()
    assert list(probe.index) == list(range(PROBE_ROWS))


# --- the whole job and its card ----------------------------------------------------------


def test_credit_card_fields(credit_result: tuple[Any, list[Any]]) -> None:
    result, _ = credit_result
    card = json.loads(result.path.with_suffix(".card.json").read_bytes())
    assert card["name"] == "credit" and card["version"] == "1.0.0"
    assert card["algorithm"] == "GradientBoostingClassifier"
    assert card["intended_use"] and card["limitations"]
    blob = result.path.read_bytes()
    assert card["artifact"] == {
        "file": "credit-1.0.0.joblib",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }
    data = card["data"]
    assert data["source"] == "builtin:credit"
    assert data["sha256"] == load_dataset("builtin:credit").sha256
    assert (data["n_train"], data["n_test"]) == (1600, 400)
    assert data["features"] == [
        {"name": "age", "dtype": "float64"},
        {"name": "income", "dtype": "float64"},
        {"name": "credit", "dtype": "float64"},
        {"name": "loan_amt", "dtype": "float64"},
        {"name": "educ", "dtype": "object"},
    ]
    assert data["target"] == "default" and data["classes"] == [0, 1]
    assert data["split"] == {"test_size": 0.2, "seed": 42}
    assert set(card["metrics"]["cv"]) == {"roc_auc", "roc_auc_std", "accuracy", "accuracy_std", "f1", "f1_std"}
    assert set(card["metrics"]["test"]) == {"roc_auc", "accuracy", "f1"}
    assert all(0.0 <= v <= 1.0 for section in card["metrics"].values() for v in section.values())
    assert card["params"]["n_estimators"] == 100 and card["params"]["random_state"] == 42
    assert len(card["preprocessing"]) == 2
    assert len(card["probe"]["rows"]) == PROBE_ROWS
    assert card["probe"]["columns"] == ["age", "income", "credit", "loan_amt", "educ"]
    # The pickle holds scikit-learn's classes only: loading it never needs the toolkit.
    assert not any(m.startswith("toolkit") for m in card["references"]["modules"])
    assert "scikit-learn" in card["references"]["distributions"]


def test_progress_stages_in_order(credit_result: tuple[Any, list[Any]]) -> None:
    _, events = credit_result
    starts = [stage for stage, event, _ in events if event == "start"]
    assert starts == ["data", "split", "cv", "cv", "cv", "cv", "cv", "fit", "evaluate", "save"]
    assert all(any(e[:2] == (stage, "done") for e in events) for stage in set(starts))


def test_test_metrics_match_a_rescore(credit_result: tuple[Any, list[Any]]) -> None:
    import toolkit

    result, _ = credit_result
    dataset = load_dataset("builtin:credit")
    _, X_test, _, y_test = split(dataset, test_size=0.2, seed=42)
    assert score(toolkit.load(result.path), X_test, y_test) == result.metrics["test"]


@pytest.mark.parametrize("kind", CLASSIFIER_KINDS)
def test_every_kind_trains_on_wine(kind: str, tmp_path: Path) -> None:
    # The default is 5 folds; 2 are trained (the recipe must record the folds used, not the default).
    default = resolve_config(dataset="builtin:wine", model=kind, params=SMALL[kind], out=tmp_path, register=False)
    assert default.cv_folds == 5
    cfg = resolve_config(
        dataset="builtin:wine", model=kind, params=SMALL[kind], out=tmp_path, register=False, cv_folds=2
    )
    result = train(cfg)
    assert result.path == tmp_path / "wine-1.0.0.joblib"
    assert result.card.data.classes == (0, 1, 2)
    assert result.metrics["test"]["roc_auc"] > 0.9
    assert result.card.data.n_train + result.card.data.n_test == 178
    # Card schema 2: the recipe is enough to rebuild the same estimator from the card alone.
    recipe = result.card.training
    assert recipe is not None and recipe.model == kind and recipe.dataset_sha256 == result.dataset.sha256
    assert (recipe.seed, recipe.test_size, recipe.cv_folds, recipe.preprocessing) == (
        42,
        0.2,
        2,
        {"scaler": "standard"},
    )
    rebuilt = build_model(recipe.model, recipe.params, seed=recipe.seed)
    from toolkit.artifact import load

    assert rebuilt.get_params(deep=False) == load(result.path)[-1].get_params(deep=False)


def test_user_csv_with_text_target(tmp_path: Path) -> None:
    dataset = load_dataset("builtin:credit")
    frame = dataset.X.assign(outcome=dataset.y.map({0: "repaid", 1: "defaulted"})).head(300)
    path = tmp_path / "loans.csv"
    frame.to_csv(path, index=False)
    cfg = resolve_config(
        dataset=str(path),
        target="outcome",
        model="logistic_regression",
        out=tmp_path / "out",
        register=False,
        cv_folds=2,
    )
    result = train(cfg)
    assert result.card.name == "loans"
    assert result.card.data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.card.data.classes == ("defaulted", "repaid")


def test_existing_artifact_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "wine-1.0.0.card.json").write_text("{}")
    cfg = resolve_config(dataset="builtin:wine", model="logistic_regression", out=tmp_path, register=False)
    events: list[Any] = []
    with pytest.raises(UsageError, match="already exists"):
        train(cfg, progress=lambda *e: events.append(e))
    assert events == []


def test_too_few_rows_for_cv(tmp_path: Path) -> None:
    rows = "x,y\n" + "".join(f"{i},{'b' if i < 4 else 'a'}\n" for i in range(40))
    path = tmp_path / "d.csv"
    path.write_text(rows)
    cfg = resolve_config(dataset=str(path), target="y", model="logistic_regression", out=tmp_path, register=False)
    with pytest.raises(DataError, match="class 'b' has only 3 training row"):
        train(cfg)


# --- reproducibility: two separate processes ---------------------------------------------


@pytest.mark.process
def test_two_processes_write_identical_bytes(tmp_path: Path) -> None:
    config = tmp_path / "train.toml"
    config.write_text('dataset = "builtin:credit"\nname = "repro"\n[params]\nn_estimators = 20\n')
    procs = []
    for run, hashseed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "PYTHONHASHSEED": hashseed}
        argv = [sys.executable, "-m", "toolkit", "train", "--config", str(config), "--out", str(tmp_path / run)]
        procs.append(
            subprocess.Popen(
                [*argv, "--no-register", "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr.decode()
        assert stdout.decode().strip().endswith("repro-1.0.0.joblib")
    names = ("repro-1.0.0.joblib", "repro-1.0.0.card.json", "repro-1.0.0.card.md")
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    card = json.loads((tmp_path / "a" / names[1]).read_bytes())
    assert card["created_at"] == "2023-11-14T22:13:20Z"


# --- the CLI -------------------------------------------------------------------------------


def test_cli_train_quiet_prints_only_the_path(tmp_path: Path, runner: CliRunner) -> None:
    args = ["train", "--dataset", "builtin:wine", "--model", "logistic_regression", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--cv-folds", "2", "--no-register", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'wine-1.0.0.joblib'}\n"
    assert result.stderr == ""


def test_cli_train_shows_stages_and_summary(tmp_path: Path, runner: CliRunner) -> None:
    args = ["train", "--dataset", "builtin:wine", "--model", "logistic_regression", "--name", "w", "--version", "0.2.0"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--cv-folds", "2", "--no-register"])
    assert result.exit_code == 0, result.output
    for stage in ("data", "split", "cv", "fold 1/2", "fold 2/2", "fit", "evaluate", "save"):
        assert stage in result.stderr
    sha = hashlib.sha256((tmp_path / "w-0.2.0.joblib").read_bytes()).hexdigest()
    assert sha in result.stdout
    assert "roc_auc" in result.stdout and "w-0.2.0.joblib" in result.stdout


def test_cli_train_registers_and_refuses_a_registered_version(tmp_path: Path, runner: CliRunner) -> None:
    from toolkit.registry import Registry

    registry = tmp_path / "registry"
    args = ["train", "--dataset", "builtin:wine", "--model", "logistic_regression", "--cv-folds", "2"]
    args += ["--registry", str(registry)]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "one"), "--quiet"])
    assert first.exit_code == 0, first.output
    with Registry(registry) as reg:
        assert reg.has("wine", "1.0.0")
        entry = reg.get("wine", "1.0.0")
    assert first.stdout.strip() == str(entry.path)
    # A fresh --out, so only the registry can refuse it; and it must do so before training.
    second = runner.invoke(app, [*args, "--out", str(tmp_path / "two"), "--quiet"])
    assert second.exit_code == 4
    assert "already registered" in second.stderr
    assert not (tmp_path / "two").exists()


def test_cli_rejects_a_bad_version_and_name(tmp_path: Path, runner: CliRunner) -> None:
    for flag, value in (("--version", "1.2"), ("--name", "../evil")):
        result = runner.invoke(app, ["train", flag, value, "--out", str(tmp_path), "--no-register"])
        # One rule (toolkit.identifiers): a bad name or version exits 4 from every command.
        assert result.exit_code == 4
        assert value in result.stderr
        assert list(tmp_path.iterdir()) == []


def _csv(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "data.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("setup", "extra", "needle"),
    [
        (lambda p: _csv(p, "x,y\n1,0\n2,1\n"), ["--target", "label"], "no target column 'label'"),
        (lambda p: _csv(p, ""), ["--target", "y"], "the file is empty"),
        (lambda p: _csv(p, b"\x00\xff\xfe\x80"), ["--target", "y"], "not a UTF-8"),
        (lambda p: p, ["--target", "y"], "is a directory"),
        (lambda p: _csv(p, "x,y\n1,0\nlots,1\n3,0\n4,1\n"), ["--target", "y"], "numeric but has text: 'lots'"),
        (lambda p: _csv(p, "x,y\n1,0\n2,0\n3,0\n"), ["--target", "y"], "single class"),
        (lambda p: _csv(p, "x,y\n1,0\n2,1\n"), ["--target", "y", "--model", "xgboost"], "unknown kind 'xgboost'"),
    ],
    ids=["missing-target", "empty", "unreadable", "directory", "text-in-numeric", "single-class", "unknown-model"],
)
def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, runner: CliRunner, setup: Any, extra: list[str], needle: str
) -> None:
    data = setup(tmp_path)
    result = runner.invoke(
        app, ["train", "--dataset", str(data), *extra, "--out", str(tmp_path / "o"), "--no-register"]
    )
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# --- refused before any work (issue 8) -----------------------------------------------------


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("abc", "SOURCE_DATE_EPOCH='abc' is not a Unix timestamp"),
        ("", "SOURCE_DATE_EPOCH='' is not a Unix timestamp"),
        ("-1", "SOURCE_DATE_EPOCH=-1 is out of range"),
        ("253402300800", "SOURCE_DATE_EPOCH=253402300800 is out of range"),
    ],
    ids=["text", "empty", "negative", "after-9999"],
)
def test_bad_source_date_epoch_is_exit_2_before_numpy_is_imported(tmp_path: Path, value: str, needle: str) -> None:
    # A real process: numpy's import itself crashes on SOURCE_DATE_EPOCH=abc (numpy.f2py runs int() on it),
    # which in-process tests cannot see because numpy is already imported.
    (tmp_path / "work").mkdir()
    before = _files_under(tmp_path)
    env = {**os.environ, "SOURCE_DATE_EPOCH": value}
    for command in (["train", "--out", str(tmp_path / "o"), "--no-register"], ["check-env", "x.joblib"]):
        done = subprocess.run(
            [sys.executable, "-m", "toolkit", *command], env=env, cwd=tmp_path / "work", capture_output=True, text=True
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
        assert done.stdout == ""
    assert _files_under(tmp_path) == before


def test_the_library_checks_source_date_epoch_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "99999999999999")
    events: list[Any] = []
    cfg = resolve_config(dataset="builtin:wine", model="logistic_regression", out=tmp_path / "o", register=False)
    with pytest.raises(UsageError, match="out of range"):
        train(cfg, progress=lambda *e: events.append(e))
    assert events == []
    assert _files_under(tmp_path) == []


@pytest.mark.parametrize(
    ("out", "needle"),
    [
        (lambda p: p / "a-file", "is a file, not a folder"),
        (lambda p: p / "a-file" / "sub", "cannot be created: {tmp}/a-file is a file, not a folder"),
        (lambda p: Path("/sys/toolkit-out"), "cannot be written: /sys"),
    ],
    ids=["regular-file", "parent-is-a-file", "unwritable"],
)
def test_unusable_out_is_exit_2_before_training(tmp_path: Path, runner: CliRunner, out: Any, needle: str) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    before = _files_under(tmp_path)
    args = ["train", "--dataset", "builtin:wine", "--model", "logistic_regression", "--no-register"]
    result = runner.invoke(app, [*args, "--out", str(out(tmp_path))])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert needle.format(tmp=tmp_path) in result.stderr
    assert _files_under(tmp_path) == before
    assert (tmp_path / "a-file").read_text() == "not a folder\n"
    assert not Path("/sys/toolkit-out").exists()


def test_disk_full_while_saving_names_the_path_and_leaves_nothing(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    out = tmp_path / "out"
    out.mkdir()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    args = ["train", "--dataset", "builtin:wine", "--model", "logistic_regression", "--cv-folds", "2"]
    args += ["--no-register", "--quiet"]
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", full)  # every atomic write fsyncs its temp file before the rename
        result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: cannot save {out / 'wine-1.0.0.joblib'}: No space left on device\n"
    assert _files_under(tmp_path) == ["out"]
    retry = runner.invoke(app, [*args, "--out", str(out)])  # nothing blocks the retry
    assert retry.exit_code == 0, retry.output
    assert _files_under(out) == [
        "wine-1.0.0.card.json",
        "wine-1.0.0.card.md",
        "wine-1.0.0.joblib",
        "wine-1.0.0.reference.json.gz",
    ]


def _wide_csv(path: Path, columns: int, rows: int = 40, text: str = "") -> Path:
    import numpy as np

    rng = np.random.RandomState(0)
    frame = pd.DataFrame(rng.normal(size=(rows, columns)), columns=[f"feature_{i:05d}" for i in range(columns)])
    if text:
        frame["note"] = [f"{text}{i % 3}" for i in range(rows)]
    frame["y"] = np.arange(rows) % 2
    frame.to_csv(path, index=False)
    return path


def test_a_dataset_whose_card_would_be_too_big_is_refused_before_fitting(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rule, not the size: a limit of 1/8 MiB is crossed by 300 columns (about 0.17 MiB; the
    # fixed allowance alone is 1/16) as 4 MiB is by 15,000, and the test runs in a fraction of a
    # second instead of minutes (the estimate's own test is below).
    import toolkit.card

    monkeypatch.setattr(toolkit.card, "MAX_CARD_BYTES", 2**17)
    data = _wide_csv(tmp_path / "wide.csv", 300)
    out = tmp_path / "o"
    before = _files_under(tmp_path)
    args = ["train", "--dataset", str(data), "--target", "y", "--model", "logistic_regression", "--no-register"]
    result = runner.invoke(app, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert "its model card would be about" in result.stderr
    assert "over the 0.125 MiB card limit (300 feature columns)" in result.stderr
    assert _files_under(tmp_path) == before
    # Before fitting: the library stops after the split, without cross-validating.
    events: list[Any] = []
    cfg = resolve_config(dataset=str(data), target="y", model="logistic_regression", out=out, register=False)
    with pytest.raises(DataError, match="card limit"):
        train(cfg, progress=lambda *e: events.append(e))
    assert [stage for stage, event, _ in events if event == "start"] == ["data", "split"]


def test_the_card_estimate_bounds_the_real_card(tmp_path: Path) -> None:
    from toolkit.artifact import artifact_paths
    from toolkit.training.train import _CARD_ALLOWANCE, estimate_card_bytes

    data = _wide_csv(tmp_path / "wide.csv", 400, text="a fairly long category value, é and all, number ")
    cfg = resolve_config(
        dataset=str(data), target="y", model="logistic_regression", out=tmp_path / "o", register=False, cv_folds=2
    )
    dataset = load_dataset(cfg.dataset, cfg.target)
    X_train, X_test, _, _ = split(dataset, test_size=cfg.test_size, seed=cfg.seed)
    pipeline = build_pipeline(X_train, build_model(cfg.model, cfg.params, seed=cfg.seed))
    estimate = estimate_card_bytes(cfg, dataset, pipeline, X_train, X_test)
    actual = artifact_paths(train(cfg).path).card_json.stat().st_size
    assert actual <= estimate <= actual + _CARD_ALLOWANCE
    assert estimate - _CARD_ALLOWANCE > 0.9 * actual  # the data-dependent part is laid out, not guessed


def test_require_unregistered_is_the_one_rule_for_train_and_image_train(tmp_path: Path, base_artifact: Path) -> None:
    from toolkit.errors import RegistryError
    from toolkit.registry import Registry

    with Registry(tmp_path / "registry") as reg:
        reg.require_unregistered("iris", "1.0.0")  # nothing registered yet
        reg.add(base_artifact)
        with pytest.raises(RegistryError, match=r"iris 1\.0\.0 is already registered in") as exc:
            reg.require_unregistered("iris", "1.0.0")
        assert exc.value.exit_code == 4
        reg.require_unregistered("iris", "1.0.1")
    for cli in ("train.py", "image.py"):
        assert "already registered" not in (REPO / "toolkit" / "cli" / cli).read_text()
