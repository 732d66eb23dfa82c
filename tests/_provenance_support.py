"""What the provenance and SBOM tests share: a recipe model 'trained in' a pinned image."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from toolkit.card import DataInfo, Feature

__all__ = ["BASE", "iris_recipe", "pinned_artifact"]

ROOT = Path(__file__).resolve().parents[1]
BASE = "127.0.0.1:5000/python-base@sha256:" + "ab" * 32


def iris_recipe(dataset_sha: str) -> dict[str, Any]:
    """A card's training recipe for a logistic regression on iris with this dataset sha256."""
    return {
        "dataset": {"source": "builtin:iris", "sha256": dataset_sha},
        "target": "target",
        "model": "logistic_regression",
        "params": {"C": 1.0},
        "preprocessing": {"scaler": "standard"},
        "test_size": 0.2,
        "seed": 42,
        "cv_folds": 5,
    }


def pinned_artifact(
    make_artifact: Any, X: Any, monkeypatch: pytest.MonkeyPatch, directory: Path, **kwargs: Any
) -> Path:
    """An artifact whose card records BASE and this repository's lock (as the image sets them),
    iris as its data and a recipe; ``kwargs`` go to ``toolkit.save``."""
    monkeypatch.setenv("TOOLKIT_BASE_IMAGE", BASE)
    monkeypatch.setenv("TOOLKIT_LOCK_FILE", str(ROOT / "requirements.lock"))
    monkeypatch.delenv("TOOLKIT_LOCK_SHA256", raising=False)
    sha = hashlib.sha256(b"iris").hexdigest()
    data = DataInfo(
        source="builtin:iris",
        sha256=sha,
        n_train=120,
        n_test=30,
        features=tuple(Feature(name=str(c), dtype=str(t)) for c, t in X.dtypes.items()),
        target="target",
        classes=(0, 1, 2),
    )
    path = make_artifact(directory=directory, data=data, training=iris_recipe(sha), **kwargs)
    monkeypatch.delenv("TOOLKIT_BASE_IMAGE")
    monkeypatch.delenv("TOOLKIT_LOCK_FILE")
    return Path(path)
