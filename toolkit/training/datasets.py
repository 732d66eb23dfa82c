"""Training data: the builtin datasets and the user's CSV/Parquet files, with a content hash.

The dataset version (``Dataset.sha256``) is the sha256 of a canonical byte form:
- a user file: its raw bytes, exactly as read from disk;
- a builtin: the canonical CSV of the frame (features then target, see ``canonical_csv``),
  which depends only on the values, not on the pandas or numpy version that made them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BUILTINS",
    "MAX_CLASSES",
    "TASKS",
    "Dataset",
    "builtin_csv",
    "canonical_csv",
    "coerce_features",
    "infer_task",
    "load_dataset",
    "read_table",
    "split",
]

BUILTINS = ("builtin:credit", "builtin:wine", "builtin:diabetes")
TASKS = ("classification", "regression")
# The task rule (``infer_task``): a numeric target is a regression target when it has
# non-integer values or more than this many distinct values; otherwise its values are classes.
MAX_CLASSES = 20

# A text column counts as "numeric with stray text" when at least this share of its
# values parse as numbers: then the text is a data error, not a category.
_NUMERIC_SHARE = 0.5
_MAX_BAD_SHOWN = 3


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Dataset:
    """Features, target and provenance of one training dataset."""

    X: pd.DataFrame
    y: pd.Series
    source: str  # "builtin:credit" or the path as the user gave it
    sha256: str  # of the canonical byte form (module docstring)
    target: str
    task: str = "classification"  # one of TASKS: given, or inferred from the target (infer_task)


def load_dataset(spec: str, target: str | None = None, *, task: str | None = None) -> Dataset:
    """Load a builtin (``builtin:credit``, ``builtin:wine``, ``builtin:diabetes``) or a CSV/Parquet file.

    ``task`` (``"classification"`` or ``"regression"``) says what the target is; None infers it
    from the target's values (``infer_task``).

    Raises:
        ConfigError: unknown builtin, a missing ``target`` for a file, a target that
            contradicts a builtin's, an unknown task.
        DataError: unreadable or empty file, missing target column, unusable values (text in
            a regression target, a single class, ...).
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r} (choose {', '.join(TASKS)})")
    if spec.startswith("builtin:"):
        frame, builtin_target, digest = _builtin(spec)
        if target is not None and target != builtin_target:
            raise ConfigError(f"target: {spec} has target {builtin_target!r}, not {target!r}")
        target = builtin_target
    else:
        if not target:
            raise ConfigError(f"target: a dataset file needs a target column (--target COL) for {spec}")
        path = Path(spec)
        raw = _read_bytes(path)
        digest = hashlib.sha256(raw).hexdigest()
        frame = read_table(path, raw=raw)
    if target not in frame.columns:
        shown = ", ".join(repr(str(c)) for c in list(frame.columns)[:10])
        raise DataError(f"{spec}: no target column {target!r} (columns: {shown})")
    if task is None:
        task = infer_task(frame[target], spec)
    y = _regression_target(frame[target], spec) if task == "regression" else _clean_target(frame[target], spec)
    X = _normalise_features(frame.drop(columns=[target]), spec)
    return Dataset(X=X, y=y, source=spec, sha256=digest, target=target, task=task)


def infer_task(y: pd.Series, source: str = "data") -> str:
    """``"regression"`` for a numeric target with non-integer values or more than ``MAX_CLASSES``
    distinct values, else ``"classification"``.

    Text that parses as numbers counts as numbers. A mostly numeric target (half its values or
    more) that would be a regression target but holds some text is refused rather than read
    as hundreds of classes.
    Raises:
        DataError: numeric target with stray text (the message names the first bad values).
    """
    import pandas as pd

    present = y.dropna()
    if present.empty or pd.api.types.is_bool_dtype(y.dtype):
        return "classification"
    if pd.api.types.is_numeric_dtype(y.dtype):
        return "regression" if _looks_continuous(present.astype("float64")) else "classification"
    numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    parsed = numbers.dropna()
    if parsed.empty or len(parsed) / len(present) < _NUMERIC_SHARE or not _looks_continuous(parsed):
        return "classification"
    bad = present[numbers.isna()]
    if len(bad):
        raise DataError(
            f"{source}: target column {str(y.name)!r} is numeric but has text: {_shown(bad)} "
            "(fix those values, or pass --task classification)"
        )
    return "regression"


def split(dataset: Dataset, *, test_size: float, seed: int) -> tuple[Any, Any, Any, Any]:
    """Seeded train/test split, stratified for classification: ``(X_train, X_test, y_train, y_test)``.

    Raises:
        DataError: a class too small to appear on both sides of the split.
    """
    from sklearn.model_selection import train_test_split

    # Stratified for classes only: a regression target's values are not groups.
    stratify = dataset.y if dataset.task == "classification" else None
    kind = "a stratified split" if stratify is not None else "a split"
    try:
        return tuple(train_test_split(dataset.X, dataset.y, test_size=test_size, random_state=seed, stratify=stratify))
    except ValueError as e:
        raise DataError(f"{dataset.source}: cannot make {kind} with test_size={test_size}: {e}") from e


