"""save/load: atomic writes, integrity first, environment second, unpickling last."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import toolkit
from toolkit import (
    CardError,
    EnvironmentMismatch,
    EnvironmentMismatchWarning,
    IntegrityError,
    ProbeMismatch,
    UsageError,
    _files,
    read_card,
    verify,
)
from toolkit.artifact import artifact_paths
from toolkit.card import parse_card


def _rewrite_card(artifact: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = artifact_paths(artifact).card_json
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d, indent=2))
    # The .card.md must stay the card's rendering, or the edit is refused as tampering first.
    _rerender(artifact)


def _rerender(artifact: Path) -> None:
    paths = artifact_paths(artifact)
    with contextlib.suppress(CardError):  # an invalid card on purpose: refused before the .card.md
        paths.card_md.write_text(parse_card(paths.card_json.read_bytes()).to_markdown())


def _pretend_trained_with(package: str, version: str) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["environment"]["packages"][package] = version

    return change


class _Canary:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.path), "pwned"))


# --- save ------------------------------------------------------------------------------


def test_save_writes_three_files_and_load_round_trips(artifact: Path, tiny_pipeline: Any, iris_frame: Any) -> None:
    paths = artifact_paths(artifact)
    assert paths.model.is_file() and paths.card_json.is_file() and paths.card_md.is_file()
    assert not [p for p in artifact.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = toolkit.load(artifact)
    X, _ = iris_frame
    assert (loaded.predict(X) == tiny_pipeline.predict(X)).all()


def test_save_refuses_to_overwrite(make_artifact: Callable[..., Path]) -> None:
    path = make_artifact()
    before = path.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        make_artifact()
    assert path.read_bytes() == before


@pytest.mark.parametrize(("name", "version"), [("Bad Name", "1.0.0"), ("../x", "1.0.0"), ("ok", "v1"), ("ok", "1.0")])
def test_save_validates_name_and_version(make_artifact: Callable[..., Path], name: str, version: str) -> None:
    with pytest.raises(UsageError, match="invalid"):
        make_artifact(name=name, version=version)


def test_save_honours_source_date_epoch_and_is_byte_reproducible(
    make_artifact: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = make_artifact(directory=tmp_path / "a")
    b = make_artifact(directory=tmp_path / "b")
    assert read_card(a).created_at == "2023-11-14T22:13:20Z"
    for pa, pb in zip(vars_of(artifact_paths(a)), vars_of(artifact_paths(b)), strict=True):
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def vars_of(paths: Any) -> list[Path]:
    return [paths.model, paths.card_json, paths.card_md]


def test_crash_mid_save_leaves_no_card_and_no_temp_files(
    make_artifact: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_publish = _files.publish

    def crash_before_card(tmp: Path, final: Path, *, overwrite: bool) -> None:
        if final.name.endswith(".card.json"):
            raise KeyboardInterrupt  # as good as a kill between the model and the card
        real_publish(tmp, final, overwrite=overwrite)

    monkeypatch.setattr(_files, "publish", crash_before_card)
    with pytest.raises(KeyboardInterrupt):
        make_artifact()
    path = tmp_path / "iris-1.0.0.joblib"
    assert not artifact_paths(path).card_json.exists()
    # What is left is refused, never loaded.
    with pytest.raises(IntegrityError, match="card not found"):
        toolkit.load(path)


# --- integrity: every bad input is refused before unpickling ----------------------------


def test_flipped_byte_is_refused(artifact: Path) -> None:
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"sha256 .* does not match"):
        toolkit.load(artifact)
    with pytest.raises(IntegrityError):
        verify(artifact)


@pytest.mark.parametrize("keep", [0, 100])
def test_truncated_or_empty_artifact_is_refused(artifact: Path, keep: int) -> None:
    artifact.write_bytes(artifact.read_bytes()[:keep])
    with pytest.raises(IntegrityError, match="size"):
        toolkit.load(artifact)


def test_artifact_replaced_by_another_pickle_is_refused(artifact: Path) -> None:
    import joblib

    joblib.dump({"not": "the model"}, artifact)
    with pytest.raises(IntegrityError):
        toolkit.load(artifact)


def test_missing_artifact_and_missing_card(artifact: Path) -> None:
    artifact_paths(artifact).card_json.unlink()
    with pytest.raises(IntegrityError, match="card not found"):
        toolkit.load(artifact)
    artifact.unlink()
    with pytest.raises(IntegrityError, match="not found"):
        toolkit.check_env(artifact)


def test_symlinked_artifact_is_refused(artifact: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.bin"
    artifact.rename(real)
    artifact.symlink_to(real)
    with pytest.raises(IntegrityError, match="symlink"):
        toolkit.load(artifact)


def test_fifo_artifact_is_refused_without_blocking(artifact: Path) -> None:
    artifact.unlink()
    os.mkfifo(artifact)
    with pytest.raises(IntegrityError, match="FIFO"):
        toolkit.load(artifact)


def test_directory_artifact_is_refused(artifact: Path) -> None:
    artifact.unlink()
    artifact.mkdir()
    with pytest.raises(IntegrityError, match="directory"):
        verify(artifact)


def test_symlinked_card_is_refused(artifact: Path, tmp_path: Path) -> None:
    card = artifact_paths(artifact).card_json
    real = tmp_path / "elsewhere.json"
    card.rename(real)
    card.symlink_to(real)
    with pytest.raises(IntegrityError, match="symlink"):
        read_card(artifact)


def test_wrong_suffix_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"ends in \.joblib"):
        toolkit.load(tmp_path / "model.pkl")


def test_malicious_pickle_never_runs_when_checksum_mismatches(artifact: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    artifact.write_bytes(pickle.dumps(_Canary(canary)))
    for attempt in (toolkit.load, lambda p: toolkit.check_env(p, verify_predictions=True)):
        with pytest.raises(IntegrityError):
            attempt(artifact)
    assert not canary.exists()


def test_malicious_pickle_with_forged_checksum_never_runs_in_a_mismatched_runtime(
    artifact: Path, tmp_path: Path
) -> None:
    # Even a card forged to match the evil bytes cannot get them unpickled while the
    # environment check fails: the check comes before joblib.load.
    import hashlib

    canary = tmp_path / "canary"
    evil = pickle.dumps(_Canary(canary))
    artifact.write_bytes(evil)

    def forge(d: dict[str, Any]) -> None:
        d["artifact"].update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
        d["environment"]["packages"]["scikit-learn"] = "0.0.1"

    _rewrite_card(artifact, forge)
    with pytest.raises(EnvironmentMismatch):
        toolkit.load(artifact)
    assert not canary.exists()


# --- environment -----------------------------------------------------------------------


def test_mismatch_raises_with_structured_differences(artifact: Path) -> None:
    _rewrite_card(artifact, _pretend_trained_with("scikit-learn", "1.2.2"))
    with pytest.raises(EnvironmentMismatch) as info:
        toolkit.load(artifact)
    (diff,) = [d for d in info.value.differences if d.name == "scikit-learn"]
    assert diff.expected == "1.2.2"
    assert diff.actual == toolkit.check_env(artifact).differences[0].actual
    assert "scikit-learn: card 1.2.2" in str(info.value)


def test_strict_vs_compatible(artifact: Path) -> None:
    # A package the pickle does not reference differs: strict says no, compatible says yes.
    _rewrite_card(artifact, _pretend_trained_with("pytest", "0.1"))
    assert not toolkit.check_env(artifact, policy="strict").ok
    assert toolkit.check_env(artifact, policy="compatible").ok
    toolkit.load(artifact, policy="compatible")
    # A referenced one differs: both say no.
    _rewrite_card(artifact, _pretend_trained_with("numpy", "1.24.4"))
    assert not toolkit.check_env(artifact, policy="compatible").ok


def test_allow_mismatch_warns_and_rechecks_the_probe(artifact: Path, iris_frame: tuple[Any, Any]) -> None:
    _rewrite_card(artifact, _pretend_trained_with("scikit-learn", "1.2.2"))
    with pytest.warns(EnvironmentMismatchWarning, match="scikit-learn"):
        loaded = toolkit.load(artifact, allow_mismatch=True)
    assert type(loaded).__name__ == "Pipeline" and len(loaded.predict(iris_frame[0].head(3))) == 3

    def corrupt_probe(d: dict[str, Any]) -> None:
        d["probe"]["probabilities"][0][0] += 0.01

    _rewrite_card(artifact, corrupt_probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EnvironmentMismatchWarning)
        with pytest.raises(ProbeMismatch, match="probe predictions DIFFER"):
            toolkit.load(artifact, allow_mismatch=True)


def test_unknown_policy_is_a_usage_error(artifact: Path) -> None:
    with pytest.raises(UsageError, match="unknown policy"):
        toolkit.load(artifact, policy="lenient")


def test_invalid_card_blocks_load(artifact: Path) -> None:
    _rewrite_card(artifact, lambda d: d.pop("probe"))
    with pytest.raises(CardError, match="missing field 'probe'"):
        toolkit.load(artifact)


# --- schema 2, companions, and saving that leaves nothing partial ------------------------


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_save_writes_schema_3_with_globals_training_and_lineage(make_artifact: Callable[..., Path]) -> None:
    recipe = {
        "dataset": {"source": "builtin:iris", "sha256": "c" * 64},
        "target": "target",
        "model": "logistic_regression",
        "params": {"C": 1.0, "max_iter": 500},
        "preprocessing": {"scaler": "standard"},
        "test_size": 0.2,
        "seed": 0,
        "cv_folds": 3,
    }
    path = make_artifact(training=recipe, lineage={"parent": "iris@0.9.0", "reason": "new data"})
    card = read_card(path)
    assert card.schema_version == 3
    assert card.training is not None and card.training.to_dict() == recipe
    assert card.lineage is not None and card.lineage.parent == "iris@0.9.0"
    assert card.references.globals and ("sklearn.pipeline", "Pipeline") in card.references.globals
    assert card.references.local_modules == ()
    assert card.environment.lock is None  # no TOOLKIT_LOCK_FILE outside the image
    assert read_card(make_artifact(version="2.0.0")).training is None


def test_save_refuses_a_bad_recipe_naming_the_field(make_artifact: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"training: missing field 'training\.dataset'"):
        make_artifact(training={"model": "x"})
    with pytest.raises(UsageError, match=r"lineage: 'lineage\.parent' is not NAME@VERSION"):
        make_artifact(lineage={"parent": "nope", "reason": ""})
    assert _listing(tmp_path) == []


def test_a_schema1_card_still_verifies_gates_and_loads(artifact: Path, iris_frame: Any, runner: Any) -> None:
    from toolkit.cli import app

    def to_schema1(d: dict[str, Any]) -> None:
        d["schema_version"] = 1
        for key in ("image", "system_packages", "threads"):  # schema 3
            d["environment"].pop(key)
        d.pop("reference")
        del d["environment"]["lock"], d["references"]["globals"], d["references"]["local_modules"]
        del d["training"], d["lineage"]

    _rewrite_card(artifact, to_schema1)
    assert read_card(artifact).schema_version == 1
    assert runner.invoke(app, ["verify", str(artifact)]).exit_code == 0
    for policy in ("strict", "compatible"):
        assert runner.invoke(app, ["check-env", str(artifact), "--policy", policy]).exit_code == 0
    X, _ = iris_frame
    assert len(toolkit.load(artifact).predict(X)) == len(X)


def test_verify_and_check_env_refuse_a_card_describing_another_file(artifact: Path, runner: Any) -> None:
    from toolkit.cli import app

    paths = artifact_paths(artifact)
    other = artifact_paths(artifact.with_name("other-1.0.0.joblib"))
    pairs = zip(
        (paths.model, paths.card_json, paths.card_md), (other.model, other.card_json, other.card_md), strict=True
    )
    for src, dst in pairs:
        src.rename(dst)
    for command in (["verify"], ["check-env"]):
        result = runner.invoke(app, [*command, str(other.model)])
        assert result.exit_code == 3, result.output
        assert "describes 'iris-1.0.0.joblib', not 'other-1.0.0.joblib'" in result.stderr
    with pytest.raises(IntegrityError, match="describes"):
        toolkit.load(other.model)


def test_an_edited_card_md_is_refused(artifact: Path, runner: Any) -> None:
    from toolkit.cli import app

    md = artifact_paths(artifact).card_md
    md.write_text(md.read_text().replace("## Limitations", "## Limitations\n\nSafe for medical use."))
    for command in (["verify"], ["check-env"]):
        result = runner.invoke(app, [*command, str(artifact)])
        assert result.exit_code == 3 and "is not the rendering of iris-1.0.0.card.json" in result.stderr
    md.unlink()
    assert runner.invoke(app, ["verify", str(artifact)]).exit_code == 3


def test_a_newer_toolkit_passes_strict_for_an_older_toolkits_artifact(artifact: Path) -> None:
    # The checker is not the payload: the recorded toolkit version is information only.
    _rewrite_card(artifact, _pretend_trained_with("toolkit", "0.0.1"))
    for policy in ("strict", "compatible"):
        assert toolkit.check_env(artifact, policy=policy).ok
    _rewrite_card(artifact, _pretend_trained_with("numpy", "0.0.1"))  # every other package still counts
    assert [d.name for d in toolkit.check_env(artifact).differences] == ["numpy"]


def test_the_toolkit_is_compared_when_the_pickle_references_it() -> None:
    from toolkit.fingerprint import capture
    from toolkit.policy import differences

    now = capture(blas=False)
    old = replace_packages(now, toolkit="0.0.1")
    assert differences(old, now, policy="strict") == ()
    [d] = differences(old, now, policy="strict", referenced=["toolkit"])
    assert d.name == "toolkit" and d.expected == "0.0.1"


def replace_packages(fp: Any, **versions: str) -> Any:
    import dataclasses

    return dataclasses.replace(fp, packages={**fp.packages, **versions})


def test_disk_full_removes_what_save_wrote_and_the_retry_works(
    make_artifact: Callable[..., Path], tmp_path: Path, monkeypatch: Any
) -> None:
    import errno

    real = _files.write_all
    calls = {"n": 0}

    def full(f: Any, data: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 3:  # a few writes succeed: a partial temp file exists when it fails
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, data)

    monkeypatch.setattr(_files, "write_all", full)
    with pytest.raises(UsageError, match=r"cannot save .*iris-1\.0\.0\.joblib: No space left on device") as e:
        make_artifact()
    assert e.value.exit_code == 2
    assert _listing(tmp_path) == []
    monkeypatch.setattr(_files, "write_all", real)
    path = make_artifact()
    assert _listing(tmp_path) == ["iris-1.0.0.card.json", "iris-1.0.0.card.md", "iris-1.0.0.joblib"]
    verify(path)


def test_a_failure_while_publishing_removes_the_files_already_published(
    make_artifact: Callable[..., Path], tmp_path: Path, monkeypatch: Any
) -> None:
    import errno

    real = _files.publish

    def publish(tmp: Path, final: Path, *, overwrite: bool) -> None:
        if final.name.endswith(".card.json"):
            raise OSError(errno.EIO, "Input/output error")
        real(tmp, final, overwrite=overwrite)

    monkeypatch.setattr(_files, "publish", publish)
    with pytest.raises(UsageError, match=r"iris-1\.0\.0\.card\.json: Input/output error"):
        make_artifact()
    assert _listing(tmp_path) == []  # the .joblib and .card.md published before it are gone
    monkeypatch.setattr(_files, "publish", real)
    verify(make_artifact())


_KILLED_SAVE = """
import sys, time
from pathlib import Path
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
import toolkit
from toolkit import _files

