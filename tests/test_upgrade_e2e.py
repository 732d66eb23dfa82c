"""upgrade-check, retrain and image rebuild end to end: a real engine, real locks, real old stacks.

Models come from three runtimes: the project's image (this lock), a scikit-learn 1.3.2 venv
(tests/fixtures/mid-stack.lock) and the 1.2.2 venv of the cross-version test
(tests/fixtures/old-stack.lock); the old ones are registered as production by their own
runtime, as they would have been when that stack was current. Images are content-addressed
(``toolkit-runtime:<key>``), so a second session reuses them; venvs are cached under .cache/.
These tests FAIL (never skip) when no engine answers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from _docker_support import swap_pin
from _stack_support import stack_python as _stack_python

from toolkit import docker as tdocker
from toolkit.artifact import read_card
from toolkit.errors import DockerError
from toolkit.registry import Registry
from toolkit.upgrade.runtime_image import RuntimeImage, ensure_runtime_image
from toolkit.upgrade.verdict import VERDICTS

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
VARIANT_SKLEARN = "1.8.0"  # installs with the lock's numpy and scipy (as in test_docker_e2e)
EPOCH = "1700000000"


# --- session fixtures: images, venvs, registries ---------------------------------------------


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    try:
        client = tdocker.connect()
    except DockerError as e:
        pytest.fail(f"the upgrade end-to-end tests need a Docker engine: {e}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def current(client: Any, base_ref: str) -> RuntimeImage:
    """The runtime of this lock: what `upgrade-check --lock requirements.lock` checks in."""
    return ensure_runtime_image(base_image=base_ref, lock=REPO / "requirements.lock", context=REPO, client=client)


@pytest.fixture(scope="session")
def variant_lock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """requirements.lock with only scikit-learn moved to VARIANT_SKLEARN (its wheel's hash)."""
    lock = tmp_path_factory.mktemp("variant") / "requirements.lock"
    lock.write_text(
        swap_pin((REPO / "requirements.lock").read_text(), "scikit-learn", VARIANT_SKLEARN, _variant_wheel())
    )
    return lock


@pytest.fixture(scope="session")
def variant(client: Any, base_ref: str, variant_lock: Path) -> RuntimeImage:
    return ensure_runtime_image(base_image=base_ref, lock=variant_lock, context=REPO, client=client)


@pytest.fixture(scope="session")
def variant_check(
    in_image: Path, variant: RuntimeImage, variant_lock: Path, base_ref: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One `upgrade-check --lock VARIANT --json --junit J --certify C --key K` over ``in_image``,
    shared by the verdict test and the certification test (one candidate run, not two):
    (the run, its folder: report.xml, certs/, ci.key, ci.pub)."""
    from toolkit.signing import keygen

    work = tmp_path_factory.mktemp("variant-check")
    work.chmod(0o755)  # the gate in the image runs as its own user, which must read what is mounted
    private, _ = keygen(work / "ci")
    done = _toolkit(
        *_check_args(variant_lock, in_image, base_ref), "--json", "--junit", str(work / "report.xml"),
        "--certify", str(work / "certs"), "--key", str(private),
    )  # fmt: skip
    return done, work


@pytest.fixture(scope="session")
def in_image(current: RuntimeImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of two models trained in the current image, both production."""
    root = tmp_path_factory.mktemp("in-image") / "models"
    for name, model in (("wine-lr", "logistic_regression"), ("wine-rf", "random_forest")):
        done = _toolkit(
            "image", "train", "--image", current.tag, "--dataset", "builtin:wine", "--model", model,
            "--name", name, "--registry", str(root),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        promoted = _toolkit("registry", "promote", name, "1.0.0", "--registry", str(root))
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    return root


@pytest.fixture(scope="session")
def old_models(in_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Production models from scikit-learn 1.2.2 and 1.3.2, registered by those runtimes, and
    one model from the current image beside them."""
    work = tmp_path_factory.mktemp("old-models")
    root = work / "models"
    for lock, prefix, which in (("old-stack.lock", "old", "forest"), ("mid-stack.lock", "mid", "forest,boost,tfidf")):
        out = work / prefix
        out.mkdir()
        done = subprocess.run(
            [str(_stack_python(lock)), str(FIXTURES / "save_for_upgrade.py"), str(out), prefix, which, str(root)],
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": EPOCH},
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    with Registry(in_image) as source, Registry(root) as reg:
        entry = reg.add(source.get("wine-lr", "1.0.0").path)
        reg.promote(entry.name, entry.version)
    return root


# --- upgrade-check ---------------------------------------------------------------------------


def test_the_lock_the_models_were_trained_with_is_safe_for_every_model(
    in_image: Path, current: RuntimeImage, base_ref: str
) -> None:
    done = _toolkit(*_check_args(REPO / "requirements.lock", in_image, base_ref), "--json", env={"CI": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # quiet in CI: no progress
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["summary"] == {"safe": 2, "drift": 0, "broken": 0, "total": 2}
    assert report["candidate"]["cached"] is True  # the fixture built it: one image per lock, base and toolkit
    assert report["candidate"]["image_id"] == current.image_id
    for model in report["models"]:
        assert (model["verdict"], model["status"]) == ("safe", "production")
        # Models trained by `toolkit train` keep a reference set (card schema 3): its rows are checked.
        assert re.fullmatch(r"same runtime as the card; reference outputs agree on \d+ rows", model["reason"])
        assert model["packages"] == [] and model["warnings"] == []  # no false alarm, nothing changes


def test_another_scikit_learn_release_gets_a_verdict_per_model_in_json_and_junit(
    in_image: Path, variant: RuntimeImage, variant_lock: Path, base_ref: str, variant_check: tuple[Any, Path]
) -> None:
    done, work = variant_check
    junit = work / "report.xml"
    report = json.loads(done.stdout)
    assert done.returncode == report["exit_code"] == (0 if report["ok"] else 1), done.stderr
    assert report["candidate"] == {
        "lock": str(variant_lock),
        "lock_sha256": hashlib.sha256(variant_lock.read_bytes()).hexdigest(),
        "image": variant.tag,
        "image_id": variant.image_id,
        "cached": True,
        "base_image": base_ref,
    }
    locked = read_card(Registry(in_image).get("wine-lr").path).environment.packages["scikit-learn"]
    assert [m["name"] for m in report["models"]] == ["wine-lr", "wine-rf"]
    for model in report["models"]:
        assert model["verdict"] in VERDICTS and model["reason"]
        # The one package the candidate changes, and scikit-learn's own word on each estimator.
        assert model["packages"] == [{"name": "scikit-learn", "card": locked, "candidate": VARIANT_SKLEARN}]
        assert any(
            w.startswith("InconsistentVersionWarning: Trying to unpickle estimator")
            and f"from version {locked} when using version {VARIANT_SKLEARN}" in w
            for w in model["warnings"]
        ), model["warnings"]
        if model["verdict"] != "broken":
            assert model["probe"]["rows"] > 0 and model["probe"]["error"] is None
    counts = {v: sum(m["verdict"] == v for m in report["models"]) for v in VERDICTS}
    assert report["summary"] == {**counts, "total": 2}
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "2" and suite.get("failures") == str(counts["drift"] + counts["broken"])
    for case, model in zip(suite.findall("testcase"), report["models"], strict=True):
        assert case.get("name") == f"{model['name']} {model['version']}"
        failure = case.find("failure")
        if model["verdict"] == "safe":
            assert failure is None
        else:
            assert failure is not None and failure.get("type") == model["verdict"]
            assert failure.get("message") == model["reason"]


def test_old_pickles_are_broken_or_drift_with_the_librarys_reason_and_every_model_is_reported(
    old_models: Path, current: RuntimeImage, base_ref: str, tmp_path: Path
) -> None:
    junit = tmp_path / "report.xml"
    done = _toolkit(*_check_args(REPO / "requirements.lock", old_models, base_ref), "--json", "--junit", str(junit))
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    found = {m["name"]: m for m in report["models"]}
    assert sorted(found) == ["mid-boost", "mid-forest", "mid-tfidf", "old-forest", "wine-lr"]
    assert report["summary"] == {"safe": 1, "drift": 1, "broken": 3, "total": 5}
    # A 1.2.2 forest no longer unpickles: scikit-learn's own reason.
    assert found["old-forest"]["verdict"] == "broken"
    assert found["old-forest"]["reason"].startswith(
        "does not load: ValueError: node array from the pickle has an incompatible dtype"
    )
    assert {"name": "scikit-learn", "card": "1.2.2", "candidate": _locked("scikit-learn")} in found["old-forest"][
        "packages"
    ]
    # 1.3.2's gradient boosting needs a module that is gone.
    assert found["mid-boost"]["reason"] == (
        "does not load: ModuleNotFoundError: No module named 'sklearn.ensemble._gb_losses'"
    )
    # Loads, then raises inside predict: broken, not safe.
    assert found["mid-forest"]["verdict"] == "broken"
    assert found["mid-forest"]["reason"] == (
        "loads, but predict raises AttributeError: 'SimpleImputer' object has no attribute '_fill_dtype'"
    )
    # Loads with only a warning, and silently predicts differently: drift.
    tfidf = found["mid-tfidf"]
    assert tfidf["verdict"] == "drift" and tfidf["reason"].startswith("loads, but predictions moved: ")
    assert tfidf["probe"]["ok"] is False and tfidf["probe"]["max_abs_diff"] > tfidf["probe"]["tolerance"]
    assert any("TfidfVectorizer from version 1.3.2" in w for w in tfidf["warnings"])
    assert found["wine-lr"]["verdict"] == "safe"
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("5", "4")


def test_the_human_table_names_each_verdict_and_what_changes(
    old_models: Path, current: RuntimeImage, base_ref: str
) -> None:
    done = _toolkit(*_check_args(REPO / "requirements.lock", old_models, base_ref), "--name", "mid-tfidf")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    lock = REPO / "requirements.lock"
    assert lines[0] == f"candidate {lock} (sha256 {current.lock_sha256[:12]}) in {current.tag} (cached)"
    row = next(line for line in lines if line.startswith("mid-tfidf"))
    assert row.split()[1:4] == ["1.0.0", "production", "drift"]
    changes = next(line for line in lines if line.startswith("packages that change"))
    assert f"scikit-learn 1.3.2 -> {_locked('scikit-learn')}" in changes
    assert lines[-1] == "1 models: 0 safe, 1 drift, 0 broken -> NOT safe"


def test_retrain_of_the_broken_model_registers_a_staging_child_with_metrics_beside_the_parent(
    old_models: Path, current: RuntimeImage, base_ref: str, tmp_path: Path
) -> None:
    registry = tmp_path / "models"
    shutil.copytree(old_models, registry)
    done = _toolkit(*_check_args(REPO / "requirements.lock", registry, base_ref), "--name", "old-forest", "--retrain")
    assert done.returncode == 1, done.stdout + done.stderr  # the production model is still broken
    entry = Registry(registry).get("old-forest", "1.0.1")
    assert entry.status == "staging"
    card = read_card(entry.path)
    assert card.lineage is not None and card.lineage.parent == "old-forest@1.0.0"
    parent = read_card(Registry(registry).get("old-forest", "1.0.0").path)
    assert card.training is not None and parent.training is not None
    assert card.training.dataset_sha256 == parent.training.dataset_sha256  # the same data, hashed the same
    assert card.environment.packages["scikit-learn"] == _locked("scikit-learn")  # trained in the candidate
    line = next(line for line in done.stdout.splitlines() if line.startswith("  old-forest 1.0.0 -> 1.0.1"))
    assert "(registered as staging)" in line
    old, new = parent.metrics["test"]["accuracy"], card.metrics["test"]["accuracy"]
    assert f"test.accuracy {old:.4f} -> {new:.4f}" in line
    # The retrained model is safe in the candidate: the way out the report points to.
    again = _toolkit(*_check_args(REPO / "requirements.lock", registry, base_ref), "--stage", "staging", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert [(m["name"], m["version"], m["verdict"]) for m in json.loads(again.stdout)["models"]] == [
        ("old-forest", "1.0.1", "safe")
    ]


def test_image_retrain_reruns_the_recipe_in_the_image_with_lineage(
    in_image: Path, current: RuntimeImage, tmp_path: Path
) -> None:
    parent = Registry(in_image).get("wine-lr")
    done = _toolkit("image", "retrain", str(parent.path), "--version", "1.1.0", "--image", current.tag,
                    "--no-register", "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tmp_path / "wine-lr-1.1.0.joblib")
    card = read_card(tmp_path / "wine-lr-1.1.0.joblib")
    assert card.lineage is not None and card.lineage.parent == "wine-lr@1.0.0"
    assert (
        card.environment.in_container and card.environment.base_image == read_card(parent.path).environment.base_image
    )
    assert card.metrics == read_card(parent.path).metrics  # same recipe, same data, same runtime: same model


def test_a_candidate_lock_the_toolkit_cannot_run_on_exits_5_in_one_line(
    in_image: Path, base_ref: str, tmp_path: Path
) -> None:
    import re

    text = (REPO / "requirements.lock").read_text()
    block = re.search(r"^packaging==\S+ \\\n(?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+", text, re.MULTILINE)
    assert block is not None
    lock = tmp_path / "packaging-only.lock"
    lock.write_text(block.group(0))
    done = _toolkit(*_check_args(lock, in_image, base_ref), "--json")
    assert done.returncode == 5, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: image build failed: "), done.stderr


# --- --certify, then the gate in the candidate image -------------------------------------------


def test_certify_under_the_variant_lock_then_the_gate_in_the_variant_image_accepts_that_model_only(
    in_image: Path, variant: RuntimeImage, base_ref: str, client: Any, variant_check: tuple[Any, Path], tmp_path: Path
) -> None:
    """upgrade-check --certify under a candidate lock (the variant's image, already built; the
    run the verdict test checks), then check-env --policy certified inside that image: the
    certified model passes, naming its certification; another model, a forged certification and
    an edited one exit 1 with the reason."""
    from toolkit.artifact import artifact_paths, sign
    from toolkit.certification import _parse, write
    from toolkit.signing import keygen

    done, work = variant_check
    assert done.returncode in (0, 1), done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert next(m for m in report["models"] if m["name"] == "wine-lr")["verdict"] == "safe", report
    tmp_path.chmod(0o755)  # the gate in the image runs as its own user, which must read what is mounted
    private, public = work / "ci.key", work / "ci.pub"
    stranger, _ = keygen(tmp_path / "stranger")
    lr_sha = Registry(in_image).get("wine-lr", "1.0.0").sha256
    written = {json.loads(c.read_text())["name"]: c for c in (work / "certs").glob("*.cert.json")}
    assert all(f"certified: {c}" in done.stderr for c in written.values()), done.stderr
    cert = written["wine-lr"]
    assert cert.name.startswith(lr_sha[:16])
    doc = json.loads(cert.read_text())
    assert doc["lock_sha256"] == variant.lock_sha256 and doc["base_image"] == base_ref
    assert doc["runtime"]["packages"]["scikit-learn"] == VARIANT_SKLEARN  # seen from inside the candidate
    good = tmp_path / "certs"  # wine-lr's certification only: wine-rf is "another model"
    good.mkdir()
    for f in (cert, cert.with_name(cert.name + ".sig")):
        shutil.copy(f, good / f.name)
    forged = tmp_path / "forged"  # the same statement, signed by a key nobody trusts
    write(forged, _parse(cert.read_bytes(), cert), key=stranger)
    edited = tmp_path / "edited"  # signed, then edited
    edited.mkdir()
    (edited / cert.name).write_bytes(cert.read_bytes().replace(b'"at": "', b'"at": "1'))
    sig = cert.name + ".sig"
    (edited / sig).write_bytes((good / sig).read_bytes())
    for folder in (good, forged, edited):
        folder.chmod(0o755)
        for f in folder.iterdir():
            f.chmod(0o644)
    registry = Registry(in_image)
    models: dict[str, Path] = {}
    for name in ("wine-lr", "wine-rf"):  # copies, signed by the team: trust is configured in the image
        path = registry.get(name, "1.0.0").path
        assert path is not None
        (tmp_path / name).mkdir(mode=0o755)
        for f in artifact_paths(path).files():
            shutil.copy(f, tmp_path / name / f.name)
        models[name] = tmp_path / name / path.name
        sign(models[name], private)
        for f in (tmp_path / name).iterdir():
            f.chmod(0o644)
    mounts = [tdocker.Mount(source=p.parent.resolve(), target=f"/models/{n}") for n, p in models.items()]
    mounts += [tdocker.Mount(source=d, target=f"/certs/{d.name}") for d in (good, forged, edited)]
    mounts.append(tdocker.Mount(source=public, target="/keys/ci.pub"))
    cases = {"certified": ("wine-lr", "certs"), "other-model": ("wine-rf", "certs"),
             "forged": ("wine-lr", "forged"), "edited": ("wine-lr", "edited")}  # fmt: skip
    script = "".join(
        f"echo @@{case}; toolkit check-env /models/{name}/{models[name].name} --policy certified "
        f"--certifications /certs/{folder} --trusted-key /keys/ci.pub --json; echo @@rc $?\n"
        for case, (name, folder) in cases.items()
    )
    out: list[bytes] = []
    result = tdocker.run_in_container(
        variant.tag, [script], entrypoint=["/bin/sh", "-c"], mounts=mounts,
        user=f"{tdocker.IMAGE_UID}:{tdocker.IMAGE_UID}", client=client,
        on_output=lambda stream, chunk: out.append(chunk) if stream == "stdout" else None,
    )  # fmt: skip
    text = b"".join(out).decode()
    assert result.exit_code == 0, text
    got = {
        case: {"report": json.loads(body), "rc": int(rc)}
        for case, body, rc in re.findall(r"^@@(\S+)\n(.*?)^@@rc (\d+)$", text, re.MULTILINE | re.DOTALL)
    }
    assert {c: g["rc"] for c, g in got.items()} == {"certified": 0, "other-model": 1, "forged": 1, "edited": 1}, text
    accepted = got["certified"]["report"]
    assert accepted["ok"] and accepted["policy"] == "certified" and accepted["certification"].startswith(cert.name)
    assert any(d["name"] == "scikit-learn" for d in accepted["certified_differences"]), accepted
    other = got["other-model"]["report"]
    assert other["certification"] is None and other["refused_certifications"] == []
    assert other["remedies"][0].startswith("certify this model under this runtime's lock")
    assert any(d["name"] == "scikit-learn" for d in other["differences"])
    assert got["forged"]["report"]["certification"] is None
    assert any(
        "untrusted key" in r or "does not verify" in r for r in got["forged"]["report"]["refused_certifications"]
    )
    assert got["edited"]["report"]["certification"] is None
    assert any("changed since it was signed" in r for r in got["edited"]["report"]["refused_certifications"])


# --- image rebuild -----------------------------------------------------------------------------


def test_rebuild_of_an_artifact_trained_in_the_image_passes_strict_and_is_the_same_image(
    in_image: Path, current: RuntimeImage
) -> None:
    artifact = Registry(in_image).get("wine-lr").path
    for _ in range(2):
        done = _toolkit("image", "rebuild", str(artifact))
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("MATCH wine-lr 1.0.0 under policy 'strict'"), done.stdout
        assert f"runtime {current.tag} ({current.image_id[:19]}) reused (cache hit)" in done.stderr


def test_rebuild_of_an_artifact_trained_under_the_variant_lock_gives_the_variant_runtime(
    variant: RuntimeImage, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)  # the gate in the image runs as its own user, which must read the artifact
    done = _toolkit(
        "image", "train", "--image", variant.tag, "--dataset", "builtin:wine", "--model", "logistic_regression",
        "--name", "wine-variant", "--no-register", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    artifact = tmp_path / "wine-variant-1.0.0.joblib"
    assert read_card(artifact).environment.packages["scikit-learn"] == VARIANT_SKLEARN
    rebuilt = _toolkit("image", "rebuild", str(artifact), "--tag", "toolkit:e2e-upgrade-rebuilt")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"({variant.image_id[:19]}) reused (cache hit)" in rebuilt.stderr
    assert "runtime toolkit:e2e-upgrade-rebuilt " in rebuilt.stderr


def test_rebuild_of_a_host_trained_artifact_exits_2_with_the_reason(tmp_path: Path) -> None:
    done = _toolkit("train", "--dataset", "builtin:wine", "--model", "logistic_regression", "--no-register",
                    "--out", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rebuilt = _toolkit("image", "rebuild", str(tmp_path / "wine-1.0.0.joblib"))
    assert rebuilt.returncode == 2
    assert rebuilt.stderr.strip().startswith(
        "error: wine 1.0.0 was not trained in an image (its card records no base image): there is no runtime to rebuild"
    )
    assert rebuilt.stdout == ""


# --- helpers -----------------------------------------------------------------------------------


def _check_args(lock: Path, registry: Path, base: str) -> tuple[str, ...]:
    return ("upgrade-check", "--lock", str(lock), "--registry", str(registry), "--base-image", base)


def _toolkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    merged = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=merged,
    )


def _locked(name: str) -> str:
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1].split()[0]
    raise AssertionError(f"{name} is not in requirements.lock")


def _variant_wheel() -> Path:
    """scikit-learn VARIANT_SKLEARN's wheel for this interpreter, downloaded once into .cache."""
    cache = REPO / ".cache" / "variant-wheels"
    found = sorted(cache.glob(f"scikit_learn-{VARIANT_SKLEARN}-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             f"scikit-learn=={VARIANT_SKLEARN}", "-d", str(cache)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        found = sorted(cache.glob(f"scikit_learn-{VARIANT_SKLEARN}-*.whl"))
    assert len(found) == 1, found
    return found[0]
