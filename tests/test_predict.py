"""``toolkit predict``: guarded load, column checks, CSV out, and bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import toolkit
from toolkit.card import card_from_dict
from toolkit.cli import app
from toolkit.training.config import resolve_config
from toolkit.training.datasets import load_dataset, split
from toolkit.training.train import train


@pytest.fixture(scope="module")
def credit_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small credit model (text column included), trained once for this module."""
    out = tmp_path_factory.mktemp("predict")
    cfg = resolve_config(model="logistic_regression", out=out, register=False, cv_folds=2)
    return train(cfg).path


@pytest.fixture(scope="module")
def test_rows() -> pd.DataFrame:
    """The credit test part with its target column, as a user would have it."""
    dataset = load_dataset("builtin:credit")
    _, X_test, _, y_test = split(dataset, test_size=0.2, seed=42)
    return X_test.assign(default=y_test).head(50).reset_index(drop=True)


def write_csv(tmp_path: Path, frame: pd.DataFrame, name: str = "in.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def copy_artifact(artifact: Path, directory: Path) -> Path:
    """A copy of the artifact's files, safe to tamper with; returns the new .joblib."""
    for suffix in (".joblib", ".reference.json.gz", ".card.json", ".card.md"):
        src = artifact.with_name(artifact.name.replace(".joblib", suffix))
        if src.exists():  # the reference set: when it was saved with one
            (directory / src.name).write_bytes(src.read_bytes())
    return directory / artifact.name


def test_predict_to_stdout(credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner) -> None:
    path = write_csv(tmp_path, test_rows)
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(io.StringIO(result.stdout))
    assert list(table.columns) == ["prediction", "proba_0", "proba_1"]
    assert len(table) == len(test_rows)
    pipeline = toolkit.load(credit_artifact)
    X = test_rows.drop(columns=["default"])
    assert table["prediction"].tolist() == pipeline.predict(X).tolist()
    assert table["proba_1"].tolist() == pytest.approx(pipeline.predict_proba(X)[:, 1].tolist(), abs=1e-12)
    assert (table[["proba_0", "proba_1"]].sum(axis=1) - 1.0).abs().max() < 1e-9
    # The target is an extra column: ignored, and said so on stderr.
    assert "ignoring 1 column(s) the model does not use: default" in result.stderr


def test_predict_matches_the_probe(credit_artifact: Path, tmp_path: Path, runner: CliRunner) -> None:
    card = json.loads(credit_artifact.with_suffix(".card.json").read_bytes())
    probe = pd.DataFrame(card["probe"]["rows"], columns=card["probe"]["columns"])
    out = tmp_path / "pred.csv"
    result = runner.invoke(app, ["predict", str(credit_artifact), str(write_csv(tmp_path, probe)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    table = pd.read_csv(out)
    assert table["prediction"].tolist() == card["probe"]["predictions"]
    expected = [p[1] for p in card["probe"]["probabilities"]]
    assert table["proba_1"].tolist() == pytest.approx(expected, abs=1e-9)


def test_column_order_and_unseen_categories(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner
) -> None:
    frame = test_rows.drop(columns=["default"])[["educ", "loan_amt", "credit", "income", "age"]].head(3).copy()
    frame["educ"] = ["hs", "none of these", None]
    frame.loc[1, "income"] = None
    result = runner.invoke(app, ["predict", str(credit_artifact), str(write_csv(tmp_path, frame))])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 3
    assert result.stderr == ""


def test_missing_column(credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner) -> None:
    path = write_csv(tmp_path, test_rows.drop(columns=["income", "educ"]))
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path)])
    assert result.exit_code == 2
    assert "missing 2 feature column(s) the model needs: 'income', 'educ'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "the file is empty"),
        ("age,income,credit,loan_amt,educ\n", "no rows"),
        (
            "age,income,credit,loan_amt,educ\n30,50000,700,lots,hs\n",
            "column 'loan_amt' must be numeric but has text: 'lots'",
        ),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff", "not a UTF-8"),
    ],
    ids=["empty", "header-only", "text-in-numeric", "binary"],
)
def test_bad_input(credit_artifact: Path, tmp_path: Path, runner: CliRunner, content: Any, needle: str) -> None:
    path = tmp_path / "in.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path)])
    assert result.exit_code == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_input_file(credit_artifact: Path, tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["predict", str(credit_artifact), str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_tampered_artifact_is_refused(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner
) -> None:
    copy = copy_artifact(credit_artifact, tmp_path)
    copy.write_bytes(copy.read_bytes()[:-1] + b"\x00")
    result = runner.invoke(app, ["predict", str(copy), str(write_csv(tmp_path, test_rows))])
    assert result.exit_code == 3
    assert "sha256" in result.stderr or "size" in result.stderr


def test_missing_artifact(tmp_path: Path, test_rows: pd.DataFrame, runner: CliRunner) -> None:
    result = runner.invoke(app, ["predict", str(tmp_path / "m-1.0.0.joblib"), str(write_csv(tmp_path, test_rows))])
    assert result.exit_code == 3


def test_policy_decides_what_a_differing_runtime_may_predict(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner
) -> None:
    # A package the pickle does not need differs: strict refuses (exit 1), compatible predicts.
    copy = copy_artifact(credit_artifact, tmp_path)
    card_path = copy.with_name(copy.name.replace(".joblib", ".card.json"))
    card = json.loads(card_path.read_text())
    card["environment"]["packages"]["pytest"] = "0.0.1"
    card_path.write_text(json.dumps(card))
    # Keep the .card.md the card's rendering, or the edit is refused as tampering first.
    copy.with_name(copy.name.replace(".joblib", ".card.md")).write_text(card_from_dict(card).to_markdown())
    rows = str(write_csv(tmp_path, test_rows))
    strict = runner.invoke(app, ["predict", str(copy), rows])
    assert strict.exit_code == 1 and "pytest" in strict.stderr
    compatible = runner.invoke(app, ["predict", str(copy), rows, "--policy", "compatible"])
    assert compatible.exit_code == 0, compatible.stderr
    assert len(compatible.stdout.splitlines()) == len(test_rows) + 1


# --- the library API (issue 9) and hostile input and output (issue 8) --------------------


def listing(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden temp files included) with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_toolkit_predict_is_the_library_api(credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path) -> None:
    import dataclasses

    result = toolkit.predict(credit_artifact, test_rows)
    assert isinstance(result, toolkit.Predictions)
    pipeline = toolkit.load(credit_artifact)
    X = test_rows.drop(columns=["default"])
    assert result.predictions.tolist() == pipeline.predict(X).tolist()
    assert result.classes == (0, 1)
    assert result.probabilities.tolist() == pipeline.predict_proba(X).tolist()
    assert result.ignored == ("default",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ignored = ()  # type: ignore[misc]
    # A path is read with the card's text columns, as the command does.
    from_file = toolkit.predict(credit_artifact, write_csv(tmp_path, test_rows))
    assert from_file.to_csv() == result.to_csv()
    assert from_file.to_csv().decode().splitlines()[0] == "prediction,proba_0,proba_1"


def test_disk_full_while_writing_out_leaves_the_old_file_and_no_temp_file(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    data = tmp_path / "data"
    data.mkdir()
    path = write_csv(data, test_rows)
    out = data / "pred.csv"
    out.write_text("earlier predictions\n")
    before = listing(data)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the atomic write fsyncs its temp file before the rename
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[-1] == f"error: cannot save {out}: No space left on device"
    assert lines[:-1] == ["note: ignoring 1 column(s) the model does not use: default"]
    assert listing(data) == before  # no truncated CSV, no temp file


def test_out_replaces_an_existing_file_whole(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner
) -> None:
    path = write_csv(tmp_path, test_rows)
    out = tmp_path / "pred.csv"
    out.write_text("x\n" * 100_000)  # longer than the predictions: an in-place write would leave its tail
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == toolkit.predict(credit_artifact, path).to_csv()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "pred.csv"]


@pytest.mark.parametrize("alias", ["same", "dotdot", "symlink", "hardlink"])
def test_out_that_is_the_input_is_refused(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner, alias: str
) -> None:
    import os

    path = write_csv(tmp_path, test_rows)
    (tmp_path / "x").mkdir()
    out = {
        "same": path,
        "dotdot": tmp_path / "x" / ".." / "in.csv",
        "symlink": tmp_path / "link.csv",
        "hardlink": tmp_path / "hard.csv",
    }[alias]
    if alias == "symlink":
        out.symlink_to(path)
    elif alias == "hardlink":
        os.link(path, out)
    before = listing(tmp_path)
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --out {out} is the input file {path}; write the predictions elsewhere\n"
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    ("out", "needle"),
    [
        (lambda p: p, "is a folder; give a file path"),
        (lambda p: p / "no" / "pred.csv", "does not exist"),
    ],
    ids=["folder", "missing-folder"],
)
def test_unusable_out_is_refused_before_loading(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner, out: Any, needle: str
) -> None:
    path = write_csv(tmp_path, test_rows)
    before = listing(tmp_path)
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path), "--out", str(out(tmp_path))])
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [result.stderr.strip()] and needle in result.stderr
    assert listing(tmp_path) == before


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinity_in_a_numeric_column_is_exit_2_naming_the_column(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner, value: str
) -> None:
    frame = test_rows.head(5).astype({"income": object})
    frame.loc[3, "income"] = value
    path = write_csv(tmp_path, frame)
    before = listing(tmp_path)
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {path}: column 'income' has 1 infinite value(s) (row(s) 4); "
        "use a finite number or leave the cell empty\n"
    )
    assert listing(tmp_path) == before


