"""`toolkit.save` from a user's script records what the recipe records: the held-out data.

A script saves with ``held_out=(X_test, y_test)``: the card's ``data`` gets the held-out set's
sha256, rows, features, target and classes, the rows and their target go to the reference set,
and ``registry compare``, ``card --plots`` and ``diff`` work on the model as on a recipe's.
``probe=``, ``reference=`` and ``held_out=`` take a DataFrame or a numpy array; anything else is
one ``UsageError`` naming the argument, before the pipeline sees it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import toolkit
from toolkit.artifact import read_card, read_reference
from toolkit.cli import app
from toolkit.errors import UsageError
from toolkit.names import artifact_paths

_NOT_A_TABLE = r"^probe must be a pandas DataFrame or a 2-D numpy array, got a "
BASE = "127.0.0.1:5000/python-base@sha256:" + "a" * 64


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True, as_frame=True)
    y = y.map({0: "setosa", 1: "versicolor", 2: "virginica"}).rename("species")
    return tuple(train_test_split(X, y, test_size=0.3, random_state=0, stratify=y))  # type: ignore[return-value]


def _fit(X: Any, y: Any, C: float = 1.0) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500)).fit(X, y)


def _save(pipeline: Any, where: Path, version: str, **kwargs: Any) -> Path:
    path = where / f"iris-{version}.joblib"
    toolkit.save(pipeline, path, name="iris", version=version, **kwargs)
    return path


@pytest.fixture(scope="module")
def two_versions(iris: tuple[Any, Any, Any, Any], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two script-saved versions held out on the same rows: a weak one (C=0.01) and a better one."""
    X_train, X_test, y_train, y_test = iris
    where = tmp_path_factory.mktemp("script")
    weak = _save(_fit(X_train, y_train, C=0.01), where, "1.0.0", held_out=(X_test, y_test))
    strong = _save(_fit(X_train, y_train, C=1.0), where, "1.1.0", held_out=(X_test, y_test))
    return weak, strong


