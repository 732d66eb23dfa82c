"""Rows a user hands to ``save`` (``probe=``, ``reference=``, ``held_out=``): checked, and framed.

The card keeps input rows as a table (columns, dtypes, rows), so an array needs column names:
the ones the pipeline saw when it was fitted (``feature_names_in_``), else ``x0``, ``x1``, ...
A pipeline fitted on a plain array (it has no ``feature_names_in_``) is given a plain array
again whenever the toolkit predicts (``model_input``), so that scikit-learn does not warn that
it "was fitted without feature names" on every check.

Anything that is not a usable table is one ``UsageError`` naming the argument and what is
wrong with it, before the pipeline sees it; a pipeline that then cannot predict the rows is
one line naming the argument too (and the missing values, when that is what it choked on).
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import UsageError

__all__ = ["as_frame", "as_target", "cannot_predict", "model_input"]

# numpy dtype kinds a table of features can hold: bool, signed, unsigned, float, text, object.
_KINDS = "biufUO"


def as_frame(pipeline: Any, value: Any, *, what: str) -> Any:
    """``value`` (a DataFrame or a 2-D numpy array) as a DataFrame the pipeline can be given.

    Raises: UsageError naming ``what`` (``probe``, ``reference``, ``held_out``) and the problem.
    """
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        frame = value
    elif isinstance(value, np.ndarray):
        frame = _array_frame(pipeline, value, what=what)
    else:
        kind = type(value).__name__
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
            kind = "list of dicts"
        raise UsageError(f"{what} must be a pandas DataFrame or a 2-D numpy array, got a {kind}")
    if frame.shape[1] == 0:
        raise UsageError(f"{what} has no columns")
    if len(frame) == 0:
        raise UsageError(f"{what} has no rows")
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UsageError(f"{what} has a column name more than once: {', '.join(twice)}")
    for column, dtype in zip(names, frame.dtypes, strict=True):
        if getattr(dtype, "kind", "O") not in _KINDS and not isinstance(dtype, pd.CategoricalDtype):
            raise UsageError(f"{what}: column {column} is {dtype}; give numbers, booleans or text")
    _check_against_pipeline(pipeline, names, what=what)
    return frame


def as_target(value: Any, rows: int, *, what: str) -> Any:
    """``value`` (a pandas Series or a 1-D numpy array of ``rows`` labels or values) as a Series.

    Raises: UsageError naming ``what``.
    """
    import numpy as np
    import pandas as pd

    if isinstance(value, pd.DataFrame) and value.shape[1] == 1:
        value = value.iloc[:, 0]
    if isinstance(value, np.ndarray):
        if value.ndim == 2 and value.shape[1] == 1:
            value = value[:, 0]
        if value.ndim != 1:
            raise UsageError(f"{what}: the target must be 1-D, got shape {value.shape}")
        value = pd.Series(value, name="target")
    if not isinstance(value, pd.Series):
        raise UsageError(
            f"{what}: the target must be a pandas Series or a 1-D numpy array, got a {type(value).__name__}"
        )
    if len(value) != rows:
        raise UsageError(f"{what}: {rows} rows but {len(value)} target values")
    if value.isna().any():
        raise UsageError(f"{what}: the target has {int(value.isna().sum())} missing values")
    if getattr(value.dtype, "kind", "O") not in _KINDS and not isinstance(value.dtype, pd.CategoricalDtype):
        raise UsageError(f"{what}: the target is {value.dtype}; give numbers, booleans or text")
    return value.reset_index(drop=True)


def model_input(pipeline: Any, frame: Any) -> Any:
    """What the pipeline is given for ``frame``: the frame itself, or its values when the pipeline
    was fitted on a plain array (no ``feature_names_in_``) and the columns are the ``x0...`` this
    module named them."""
    if _fitted_with_names(pipeline) or list(frame.columns) != _generic(frame.shape[1]):
        return frame
    return frame.to_numpy()


def cannot_predict(what: str, frame: Any, error: Exception) -> UsageError:
    """The one line for rows the pipeline could not predict: naming the missing values when the
    rows hold any (what a pipeline without an imputer chokes on)."""
    missing = [str(c) for c in frame.columns if frame[c].isna().any()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        return UsageError(
            f"{what}: the pipeline cannot take these rows; they hold missing values (NaN) in {shown} "
            f"and it has no step that fills them ({type(error).__name__}: {_first_line(error)})"
        )
    return UsageError(f"{what}: the pipeline cannot predict these rows: {type(error).__name__}: {_first_line(error)}")


def _array_frame(pipeline: Any, array: Any, *, what: str) -> Any:
    import pandas as pd

    if array.dtype.kind == "O" and array.ndim == 1 and len(array) and all(hasattr(r, "__len__") for r in array):
        raise UsageError(f"{what}: its rows have different lengths (a ragged array); give a 2-D array")
    if array.ndim != 2:
        raise UsageError(f"{what} must be 2-D (rows x features), got an array of shape {array.shape}")
    if array.dtype.kind not in _KINDS or array.dtype.names is not None:
        raise UsageError(f"{what}: an array of {array.dtype} is not a table of features; give numbers or text")
    names = getattr(pipeline, "feature_names_in_", None) if _fitted_with_names(pipeline) else None
    width = getattr(pipeline, "n_features_in_", None)
    if isinstance(width, int) and array.shape[1] != width:
        raise UsageError(f"{what} has {array.shape[1]} columns; the pipeline was fitted on {width} features")
    columns = [str(n) for n in names] if names is not None else _generic(array.shape[1])
    return pd.DataFrame(array, columns=columns)


def _check_against_pipeline(pipeline: Any, names: list[str], *, what: str) -> None:
    """Every column the pipeline was fitted on is there (extra ones are the pipeline's to judge:
    a ColumnTransformer drops them, a bare scaler refuses them, in one line, when predicting)."""
    if not _fitted_with_names(pipeline):
        return
    missing = [str(n) for n in pipeline.feature_names_in_ if str(n) not in names]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise UsageError(f"{what} lacks columns the pipeline was fitted on: {shown}")


def _fitted_with_names(pipeline: Any) -> bool:
    try:  # a Pipeline's property raises AttributeError when its first step has none
        return getattr(pipeline, "feature_names_in_", None) is not None
    except Exception:  # a broken estimator's property: the probe run is the check
        return False


def _generic(width: int) -> list[str]:
    return [f"x{i}" for i in range(width)]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"
