"""Retrain a model from its card alone: the card's ``training`` recipe, in this runtime.

scikit-learn's own advice for a model pickled by another release is to keep the recipe and
retrain. Card schema 2 records the resolved recipe (dataset source and sha256, model kind,
every hyperparameter, preprocessing, split, seed, folds), so the same job runs again here;
the new card's ``lineage`` names the parent. The data must be the card's data, byte for byte
(its sha256): a retrain on other data is a new model, not the same one retrained.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.signing import TrustedKeys
    from toolkit.training.train import Progress, TrainResult

__all__ = ["RetrainResult", "recipe_config", "retrain"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetrainResult:
    """A retrained model beside the one it was retrained from."""

    parent: ModelCard
    trained: TrainResult

    @property
    def path(self) -> Path:
        return self.trained.path

    @property
    def card(self) -> ModelCard:
        return self.trained.card

    def metrics_side_by_side(self) -> list[tuple[str, float | None, float | None]]:
        """``(section.metric, parent's, new)`` for every metric either card has, cv then test."""
        rows: list[tuple[str, float | None, float | None]] = []
        new, old = self.card.metrics, self.parent.metrics
        for section in sorted(set(new) | set(old), key=lambda s: (s != "cv", s)):
            names = sorted(set(new.get(section, {})) | set(old.get(section, {})))
            for name in names:
                if name.endswith("_std"):
                    continue
                rows.append((f"{section}.{name}", old.get(section, {}).get(name), new.get(section, {}).get(name)))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": f"{self.parent.name}@{self.parent.version}",
            "name": self.card.name,
            "version": self.card.version,
            "path": str(self.path),
            "lineage": None if self.card.lineage is None else self.card.lineage.to_dict(),
            "metrics": [{"metric": m, "parent": p, "new": n} for m, p, n in self.metrics_side_by_side()],
        }


def retrain(
    artifact: Path,
    *,
    version: str,
    out: Path,
    dataset: str | None = None,
    reason: str | None = None,
    progress: Progress | None = None,
    trusted_keys: TrustedKeys = None,
) -> RetrainResult:
    """Rerun ``artifact``'s recipe here and save ``NAME-VERSION`` in ``out`` with its lineage.

    Raises:
        IntegrityError: the artifact fails its checksum or its card is invalid (or, with
            trusted keys, its signature).
        UsageError: a schema 1 card or one with no recipe; data whose sha256 is not the
            card's (both hashes in the message); an existing output.
        ConfigError, DataError: the recipe does not run here (a hyperparameter this
            scikit-learn no longer has, unreadable data).
    """
    from toolkit.artifact import verify
    from toolkit.card import Lineage, require_schema2
    from toolkit.training.datasets import load_dataset
    from toolkit.training.train import train

    parent = verify(artifact, trusted_keys=trusted_keys)
    require_schema2(parent, "retrain")
    if parent.training is None:
        raise UsageError(
            f"{parent.name} {parent.version} has no training recipe on its card "
            "(saved with toolkit.save, not trained by toolkit train): nothing to retrain from"
        )
    recipe = parent.training
    source = dataset or recipe.dataset_source
    # Checked before anything is fitted: hashing the data is seconds, a retrain minutes.
    data = load_dataset(source, recipe.target)
    if data.sha256 != recipe.dataset_sha256:
        raise UsageError(
            f"{source}: sha256 {data.sha256} is not the card's training data {recipe.dataset_sha256}; "
            "retrain needs the same data (pass the original with --dataset)"
        )
    config = recipe_config(parent, version=version, out=out, dataset=source)
    lineage = Lineage(
        parent=f"{parent.name}@{parent.version}",
        reason=reason or f"retrained from the card's recipe under scikit-learn {_installed('scikit-learn')}",
    )
    trained = train(config, progress=progress, lineage=lineage)
    return RetrainResult(parent=parent, trained=trained)


def recipe_config(card: ModelCard, *, version: str, out: Path, dataset: str | None = None) -> Any:
    """The ``TrainConfig`` that reruns ``card``'s recipe as NAME VERSION into ``out``."""
    from toolkit.training.config import TrainConfig

    recipe = card.training
    if recipe is None:
        raise UsageError(f"{card.name} {card.version} has no training recipe on its card")
    preprocessing: Mapping[str, Any] = recipe.preprocessing
    return TrainConfig(
        dataset=dataset or recipe.dataset_source,
        target=recipe.target,
        model=recipe.model,
        params=dict(recipe.params),
        name=card.name,
        version=version,
        seed=recipe.seed,
        test_size=recipe.test_size,
        cv_folds=recipe.cv_folds,
        scaler=str(preprocessing.get("scaler", "standard")),
        out=out,
        register=False,
        author=None,
        intended_use=card.intended_use,
        limitations=card.limitations,
    )


def _installed(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"
