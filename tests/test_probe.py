"""Reference predictions survive the trip through JSON, missing values included."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from toolkit import probe
from toolkit.card import Probe


def _pipeline_with_missing_values() -> tuple[object, pd.DataFrame]:
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    X = pd.DataFrame({"colour": ["a", "b", np.nan, "a", "b", "a"], "size": [1.0, np.nan, 3, 4, 5, 6]})
    categorical = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore"))
    pipeline = make_pipeline(
        make_column_transformer((categorical, ["colour"]), (SimpleImputer(), ["size"])), LogisticRegression()
    )
    return pipeline.fit(X, [0, 1, 0, 1, 1, 0]), X


def test_probe_with_missing_values_round_trips_through_json() -> None:
    pipeline, X = _pipeline_with_missing_values()
    recorded = probe.record(pipeline, X)
    assert recorded.rows[2][0] is None and recorded.rows[1][1] is None
    again = Probe(
        **{**recorded.to_dict(), "rows": tuple(map(tuple, json.loads(json.dumps(recorded.to_dict()))["rows"]))}
    )
    result = probe.check(again, pipeline)
    assert result.ok and result.max_abs_diff == 0.0, result


def test_probe_detects_a_changed_model(tiny_pipeline: object, iris_frame: tuple[pd.DataFrame, object]) -> None:
    from sklearn.base import clone

    X, y = iris_frame
    recorded = probe.record(tiny_pipeline, X.head(8))
    other = clone(tiny_pipeline).set_params(logisticregression__C=0.01).fit(X, y)
    result = probe.check(recorded, other)
    assert not result.ok and result.max_abs_diff > recorded.tolerance
    assert "DIFFER" in str(result)


def test_probe_reports_a_pipeline_that_cannot_predict(
    tiny_pipeline: object, iris_frame: tuple[pd.DataFrame, object]
) -> None:
    recorded = probe.record(tiny_pipeline, iris_frame[0].head(4))
    result = probe.check(recorded, object())
    assert not result.ok and result.error and "AttributeError" in result.error
    assert result.to_dict()["max_abs_diff"] is None  # JSON has no infinity


def test_a_regressor_probe_is_numbers_held_to_a_scale_aware_tolerance() -> None:
    from dataclasses import replace

    from sklearn.linear_model import Ridge

    X = pd.DataFrame({"rooms": [1.0, 2.0, 3.0, 4.0, 5.0]})
    y = [1.0e6, 2.1e6, 2.9e6, 4.2e6, 5.0e6]  # prices: predictions far above 1
    pipeline = Ridge().fit(X, y)
    recorded = probe.record(pipeline, X)
    assert recorded.probabilities is None and all(isinstance(v, float) for v in recorded.predictions)
    assert probe.check(recorded, pipeline).ok
    # Summation-order noise on a price in the millions (1e-10 relative) is not a change ...
    noisy = replace(recorded, predictions=tuple(v * (1 + 1e-10) for v in recorded.predictions))
    assert probe.check(noisy, pipeline).ok
    # ... but a prediction off by a part in a thousand is.
    moved = replace(recorded, predictions=(recorded.predictions[0] * 1.001, *recorded.predictions[1:]))
    result = probe.check(moved, pipeline)
    assert not result.ok and result.label_mismatches == 1
