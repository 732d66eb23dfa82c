"""Two fitted versions of one model re-scored on the same rows: which rows, and the comparison.

The rows are the cards' held-out test split, rebuilt from the source they both record (and
refused when the two were trained on different data or split differently, or when the data at
that source changed); for two script-saved versions, the held-out rows and target they kept
(``toolkit.save(..., held_out=(X, y))``) when both kept the same set (by its sha256), refused when
they were held out on different rows; or all of a dataset the caller names. The scores are paired
(``scoring.paired_scores``). Nothing here knows where the versions came from: the registry
hands over cards and pipelines (``toolkit.workflows.compare``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from toolkit.card import ModelCard
from toolkit.errors import DataError, RegistryError
from toolkit.metrics import Direction, direction
from toolkit.training.scoring import HeldOut

__all__ = ["Comparison", "Rows", "compare_pipelines", "comparison_rows"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """Two versions re-scored on the same data."""

    name: str
    versions: tuple[str, str]
    data: dict[str, Any]  # source, sha256, rows, how ("held-out test split" | "whole dataset")
    scores: dict[str, dict[str, float]]  # version -> metric -> value
    difference: dict[str, float] = field(default_factory=dict)  # second minus first
    # metric -> (low, high) of the difference, paired bootstrap (toolkit.training.scoring); None: undefined
    interval: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)  # resamples, skipped, seed, level
    better: dict[str, Direction] = field(default_factory=dict)  # metric -> "higher" or "lower" (toolkit.metrics)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "data": self.data,
            "scores": self.scores,
            "difference": self.difference,
            "interval": {k: None if v is None else list(v) for k, v in self.interval.items()},
            "bootstrap": self.bootstrap,
            "better": self.better,
        }

    @classmethod
    def from_dict(cls, data: object) -> Comparison:
        """A comparison from its ``to_dict`` (another process's answer: every field's type is
        checked, so printing it cannot fail). Raises: ValueError, naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        versions = data.get("versions")
        if not (isinstance(versions, list) and len(versions) == 2 and all(isinstance(v, str) for v in versions)):
            raise ValueError("versions: not two strings")
        rows = data.get("data")
        if not (
            isinstance(rows, dict)
            and all(isinstance(rows.get(k), str) for k in ("source", "sha256", "how"))
            and _is_int(rows.get("rows"))
        ):
            raise ValueError("data: not source, sha256, rows, how")
        scores = data.get("scores")
        if not (isinstance(scores, dict) and set(scores) == set(versions)):
            raise ValueError("scores: not one table per version")
        for table in scores.values():
            _numbers(table, "scores")
        bootstrap = data.get("bootstrap")
        if not (
            isinstance(bootstrap, dict)
            and all(_is_int(bootstrap.get(k)) for k in ("resamples", "skipped", "seed"))
            and _is_number(bootstrap.get("level"))
        ):
            raise ValueError("bootstrap: not resamples, skipped, seed, level")
        interval = data.get("interval")
        if not isinstance(interval, dict):
            raise ValueError("interval: not an object")
        intervals: dict[str, tuple[float, float] | None] = {}
        for key, value in interval.items():
            if value is not None and not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
                raise ValueError(f"interval {key}: not null or two numbers")
            intervals[str(key)] = None if value is None else (float(value[0]), float(value[1]))
        better = data.get("better")
        if not (isinstance(better, dict) and all(v in ("higher", "lower") for v in better.values())):
            raise ValueError("better: not higher or lower")
        name = data.get("name")
        if not isinstance(name, str):
            raise ValueError("name: not a string")
        return cls(
            name=name,
            versions=(versions[0], versions[1]),
            data=rows,
            scores=scores,
            difference=_numbers(data.get("difference"), "difference"),
            interval=intervals,
            bootstrap=bootstrap,
            better=better,
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(table: object, what: str) -> dict[str, float]:
    if not (isinstance(table, dict) and all(isinstance(k, str) and _is_number(v) for k, v in table.items())):
        raise ValueError(f"{what}: not metric -> number")
    return table


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Rows:
    """The rows both versions are scored on, and where they came from."""

    X: Any  # pandas DataFrame
    y: Any  # pandas Series
    source: str
    sha256: str
    how: str  # "held-out test split" | "recorded held-out rows" | "whole dataset"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "rows": len(self.y), "how": self.how}


def comparison_rows(
    name: str,
    first: tuple[str, ModelCard],
    second: tuple[str, ModelCard],
    *,
    dataset: str | None = None,
    target: str | None = None,
    recorded: tuple[HeldOut | None, HeldOut | None] = (None, None),
) -> Rows:
    """The rows to score ``first`` and ``second`` (each ``(version, card)``) on; ``recorded``:
    each version's kept held-out rows (``scoring.recorded_held_out``), None where it kept none.

    Two versions that kept held-out rows are scored on them when they are the same rows (the
    cards' ``data.sha256``): both models' test scores came from exactly those rows, and they
    travel with the artifacts, so no source has to be found again. Rows held out differently
    are refused rather than scored: one version's test rows may be the other's training rows.

    Raises:
        RegistryError: no ``dataset`` and the cards do not say where their data came from,
            were trained on different data, were split differently, or kept different held-out rows.
        DataError: the data at the cards' source no longer hashes to what they recorded.
    """
    from toolkit.training.datasets import load_dataset, split
    from toolkit.training.scoring import task_of

    (v1, c1), (v2, c2) = first, second
    if dataset is not None:
        ds = load_dataset(
            dataset, target if target is not None else (c1.data.target if c1.data else None), task=task_of(c1)
        )
        return Rows(X=ds.X, y=ds.y, source=ds.source, sha256=ds.sha256, how="whole dataset")
    h1, h2 = recorded
    if h1 is not None or h2 is not None:
        if h1 is None or h2 is None or h1.sha256 != h2.sha256:
            raise RegistryError(
                f"{name} {v1} was held out on {_held(c1, h1)}, {v2} on {_held(c2, h2)}: there is no common "
                "held-out set; name one with --dataset FILE --target COL"
            )
        return Rows(X=h1.X, y=h1.y, source=h1.source, sha256=h1.sha256, how=h1.how)
    d1, d2 = c1.data, c2.data
    if d1 is None or d2 is None or not d1.sha256 or not d1.source:
        raise RegistryError(
            f"{name} {v1 if d1 is None or not d1.source else v2}: the card does not "
            "say where its data came from; name one with --dataset"
        )
    if d1.sha256 != d2.sha256:
        raise RegistryError(
            f"{name} {v1} was trained on data sha256 {d1.sha256[:12]}, {v2} on "
            f"{(d2.sha256 or 'unknown')[:12]}: there is no common held-out set; name one with --dataset"
        )
    if not d1.split or d1.split != d2.split:
        raise RegistryError(
            f"{name} {v1} and {v2} were split differently ({_split(d1.split)} vs {_split(d2.split)}): one's test rows "
            "are the other's training rows; name a dataset with --dataset"
        )
    ds = load_dataset(d1.source, target if target is not None else d1.target, task=task_of(c1))
    if ds.sha256 != d1.sha256:
        raise DataError(
            f"{d1.source} now hashes to {ds.sha256[:12]}, the cards recorded {d1.sha256[:12]}: "
            "the data changed; name a dataset with --dataset"
        )
    _, X, _, y = split(ds, test_size=d1.split.test_size, seed=d1.split.seed)
    return Rows(X=X, y=y, source=ds.source, sha256=ds.sha256, how="held-out test split")


def compare_pipelines(
    name: str, versions: tuple[str, str], pipelines: tuple[Any, Any], rows: Rows, *, resamples: int, seed: int
) -> Comparison:
    """Score both pipelines on ``rows`` (paired bootstrap); the second minus the first."""
    from toolkit.training.scoring import paired_scores

    paired = paired_scores(pipelines[0], pipelines[1], rows.X, rows.y, resamples=resamples, seed=seed)
    v1, v2 = versions
    return Comparison(
        name=name,
        versions=versions,
        data=rows.to_dict(),
        scores={v1: paired.a, v2: paired.b},
        difference=paired.difference,
        interval=paired.intervals,
        bootstrap=paired.bootstrap_dict(),
        better={k: direction(k) for k in paired.difference},
    )


def _held(card: ModelCard, kept: HeldOut | None) -> str:
    """Which held-out rows a version was scored on at save, in a few words."""
    data = card.data
    if kept is not None:
        return f"its own {data.n_test} rows (sha256 {kept.sha256[:12]})"
    if data.source and data.sha256 and data.split:
        return f"a split of {data.source} (sha256 {data.sha256[:12]}, {_split(data.split)})"
    return "rows its card does not record"


def _split(split: Any) -> str:
    return "none" if split is None else f"test_size {split.test_size}, seed {split.seed}"
