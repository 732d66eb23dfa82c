"""save/load: atomic writes, integrity first, environment second, unpickling last."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import toolkit
from toolkit import _files
from toolkit.artifact import EnvironmentMismatchWarning, artifact_paths, read_card, verify
from toolkit.card import parse_card
from toolkit.errors import CardError, EnvironmentMismatch, IntegrityError, ProbeMismatch, UsageError


def _rewrite_card(artifact: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = artifact_paths(artifact).card_json
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d, indent=2))
    # The .card.md must stay the card's rendering, or the edit is refused as tampering first.
    _rerender(artifact)


def _rerender(artifact: Path) -> None:
    paths = artifact_paths(artifact)
    try:
        paths.card_md.write_text(parse_card(paths.card_json.read_bytes()).to_markdown())
    except CardError:
        pass  # an invalid card on purpose: it is refused before the .card.md is looked at


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
    for pa, pb in zip(vars_of(artifact_paths(a)), vars_of(artifact_paths(b))):
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
    with pytest.raises(IntegrityError, match="sha256 .* does not match"):
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
    with pytest.raises(UsageError, match="ends in .joblib"):
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


def test_allow_mismatch_warns_and_rechecks_the_probe(artifact: Path) -> None:
    _rewrite_card(artifact, _pretend_trained_with("scikit-learn", "1.2.2"))
    with pytest.warns(EnvironmentMismatchWarning, match="scikit-learn"):
        assert toolkit.load(artifact, allow_mismatch=True) is not None

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
