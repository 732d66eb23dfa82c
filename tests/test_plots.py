"""Plots in the card: rendered on the card's held-out rows, valid PNGs of a fixed size and title."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from toolkit.artifact import read_card
from toolkit.cli import app
from toolkit.training.plots import FIGURE_PIXELS, write_plots


def _png(path: Path) -> Any:
    from PIL import Image

    image = Image.open(path)
    image.load()  # decodes the whole file: a truncated PNG fails here
    return image


@pytest.fixture(scope="module")
def wine_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wine")
    args = ["train", "--dataset", "builtin:wine", "--model", "logistic_regression", "--cv-folds", "2"]
    result = CliRunner().invoke(app, [*args, "--no-register", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.joblib")
    return path


def test_classifier_plots_from_the_cli(wine_artifact: Path, tmp_path: Path, runner: CliRunner) -> None:
    plots = tmp_path / "plots"
    result = runner.invoke(app, ["card", str(wine_artifact), "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    card = read_card(wine_artifact)
    label = f"{card.name} {card.version}"
    expected = {
        "confusion_matrix.png": f"Confusion matrix: {label}",
        "roc.png": f"ROC curve: {label}",
        "precision_recall.png": f"Precision-recall curve: {label}",
    }
    for file_name, title in expected.items():
        image = _png(plots / file_name)
        assert image.format == "PNG"
        assert image.size == FIGURE_PIXELS
        assert image.info["Title"] == title
        assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10  # drawn on, not blank
    markdown = (plots / wine_artifact.name.replace(".joblib", ".card.md")).read_text()
    assert markdown.startswith(f"# Model card: {label}")
    assert f"({card.data.n_test} rows)" in markdown
    for file_name, title in expected.items():
        assert f"![{title}]({file_name})" in markdown
    assert sorted(p.name for p in plots.iterdir()) == sorted([*expected, wine_artifact.name[:-7] + ".card.md"])


def test_regressor_plots(tmp_path: Path, base_artifact: Path) -> None:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    pipeline = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    card = read_card(base_artifact)  # any card: it names the plots
    written = write_plots(card, pipeline, X.tail(60), y.tail(60), tmp_path)
    assert [p.file.name for p in written] == ["predicted_vs_actual.png", "residuals.png"]
    for plot, what in zip(written, ("Predicted vs actual", "Residuals"), strict=True):
        image = _png(plot.file)
        assert image.size == FIGURE_PIXELS
        assert image.info["Title"] == f"{what}: {card.name} {card.version}" == plot.title


def test_plots_need_the_cards_data(artifact: Path, tmp_path: Path, runner: CliRunner) -> None:
    # The API-saved iris card records no data source: nothing to recompute on, exit 2, nothing written.
    plots = tmp_path / "plots"
    result = runner.invoke(app, ["card", str(artifact), "--plots", str(plots)])
    assert result.exit_code == 2
    assert "held-out rows cannot be rebuilt" in result.output
    assert not plots.exists()


def test_plots_into_a_file_is_a_usage_error(wine_artifact: Path, tmp_path: Path, runner: CliRunner) -> None:
    target = tmp_path / "file"
    target.write_text("keep")
    result = runner.invoke(app, ["card", str(wine_artifact), "--plots", str(target)])
    assert result.exit_code == 2
    assert "not a directory" in result.output
    assert target.read_text() == "keep"


def test_data_export_matches_the_builtin_sha256(tmp_path: Path, runner: CliRunner) -> None:
    import hashlib

    from toolkit.training.datasets import load_dataset

    out = tmp_path / "wine.csv"
    result = runner.invoke(app, ["data", "export", "builtin:wine", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == load_dataset("builtin:wine").sha256
    assert load_dataset(str(out), "target").X.shape == load_dataset("builtin:wine").X.shape
    again = runner.invoke(app, ["data", "export", "builtin:wine", "--out", str(out)])
    assert again.exit_code == 2
    assert "already exists" in again.output
    unknown = runner.invoke(app, ["data", "export", "builtin:nope"])
    assert unknown.exit_code == 2
    assert "unknown builtin" in unknown.output
