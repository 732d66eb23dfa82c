"""The held-out rows a card was scored on, rebuilt from the card alone.

Plots and comparisons must be computed on the same rows the card's test metrics came
from; the card records the data's source, its sha256 and the split, so the rows can be
rebuilt exactly, and refused when the data at that source changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolkit.card import ModelCard
from toolkit.errors import DataError, UsageError

__all__ = ["HeldOut", "held_out"]


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class HeldOut:
    """The held-out features and target of one card, with where they came from."""

    X: Any  # pandas DataFrame
    y: Any  # pandas Series
    source: str
    sha256: str


def held_out(card: ModelCard) -> HeldOut:
    """The card's held-out test split, rebuilt from its data source and split.

    Raises:
        UsageError: the card does not say where its data came from or how it was split.
        DataError: the data at the card's source no longer hashes to what it recorded.
    """
    from toolkit.datasets import load_dataset, split

    data = card.data
    if not data.source or not data.sha256 or not data.split:
        raise UsageError(
            f"{card.name} {card.version}: the card does not record its data source, sha256 and split, "
            "so its held-out rows cannot be rebuilt"
        )
    dataset = load_dataset(data.source, data.target)
    if dataset.sha256 != data.sha256:
        raise DataError(
            f"{data.source} now hashes to {dataset.sha256[:12]}, the card recorded {data.sha256[:12]}: the data changed"
        )
    _, X, _, y = split(dataset, test_size=float(data.split["test_size"]), seed=int(data.split["seed"]))
    return HeldOut(X=X, y=y, source=data.source, sha256=dataset.sha256)
