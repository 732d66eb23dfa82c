"""Certifications: upgrade-check's "safe under this lock", signed, honoured by the gate under
--policy certified for exactly that model and runtime, refused otherwise with the reason."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from toolkit.artifact import artifact_paths, read_card, sign
from toolkit.certification import certified_runtime, find
from toolkit.fingerprint import capture
from toolkit.gate import check_env
from toolkit.registry.registry import Registry
from toolkit.signing import keygen
from toolkit.upgrade.verdict import UpgradeReport, check_artifact
from toolkit.workflows.certify import certify

LOCK = "c" * 64  # the candidate lock's sha256, as its image declares it ($TOOLKIT_LOCK_SHA256)
BASE = "debian@sha256:" + "b" * 64


@pytest.fixture(scope="module")
def other_model(iris_frame: Any) -> Any:
    """Another model than the tiny pipeline, fitted once (lbfgs on unscaled iris: a quarter of a
    second, which every test's registry paid): each test saves it afresh."""
    from sklearn.linear_model import LogisticRegression

    X, y = iris_frame
    return LogisticRegression(C=0.5, max_iter=500).fit(X, y)


@pytest.fixture
def registered(make_artifact: Any, iris_frame: Any, other_model: Any, tmp_path: Path) -> tuple[Path, Path]:
    """A model registered with a reference set, and a second one: (registry root, .joblib)."""
    import toolkit

    X, _ = iris_frame
    root = tmp_path / "reg"
    other = tmp_path / "other" / "other-1.0.0.joblib"  # another model: other bytes, other sha256
    toolkit.save(other_model, other, name="other", version="1.0.0", reference=X)
    with Registry(root) as reg:
        reg.add(make_artifact(name="iris", directory=tmp_path / "iris", reference=X))
        reg.add(other)
        entry = reg.get("iris", "1.0.0")
        assert entry.sha256 != reg.get("other", "1.0.0").sha256
    assert entry.path is not None
    return root, entry.path


def _report(root: Path, *paths: Path) -> UpgradeReport:
    """What upgrade-check reports from a candidate whose runtime is this very one (its packages,
    interpreter, platform), declaring LOCK and BASE as the candidate image does."""
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
        runtime=certified_runtime(capture(blas=False)),
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
    found = find(certs, model_sha256=read_card(path).artifact.sha256, runtime=capture(blas=False),
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


# --- one rule, every gate: the runtime itself, load, promote/rollback, serve -------------------


@pytest.fixture
def certified(
    registered: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path, Path, Path]:
    """(deployed artifact, its signed certification, the trusted public key, the private key),
    in a runtime that declares the candidate's lock and base; no $TOOLKIT_CERTIFICATIONS."""
    root, path = registered
    monkeypatch.delenv("TOOLKIT_CERTIFICATIONS", raising=False)
    private, public = keygen(tmp_path / "ci")
    (written,) = certify(_report(root, path), registry=root, directory=tmp_path / "certs", key=private)
    return _in_the_candidate(path, tmp_path, monkeypatch, private), written, public, private


def test_a_runtime_that_only_declares_the_certified_lock_is_not_certified(
    registered: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$TOOLKIT_LOCK_SHA256 is a claim: the certification records the candidate's distributions,
    and a runtime whose installed numpy is not the certified one is refused, naming it."""
    root, path = registered
    report = _report(root, path)
    runtime = report.runtime
    moved = dataclasses.replace(runtime, packages={**runtime.packages, "numpy": "9.9.9"})
    (cert,) = certify(dataclasses.replace(report, runtime=moved), registry=root, directory=tmp_path / "certs")
    deployed = _in_the_candidate(path, tmp_path, monkeypatch, keygen(tmp_path / "ci")[0])
    gate = check_env(deployed, policy="certified", certifications=tmp_path / "certs")
    assert gate.exit_code == 1 and gate.certification is None
    installed = capture(blas=False).packages["numpy"]
    assert gate.refused_certifications == (
        f"{cert}: this runtime is not the one it certifies under lock {LOCK[:12]}: numpy {installed} (certified 9.9.9)",
    )
    # A certification of the older format (no runtime recorded) is refused with the reason.
    doc = json.loads(cert.read_text())
    old = {k: v for k, v in doc.items() if k != "runtime"} | {"format": "toolkit-certification/1"}
    cert.write_text(json.dumps(old))
    gate = check_env(deployed, policy="certified", certifications=tmp_path / "certs")
    assert gate.exit_code == 1 and any("an older certification format" in r for r in gate.refused_certifications)


def test_load_accepts_a_certified_runtime_naming_the_certification_and_refuses_otherwise(
    certified: tuple[Path, Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import toolkit
    from toolkit.errors import CertifiedRuntimeWarning, EnvironmentMismatch

    deployed, cert, public, _ = certified
    with pytest.warns(CertifiedRuntimeWarning, match=rf"accepted by certification {re.escape(cert.name)} "):
        model = toolkit.load(deployed, policy="certified", certifications=cert.parent, trusted_keys=[public])
    assert callable(model.predict)
    # Strict stays strict, whatever is configured.
    with pytest.raises(EnvironmentMismatch, match="under policy 'strict'"):
        toolkit.load(deployed, certifications=cert.parent, trusted_keys=[public])
    # None configured: refused, and the message says where certifications are read from.
    with pytest.raises(EnvironmentMismatch, match=r"give --certifications DIR \(or \$TOOLKIT_CERTIFICATIONS\)"):
        toolkit.load(deployed, policy="certified", trusted_keys=[public])
    # The variable a deployment sets once.
    monkeypatch.setenv("TOOLKIT_CERTIFICATIONS", str(cert.parent))
    with pytest.warns(CertifiedRuntimeWarning, match=re.escape(cert.name)):
        toolkit.load(deployed, policy="certified", trusted_keys=[public])
    # An edited certification: refused, named in the mismatch, nothing unpickled.
    cert.write_bytes(cert.read_bytes().replace(b'"at": "', b'"at": "1'))
    with pytest.raises(EnvironmentMismatch, match="changed since it was signed; refused"):
        toolkit.load(deployed, policy="certified", trusted_keys=[public])


def test_the_strict_remedy_names_the_certification_that_would_apply(
    certified: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch, runner: Any
) -> None:
    from toolkit.cli import app

    deployed, cert, public, _ = certified
    report = check_env(deployed, policy="strict", certifications=cert.parent, trusted_keys=[public])
    assert report.exit_code == 1 and report.certification is None
    assert report.remedies[-1].startswith(f"or accept it with --policy certified: certification {cert.name} ")
    assert report.remedies[-1].endswith(f" in {cert.parent} applies")
    # Exact versions are still the first remedy.
    assert any("numpy==" in r for r in report.remedies[:-1]), report.remedies
    monkeypatch.setenv("TOOLKIT_CERTIFICATIONS", str(cert.parent))
    shown = runner.invoke(app, ["check-env", str(deployed), "--trusted-key", str(public)])
    assert shown.exit_code == 1
    assert f"what to do: or accept it with --policy certified: certification {cert.name}" in shown.output


def test_promote_and_rollback_honour_the_registrys_certifications_and_name_the_one_used(
    certified: tuple[Path, Path, Path, Path], make_artifact: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    runner: Any,
) -> None:  # fmt: skip
    from toolkit.cli import app
    from toolkit.errors import EnvironmentMismatch

    deployed, cert, public, _ = certified
    root = tmp_path / "prod"
    with Registry(root, trusted_keys=[public]) as reg:
        reg.add(deployed)
        with pytest.raises(EnvironmentMismatch, match="none is configured"):
            reg.promote("iris", "1.0.0", policy="certified")
        (root / ".certifications").mkdir()  # upgrade-check --certify prod/.certifications
        (root / ".certifications" / cert.name).write_bytes(cert.read_bytes())
        sig = cert.with_name(cert.name + ".sig")
        (root / ".certifications" / sig.name).write_bytes(sig.read_bytes())
        with pytest.raises(EnvironmentMismatch, match=rf"certification {re.escape(cert.name)} .* applies"):
            reg.promote("iris", "1.0.0", policy="strict")  # the remedy names it
        assert reg.get("iris", "1.0.0").status == "staging"
        change = reg.promote("iris", "1.0.0", policy="certified")
        assert change.changed and f"policy certified; certification {cert.name}" in (change.detail or "")
        history = [h.detail for h in reg.history("iris")]
        assert any(d and f"certification {cert.name}" in d for d in history), history
    # A second version, promoted in its own runtime (no lock, no base declared) ...
    monkeypatch.delenv("TOOLKIT_LOCK_SHA256")
    monkeypatch.delenv("TOOLKIT_BASE_IMAGE")
    second = make_artifact(version="1.0.1", directory=tmp_path / "v2")
    from toolkit.artifact import sign as sign_artifact

    sign_artifact(second, certified[3])
    with Registry(root, trusted_keys=[public]) as reg:
        reg.add(second)
        reg.promote("iris", "1.0.1", policy="strict")
    # ... then rolled back to 1.0.0 in the candidate runtime: the same gate, the same certification.
    monkeypatch.setenv("TOOLKIT_LOCK_SHA256", LOCK)
    monkeypatch.setenv("TOOLKIT_BASE_IMAGE", BASE)
    done = runner.invoke(
        app, ["registry", "rollback", "iris", "--policy", "certified", "--registry", str(root),
              "--trusted-key", str(public), "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert f"certification {cert.name}" in json.loads(done.stdout)["detail"]
    # An edited certification: refused with its reason, production unchanged.
    edited = root / ".certifications" / cert.name
    edited.write_bytes(edited.read_bytes().replace(b'"at": "', b'"at": "1'))
    with Registry(root, trusted_keys=[public]) as reg:
        with monkeypatch.context() as own:  # 1.0.1 back to production, in its own runtime
            own.delenv("TOOLKIT_LOCK_SHA256")
            own.delenv("TOOLKIT_BASE_IMAGE")
            reg.promote("iris", "1.0.1", policy="strict")
        with pytest.raises(EnvironmentMismatch, match=r"certification refused: .*changed since it was signed"):
            reg.rollback("iris", policy="certified")
        assert reg.get("iris", "1.0.1").status == "production"


def test_serve_prepares_a_certified_model_naming_the_certification_and_refuses_an_edited_one(
    certified: tuple[Path, Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.serve.model import Refused, prepare

    deployed, cert, public, _ = certified
    with pytest.raises(Refused, match="none is configured") as refused:
        prepare(deployed, policy="certified", trusted_keys=[public])
    assert refused.value.step == "gate"
    monkeypatch.setenv("TOOLKIT_CERTIFICATIONS", str(cert.parent))  # serve reads the deployment's folder
    served = prepare(deployed, policy="certified", trusted_keys=[public])
    assert served.certification is not None and served.certification.startswith(cert.name)
    with pytest.raises(Refused, match="environment mismatch under policy 'strict'"):
        prepare(deployed, policy="strict", trusted_keys=[public])
    cert.write_bytes(cert.read_bytes().replace(b'"at": "', b'"at": "1'))
    with pytest.raises(Refused, match=r"certification refused: .*changed since it was signed") as refused:
        prepare(deployed, policy="certified", trusted_keys=[public])
    assert refused.value.step == "gate"


def test_a_certification_never_accepts_a_changed_local_module(certified: tuple[Path, Path, Path, Path]) -> None:
    from toolkit.certification import decide
    from toolkit.errors import Difference

    deployed, cert, public, _ = certified
    package = Difference(field="package", name="numpy", expected="0.0.1", actual="2.0.0")
    local = Difference(field="local_module", name="mine", expected="a" * 64, actual="b" * 64)
    decision = decide(
        (package, local), model_sha256=read_card(deployed).artifact.sha256, policy="certified",
        runtime=capture(blas=False), certifications=cert.parent, trusted_keys=[public],
    )  # fmt: skip
    assert decision.certification is not None and decision.accepted == (package,)
    assert decision.differences == (local,)
