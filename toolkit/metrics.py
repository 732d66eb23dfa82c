"""Which way is better for each metric: the one rule that training, ``compare`` and ``promote`` share.

Classifiers are scored with ``roc_auc``, ``accuracy`` and ``f1`` (higher is better);
regressors with ``rmse`` and ``mae`` (errors: lower is better) and ``r2`` (higher is better).
A ``*_std`` key is the spread of a cross-validated score across folds: lower is steadier.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "CLASSIFICATION_METRICS",
    "LOWER_IS_BETTER",
    "REGRESSION_METRICS",
    "Direction",
    "direction",
    "is_better",
    "is_spread",
]

Direction = Literal["higher", "lower"]

CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "f1")
REGRESSION_METRICS = ("rmse", "mae", "r2")
# Errors, not scores. A metric not named here is a score (higher is better): every metric the
# toolkit writes is in one of the two tuples above, and a card from elsewhere is read the same way.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "log_loss"})


def is_spread(key: str) -> bool:
    """``True`` for a ``*_std`` key: the spread of a score across CV folds, not a score."""
    return key.endswith("_std")


def direction(key: str) -> Direction:
    """``"lower"`` when a smaller value of metric ``key`` is better (errors, spreads), else ``"higher"``."""
    return "lower" if key in LOWER_IS_BETTER or is_spread(key) else "higher"


def is_better(key: str, candidate: float, incumbent: float) -> bool:
    """Whether ``candidate`` beats ``incumbent`` on metric ``key`` (a tie is not better)."""
    return candidate < incumbent if direction(key) == "lower" else candidate > incumbent
