"""The loader's default trust, and what the loading side adds to it (--trust, a signed card)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import joblib
import pytest
from typer.testing import CliRunner

import toolkit
from toolkit import pickle_audit, trust
from toolkit.artifact import artifact_paths, read_card
from toolkit.card import card_from_dict
from toolkit.cli import app
from toolkit.errors import IntegrityError, UsageError
from toolkit.training.config import CLASSIFIER_KINDS, REGRESSOR_KINDS


def _local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> Any:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "tk_trust_steps.py").write_text(source)
    monkeypatch.syspath_prepend(str(code))
    sys.modules.pop("tk_trust_steps", None)
    import tk_trust_steps  # type: ignore[import-not-found]

    return tk_trust_steps


_FUNCTION = "def double(X):\n    return X * 2\n"
_CLASS = """
from sklearn.base import BaseEstimator, TransformerMixin


class Doubler(TransformerMixin, BaseEstimator):
    def fit(self, X, y=None):
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return X * 2


class Helper:  # not an estimator: never trusted by default
    pass
"""


def _save(pipeline: Any, tmp_path: Path, iris_frame: tuple[Any, Any]) -> Path:
    X, y = iris_frame
    path = tmp_path / "m-1.0.0.joblib"
    toolkit.save(pipeline.fit(X, y), path, name="m", version="1.0.0", probe=X.head(4))
    return path


def test_a_local_function_needs_the_loading_side_to_trust_it(
    tmp_path: Path, iris_frame: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    steps = _local(tmp_path, monkeypatch, _FUNCTION)
    path = _save(
        make_pipeline(FunctionTransformer(func=steps.double), LogisticRegression(max_iter=300)), tmp_path, iris_frame
    )
    assert ("tk_trust_steps", "double") in (read_card(path).references.globals or ())
    with pytest.raises(IntegrityError, match=r"tk_trust_steps\.double, refused: .*pass --trust tk_trust_steps\.double"):
        toolkit.load(path)
    assert toolkit.load(path, trusted=["tk_trust_steps.double"]).predict(iris_frame[0]).shape == (150,)
    rows = tmp_path / "rows.csv"
    iris_frame[0].head(3).to_csv(rows, index=False)
    refused = runner.invoke(app, ["predict", str(path), str(rows)])
    assert refused.exit_code == 3 and len(refused.stderr.strip().splitlines()) == 1, refused.output
    assert "--trust tk_trust_steps.double" in refused.stderr
    ok = runner.invoke(app, ["predict", str(path), str(rows), "--trust", "tk_trust_steps.double"])
    assert ok.exit_code == 0, ok.output
    assert len(ok.stdout.strip().splitlines()) == 4
    gate = runner.invoke(app, ["check-env", str(path), "--verify-predictions", "--trust", "tk_trust_steps.double"])
    assert gate.exit_code == 0, gate.output
    # Trust names one callable: another in the same module is still refused.
    with pytest.raises(IntegrityError, match=r"tk_trust_steps\.double"):
        toolkit.load(path, trusted=["tk_trust_steps.other"])


@pytest.mark.parametrize("value", ["double", "tk_trust_steps.a.b()", "mod.na-me", "", ".x"])
def test_a_bad_trust_value_is_a_usage_error(value: str, base_artifact: Path, runner: CliRunner) -> None:
    with pytest.raises(UsageError):
        toolkit.load(base_artifact, trusted=[value])
    result = runner.invoke(app, ["check-env", str(base_artifact), "--verify-predictions", "--trust", value])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output


def test_a_local_estimator_class_loads_by_default_and_a_local_helper_does_not(
    tmp_path: Path, iris_frame: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    steps = _local(tmp_path, monkeypatch, _CLASS)
    path = _save(make_pipeline(steps.Doubler(), LogisticRegression(max_iter=300)), tmp_path, iris_frame)
    [local] = read_card(path).references.local_modules or ()
    assert local.module == "tk_trust_steps"
    loaded = toolkit.load(path)
    assert type(loaded.steps[0][1]).__name__ == "Doubler"
    # A pipeline holding an instance of a non-estimator class of the same module.
    pipeline = make_pipeline(steps.Doubler(), LogisticRegression(max_iter=300))
    pipeline.steps[0][1].helper = steps.Helper()
    other = tmp_path / "other"
    other.mkdir()
    path2 = _save(pipeline, other, iris_frame)
    with pytest.raises(IntegrityError, match=r"tk_trust_steps\.Helper, refused: a class the loader does not trust"):
        toolkit.load(path2)
    assert type(toolkit.load(path2, trusted=["tk_trust_steps.Helper"]).steps[0][1].helper).__name__ == "Helper"


def test_a_card_signed_by_a_trusted_key_vouches_for_its_globals(
    tmp_path: Path, iris_frame: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    steps = _local(tmp_path, monkeypatch, _FUNCTION)
    path = _save(
        make_pipeline(FunctionTransformer(func=steps.double), LogisticRegression(max_iter=300)), tmp_path, iris_frame
    )
    from toolkit import signing

    signing.keygen(tmp_path / "ours")
    toolkit.artifact.sign(path, tmp_path / "ours.key")
    public = tmp_path / "ours.pub"
    with pytest.raises(IntegrityError, match="--trust"):
        toolkit.load(path)  # signed, but no key trusted by the loading side
    assert toolkit.load(path, trusted_keys=[public]).predict(iris_frame[0]).shape == (150,)


def test_an_object_that_is_not_an_estimator_is_exit_3(artifact: Path, runner: CliRunner, iris_frame: Any) -> None:
    buffer = io.BytesIO()
    joblib.dump({"weights": [1.0, 2.0]}, buffer)
    blob = buffer.getvalue()
    paths = artifact_paths(artifact)
    paths.model.write_bytes(blob)
    d = json.loads(paths.card_json.read_text())
    d["artifact"].update(sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    d["references"].update(globals=[], modules=[], local_modules=[])
    paths.card_json.write_text(json.dumps(d, indent=2))
    paths.card_md.write_text(card_from_dict(d).to_markdown())
    with pytest.raises(IntegrityError, match="holds a dict, not an estimator"):
        toolkit.load(artifact)
    rows = artifact.parent / "rows.csv"
    iris_frame[0].head(3).to_csv(rows, index=False)
    result = runner.invoke(app, ["predict", str(artifact), str(rows)])
    assert result.exit_code == 3 and "not an estimator" in result.stderr, result.output


def test_python2_names_and_dotted_names_are_refused_even_when_recorded() -> None:
    policy = trust.Policy(
        record=frozenset({("__builtin__", "eval"), ("posixpath", "os.system"), ("copy_reg", "_reconstructor")}),
        record_modules=frozenset({"__builtin__", "posixpath", "copy_reg"}),
        distributions=frozenset({"numpy"}),
        local_modules=frozenset(),
    )
    for module, name, why in [
        ("__builtin__", "eval", "not from a distribution"),
        ("copy_reg", "_reconstructor", "not from a distribution"),
        ("posixpath", "os.system", "not a plain module and name"),
    ]:
        with pytest.raises(trust.Refused, match=why):
            policy.resolve(module, name, lambda m, n: pytest.fail(f"imported {m}.{n}"))


@pytest.mark.parametrize(
    ("task", "kind"),
    [("classification", k) for k in CLASSIFIER_KINDS] + [("regression", k) for k in REGRESSOR_KINDS],
)
def test_every_pipeline_train_builds_loads_under_the_default_trust(task: str, kind: str, tmp_path: Path) -> None:
    from toolkit.training.config import TrainConfig
    from toolkit.training.train import train

    dataset = "builtin:credit" if task == "classification" else "builtin:diabetes"
    # Five trees or iterations pickle to the same types as the defaults' hundred.
    smaller = {"hist_gradient_boosting": "max_iter", "gradient_boosting": "n_estimators"}
    smaller["random_forest"] = "n_estimators"
    params = {smaller[kind]: 5} if kind in smaller else {}
    config = TrainConfig(
        dataset=dataset, model=kind, params=params, cv_folds=2, out=tmp_path, register=False, version="1.0.0"
    )
    result = train(config)
    loaded = toolkit.load(result.path)
    assert callable(loaded.predict)
    assert toolkit.check_env(result.path, verify_predictions=True).ok


def test_the_worked_example_loads_under_the_default_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # examples/custom: the user's own transformer class in a local module.
    example = Path(__file__).resolve().parent.parent / "examples" / "custom"
    monkeypatch.syspath_prepend(str(example))
    sys.modules.pop("features", None)
    import features  # type: ignore[import-not-found]
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    path = tmp_path / "diabetes-1.0.0.joblib"
    toolkit.save(
        make_pipeline(features.BodyRatios(), Ridge()).fit(X, y), path, name="d", version="1.0.0", probe=X.head(4)
    )
    assert type(toolkit.load(path).steps[0][1]).__name__ == "BodyRatios"


def test_a_ufunc_and_a_numpy_reduction_are_trusted_by_type(tmp_path: Path, iris_frame: tuple[Any, Any]) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    path = _save(
        make_pipeline(FunctionTransformer(func=np.log1p), LogisticRegression(max_iter=300)), tmp_path, iris_frame
    )
    assert toolkit.load(path).steps[0][1].func is np.log1p
    blob = io.BytesIO()
    pairs = pickle_audit.dump(np.mean, blob)  # type: ignore[arg-type]
    policy = trust.Policy(
        record=frozenset(pairs),
        record_modules=frozenset(m for m, _ in pairs),
        distributions=frozenset({"numpy"}),
        local_modules=frozenset(),
    )
    assert pickle_audit.load(blob.getvalue(), policy, where="x") is np.mean


def _policy(*distributions: str) -> Any:
    from toolkit.trust import Policy

    return Policy(
        record=None, record_modules=frozenset(), distributions=frozenset(distributions), local_modules=frozenset()
    )


def test_a_cython_type_naming_only_its_file_takes_the_module_it_was_found_in() -> None:
    from toolkit.trust import trusted_kind

    # scikit-learn 1.8 compiles sklearn._loss._loss with Cython 3: its types say "_loss".
    loss = type("CyHalfBinomialLoss", (), {"__module__": "_loss"})
    assert trusted_kind(loss, "sklearn._loss._loss", "CyHalfBinomialLoss", _policy("scikit-learn"))
    # Only its own file's name counts: a type claiming another bare module is not taken in.
    other = type("CyHalfBinomialLoss", (), {"__module__": "_evil"})
    assert not trusted_kind(other, "sklearn._loss._loss", "CyHalfBinomialLoss", _policy("scikit-learn"))


def test_a_boosting_library_s_booster_is_trusted_only_where_its_distribution_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit import trust

    # A stand-in lightgbm distribution on sys.path (metadata and modules), as a wheel installs it.
    site = tmp_path / "site"
    (site / "lightgbm").mkdir(parents=True)
    (site / "lightgbm" / "__init__.py").write_text("")
    (site / "lightgbm" / "basic.py").write_text("class Booster:\n    pass\n\nclass Dataset:\n    pass\n")
    info = site / "lightgbm-4.7.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lightgbm\nVersion: 4.7.0\n")
    (info / "top_level.txt").write_text("lightgbm\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(trust, "_PROVIDED", {})
    import importlib

    basic = importlib.import_module("lightgbm.basic")
    try:
        assert trust.trusted_kind(basic.Booster, "lightgbm.basic", "Booster", _policy("lightgbm"))
        assert not trust.trusted_kind(basic.Booster, "lightgbm.basic", "Booster", _policy("scikit-learn"))
        assert not trust.trusted_kind(basic.Dataset, "lightgbm.basic", "Dataset", _policy("lightgbm"))
    finally:
        for name in ("lightgbm.basic", "lightgbm"):
            sys.modules.pop(name, None)