def read_table(path: Path, *, raw: bytes | None = None, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame; ``text_columns`` are read as text.

    Raises:
        DataError: the file is missing, unreadable, not a table, or has no rows.
    """
    import pandas as pd

    if raw is None:
        raw = _read_bytes(path)
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            # pyarrow refuses duplicate names with a message about FieldRefs: check them first.
            _check_column_names(_parquet_names(raw), path)
            frame = pd.read_parquet(io.BytesIO(raw))
        else:
            dtype = {c: str for c in text_columns} or None
            with warnings.catch_warnings():
                # index_col=False: rows longer than the header are an error (the warning), not
                # a first column silently turned into the index and dropped.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                # low_memory=False: one dtype per column, never a per-chunk guess.
                frame = pd.read_csv(io.BytesIO(raw), low_memory=False, dtype=dtype, index_col=False)
    except pd.errors.ParserWarning as e:
        raise DataError(f"{path}: some rows have more fields than the header") from e
    except ImportError as e:
        raise DataError(f"{path}: reading Parquet needs pyarrow ({e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text table ({e.reason} at byte {e.start})") from e
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: the file is empty") from e
    except (pd.errors.ParserError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: cannot parse the table: {first}") from e
    if not parquet:
        # pandas renames a repeated name to "age.1" and an empty one to "Unnamed: 2".
        header = _csv_header(raw)
        if header is not None and len(header) == len(frame.columns):
            _check_column_names(header, path)
    if len(frame) == 0:
        raise DataError(f"{path}: the table has a header but no rows")
    if any(not isinstance(c, str) for c in frame.columns):
        raise DataError(f"{path}: column names must be text")
    return frame.reset_index(drop=True)


def coerce_features(frame: pd.DataFrame, features: tuple[tuple[str, str], ...], source: str) -> pd.DataFrame:
    """Select ``features`` (name, dtype) from ``frame`` in order, coerced to the recorded kind.

    Extra columns are dropped. Raises:
        DataError: missing columns, or text in a column that was numeric at training time.
    """
    import pandas as pd

    names = [name for name, _ in features]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:10])
        raise DataError(f"{source}: missing {len(missing)} feature column(s) the model needs: {shown}")
    columns = {}
    for name, dtype in features:
        column = frame[name]
        if _is_numeric_dtype_name(dtype):
            columns[name] = _to_numeric(column, source)
        else:
            columns[name] = _to_text(column)
    return pd.DataFrame(columns, index=frame.index).reset_index(drop=True)


def canonical_csv(frame: pd.DataFrame) -> bytes:
    """The canonical CSV bytes of a frame: UTF-8, LF, header row, floats as Python ``repr``.

    Missing values are empty fields; integers are decimal; bools are ``True``/``False``.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([str(c) for c in frame.columns])
    writer.writerows(zip(*(_canonical_column(frame[c].tolist()) for c in frame.columns), strict=True))
    return buffer.getvalue().encode("utf-8")


# --- helpers -------------------------------------------------------------------------------


# A builtin is made from a fixed seed and hashed through its CSV form: the same every time, so
# made and hashed once per process (compare, retrain and upgrade-check load it again and again).
_BUILTIN_CACHE: dict[str, tuple[pd.DataFrame, str, str]] = {}


def _builtin(spec: str) -> tuple[pd.DataFrame, str, str]:
    """A builtin's frame (the caller's own copy), its target column and its sha256."""
    if spec not in _BUILTIN_CACHE:
        frame, target = _load_builtin(spec)
        _BUILTIN_CACHE[spec] = (frame, target, hashlib.sha256(canonical_csv(frame)).hexdigest())
    frame, target, digest = _BUILTIN_CACHE[spec]
    return frame.copy(deep=True), target, digest


def _load_builtin(spec: str) -> tuple[pd.DataFrame, str]:
    if spec == "builtin:credit":
        return _make_credit(), "default"
    if spec == "builtin:wine":
        return _make_wine(), "target"
    if spec == "builtin:diabetes":
        return _make_diabetes(), "target"
    raise ConfigError(f"dataset: unknown builtin {spec!r} (choose {', '.join(BUILTINS)})")


def _make_credit() -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    # RandomState, not default_rng: its streams are frozen across numpy versions, so the
    # data (and its sha256, the dataset version) is the same on every supported numpy.
    rng = np.random.RandomState(42)
    n = 2000
    age = np.clip(rng.normal(38, 12, n), 18, 75)
    income = np.clip(rng.exponential(55000, n), 15000, 300000)
    credit = np.clip(rng.normal(680, 80, n), 300, 850)
    loan_amt = np.clip(rng.exponential(18000, n), 1000, 80000)
    educ = rng.choice(np.array(["hs", "bachelor", "master", "phd"], dtype=object), size=n, p=[0.3, 0.4, 0.2, 0.1])
    default = rng.choice(np.array([0, 1], dtype=np.int64), size=n, p=[0.83, 0.17])
    return pd.DataFrame(
        {
            "age": age,
            "income": income,
            "credit": credit,
            "loan_amt": loan_amt,
            "educ": educ,
            "default": default,
        }
    )


def _make_wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame.copy()
    frame["target"] = frame["target"].astype("int64")
    return frame.reset_index(drop=True)


def _make_diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    # scaled=False: the values as shipped in scikit-learn's CSV, not centred and scaled by
    # arithmetic whose last bits could differ between numpy versions (the sha256 is the version).
    frame = load_diabetes(as_frame=True, scaled=False).frame.copy()
    return frame.astype("float64").reset_index(drop=True)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; a device, pipe or socket (``/dev/zero``) is refused before reading
    (opened non-blocking, so a FIFO cannot hang the open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(21, "Is a directory")
            if not stat.S_ISREG(mode):
                raise DataError(f"{path}: not a regular file (a device, pipe or socket); refused before reading")
            return f.read()
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise DataError(f"{path}: is a directory, not a data file") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from e


def _parquet_names(raw: bytes) -> list[str]:
    import pyarrow.parquet as pq

    return [str(n) for n in pq.read_schema(io.BytesIO(raw)).names]


def _csv_header(raw: bytes) -> list[str] | None:
    """The header row as the file spells it (pandas' own header is already renamed); None if unsure."""
    try:
        text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline="")
        for record in csv.reader(text):
            if record:  # pandas skips blank lines before the header
                return record
    except (csv.Error, UnicodeDecodeError):
        return None
    return None


def _check_column_names(names: list[str], path: Path) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not name.strip():
            raise DataError(f"{path}: column {i + 1} has an empty name in the header; name every column")
        if name in seen:
            count = names.count(name)
            raise DataError(f"{path}: column name {name!r} appears {count} times in the header; names must be unique")
        seen.add(name)


def _clean_target(y: pd.Series, spec: str) -> pd.Series:
    import pandas as pd

    name = str(y.name)
    if y.isna().any():
        raise DataError(f"{spec}: target column {name!r} has {int(y.isna().sum())} missing value(s)")
    if pd.api.types.is_float_dtype(y.dtype):
        _refuse_infinity(y, spec)
        if not (y == y.round()).all():
            raise DataError(
                f"{spec}: target column {name!r} has non-integer numbers, which are not classes (use --task regression)"
            )
        y = y.astype("int64")
    elif not (pd.api.types.is_integer_dtype(y.dtype) or pd.api.types.is_bool_dtype(y.dtype)):
        # Text, categories and mixed objects: compare as text so classes sort and serialise.
        y = y.astype(str)
    if y.dtype.name not in ("int64", "bool", "object"):
        y = y.astype("int64") if pd.api.types.is_integer_dtype(y.dtype) else y.astype(object)
    n_classes = y.nunique()
    if n_classes < 2:
        only = y.iloc[0] if len(y) else None
        raise DataError(f"{spec}: target column {name!r} has a single class ({only!r}); need at least two")
    return y.reset_index(drop=True).rename(name)


def _regression_target(y: pd.Series, spec: str) -> pd.Series:
    import numpy as np
    import pandas as pd

    name = str(y.name)
    if y.isna().any():
        raise DataError(f"{spec}: target column {name!r} has {int(y.isna().sum())} missing value(s)")
    if pd.api.types.is_bool_dtype(y.dtype):
        raise DataError(f"{spec}: target column {name!r} holds true/false values; regression needs numbers")
    if not pd.api.types.is_numeric_dtype(y.dtype):
        numbers = pd.to_numeric(y.astype(str).str.strip(), errors="coerce")
        bad = y[numbers.isna()]
        if len(bad):
            raise DataError(f"{spec}: regression target column {name!r} has text: {_shown(bad)}")
        y = numbers
    y = y.astype("float64")
    if not np.isfinite(y.to_numpy()).all():
        raise DataError(f"{spec}: regression target column {name!r} has infinite values")
    if y.nunique() < 2:
        raise DataError(f"{spec}: regression target column {name!r} is constant ({y.iloc[0]!r}); nothing to learn")
    return y.reset_index(drop=True).rename(name)


def _looks_continuous(values: pd.Series) -> bool:
    return bool(not (values == values.round()).all() or values.nunique() > MAX_CLASSES)


def _shown(bad: pd.Series) -> str:
    return ", ".join(f"{v!r} (row {int(i) + 1})" for i, v in bad.head(_MAX_BAD_SHOWN).items())


def _normalise_features(X: pd.DataFrame, spec: str) -> pd.DataFrame:
    import pandas as pd

    if X.shape[1] == 0:
        raise DataError(f"{spec}: no feature columns besides the target")
    columns = {}
    for name in X.columns:
        column = X[name]
        dtype = column.dtype
        if pd.api.types.is_bool_dtype(dtype):
            columns[name] = _to_text(column)
        elif pd.api.types.is_integer_dtype(dtype) and dtype.name != "int64":
            # Nullable and narrow ints: float64 keeps NaN, int64 keeps the common case exact.
            columns[name] = column.astype("float64") if column.isna().any() else column.astype("int64")
        elif pd.api.types.is_float_dtype(dtype):
            columns[name] = column.astype("float64")
            _refuse_infinity(columns[name], spec)
        elif dtype.name == "int64":
            columns[name] = column
        elif pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
            raise DataError(f"{spec}: column {name!r} has unsupported dtype {dtype}; convert it to numbers or text")
        elif pd.api.types.is_complex_dtype(dtype):
            raise DataError(f"{spec}: column {name!r} has unsupported dtype {dtype}")
        else:
            _refuse_stray_text(column, spec)
            columns[name] = _to_text(column)
    return pd.DataFrame(columns).reset_index(drop=True)


def _refuse_stray_text(column: pd.Series, spec: str) -> None:
    import pandas as pd

    present = column.dropna()
    if present.empty:
        return
    numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    bad = present[numbers.isna()]
    if len(bad) and (len(present) - len(bad)) / len(present) >= _NUMERIC_SHARE:
        shown = ", ".join(f"{v!r} (row {int(i) + 1})" for i, v in bad.head(_MAX_BAD_SHOWN).items())
        raise DataError(f"{spec}: column {column.name!r} is numeric but has text: {shown}")


def _to_numeric(column: pd.Series, source: str) -> pd.Series:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype):
        raise DataError(f"{source}: column {column.name!r} must be numeric, got true/false values")
    if pd.api.types.is_numeric_dtype(column.dtype):
        numeric = column.astype("float64") if column.dtype.name != "int64" else column
    else:
        present = column.dropna()
        numbers = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
        bad = present[numbers.isna()]
        if len(bad):
            shown = ", ".join(f"{v!r} (row {int(i) + 1})" for i, v in bad.head(_MAX_BAD_SHOWN).items())
            raise DataError(f"{source}: column {column.name!r} must be numeric but has text: {shown}")
        numeric = pd.to_numeric(column, errors="coerce").astype("float64")
    _refuse_infinity(numeric, source)
    return numeric


