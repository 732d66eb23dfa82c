"""Two artifacts compared from their cards: what was trained, on what, how well, and where.

Nothing is unpickled: the pickles are compared by the sha256 their cards record (which
``verify`` ties to the bytes). Names and versions are labels, not differences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from toolkit.card import ModelCard
from toolkit.errors import Difference
from toolkit.policy import differences

__all__ = ["CardDiff", "FieldChange", "MetricRow", "diff_cards"]


@dataclass(frozen=True, kw_only=True, slots=True)
class FieldChange:
    """One training fact that differs: ``params.max_depth``, ``data.sha256``, ``preprocessing``..."""

    field: str
    a: str | None
    b: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class MetricRow:
    """One metric of either card (``test.accuracy``) and its values (None where a card lacks it)."""

    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True, kw_only=True, slots=True)
class CardDiff:
    """Everything that differs between two artifacts' cards."""

    a: ModelCard
    b: ModelCard
    model: tuple[FieldChange, ...]  # algorithm, hyperparameters, data, preprocessing
    metrics: tuple[MetricRow, ...]  # every metric, equal or not
    environment: tuple[Difference, ...]  # b's runtime against a's, as the strict gate sees it

    @property
    def identical_pickles(self) -> bool:
        return self.a.artifact.sha256 == self.b.artifact.sha256

    @property
    def differ(self) -> bool:
        """Different pickles, training, data, scores or runtime (names and versions aside)."""
        changed_metric = any(row.a != row.b for row in self.metrics)
        return not self.identical_pickles or bool(self.model or self.environment) or changed_metric

    def to_dict(self) -> dict[str, Any]:
        def side(card: ModelCard) -> dict[str, Any]:
            return {"name": card.name, "version": card.version, "sha256": card.artifact.sha256}

        return {
            "differ": self.differ,
            "identical_pickles": self.identical_pickles,
            "a": side(self.a),
            "b": side(self.b),
            "model": [{"field": c.field, "a": c.a, "b": c.b} for c in self.model],
            "metrics": [{"metric": r.metric, "a": r.a, "b": r.b} for r in self.metrics],
            "environment": [{"name": d.name, "a": d.expected, "b": d.actual} for d in self.environment],
            "data_sha256": {"a": self.a.data.sha256, "b": self.b.data.sha256},
        }


def diff_cards(a: ModelCard, b: ModelCard) -> CardDiff:
    """Compare two cards field by field; nothing is loaded or unpickled."""
    return CardDiff(a=a, b=b, model=_model_changes(a, b), metrics=_metric_rows(a, b), environment=_environment(a, b))


def _model_changes(a: ModelCard, b: ModelCard) -> tuple[FieldChange, ...]:
    facts_a, facts_b = _facts(a), _facts(b)
    return tuple(
        FieldChange(field=key, a=facts_a.get(key), b=facts_b.get(key))
        for key in sorted(facts_a.keys() | facts_b.keys(), key=_fact_order)
        if facts_a.get(key) != facts_b.get(key)
    )


def _facts(card: ModelCard) -> dict[str, str | None]:
    """The card's training facts as comparable text (None: not recorded), one key per hyperparameter."""
    facts: dict[str, str | None] = {
        "algorithm": card.algorithm,
        "data.source": card.data.source,
        "data.sha256": card.data.sha256,
        "data.target": card.data.target,
        "data.features": ", ".join(f"{f.name}:{f.dtype}" for f in card.data.features),
        "data.split": json.dumps(None if card.data.split is None else card.data.split.to_dict(), sort_keys=True),
        "preprocessing": "; ".join(card.preprocessing),
    }
    for key, value in card.params.items():
        facts[f"params.{key}"] = json.dumps(value, sort_keys=True)
    return facts


def _fact_order(key: str) -> tuple[int, str]:
    # algorithm first, then hyperparameters, then data and preprocessing: the order people ask in.
    group = 0 if key == "algorithm" else 1 if key.startswith("params.") else 2
    return group, key


def _metric_rows(a: ModelCard, b: ModelCard) -> tuple[MetricRow, ...]:
    sections = sorted(set(a.metrics) | set(b.metrics))
    return tuple(
        MetricRow(metric=f"{s}.{m}", a=a.metrics.get(s, {}).get(m), b=b.metrics.get(s, {}).get(m))
        for s in sections
        for m in sorted(set(a.metrics.get(s, {})) | set(b.metrics.get(s, {})))
    )


def _environment(a: ModelCard, b: ModelCard) -> tuple[Difference, ...]:
    return tuple(differences(a.environment, b.environment, policy="strict"))