def test_infinity_in_parquet_and_in_a_frame_is_refused(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path
) -> None:
    from toolkit import DataError

    frame = test_rows.head(5).copy()
    frame.loc[0, "credit"] = float("-inf")
    frame.to_parquet(tmp_path / "in.parquet")
    for given in (frame, tmp_path / "in.parquet"):
        with pytest.raises(DataError, match="column 'credit' has 1 infinite value"):
            toolkit.predict(credit_artifact, given)


def test_missing_values_are_still_imputed(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner
) -> None:
    frame = test_rows.head(4).copy()
    frame.loc[0, "income"] = float("nan")
    frame.loc[1, "educ"] = None
    path = tmp_path / "in.csv"
    frame.to_csv(path, index=False)
    text = path.read_text().replace(",,", ",NaN,", 1)  # pandas' "NaN" spelling is a missing value too
    path.write_text(text)
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path)])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 4


@pytest.mark.parametrize("suffix", [".joblib", ".card.json", ".card.md"])
def test_out_that_is_one_of_the_artifact_files_is_refused(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner, suffix: str
) -> None:
    model = copy_artifact(credit_artifact, tmp_path)
    path = write_csv(tmp_path, test_rows)
    out = model.with_name(model.name.replace(".joblib", suffix))
    before = listing(tmp_path)
    result = runner.invoke(app, ["predict", str(model), str(path), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: --out {out} is the input file {out}; write the predictions elsewhere\n"
    assert listing(tmp_path) == before


# --- --id COLUMN: an identifier passed through, first ----------------------------------------


def test_id_column_is_passed_through_first_as_text(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner
) -> None:
    ids = [f"{i:04d}" for i in range(len(test_rows))]  # leading zeros must survive (read as text)
    path = write_csv(tmp_path, test_rows.assign(customer=ids))
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path), "--id", "customer", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, dtype={"customer": str})
    assert list(table.columns) == ["customer", "prediction", "proba_0", "proba_1"]
    assert table["customer"].tolist() == ids
    plain = runner.invoke(app, ["predict", str(credit_artifact), str(path)])
    assert table["prediction"].tolist() == pd.read_csv(io.StringIO(plain.stdout))["prediction"].tolist()
    # The id is not a column "the model does not use" worth a note; the target still is.
    assert "ignoring 1 column(s) the model does not use: default" in result.stderr


@pytest.mark.parametrize(
    ("column", "needle"),
    [
        ("nope", "--id 'nope': no such column in"),
        ("prediction", "--id 'prediction': the output already has a column of that name"),
        ("proba_1", "--id 'proba_1': the output already has a column of that name"),
    ],
)
def test_a_bad_id_column_is_exit_2_and_writes_nothing(
    credit_artifact: Path, test_rows: pd.DataFrame, tmp_path: Path, runner: CliRunner, column: str, needle: str
) -> None:
    path = write_csv(tmp_path, test_rows)
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["predict", str(credit_artifact), str(path), "--id", column, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]