X, y = load_iris(return_X_y=True, as_frame=True)
pipeline = LogisticRegression(max_iter=300).fit(X, y)
real = _files.write_all
def slow(f, data):
    real(f, data)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
_files.write_all = slow
toolkit.save(pipeline, Path(sys.argv[1]) / "iris-1.0.0.joblib", name="iris", version="1.0.0", probe=X.head(4))
"""


@pytest.mark.process
def test_a_save_killed_by_sigterm_leaves_a_temp_the_next_save_sweeps(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SAVE, str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(toolkit.__file__).parent.parent)},
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "writing"  # mid-save: the temp file is open
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM
    child.stdout.close()
    [leftover] = _listing(out)
    assert leftover.startswith(".iris-1.0.0.joblib.") and leftover.endswith(".tmp")
    # A temp of a live process (this one) is never swept.
    mine = _files.write_temp(out / "x.joblib", b"in progress")
    make_artifact(directory=out)
    assert _listing(out) == sorted([mine.name, "iris-1.0.0.card.json", "iris-1.0.0.card.md", "iris-1.0.0.joblib"])


def test_a_250_character_file_name_saves(tiny_pipeline: Any, iris_frame: Any, tmp_path: Path) -> None:
    path = tmp_path / ("m" * (250 - len(".card.json")) + ".joblib")
    toolkit.save(tiny_pipeline, path, name="long", version="1.0.0", probe=iris_frame[0].head(4))
    assert len(artifact_paths(path).card_json.name) == 250
    paths = artifact_paths(path)
    assert _listing(tmp_path) == sorted(p.name for p in (paths.model, paths.card_json, paths.card_md))
    verify(path)


def _unfitted() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression())


def _with_lambda(iris_frame: Any) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = iris_frame
    return make_pipeline(FunctionTransformer(func=lambda v: v), LogisticRegression(max_iter=300)).fit(X, y)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("lambda", r"cannot pickle the pipeline: PicklingError: .*<lambda>"),
        ("not an estimator", r"cannot save a dict: save takes a fitted scikit-learn pipeline"),
        ("unfitted", r"cannot save an unfitted Pipeline: fit it first"),
        ("nan metric", r"metric test\.accuracy must be a finite number, got nan"),
    ],
)
def test_save_turns_each_bad_input_into_one_usage_error(
    case: str, message: str, tiny_pipeline: Any, iris_frame: Any, tmp_path: Path
) -> None:
    pipeline = {
        "lambda": lambda: _with_lambda(iris_frame),
        "not an estimator": lambda: {"predict": 1},
        "unfitted": _unfitted,
        "nan metric": lambda: tiny_pipeline,
    }[case]()
    metrics = {"test": {"accuracy": float("nan")}} if case == "nan metric" else None
    with pytest.raises(UsageError, match=message) as e:
        toolkit.save(
            pipeline,
            tmp_path / "x-1.0.0.joblib",
            name="x",
            version="1.0.0",
            probe=iris_frame[0].head(4),
            metrics=metrics,
        )
    assert e.value.exit_code == 2
    assert _listing(tmp_path) == []
