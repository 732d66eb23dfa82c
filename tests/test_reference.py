"""The reference set: held-out rows and every output on them, beside the card, hash-covered,
re-checked in the same batches under the same thread limit, with per-output counts."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import toolkit
from toolkit import reference
from toolkit.artifact import artifact_paths, read_card, read_reference, verify
from toolkit.card import parse_card
from toolkit.errors import IntegrityError, UsageError
from toolkit.gate import check_env
from toolkit.upgrade.verdict import check_artifact

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def blobs() -> tuple[Any, Any]:
    """3,000 rows of a 3-class problem: more than the cap, so the set is sampled."""
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=3000, n_features=6, n_informative=4, n_classes=3, random_state=0, n_clusters_per_class=1
    )
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(6)]), pd.Series(y, name="y")


@pytest.fixture(scope="module")
def forest(blobs: tuple[Any, Any]) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    X, y = blobs
    return RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)


def _save(pipeline: Any, path: Path, frame: Any, **kwargs: Any) -> Any:
    return toolkit.save(pipeline, path, name=path.stem.rpartition("-")[0], version="1.0.0", reference=frame, **kwargs)


def test_save_keeps_up_to_the_cap_sampled_with_a_seed_and_hash_covered(
    forest: Any, blobs: tuple[Any, Any], tmp_path: Path
) -> None:
    X, _ = blobs
    card = _save(forest, tmp_path / "f-1.0.0.joblib", X)
    info = card.reference
    assert info is not None
    assert (info.rows, info.source_rows, info.seed) == (reference.CAP, 3000, reference.SAMPLE_SEED)
    assert info.outputs == ("labels", "probabilities")
    assert (info.batch_size, info.thread_limit) == (reference.BATCH_SIZE, reference.THREAD_LIMIT)
    paths = artifact_paths(tmp_path / "f-1.0.0.joblib")
    assert paths.reference.name == "f-1.0.0.reference.json.gz" == info.file
    assert paths.reference.stat().st_size == info.size
    recorded = read_reference(paths.model, card)
    assert len(recorded.rows) == reference.CAP and len(recorded.outputs["labels"]) == reference.CAP
    # A sample kept in row order: the first reference row is a held-out row, as it was.
    assert recorded.rows[0] == tuple(float(v) for v in X.iloc[int(_first_kept(len(X)))])
    # The card keeps its own few rows as before.
    assert len(card.probe.rows) == 16
    assert verify(paths.model) == card


def _first_kept(n: int) -> int:
    import numpy as np

    return int(np.sort(np.random.default_rng(reference.SAMPLE_SEED).choice(n, size=reference.CAP, replace=False))[0])


def test_a_small_held_out_set_is_kept_whole_and_two_saves_write_the_same_bytes(
    forest: Any, blobs: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    X, _ = blobs
    a = _save(forest, tmp_path / "a" / "f-1.0.0.joblib", X.head(500))
    _save(forest, tmp_path / "b" / "f-1.0.0.joblib", X.head(500))
    assert a.reference is not None and (a.reference.rows, a.reference.seed) == (500, None)
    for name in ("f-1.0.0.reference.json.gz", "f-1.0.0.card.json", "f-1.0.0.card.md", "f-1.0.0.joblib"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_the_smallest_share_seen_with_99_percent_at_the_cap_is_about_a_quarter_percent() -> None:
    p = reference.detectable_share(reference.CAP)
    assert 0.0022 < p < 0.0024  # 0.23 %: 1 - (1 - p) ** 2000 >= 0.99
    assert 1 - (1 - p) ** reference.CAP == pytest.approx(0.99)
    assert 1 - (1 - 0.0023) ** reference.CAP >= 0.99 > 1 - (1 - 0.0022) ** reference.CAP
    # The old 16-row probe: a 3 % drift seen about 4 times in 10.
    assert 0.35 < 1 - (1 - 0.03) ** 16 < 0.45


def test_a_tampered_missing_or_stray_reference_file_is_refused(
    forest: Any, blobs: tuple[Any, Any], tmp_path: Path, make_artifact: Any
) -> None:
    X, _ = blobs
    path = tmp_path / "f-1.0.0.joblib"
    _save(forest, path, X.head(300))
    ref = artifact_paths(path).reference
    data = bytearray(ref.read_bytes())
    data[-5] ^= 1
    ref.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"reference\.json\.gz: sha256 .* does not match the card's"):
        verify(path)
    ref.unlink()
    with pytest.raises(IntegrityError, match="reference"):
        verify(path)
    # A card with no reference set and a reference file beside it: what would a signature cover?
    other = make_artifact(name="iris", directory=tmp_path / "o")
    artifact_paths(other).reference.write_bytes(b"x")
    with pytest.raises(IntegrityError, match="the card records no reference set"):
        verify(other)


def test_a_hostile_reference_file_is_one_integrity_error_never_a_crash(
    forest: Any, blobs: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = _save(forest, tmp_path / "f-1.0.0.joblib", blobs[0].head(50))
    info = card.reference
    assert info is not None
    monkeypatch.setattr(reference, "MAX_JSON_BYTES", 100_000)
    bomb = gzip.compress(b" " * 1_000_000)  # 1 KB that inflates past the limit: read no further
    for data, message in (
        (bomb, "decompresses to over 100000 bytes"),
        (gzip.compress(b"[" * 50_000 + b"]" * 50_000), "not a strict JSON"),
        (b"not gzip", "not a gzip file"),
        (gzip.compress(b'{"format": 1, "format": 1}'), "not a strict JSON"),
        (gzip.compress(b'{"format": NaN}'), "not a strict JSON"),
        (gzip.compress(b"[]"), "not a reference set"),
        (
            gzip.compress(json.dumps({"format": 1, "columns": [], "dtypes": [], "rows": [], "outputs": {}}).encode()),
            "holds 0 rows, the card says 50",
        ),
    ):
        with pytest.raises(IntegrityError, match=message):
            reference.decode(data, info, where="ref")


def test_save_takes_reference_or_probe(forest: Any, blobs: tuple[Any, Any], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"reference= .* or probe="):
        toolkit.save(forest, tmp_path / "f-1.0.0.joblib", name="f", version="1.0.0")
    with pytest.raises(UsageError, match="reference has no rows"):
        toolkit.save(forest, tmp_path / "f-1.0.0.joblib", name="f", version="1.0.0", reference=blobs[0].head(0))
    assert list(tmp_path.iterdir()) == []


def _flip(path: Path, share: float) -> int:
    """Change the recorded label of ``share`` of the reference rows (to another class), and
    rewrite the card and its rendering to match: a model whose outputs moved on those rows."""
    import dataclasses
    import hashlib

    paths = artifact_paths(path)
    card = read_card(path)
    assert card.reference is not None
    doc = json.loads(gzip.decompress(paths.reference.read_bytes()))
    labels = doc["outputs"]["labels"]
    flipped = max(1, int(len(labels) * share))
    step = len(labels) // flipped
    classes = sorted(set(labels))
    for i in range(0, step * flipped, step):
        labels[i] = classes[(classes.index(labels[i]) + 1) % len(classes)]
    data = gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0)
    paths.reference.write_bytes(data)
    info = dataclasses.replace(card.reference, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    card = dataclasses.replace(card, reference=info)
    paths.card_json.write_bytes(card.to_json())
    paths.card_md.write_text(card.to_markdown())
    parse_card(paths.card_json.read_bytes())
    return flipped


def test_outputs_moved_on_one_percent_of_the_rows_are_seen_by_the_gate_and_upgrade_check(
    forest: Any, blobs: tuple[Any, Any], tmp_path: Path, runner: Any
) -> None:
    from toolkit.cli import app

    path = tmp_path / "f-1.0.0.joblib"
    _save(forest, path, blobs[0])
    flipped = _flip(path, 0.01)
    assert flipped == 20
    report = check_env(path, verify_predictions=True)
    result = report.predictions
    assert result is not None and not result.ok and report.exit_code == 1
    labels = next(o for o in result.to_dict()["outputs"] if o["output"] == "labels")
    assert (labels["differing"], labels["rows"]) == (20, 2000)
    shown = runner.invoke(app, ["check-env", str(path), "--verify-predictions"])
    assert shown.exit_code == 1
    assert "reference outputs DIFFER on 2000 rows" in shown.output
    assert "labels: 20 of 2000 rows flip" in shown.output
    check = check_artifact(path)
    assert check.verdict == "drift", check.reason
    assert check.reason.startswith("loads, but predictions moved: labels: 20 of 2000 rows flip")


def test_the_gate_says_in_what_sense_outputs_agree_and_what_its_exit_code_means(
    forest: Any, blobs: tuple[Any, Any], tmp_path: Path, runner: Any
) -> None:
    """Exit 0: the runtime is the card's. Exit 1 with outputs_agree True: the runtime differs
    and every reference output agrees (evidence for a remedy, not a pass)."""
    from toolkit.cli import app

    path = tmp_path / "f-1.0.0.joblib"
    _save(forest, path, blobs[0].head(400))
    same = runner.invoke(app, ["check-env", str(path), "--verify-predictions"])
    assert same.exit_code == 0, same.output
    assert "reference outputs agree on 400 rows" in same.output
    assert "labels: 0 of 400 rows flip" in same.output and "probabilities: 0 of 400 rows differ" in same.output
    paths = artifact_paths(path)
    card = read_card(path)
    import dataclasses

    env = dataclasses.replace(card.environment, packages={**card.environment.packages, "numpy": "0.0.1"})
    edited = dataclasses.replace(card, environment=env)
    paths.card_json.write_bytes(edited.to_json())
    paths.card_md.write_text(edited.to_markdown())
    differs = runner.invoke(app, ["check-env", str(path), "--verify-predictions", "--json"])
    assert differs.exit_code == 1
    doc = json.loads(differs.stdout)
    assert doc["environment_ok"] is False and doc["outputs_agree"] is True
    assert doc["predictions"]["kind"] == "reference" and doc["predictions"]["rows"] == 400
    text = runner.invoke(app, ["check-env", str(path), "--verify-predictions"])
    assert "outputs agree, but the runtime is not the card's: exit 1" in text.output


def test_a_regressor_reports_values_in_absolute_and_relative_terms_never_labels(tmp_path: Path) -> None:
    import dataclasses
    import hashlib

    import pandas as pd
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    X, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
    model = Ridge().fit(X, y)
    path = tmp_path / "d-1.0.0.joblib"
    card = _save(model, path, pd.DataFrame(X))
    assert card.reference is not None and card.reference.outputs == ("values",)
    paths = artifact_paths(path)
    doc = json.loads(gzip.decompress(paths.reference.read_bytes()))
    doc["outputs"]["values"][3] += 83.0
    data = gzip.compress(json.dumps(doc).encode(), mtime=0)
    paths.reference.write_bytes(data)
    info = dataclasses.replace(card.reference, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    card = dataclasses.replace(card, reference=info)
    paths.card_json.write_bytes(card.to_json())
    paths.card_md.write_text(card.to_markdown())
    check = check_artifact(path)
    assert check.verdict == "drift"
    assert "values: 1 of 442 rows differ, max |diff| 83" in check.reason
    assert "max relative" in check.reason and "label" not in check.reason


def _verdict_at(path: Path, threads: str) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "check-env", str(path), "--verify-predictions", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    predictions: dict[str, Any] = json.loads(done.stdout)["predictions"]
    return predictions


# Two fresh interpreters under two OpenMP settings (a process-level concurrency test, ~6 s of
# scikit-learn imports): in make test's serial part, out of the unit loop.
@pytest.mark.process
def test_the_same_check_at_1_and_2_threads_gives_the_same_verdict_and_counts(tmp_path: Path) -> None:
    """k-NN under OpenMP answers by batch and thread count; the reference set is computed and
    re-checked in fixed batches under a fixed limit, so the machine does not decide."""
    import numpy as np
    import pandas as pd
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.integers(0, 4, size=(900, 4)).astype(float), columns=list("abcd"))  # many ties
    y = pd.Series(rng.integers(0, 3, size=900))
    model = KNeighborsClassifier(n_neighbors=4, metric="manhattan", algorithm="brute").fit(X.iloc[:400], y.iloc[:400])
    path = tmp_path / "knn-1.0.0.joblib"
    _save(model, path, X.iloc[400:])
    one, two = _verdict_at(path, "1"), _verdict_at(path, "2")
    assert one["ok"] is True and one == two
    assert one["thread_limit"] == 1 and one["rows"] == 500


def test_agreement_while_the_library_warns_the_unpickle_is_unsupported_is_safe_with_its_text(
    forest: Any, blobs: tuple[Any, Any], tmp_path: Path
) -> None:
    """The pickle says another scikit-learn release wrote it (the version string in its state
    edited to one of the same length): every reference row agrees, and the library warns."""
    import dataclasses
    import hashlib

    import sklearn

    from toolkit.upgrade.verdict import ModelCheck

    path = tmp_path / "f-1.0.0.joblib"
    card = _save(forest, path, blobs[0].head(300))
    installed = sklearn.__version__.encode()
    other = b"0" * len(installed)
    data = path.read_bytes()
    assert installed in data
    data = data.replace(installed, other)
    path.write_bytes(data)
    info = dataclasses.replace(card.artifact, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    card = dataclasses.replace(card, artifact=info)
    paths = artifact_paths(path)
    paths.card_json.write_bytes(card.to_json())
    paths.card_md.write_text(card.to_markdown())
    check = check_artifact(path)
    assert check.verdict == "safe" and check.ok, check.reason  # the documented rule
    assert "reference outputs agree on 300 rows" in check.reason
    assert "but scikit-learn warns the unpickle is unsupported: InconsistentVersionWarning: Trying to unpickle" in (
        check.reason
    )
    assert ModelCheck.from_dict(check.to_dict()).reason == check.reason


def test_the_remedy_names_the_exact_versions_to_install(make_artifact: Any, runner: Any) -> None:
    import dataclasses

    from toolkit.cli import app

    path = make_artifact(name="pins")
    paths = artifact_paths(path)
    card = read_card(path)
    packages = {**card.environment.packages, "numpy": "0.0.1", "not-here": "9.9"}
    edited = dataclasses.replace(card, environment=dataclasses.replace(card.environment, packages=packages))
    paths.card_json.write_bytes(edited.to_json())
    paths.card_md.write_text(edited.to_markdown())
    report = check_env(path)
    line = next(r for r in report.remedies if "pip install" in r)
    assert "numpy==0.0.1" in line and "not-here==9.9" in line
    shown = runner.invoke(app, ["check-env", str(path)])
    assert shown.exit_code == 1 and "pip install " in shown.output


def test_the_fast_conversion_writes_exactly_the_values_the_general_one_did() -> None:
    # What is stored must not change (saved artifacts and their hashes stay verifiable, and a
    # retrain stays byte-identical): every dtype a frame or an output can have, compared as JSON
    # (so an int written as a float, or a bool as an int, is a difference).
    import numpy as np
    import pandas as pd

    from toolkit.card.records import jsonable

    frame = pd.DataFrame(
        {
            "f": [0.1, 1e300, -2.5, 3.0],
            "nan": [0.5, np.nan, np.inf, -np.inf],
            "f32": np.array([0.1, 0.2, 0.3, 0.4], dtype="float32"),
            "i": np.array([1, -2, 3, 2**40], dtype="int64"),
            "u8": np.array([0, 1, 2, 255], dtype="uint8"),
            "b": [True, False, True, False],
            "s": ["a", "b", None, "d"],
            "cat": pd.Categorical(["x", "y", "x", None]),
            "nullable": pd.array([1, None, 3, 4], dtype="Int64"),
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", None, "2024-01-04"]),
        }
    )
    frame.columns = [*frame.columns[:-1], "f"]  # a duplicated name is still one column each
    general = tuple(tuple(jsonable(v) for v in row) for row in frame.astype(object).to_numpy().tolist())
    assert json.dumps(reference._json_rows(frame)) == json.dumps(general)
    outputs = [
        np.array([0, 2, 1]),
        np.array(["a", "b", "a"], dtype=object),
        np.array([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]]),
        np.array([[0.25, np.nan], [1.0, 0.0], [0.5, 0.5]]),
        np.array([True, False, True]),
        np.array([1.5, 2.5, 3.5], dtype="float32"),
        pd.Series([1.0, 2.0, 3.0]),
    ]
    for values in outputs:
        assert json.dumps(reference._json_values(values)) == json.dumps(jsonable(reference._as_list(values)))


def test_a_failed_save_leaves_no_reference_temp_behind(forest: Any, blobs: tuple[Any, Any], tmp_path: Path) -> None:
    # The reference file is written on a worker thread while the model is pickled: when the
    # pickle fails, that temp file is removed with the others.
    class Unpicklable:
        def __reduce__(self) -> Any:
            raise RuntimeError("no pickling this")

    import copy

    broken = copy.deepcopy(forest)
    broken.extra_ = Unpicklable()
    with pytest.raises(UsageError, match="cannot pickle the pipeline: RuntimeError: no pickling this"):
        _save(broken, tmp_path / "f-1.0.0.joblib", blobs[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_reference_the_pipeline_cannot_predict_fails_while_pickling_and_leaves_nothing(
    blobs: tuple[Any, Any], tmp_path: Path
) -> None:
    # The reference set's outputs are computed on a worker thread while the model is pickled:
    # its error is still the one line a bad reference gives, and the model's temp file goes too.
    from sklearn.linear_model import LogisticRegression

    X, y = blobs
    model = LogisticRegression(max_iter=500).fit(X, y)
    rows = X.copy()
    rows.iloc[1000:, 2] = float("nan")  # past the probe's rows, in the reference set's sample
    with pytest.raises(UsageError, match=r"^reference: the pipeline cannot take these rows; .* in f2 ") as raised:
        _save(model, tmp_path / "m-1.0.0.joblib", rows, probe=X.head(16))
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("dataset", ["builtin:credit", "builtin:wine"])
def test_labels_taken_from_probabilities_at_save_are_what_predict_returns(dataset: str) -> None:
    # At save a forest's labels come from the probabilities already computed (its predict is
    # classes_.take(argmax(predict_proba))); a re-check calls predict. The builtin forests, binary
    # and three classes: the same values, compared as JSON (type included), keys in the same order.
    from toolkit.training.datasets import load_dataset, split
    from toolkit.training.train import build_model, build_pipeline

    data = load_dataset(dataset)
    X_train, X_test, y_train, _ = split(data, test_size=0.2, seed=42)
    # The builtin forest with 10 trees, not its 100: the derivation is the class's, whatever the
    # count (fewer trees tie more probabilities, where argmax and predict must agree on the first).
    model = build_model("random_forest", {"n_estimators": 10}, seed=42, task=data.task)
    pipeline = build_pipeline(X_train, model).fit(X_train, y_train)
    assert reference._labels_from_probabilities(pipeline[-1])
    derived = reference.outputs_of(pipeline, X_test, batch_size=64, derive_labels=True)
    called = reference.outputs_of(pipeline, X_test, batch_size=64)
    assert json.dumps(derived) == json.dumps(called)
    assert list(derived) == list(called)


def test_no_other_builtin_model_has_its_labels_derived() -> None:
    # Every other builtin kind's labels come from its own predict at save (a gradient boosting's
    # or a logistic regression's threshold on decision values is not an argmax of probabilities).
    from toolkit.training.config import CLASSIFIER_KINDS, REGRESSOR_KINDS
    from toolkit.training.train import build_model

    kinds = [(k, "classification") for k in CLASSIFIER_KINDS] + [(k, "regression") for k in REGRESSOR_KINDS]
    for kind, task in kinds:
        model = build_model(kind, {}, seed=0, task=task)
        model.n_outputs_ = 1  # as fitted: only the class's predict decides
        assert reference._labels_from_probabilities(model) == ((kind, task) == ("random_forest", "classification"))


def test_labels_are_derived_only_from_the_forests_own_predict(blobs: tuple[Any, Any]) -> None:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    X, y = blobs

    class Shifted(RandomForestClassifier):  # type: ignore[misc]
        def predict(self, X: Any) -> Any:
            return (super().predict(X) + 1) % 3

    extra = ExtraTreesClassifier(n_estimators=5, random_state=0).fit(X, y)
    shifted = Shifted(n_estimators=5, random_state=0).fit(X, y)
    two_outputs = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y.to_frame().assign(z=y % 2))
    assert reference._labels_from_probabilities(extra)
    assert not reference._labels_from_probabilities(shifted)
    assert not reference._labels_from_probabilities(two_outputs)
    for model in (extra, shifted):
        derived = reference.outputs_of(model, X.head(700), derive_labels=True)
        assert derived == reference.outputs_of(model, X.head(700))
        assert derived["labels"] == model.predict(X.head(700)).tolist()