@pytest.fixture(scope="module")
def registry(two_versions: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry") / "models"
    for path in two_versions:
        result = CliRunner().invoke(app, ["registry", "add", str(path), "--registry", str(root)])
        assert result.exit_code == 0, result.output
    return root


# --- what the card records --------------------------------------------------------------------


def test_held_out_records_the_data_section_and_keeps_the_target(
    two_versions: tuple[Path, Path], iris: tuple[Any, Any, Any, Any]
) -> None:
    from toolkit.training.datasets import canonical_csv

    _, X_test, _, y_test = iris
    card = read_card(two_versions[0])
    assert card.data.n_test == len(X_test) == 45
    assert card.data.target == "species"
    assert card.data.classes == ("setosa", "versicolor", "virginica")
    assert [f.name for f in card.data.features] == list(X_test.columns)
    assert card.data.source is None and card.data.split is None  # the script did not say: not invented
    import hashlib

    expected = canonical_csv(X_test.reset_index(drop=True)) + canonical_csv(y_test.reset_index(drop=True).to_frame())
    assert card.data.sha256 == hashlib.sha256(expected).hexdigest()
    assert read_card(two_versions[1]).data.sha256 == card.data.sha256  # same rows, same sha256
    recorded = read_reference(two_versions[0], card)
    assert recorded is not None and recorded.target == tuple(y_test)
    assert card.reference is not None and card.reference.rows == 45


def test_held_out_keeps_the_source_n_train_and_split_the_script_gives(
    iris: tuple[Any, Any, Any, Any], tmp_path: Path
) -> None:
    from toolkit.card import DataInfo

    X_train, X_test, y_train, y_test = iris
    data = DataInfo(source="data/iris.csv", n_train=len(X_train), split={"test_size": 0.3, "seed": 0})  # type: ignore[arg-type]
    card = read_card(_save(_fit(X_train, y_train), tmp_path, "1.0.0", held_out=(X_test, y_test), data=data))
    assert (card.data.source, card.data.n_train, card.data.n_test) == ("data/iris.csv", 105, 45)
    assert card.data.split is not None and card.data.split.to_dict() == {"test_size": 0.3, "seed": 0}
    with pytest.raises(UsageError, match=r"data.sha256 is the held-out set's"):
        _save(_fit(X_train, y_train), tmp_path, "2.0.0", held_out=(X_test, y_test), data=DataInfo(sha256="0" * 64))
    assert not list(tmp_path.glob("iris-2.0.0*"))


def test_a_regressor_held_out_on_numpy_arrays_records_no_classes(tmp_path: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X[:300], y[:300])
    path = tmp_path / "d-1.0.0.joblib"
    card = toolkit.save(model, path, name="d", version="1.0.0", held_out=(X[300:], y[300:]))
    assert card.data.classes == () and card.data.target == "target" and card.data.n_test == len(X) - 300
    assert card.probe.columns == tuple(f"x{i}" for i in range(10))  # fitted on an array: x0...
    # A model fitted without feature names is given an array again: no warning (warnings are errors here).
    result = CliRunner().invoke(app, ["check-env", str(path), "--verify-predictions"])
    assert result.exit_code == 0, result.output
    predicted = toolkit.predict(path, pd.DataFrame(X[300:305], columns=[f"x{i}" for i in range(10)]))
    assert np.allclose(predicted.predictions, model.predict(X[300:305]))
    plots = tmp_path / "plots"
    drawn = CliRunner().invoke(app, ["card", str(path), "--plots", str(plots)])
    assert drawn.exit_code == 0, drawn.output
    assert sorted(p.name for p in plots.glob("*.png")) == ["predicted_vs_actual.png", "residuals.png"]


# --- probe= and reference= take arrays -----------------------------------------------------------


def test_an_array_probe_gets_the_feature_names_the_pipeline_saw(
    iris: tuple[Any, Any, Any, Any], tmp_path: Path
) -> None:
    X_train, X_test, y_train, _ = iris
    pipeline = _fit(X_train, y_train)
    path = _save(pipeline, tmp_path, "1.0.0", probe=X_test.to_numpy()[:5])
    card = read_card(path)
    assert card.probe.columns == tuple(X_train.columns)
    assert card.probe.predictions == tuple(pipeline.predict(X_test.head(5)))
    referenced = _save(pipeline, tmp_path, "2.0.0", reference=X_test.to_numpy())
    assert read_card(referenced).reference is not None
    result = CliRunner().invoke(app, ["check-env", str(referenced), "--verify-predictions"])
    assert result.exit_code == 0, result.output


def _bad_inputs(X: Any) -> list[tuple[str, Any, str]]:
    values = X.to_numpy()
    return [
        ("list-of-dicts", X.head(3).to_dict("records"), _NOT_A_TABLE + "list of dicts$"),
        ("a-string", "rows.csv", _NOT_A_TABLE + "str$"),
        ("wrong-width", values[:5, :3], r"^probe has 3 columns; the pipeline was fitted on 4 features$"),
        ("one-dimensional", values[0], r"^probe must be 2-D \(rows x features\), got an array of shape \(4,\)$"),
        ("ragged", np.array([[1.0, 2.0, 3.0, 4.0], [1.0]], dtype=object), r"^probe: its rows have different lengths"),
        ("empty-array", values[:0], r"^probe has no rows$"),
        ("empty-frame", X.head(0), r"^probe has no rows$"),
        ("no-columns", X.head(3)[[]], r"^probe has no columns$"),
        ("complex-dtype", values[:3].astype(complex), r"^probe: an array of complex128 is not a table of features"),
        ("datetime-column", X.head(3).assign(**{"petal width (cm)": pd.Timestamp(0)}), r"is datetime64"),
        ("missing-column", X.head(3).drop(columns=["petal width (cm)"]),
         r"^probe lacks columns the pipeline was fitted on: petal width \(cm\)$"),
        ("nan", np.full((3, 4), np.nan),
         r"^probe: the pipeline cannot take these rows; they hold missing values \(NaN\) in "),
        ("text", np.array([["a", "b", "c", "d"]]), r"^probe: the pipeline cannot predict these rows: ValueError: "),
    ]  # fmt: skip


_BAD = [
    "list-of-dicts", "a-string", "wrong-width", "one-dimensional", "ragged", "empty-array", "empty-frame",
    "no-columns", "complex-dtype", "datetime-column", "missing-column", "nan", "text",
]  # fmt: skip


@pytest.mark.parametrize("case", _BAD)
def test_a_bad_probe_is_one_usage_error_naming_it(case: str, iris: tuple[Any, Any, Any, Any], tmp_path: Path) -> None:
    X_train, _, y_train, _ = iris
    cases = {name: (value, message) for name, value, message in _bad_inputs(X_train)}
    assert list(cases) == _BAD
    value, message = cases[case]
    pipeline = _fit(X_train, y_train)
    with pytest.raises(UsageError, match=message) as raised:
        _save(pipeline, tmp_path, "1.0.0", probe=value)
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("held_out", "message"),
    [
        (lambda X, y: (X,), r"^held_out must be a pair \(X_test, y_test\), got a tuple of 1$"),
        (lambda X, y: [X, y], r"^held_out must be a pair \(X_test, y_test\), got a list of 2$"),
        (lambda X, y: (X, y.head(3)), r"^held_out: 45 rows but 3 target values$"),
        (lambda X, y: (X, y.to_frame().assign(b=1)), r"^held_out: the target must be a pandas Series or a 1-D"),
        (lambda X, y: (X, np.zeros((45, 2))), r"^held_out: the target must be 1-D, got shape \(45, 2\)$"),
        (lambda X, y: (X, y.where(y != "setosa")), r"^held_out: the target has 15 missing values$"),
        (lambda X, y: (X, y.replace("setosa", "rose")),
         r"^held_out: the target holds labels the classifier was not fitted on: rose$"),
        (lambda X, y: (X.to_numpy()[:, :2], y), r"^held_out has 2 columns; the pipeline was fitted on 4 features$"),
    ],
    ids=["one-element", "a-list", "short-target", "two-column-target", "2-d-array-target", "missing-labels",
         "unknown-label", "wrong-width"],
)  # fmt: skip
def test_a_bad_held_out_is_one_usage_error(
    held_out: Any, message: str, iris: tuple[Any, Any, Any, Any], tmp_path: Path
) -> None:
    X_train, X_test, y_train, y_test = iris
    with pytest.raises(UsageError, match=message):
        _save(_fit(X_train, y_train), tmp_path, "1.0.0", held_out=held_out(X_test, y_test))
    assert list(tmp_path.iterdir()) == []


