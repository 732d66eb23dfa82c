"""Certifications: upgrade-check's "safe under this lock", signed, honoured by the gate under
--policy certified for exactly that model and runtime, refused otherwise with the reason."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from toolkit.artifact import artifact_paths, read_card, sign
from toolkit.certification import find
from toolkit.gate import check_env
from toolkit.registry.registry import Registry
from toolkit.signing import keygen
from toolkit.upgrade.verdict import UpgradeReport, check_artifact
from toolkit.workflows.certify import certify

LOCK = "c" * 64  # the candidate lock's sha256, as its image declares it ($TOOLKIT_LOCK_SHA256)
BASE = "debian@sha256:" + "b" * 64


@pytest.fixture
def registered(make_artifact: Any, iris_frame: Any, tmp_path: Path) -> tuple[Path, Path]:
    """A model registered with a reference set, and a second one: (registry root, .joblib)."""
    from sklearn.linear_model import LogisticRegression

    import toolkit

    X, y = iris_frame
    root = tmp_path / "reg"
    other = tmp_path / "other" / "other-1.0.0.joblib"  # another model: other bytes, other sha256
    toolkit.save(LogisticRegression(C=0.5, max_iter=500).fit(X, y), other, name="other", version="1.0.0", reference=X)
    with Registry(root) as reg:
        reg.add(make_artifact(name="iris", directory=tmp_path / "iris", reference=X))
        reg.add(other)
        entry = reg.get("iris", "1.0.0")
        assert entry.sha256 != reg.get("other", "1.0.0").sha256
    assert entry.path is not None
    return root, entry.path


def _report(root: Path, *paths: Path) -> UpgradeReport:
    checks = tuple(check_artifact(p, status="production") for p in paths)
    return UpgradeReport(
        lock="candidate.lock",
        lock_sha256=LOCK,
        image="toolkit:candidate",
        image_id="sha256:" + "d" * 64,
        cached=True,
        base_image=BASE,
        registry=str(root),
        stage="production",
        models=checks,
        seconds=0.0,
        timings={},
    )


def _in_the_candidate(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: Path) -> Path:
    """A copy of the artifact whose card records another numpy, in a runtime that declares the
    candidate's lock and base: what the gate sees in the candidate image."""
    copy = tmp_path / "deploy"
    copy.mkdir()
    for p in artifact_paths(path).files():
        (copy / p.name).write_bytes(p.read_bytes())
    target = copy / path.name
    card = read_card(target)
    env = dataclasses.replace(card.environment, packages={**card.environment.packages, "numpy": "0.0.1"})
    edited = dataclasses.replace(card, environment=env)
    paths = artifact_paths(target)
    paths.card_json.write_bytes(edited.to_json())
    paths.card_md.write_text(edited.to_markdown())
    sign(target, key)  # the team signs what it deploys; the certification is a second statement
    monkeypatch.setenv("TOOLKIT_LOCK_SHA256", LOCK)
    monkeypatch.setenv("TOOLKIT_BASE_IMAGE", BASE)
    return target


def test_a_signed_certification_lets_the_gate_accept_that_model_in_that_runtime(
    registered: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: Any
) -> None:
    from toolkit.cli import app

    root, path = registered
    private, public = keygen(tmp_path / "ci")
    report = _report(root, path)
    assert report.models[0].verdict == "safe"
    (written,) = certify(report, registry=root, directory=tmp_path / "certs", key=private)
    doc = json.loads(written.read_text())
    assert doc["model_sha256"] == read_card(path).artifact.sha256 and doc["lock_sha256"] == LOCK
    assert doc["base_image"] == BASE and doc["result"]["kind"] == "reference" and doc["result"]["rows"] == 150

    deployed = _in_the_candidate(path, tmp_path, monkeypatch, private)
    strict = check_env(deployed, policy="strict")
    assert not strict.ok and {d.name for d in strict.differences} >= {"numpy", "base_image"}
    certified = check_env(deployed, policy="certified", certifications=tmp_path / "certs", trusted_keys=[public])
    assert certified.ok and certified.exit_code == 0
    assert certified.certification is not None and written.name in certified.certification
    assert {d.name for d in certified.certified_differences} == {d.name for d in strict.differences}
    shown = runner.invoke(
        app,
        ["check-env", str(deployed), "--policy", "certified", "--certifications", str(tmp_path / "certs"),
         "--trusted-key", str(public)],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert f"difference(s) accepted by certification {written.name}" in shown.output
    # Without the folder, certified is strict.
    assert check_env(deployed, policy="certified").exit_code == 1


def test_a_certification_for_another_model_lock_or_an_edited_or_forged_one_is_refused(
    registered: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, path = registered
    private, public = keygen(tmp_path / "ci")
    stranger, _ = keygen(tmp_path / "stranger")
    with Registry(root) as reg:
        other_path = reg.get("other", "1.0.0").path
    assert other_path is not None
    certs = tmp_path / "certs"
    certify(_report(root, other_path), registry=root, directory=certs, key=private)  # another model
    deployed = _in_the_candidate(path, tmp_path, monkeypatch, private)
    report = check_env(deployed, policy="certified", certifications=certs, trusted_keys=[public])
    assert report.exit_code == 1 and report.certification is None
    assert any("upgrade-check --lock LOCK --certify" in r for r in report.remedies)

    (mine,) = certify(_report(root, path), registry=root, directory=certs, key=private)
    monkeypatch.setenv("TOOLKIT_LOCK_SHA256", "e" * 64)  # another lock
    report = check_env(deployed, policy="certified", certifications=certs, trusted_keys=[public])
    assert report.exit_code == 1 and any("certifies lock cccccccccccc" in r for r in report.refused_certifications)
    monkeypatch.setenv("TOOLKIT_LOCK_SHA256", LOCK)

    original = mine.read_bytes()
    mine.write_bytes(original.replace(b'"at": "', b'"at": "1'))  # edited after signing
    report = check_env(deployed, policy="certified", certifications=certs, trusted_keys=[public])
    assert report.exit_code == 1 and any("changed since it was signed" in r for r in report.refused_certifications)

    mine.write_bytes(original)
    (forged,) = certify(_report(root, path), registry=root, directory=tmp_path / "forged", key=stranger)
    sig = mine.with_name(mine.name + ".sig")
    sig.write_bytes(forged.with_name(forged.name + ".sig").read_bytes())  # signed by an untrusted key
    report = check_env(deployed, policy="certified", certifications=certs, trusted_keys=[public])
    assert report.exit_code == 1 and any(
        "untrusted key" in r or "does not verify" in r for r in report.refused_certifications
    )
    sig.unlink()
    found = find(certs, model_sha256=read_card(path).artifact.sha256, lock_sha256=LOCK, base_image=BASE,
                 trusted_keys=[public])  # fmt: skip
    assert found.certification is None and any("no valid signature" in r for r in found.refused)
    # With no trust configured, the unsigned (unedited) certification is honoured.
    assert check_env(deployed, policy="certified", certifications=certs).ok
    # ... but one whose content names another model than its file name is not.
    renamed = certs / ("0" * 16 + mine.name[16:])
    mine.rename(renamed)
    doc = json.loads(renamed.read_text())
    assert hashlib.sha256(renamed.read_bytes()).hexdigest() and doc["model_sha256"][:16] != "0" * 16
    assert check_env(deployed, policy="certified", certifications=certs).ok is False