def _refuse_infinity(column: pd.Series, source: str) -> None:
    # A missing value (NaN) is imputed; an infinite one is not data any model can use
    # (scikit-learn raises deep inside the pipeline), so it is named here instead.
    import numpy as np

    if column.dtype.kind != "f":
        return
    infinite = np.isinf(column.to_numpy())
    if infinite.any():
        rows = ", ".join(str(int(i) + 1) for i in np.flatnonzero(infinite)[:_MAX_BAD_SHOWN])
        raise DataError(
            f"{source}: column {column.name!r} has {int(infinite.sum())} infinite value(s) (row(s) {rows}); "
            "use a finite number or leave the cell empty"
        )


def _to_text(column: pd.Series) -> pd.Series:
    import numpy as np
    import pandas as pd

    # Categories are always text: a CSV read back at predict time then matches training.
    missing = column.isna().tolist()
    values = [np.nan if gone else str(v) for v, gone in zip(column.tolist(), missing, strict=True)]
    return pd.Series(values, index=column.index, name=column.name, dtype=object)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _is_numeric_dtype_name(dtype: str) -> bool:
    return dtype.startswith(("int", "uint", "float", "Int", "UInt", "Float"))


def _canonical_column(values: list[Any]) -> list[str]:
    # Fast paths for uniform columns (the common case) avoid a function call per cell.
    kinds = {type(v) for v in values}
    if kinds == {float}:
        return [repr(v) if v == v and v not in (math.inf, -math.inf) else _canonical_cell(v) for v in values]
    if kinds == {str}:
        return values
    if kinds == {int}:
        return [str(v) for v in values]
    return [_canonical_cell(v) for v in values]


def _canonical_cell(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return str(value)


def builtin_csv(spec: str) -> bytes:
    """A builtin dataset (target included) as canonical CSV: its sha256 is the version cards record.

    Raises: ConfigError (unknown builtin).
    """
    frame, _ = _load_builtin(spec)
    return canonical_csv(frame)
