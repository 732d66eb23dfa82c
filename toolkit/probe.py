"""Reference predictions: record them at save time, re-check them after a load."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from toolkit.card import Probe, jsonable

__all__ = ["DEFAULT_TOLERANCE", "ProbeResult", "check", "frame", "frame_of", "record"]

# Absolute tolerance on probabilities and numeric predictions (relative for predictions
# larger than 1 in magnitude). Class labels must match exactly. 1e-6 absorbs BLAS
# summation-order noise while catching any real change.
DEFAULT_TOLERANCE = 1e-6


@dataclass(frozen=True, kw_only=True, slots=True)
class ProbeResult:
    """How a loaded pipeline's outputs compare with the card's reference outputs."""

    ok: bool
    rows: int
    label_mismatches: int
    # Over probabilities and numeric predictions (relative beyond 1); 0.0 when identical.
    max_abs_diff: float
    tolerance: float
    error: str | None = None  # set when the pipeline could not even predict

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "label_mismatches": self.label_mismatches,
            "max_abs_diff": self.max_abs_diff if math.isfinite(self.max_abs_diff) else None,
            "tolerance": self.tolerance,
            "error": self.error,
        }

    def __str__(self) -> str:
        if self.error:
            return f"probe could not run: {self.error}"
        verdict = "agree" if self.ok else "DIFFER"
        return (
            f"probe predictions {verdict}: {self.rows} rows, {self.label_mismatches} label mismatches, "
            f"max |diff| {self.max_abs_diff:.3g} (tolerance {self.tolerance:g})"
        )


def record(pipeline: Any, X: Any, *, tolerance: float = DEFAULT_TOLERANCE) -> Probe:
    """Run ``pipeline`` on the probe inputs ``X`` (a DataFrame) and keep inputs and outputs."""
    from toolkit.inputs import model_input

    given = model_input(pipeline, X)
    predictions = [jsonable(v) for v in _as_list(pipeline.predict(given))]
    probabilities = None
    if hasattr(pipeline, "predict_proba"):
        probabilities = tuple(tuple(float(v) for v in row) for row in _as_list(pipeline.predict_proba(given)))
    return Probe(
        columns=tuple(str(c) for c in X.columns),
        dtypes=tuple(str(t) for t in X.dtypes),
        rows=tuple(tuple(jsonable(v) for v in row) for row in X.itertuples(index=False, name=None)),
        predictions=tuple(predictions),
        probabilities=probabilities,
        tolerance=tolerance,
    )


def frame(probe: Probe) -> Any:
    """The probe inputs as a DataFrame with their recorded dtypes."""
    return frame_of(probe.columns, probe.dtypes, probe.rows)


def frame_of(columns: Sequence[str], dtypes: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    """Rows read from JSON as a DataFrame with their recorded dtypes (the probe's and the reference set's)."""
    import pandas as pd

    df = pd.DataFrame([list(r) for r in rows], columns=list(columns))
    for column, dtype in zip(columns, dtypes, strict=True):  # both parsers check the lengths
        # JSON has one null; in a frame a missing value is NaN (what imputers were fitted on).
        df[column] = df[column].where(df[column].notna(), float("nan"))
        # e.g. an int column that held a null: keep pandas' inferred dtype
        with contextlib.suppress(TypeError, ValueError):
            df[column] = df[column].astype(dtype)
    return df


def check(probe: Probe, pipeline: Any) -> ProbeResult:
    """Re-run the probe through ``pipeline`` and compare with the recorded outputs."""
    from toolkit.inputs import model_input

    try:
        X = model_input(pipeline, frame(probe))
        predictions = [jsonable(v) for v in _as_list(pipeline.predict(X))]
        probabilities = _as_list(pipeline.predict_proba(X)) if probe.probabilities is not None else None
    except Exception as e:
        return ProbeResult(
            ok=False,
            rows=len(probe.rows),
            label_mismatches=len(probe.rows),
            max_abs_diff=math.inf,
            tolerance=probe.tolerance,
            error=f"{type(e).__name__}: {e}",
        )
    mismatches = 0
    worst = 0.0
    # strict=False: a length difference is counted below, as mismatches.
    for expected, actual in zip(probe.predictions, predictions, strict=False):
        if _numeric(expected) and _numeric(actual) and not isinstance(expected, bool):
            # A regressor's output is on the target's scale: beyond 1 the tolerance is relative,
            # so a price in the millions is held to the same ~1e-6 as a probability.
            diff = abs(float(expected) - float(actual)) / max(1.0, abs(float(expected)))
            worst = max(worst, diff)
            mismatches += diff > probe.tolerance
        else:
            mismatches += expected != actual
    if len(predictions) != len(probe.predictions):
        mismatches += abs(len(predictions) - len(probe.predictions))
    if probe.probabilities is not None:
        if probabilities is None or len(probabilities) != len(probe.probabilities):
            worst = math.inf
        else:
            for exp_row, act_row in zip(probe.probabilities, probabilities, strict=True):
                if len(exp_row) != len(act_row):
                    worst = math.inf
                    break
                worst = max([worst, *(abs(e - float(a)) for e, a in zip(exp_row, act_row, strict=True))])
    ok = mismatches == 0 and worst <= probe.tolerance
    return ProbeResult(
        ok=ok, rows=len(probe.rows), label_mismatches=int(mismatches), max_abs_diff=worst, tolerance=probe.tolerance
    )


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _numeric(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float))
