"""Any scikit-learn estimator from the config, other modules only when allowed; bad input: one line, exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.errors import ConfigError
from toolkit.training.config import resolve_config
from toolkit.training.train import build_model, train

HGB = "sklearn.ensemble.HistGradientBoostingClassifier"


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def test_an_estimator_path_with_its_parameters_trains(tmp_path: Path) -> None:
    cfg_file = _config(
        tmp_path,
        f'dataset = "builtin:wine"\nmodel = "{HGB}"\nname = "wine-hgb"\ncv_folds = 2\n'
        "[params]\nmax_iter = 12\nlearning_rate = 0.2\n",
    )
    result = train(resolve_config(cfg_file, out=tmp_path / "out", register=False))
    assert result.card.algorithm == "HistGradientBoostingClassifier"
    assert result.card.params["max_iter"] == 12 and result.card.params["learning_rate"] == 0.2
    assert result.card.params["random_state"] == 42  # the config's seed
    assert set(result.metrics["test"]) == {"roc_auc", "accuracy", "f1"}


def test_a_regressor_path_decides_the_task(tmp_path: Path) -> None:
    # Wine's target would be classes by the data rule; a regressor class makes it a regression.
    cfg = resolve_config(
        dataset="builtin:wine",
        model="sklearn.linear_model.Lasso",
        params={"alpha": 0.1},
        out=tmp_path,
        register=False,
        cv_folds=2,
    )
    result = train(cfg)
    assert result.dataset.task == "regression"
    assert set(result.metrics["test"]) == {"rmse", "mae", "r2"}


def test_an_allowed_module_may_provide_the_estimator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from sklearn.linear_model import LogisticRegression\n\n"
        "class Shrunk(LogisticRegression):\n"
        "    def __init__(self, C=0.5, max_iter=500, random_state=None):\n"
        "        super().__init__(C=C, max_iter=max_iter, random_state=random_state)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    with pytest.raises(ConfigError, match=r'not from scikit-learn; .*allow_modules = \["mymodels"\]'):
        build_model("mymodels.Shrunk", {}, seed=0)
    model = build_model("mymodels.Shrunk", {"C": 0.25}, seed=3, allow_modules=("mymodels",))
    assert type(model).__name__ == "Shrunk" and model.C == 0.25 and model.random_state == 3


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        (f'model = "{HGB}"\n[params]\nmax_iters = 3\n', "params.max_iters: not a hyperparameter of"),
        (f'model = "{HGB}"\n[params]\nmax_iter = -3\n', "'max_iter' parameter"),
        ('model = "sklearn.ensemble.NoSuchForest"\n', "cannot import sklearn.ensemble.NoSuchForest"),
        ('model = "sklearn.nosuchmodule.Forest"\n', "cannot import sklearn.nosuchmodule.Forest"),
        ('model = "sklearn.preprocessing.StandardScaler"\n', "neither a classifier nor a regressor"),
        ('model = "sklearn.base.clone"\n', "sklearn.base.clone is not a scikit-learn estimator class"),
        ('model = "sklearn.ensemble.StackingClassifier"\n', "cannot be made without arguments"),
        ('model = "os.system"\n', 'not from scikit-learn; allow its package explicitly with allow_modules = ["os"]'),
        ('model = "os.path.join"\nallow_modules = ["os"]\n', "os.path.join is not a scikit-learn estimator class"),
        ('model = "sklearn.linear_model.Ridge"\ntask = "classification"\n', "is a regression model, but the task"),
        ('model = "ridge"\ntask = "classification"\n', "ridge is not a classification model"),
        ('model = "sklearn..Ridge"\n', "model: unknown kind 'sklearn..Ridge'"),
        ('task = "clustering"\n', "task: unknown task 'clustering'"),
        ("allow_modules = [1]\n", "'allow_modules' must be an array of strings"),
    ],
    ids=[
        "unknown-param",
        "bad-value",
        "no-class",
        "no-module",
        "transformer",
        "function",
        "needs-args",
        "outside-sklearn",
        "allowed-not-estimator",
        "regressor-for-classification",
        "kind-for-other-task",
        "malformed",
        "unknown-task",
        "allow-modules-type",
    ],
)
def test_bad_model_config_exits_2_with_one_line_before_reading_data(
    tmp_path: Path, runner: CliRunner, toml: str, needle: str
) -> None:
    # The dataset does not exist: an error about the model proves no data was read first.
    cfg_file = _config(tmp_path, f'dataset = "missing.csv"\ntarget = "y"\n{toml}')
    result = runner.invoke(app, ["train", "--config", str(cfg_file), "--no-register", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    assert needle in result.stderr
    assert "missing.csv" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_task_flag(tmp_path: Path, runner: CliRunner) -> None:
    args = ["train", "--dataset", "builtin:wine", "--model", "ridge", "--out", str(tmp_path), "--no-register", "-q"]
    args += ["--cv-folds", "2"]
    assert runner.invoke(app, [*args, "--task", "classification"]).exit_code == 2
    done = runner.invoke(app, [*args, "--task", "regression"])
    assert done.exit_code == 0, done.output
    assert Path(done.stdout.strip()).name == "wine-1.0.0.joblib"


@pytest.mark.parametrize(
    ("csv", "extra", "needle"),
    [
        (
            "x,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(30)) + "30,lots\n",
            ["--task", "regression"],
            "regression target column 'y' has text: 'lots' (row 31)",
        ),
        (
            "x,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(30)) + "30,lots\n",
            [],
            "target column 'y' is numeric but has text: 'lots' (row 31)",
        ),
        ("x,y\n1,a\n2,a\n3,a\n", ["--task", "classification"], "single class ('a')"),
        ("x,y\n1,4\n2,4\n3,4\n", ["--task", "regression"], "is constant"),
    ],
    ids=["regression-text", "inferred-regression-text", "one-class", "constant"],
)
def test_bad_targets_exit_2_with_one_line(
    tmp_path: Path, runner: CliRunner, csv: str, extra: list[str], needle: str
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(csv)
    result = runner.invoke(
        app, ["train", "--dataset", str(data), "--target", "y", *extra, "--no-register", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()
