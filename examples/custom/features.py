"""Our own feature step: ratios between the diabetes measurements, as a scikit-learn transformer.

It lives in this folder, not in any installed package, so the card of a model that uses it
records this file's sha256 (``references.local_modules``): change the file and the gate says so.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator, TransformerMixin


class BodyRatios(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Adds ``bmi / bp`` and ``s1 / s2`` (cholesterol ratios) to the measurements."""

    def __init__(self, eps: float = 1e-9) -> None:
        self.eps = eps

    def fit(self, X: Any, y: Any = None) -> BodyRatios:
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> Any:
        X = X.copy()
        X["bmi_per_bp"] = X["bmi"] / (X["bp"] + self.eps)
        X["s1_per_s2"] = X["s1"] / (X["s2"] + self.eps)
        return X
