"""Retrain reproduces its parent byte for byte in the same runtime, for every builtin kind.

The pickle memoizes by identity: a hyperparameter read from the card's JSON is another object
than the library's default literal, and once made the retrained pickle differ from its parent's
in one frame (a random forest's ``max_features``). Built-in kinds only: what ``train`` fits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.training.config import TrainConfig
from toolkit.training.retrain import retrain
from toolkit.training.train import train

KINDS = [
    ("builtin:wine", "random_forest"),
    ("builtin:wine", "gradient_boosting"),
    ("builtin:wine", "hist_gradient_boosting"),
    ("builtin:wine", "logistic_regression"),
    ("builtin:diabetes", "random_forest"),
    ("builtin:diabetes", "gradient_boosting"),
    ("builtin:diabetes", "hist_gradient_boosting"),
    ("builtin:diabetes", "ridge"),
]


@pytest.mark.parametrize(("dataset", "kind"), KINDS)
def test_retrain_in_the_same_runtime_is_byte_identical_to_its_parent(
    dataset: str, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    name = f"{dataset.removeprefix('builtin:')}-{kind.replace('_', '-')}"
    # Small on purpose (2 folds, few trees): what is tested is the bytes, not the model.
    params = {"hist_gradient_boosting": {"max_iter": 10}, "ridge": {}, "logistic_regression": {}}.get(
        kind, {"n_estimators": 5}
    )
    config = TrainConfig(
        dataset=dataset,
        model=kind,
        params=params,
        name=name,
        version="1.0.0",
        cv_folds=2,
        out=tmp_path / "a",
        register=False,
    )
    parent = train(config).path
    child = retrain(parent, version="1.0.1", out=tmp_path / "b").path
    assert child.read_bytes() == parent.read_bytes(), f"{kind}: the retrained pickle differs from its parent's"
    stem = lambda p: p.name.removesuffix(".joblib")  # noqa: E731
    ref = lambda p: p.with_name(stem(p) + ".reference.json.gz")  # noqa: E731
    assert ref(child).read_bytes() == ref(parent).read_bytes()