def test_held_out_and_reference_together_are_refused(iris: tuple[Any, Any, Any, Any], tmp_path: Path) -> None:
    X_train, X_test, y_train, y_test = iris
    with pytest.raises(UsageError, match=r"held_out=.* or reference=.*, not both"):
        _save(_fit(X_train, y_train), tmp_path, "1.0.0", held_out=(X_test, y_test), reference=X_test)


def test_a_reference_file_with_a_bad_target_is_refused(two_versions: tuple[Path, Path]) -> None:
    from toolkit import reference
    from toolkit.errors import IntegrityError

    card = read_card(two_versions[0])
    assert card.reference is not None
    doc = json.loads(gzip.decompress(artifact_paths(two_versions[0]).reference.read_bytes()))
    for target, message in ((doc["target"][:-1], "one entry per row"), ([[1]] * len(doc["rows"]), "not a scalar")):
        data = gzip.compress(json.dumps({**doc, "target": target}).encode())
        with pytest.raises(IntegrityError, match=message):
            reference.decode(data, card.reference, where="ref")


# --- registry compare, card --plots, diff --------------------------------------------------------


def test_compare_two_script_saved_versions_on_their_held_out_rows(registry: Path, runner: CliRunner) -> None:
    result = runner.invoke(
        app,
        ["registry", "compare", "iris", "1.0.0", "1.1.0", "--registry", str(registry), "--json", "--resamples", "200"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data"]["how"] == "recorded held-out rows" and report["data"]["rows"] == 45
    assert report["data"]["source"] == "iris-1.0.0.reference.json.gz"
    assert report["better"]["accuracy"] == "higher"
    assert report["difference"]["accuracy"] > 0  # C=1 beats C=0.01 on these rows
    low, _ = report["interval"]["accuracy"]
    assert low > 0
    table = runner.invoke(
        app, ["registry", "compare", "iris", "1.0.0", "1.1.0", "--registry", str(registry), "--resamples", "0"]
    )
    assert table.exit_code == 0 and "recorded held-out rows" in table.stdout


def test_compare_refuses_versions_held_out_on_different_rows(
    iris: tuple[Any, Any, Any, Any], tmp_path: Path, runner: CliRunner
) -> None:
    X_train, X_test, y_train, y_test = iris
    root = tmp_path / "models"
    one = _save(_fit(X_train, y_train), tmp_path, "1.0.0", held_out=(X_test, y_test))
    other = _save(_fit(X_train, y_train), tmp_path, "2.0.0", held_out=(X_test.head(30), y_test.head(30)))
    bare = _save(_fit(X_train, y_train), tmp_path, "3.0.0", probe=X_test.head(5))
    for path in (one, other, bare):
        assert runner.invoke(app, ["registry", "add", str(path), "--registry", str(root)]).exit_code == 0
    a, b = read_card(one).data.sha256, read_card(other).data.sha256
    assert a and b
    result = runner.invoke(app, ["registry", "compare", "iris", "1.0.0", "2.0.0", "--registry", str(root)])
    assert result.exit_code == 4
    assert result.output.strip().splitlines() == [
        f"error: iris 1.0.0 was held out on its own 45 rows (sha256 {a[:12]}), 2.0.0 on its own 30 rows "
        f"(sha256 {b[:12]}): there is no common held-out set; name one with --dataset FILE --target COL"
    ]
    mixed = runner.invoke(app, ["registry", "compare", "iris", "1.0.0", "3.0.0", "--registry", str(root)])
    assert mixed.exit_code == 4 and "3.0.0 on rows its card does not record" in mixed.output
    # The user's own data instead: every row of it, for both.
    data = tmp_path / "held.csv"
    X_test.assign(species=y_test).to_csv(data, index=False)
    args = ["registry", "compare", "iris", "1.0.0", "2.0.0", "--registry", str(root), "--dataset", str(data)]
    named = runner.invoke(app, [*args, "--json", "--resamples", "0"])
    assert named.exit_code == 0, named.output
    assert json.loads(named.stdout)["data"]["how"] == "whole dataset"  # target from the cards: species


def test_card_plots_of_a_script_saved_model(two_versions: tuple[Path, Path], tmp_path: Path, runner: CliRunner) -> None:
    plots = tmp_path / "plots"
    result = runner.invoke(app, ["card", str(two_versions[1]), "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["confusion_matrix.png", "iris-1.1.0.card.md", "precision_recall.png", "roc.png"]
    markdown = (plots / "iris-1.1.0.card.md").read_text()
    assert "Recomputed on the card's recorded held-out rows (45 rows)." in markdown
    assert "differs from the card's" not in markdown  # drawn in the card's own runtime
    assert "note:" not in result.stderr


def test_card_plots_in_another_runtime_say_so_and_strict_refuses(
    iris: tuple[Any, Any, Any, Any], tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    X_train, X_test, y_train, y_test = iris
    monkeypatch.setenv("TOOLKIT_BASE_IMAGE", BASE)  # saved "in an image" on this base
    path = _save(_fit(X_train, y_train), tmp_path, "1.0.0", held_out=(X_test, y_test))
    monkeypatch.delenv("TOOLKIT_BASE_IMAGE")  # drawn on a host: strict differs, compatible does not
    plots = tmp_path / "plots"
    strict = runner.invoke(app, ["card", str(path), "--plots", str(plots), "--policy", "strict"])
    assert strict.exit_code == 1 and "base_image" in strict.output
    assert not plots.exists()
    result = runner.invoke(app, ["card", str(path), "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert (
        notes[0] == f"note: drawn in a runtime that differs from the card's: base_image: card {BASE}, runtime (absent)"
    )
    assert notes[1].startswith("note: reference outputs agree on 45 rows")
    markdown = (plots / "iris-1.0.0.card.md").read_text()
    assert "Drawn in a runtime that differs from the card's (1 differences under strict: base_image" in markdown
    with Image.open(plots / "roc.png") as image:
        assert "differs from the card's" in image.info["Description"]

    # The outputs moved in this runtime (one recorded label changed, card rewritten to match): nothing drawn.
    import dataclasses
    import hashlib

    from toolkit.card import parse_card

    paths, card = artifact_paths(path), read_card(path)
    assert card.reference is not None
    doc = json.loads(gzip.decompress(paths.reference.read_bytes()))
    doc["outputs"]["labels"][0] = "virginica" if doc["outputs"]["labels"][0] != "virginica" else "setosa"
    data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)
    paths.reference.write_bytes(data)
    info = dataclasses.replace(card.reference, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    paths.card_json.write_bytes(dataclasses.replace(card, reference=info).to_json())
    paths.card_md.write_text(dataclasses.replace(card, reference=info).to_markdown())
    parse_card(paths.card_json.read_bytes())
    moved = runner.invoke(app, ["card", str(path), "--plots", str(tmp_path / "moved")])
    assert moved.exit_code == 1 and "labels: 1 of 45 rows flip" in moved.output
    assert not (tmp_path / "moved").exists()


def test_diff_of_two_script_saved_versions(two_versions: tuple[Path, Path], runner: CliRunner) -> None:
    result = runner.invoke(app, ["diff", str(two_versions[0]), str(two_versions[1]), "--json"])
    assert result.exit_code == 1, result.output  # they differ
    report = json.loads(result.stdout)
    assert [c["field"] for c in report["model"]] == ["params.C"]  # same held-out data: no data.* change
    assert report["data_sha256"]["a"] == report["data_sha256"]["b"] == read_card(two_versions[0]).data.sha256
