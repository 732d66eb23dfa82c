"""Datasets: the builtins, user CSV/Parquet files, the dataset version, and bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from toolkit.errors import ConfigError, DataError
from toolkit.training.datasets import canonical_csv, coerce_features, load_dataset, read_table, split

# The dataset versions of the builtins. Checked identical on numpy 1.24 / scikit-learn 1.2
# and numpy 2.x / scikit-learn 1.9: a change here means every card's data.sha256 changes.
CREDIT_SHA256 = "9d9f6ab6964d25c996c23a4f7aacc737029366cdd99574f63b7eec8ad590391c"
WINE_SHA256 = "cd80158fad3d1e203d61dae42242620b02dd5f918e637b5f08381e39e7cf5204"


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_credit_matches_the_issue() -> None:
    d = load_dataset("builtin:credit")
    assert d.source == "builtin:credit"
    assert d.target == "default"
    assert d.X.shape == (2000, 5)
    assert list(d.X.columns) == ["age", "income", "credit", "loan_amt", "educ"]
    assert d.X["age"].between(18, 75).all()
    assert d.X["income"].between(15000, 300000).all()
    assert d.X["credit"].between(300, 850).all()
    assert d.X["loan_amt"].between(1000, 80000).all()
    assert set(d.X["educ"]) == {"hs", "bachelor", "master", "phd"}
    assert d.X["educ"].dtype == object
    assert set(d.y) == {0, 1}
    assert abs(d.y.mean() - 0.17) < 0.03
    assert abs(d.X["age"].mean() - 38) < 1.5


def test_builtin_versions_are_pinned() -> None:
    assert load_dataset("builtin:credit").sha256 == CREDIT_SHA256
    assert load_dataset("builtin:wine").sha256 == WINE_SHA256


def test_builtin_version_is_the_canonical_csv_hash() -> None:
    d = load_dataset("builtin:wine")
    frame = pd.concat([d.X, d.y], axis=1)
    assert hashlib.sha256(canonical_csv(frame)).hexdigest() == d.sha256


def test_each_load_of_a_builtin_is_the_callers_own_copy() -> None:
    # A builtin is made once per process: what one caller changes must not reach the next.
    first = load_dataset("builtin:credit")
    first.X.iloc[0, 0] = -1.0
    first.y.iloc[0] = 99
    again = load_dataset("builtin:credit")
    assert again.X.iloc[0, 0] != -1.0 and again.y.iloc[0] != 99
    assert hashlib.sha256(canonical_csv(pd.concat([again.X, again.y], axis=1))).hexdigest() == again.sha256


def test_wine_is_three_classes() -> None:
    d = load_dataset("builtin:wine")
    assert d.X.shape == (178, 13)
    assert d.target == "target"
    assert sorted(d.y.unique()) == [0, 1, 2]
    assert all(str(t) == "float64" for t in d.X.dtypes)


def test_canonical_csv_format() -> None:
    frame = pd.DataFrame({"a": [1.5, np.nan, 0.1], "b": ["x", "y,z", None], "c": [1, 2, 3], "d": [True, False, True]})
    assert canonical_csv(frame) == b'a,b,c,d\n1.5,x,1,True\n,"y,z",2,False\n0.1,,3,True\n'


def test_csv_version_is_the_file_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "x,colour,flag,y\n1.0,red,true,a\n2.5,blue,false,b\n3.0,,true,a\n4.0,red,false,b\n")
    d = load_dataset(str(path), target="y")
    assert d.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d.source == str(path)
    assert list(d.X.columns) == ["x", "colour", "flag"]
    assert d.X["x"].dtype == "float64"
    # Categories are text (bools too), missing values stay missing.
    assert d.X["colour"].tolist()[:2] == ["red", "blue"]
    assert pd.isna(d.X["colour"].iloc[2])
    assert d.X["flag"].tolist() == ["True", "False", "True", "False"]
    assert d.y.tolist() == ["a", "b", "a", "b"]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"n": [1, 2, 3, 4], "c": pd.Categorical(["a", "b", "a", "b"]), "y": [0, 1, 0, 1]}).to_parquet(path)
    d = load_dataset(str(path), target="y")
    assert d.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d.X["n"].dtype == "int64"
    assert d.X["c"].dtype == object
    assert d.y.tolist() == [0, 1, 0, 1]


def test_float_target_with_whole_numbers_becomes_int(tmp_path: Path) -> None:
    d = load_dataset(str(write(tmp_path, "x,y\n1,0.0\n2,1.0\n3,0.0\n")), target="y")
    assert d.y.dtype == "int64"


@pytest.mark.parametrize(
    ("text", "target", "error", "needle"),
    [
        ("x,y\n1,0\n2,1\n", "label", DataError, "no target column 'label'"),
        ("", "y", DataError, "empty"),
        ("\n\n  \n", "y", DataError, "empty"),
        ("x,y\n", "y", DataError, "no rows"),
        ("x,y\n1,0\nabc,1\n2,0\n3,1\n", "y", DataError, "column 'x' is numeric but has text: 'abc' (row 2)"),
        ("x,y\n1,a\n2,a\n3,a\n", "y", DataError, "single class ('a')"),
        ("x,y\n1,0\n2,\n3,1\n", "y", DataError, "1 missing value"),
        ("y\n0\n1\n", "y", DataError, "no feature columns"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, target: str, error: type[Exception], needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(error) as info:
        load_dataset(str(path), target=target)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_mostly_text_column_is_categorical(tmp_path: Path) -> None:
    path = write(tmp_path, "code,y\nA1,0\nB2,1\n7,0\nC3,1\n")
    assert load_dataset(str(path), target="y").X["code"].tolist() == ["A1", "B2", "7", "C3"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "nope.csv"), target="y")


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(str(tmp_path), target="y")


def test_binary_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage\x00\x9f")
    with pytest.raises(DataError, match="not a UTF-8"):
        load_dataset(str(path), target="y")


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="cannot parse"):
        load_dataset(str(path), target="y")


def test_datetime_feature_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pd.DataFrame({"t": pd.date_range("2024-01-01", periods=4), "y": [0, 1, 0, 1]}).to_parquet(path)
    with pytest.raises(DataError, match="column 't' has unsupported dtype"):
        load_dataset(str(path), target="y")


def test_file_needs_a_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--target"):
        load_dataset(str(write(tmp_path, "x,y\n1,0\n")))


def test_unknown_builtin() -> None:
    with pytest.raises(ConfigError, match="unknown builtin 'builtin:iris'"):
        load_dataset("builtin:iris")


def test_builtin_with_another_target() -> None:
    with pytest.raises(ConfigError, match="has target 'default'"):
        load_dataset("builtin:credit", target="income")
    assert load_dataset("builtin:credit", target="default").target == "default"


def test_split_is_stratified_and_seeded() -> None:
    d = load_dataset("builtin:credit")
    X_train, X_test, _, y_test = split(d, test_size=0.2, seed=7)
    assert (len(X_train), len(X_test)) == (1600, 400)
    assert abs(y_test.mean() - d.y.mean()) < 0.005
    again = split(d, test_size=0.2, seed=7)
    assert list(again[1].index) == list(X_test.index)
    other = split(d, test_size=0.2, seed=8)
    assert list(other[1].index) != list(X_test.index)


def test_split_refuses_a_class_too_small(tmp_path: Path) -> None:
    d = load_dataset(str(write(tmp_path, "x,y\n1,a\n2,a\n3,a\n4,a\n5,b\n")), target="y")
    with pytest.raises(DataError, match="stratified split"):
        split(d, test_size=0.2, seed=0)


FEATURES = (("n", "float64"), ("c", "object"))


def test_coerce_features_orders_drops_and_converts() -> None:
    frame = pd.DataFrame({"extra": [1, 2], "c": [1, 2], "n": ["1.5", "2"]})
    X = coerce_features(frame, FEATURES, "in.csv")
    assert list(X.columns) == ["n", "c"]
    assert X["n"].tolist() == [1.5, 2.0]
    assert X["c"].tolist() == ["1", "2"]


def test_coerce_features_missing_column() -> None:
    with pytest.raises(DataError, match=r"missing 1 feature column.*'c'"):
        coerce_features(pd.DataFrame({"n": [1.0]}), FEATURES, "in.csv")


def test_coerce_features_text_in_numeric_column() -> None:
    frame = pd.DataFrame({"n": ["1.5", "oops"], "c": ["a", "b"]})
    with pytest.raises(DataError, match="column 'n' must be numeric but has text: 'oops' \\(row 2\\)"):
        coerce_features(frame, FEATURES, "in.csv")


def test_read_table_text_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "zip,n\n01234,1\n98765,2\n")
    assert read_table(path, text_columns=("zip",))["zip"].tolist() == ["01234", "98765"]


# --- column names and values pandas would change silently (issue 8) ------------------------


def _train(runner: Any, data: Path, out: Path) -> Any:
    from toolkit.cli import app

    args = ["train", "--dataset", str(data), "--target", "y", "--model", "logistic_regression", "--no-register"]
    return runner.invoke(app, [*args, "--out", str(out), "--quiet"])


def _rows(header: list[str], n: int = 40) -> pd.DataFrame:
    rng = np.random.RandomState(1)
    values = {f"c{i}": rng.normal(size=n) for i in range(len(header) - 1)}
    frame = pd.DataFrame({**values, "y": np.arange(n) % 2})
    frame.columns = header
    return frame


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        (["age", "age", "y"], "column name 'age' appears 2 times in the header; names must be unique"),
        (["age", "", "y"], "column 2 has an empty name in the header; name every column"),
        (["age", "  ", "y"], "column 2 has an empty name in the header; name every column"),
    ],
    ids=["duplicate", "empty", "blank"],
)
@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_duplicate_and_empty_column_names_are_refused(
    tmp_path: Path, runner: Any, header: list[str], needle: str, kind: str
) -> None:
    frame = _rows(header)
    data = tmp_path / f"data.{kind}"
    if kind == "csv":
        frame.to_csv(data, index=False)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # pandas cannot write duplicate names to Parquet; pyarrow can, and others' tools do.
        pq.write_table(pa.Table.from_arrays([pa.array(frame.iloc[:, i]) for i in range(3)], names=header), data)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _train(runner, data, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {data}: {needle}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_csv_written_with_its_index_is_refused(tmp_path: Path) -> None:
    # DataFrame.to_csv() with the index: pandas reads the unnamed column back as "Unnamed: 0",
    # which then trained as a feature.
    data = tmp_path / "data.csv"
    _rows(["a", "y"]).to_csv(data)
    with pytest.raises(DataError, match="column 1 has an empty name"):
        load_dataset(str(data), "y")


def test_rows_longer_than_the_header_are_refused(tmp_path: Path) -> None:
    # pandas would silently make the first column the index, and the frame would lose it.
    data = write(tmp_path, "a,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)))
    with pytest.raises(DataError, match="some rows have more fields than the header"):
        load_dataset(str(data), "y")


def test_repeated_names_that_look_renamed_are_fine(tmp_path: Path) -> None:
    # "age" and "age.1" both spelled so in the file: nothing was renamed, nothing is refused.
    data = write(tmp_path, "age,age.1,Unnamed: 2,y\n" + "".join(f"{i},{i},{i},{i % 2}\n" for i in range(20)))
    assert list(load_dataset(str(data), "y").X.columns) == ["age", "age.1", "Unnamed: 2"]


@pytest.mark.parametrize(("column", "value"), [("x", "inf"), ("x", "-inf"), ("y", "inf")])
def test_infinity_in_training_data_is_exit_2_naming_the_column(
    tmp_path: Path, runner: Any, column: str, value: str
) -> None:
    frame = _rows(["x", "y"]).astype({"y": object, "x": object})
    frame.loc[5, column] = value
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _train(runner, data, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {data}: column {column!r} has 1 infinite value(s) (row(s) 6); "
        "use a finite number or leave the cell empty\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before
