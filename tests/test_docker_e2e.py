"""End to end with a real Docker engine, no mocks: build, train in the image, gate in and out of it.

These tests FAIL (never skip) when no engine answers: `.ci/run` starts one. Images are built
once per session; the timings of each step are printed at the end of the session and written
to .cache/docker-e2e-timings.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _docker_support import swap_pin

from toolkit import docker as tdocker
from toolkit.errors import DockerError

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
# Tags of this suite's images; TOOLKIT_E2E_TAG gives concurrent runs (worktrees) tags of their own.
_TAG = os.environ.get("TOOLKIT_E2E_TAG", "e2e")
IMAGE = f"toolkit:{_TAG}"
VARIANT_IMAGE = f"toolkit:{_TAG}-variant"
# Another scikit-learn release that installs with the lock's numpy and scipy.
VARIANT_SKLEARN = "1.8.0"
EPOCH = "1700000000"  # SOURCE_DATE_EPOCH for every training here: cards must be byte-identical
ARTIFACT_FILES = (
    "credit-1.0.0.joblib",
    "credit-1.0.0.reference.json.gz",
    "credit-1.0.0.card.json",
    "credit-1.0.0.card.md",
)

_timings: dict[str, float] = {}


@pytest.fixture(scope="session", autouse=True)
def _report_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.monotonic()
    # Printed in the terminal summary: output during a test's teardown would be captured.
    request.config.pluginmanager.register(_TimingsReport(), "docker-e2e-timings")
    yield
    if _timings:
        _timings["session total"] = time.monotonic() - started
        (REPO / ".cache").mkdir(exist_ok=True)
        (REPO / ".cache" / "docker-e2e-timings.json").write_text(json.dumps(_timings, indent=2) + "\n")


class _TimingsReport:
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if _timings:
            terminalreporter.section("Docker end-to-end timings")
            for name, seconds in _timings.items():
                terminalreporter.write_line(f"  {name:<28} {seconds:7.1f}s")


@pytest.fixture(scope="session")
def client() -> Iterator[Any]:
    try:
        client = tdocker.connect()
    except DockerError as e:
        pytest.fail(f"the Docker end-to-end tests need a Docker engine: {e}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="session")
def image(client: Any, base_ref: str) -> str:
    with _timed("image build"):
        tdocker.build_image(base_image=base_ref, tag=IMAGE, context=REPO, client=client)
    return IMAGE


@pytest.fixture(scope="session")
def trained(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    with _timed("train in image"):
        done = _toolkit(
            "image", "train", "--image", image, "--config", "configs/train.toml", "--registry", str(root), "--quiet"
        )
    assert done.returncode == 0, done.stdout + done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.is_relative_to(root), done.stdout
    return path


@pytest.fixture(scope="session")
def variant_image(client: Any, base_ref: str, image: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same Dockerfile and base, from a lock whose only change is the scikit-learn release."""
    work = tmp_path_factory.mktemp("variant")
    wheel = _variant_wheel()
    lock = work / "requirements.lock"
    lock.write_text(swap_pin((REPO / "requirements.lock").read_text(), "scikit-learn", VARIANT_SKLEARN, wheel))
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    # The variant wheel replaces any copy of it the shared wheelhouse may hold (an upgrade-check's download).
    for source in [*sorted(p for p in (REPO / "wheelhouse").glob("*.whl") if p.name != wheel.name), wheel]:
        (wheelhouse / source.name).symlink_to(source)
    with _timed("variant image build"):
        tdocker.build_image(
            base_image=base_ref, tag=VARIANT_IMAGE, context=REPO, lock=lock, wheelhouse=wheelhouse, client=client
        )
    return VARIANT_IMAGE


# --- 1. train in the image -----------------------------------------------------------------


def test_train_in_image_records_the_container_and_base_digest(trained: Path, base_ref: str, client: Any) -> None:
    card = json.loads(trained.with_name("credit-1.0.0.card.json").read_text())
    env = card["environment"]
    assert env["in_container"] is True
    # The card's base digest is the one the engine reports for the base image.
    repo_digests = client.images.get(base_ref).attrs["RepoDigests"]
    assert env["base_image"] == base_ref
    assert env["base_image"] in repo_digests
    lock_hash = hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    assert env["lock_sha256"] == lock_hash
    assert env["python_version"] != "" and card["author"] != "toolkit"
    # The three files were registered on the host and belong to whoever ran the command.
    for name in ARTIFACT_FILES:
        assert trained.with_name(name).stat().st_uid == os.getuid()
    from toolkit.registry import Registry

    with Registry(trained.parents[2]) as registry:
        assert registry.get("credit", "1.0.0").status == "staging"


def test_image_bakes_in_base_lock_and_revision(image: str, base_ref: str, client: Any) -> None:
    attrs = client.images.get(image).attrs["Config"]
    labels = attrs["Labels"]
    assert labels["org.opencontainers.image.base.name"] == base_ref
    assert labels["org.opencontainers.image.base.digest"] == base_ref.rpartition("@")[2]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["org.opencontainers.image.revision"])
    env = dict(item.split("=", 1) for item in attrs["Env"])
    assert env["TOOLKIT_BASE_IMAGE"] == base_ref
    assert env["TOOLKIT_LOCK_SHA256"] == hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    assert env["TOOLKIT_IN_CONTAINER"] == "1" and env["PYTHONHASHSEED"] == "0"
    assert attrs["User"] == "toolkit"


# --- 2. the gate in the same image ---------------------------------------------------------


def test_check_env_in_the_same_image_exits_0(trained: Path, image: str) -> None:
    done = _toolkit("image", "check", str(trained), "--image", image, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["differences"] == []


# --- 3. the gate on the host ---------------------------------------------------------------


def test_check_env_on_the_host_exits_1_and_names_what_differs(trained: Path) -> None:
    done = _toolkit("check-env", str(trained), "--json", env={"TOOLKIT_BASE_IMAGE": "", "TOOLKIT_IN_CONTAINER": ""})
    assert done.returncode == 1, done.stdout + done.stderr
    names = {d["name"] for d in json.loads(done.stdout)["differences"]}
    assert "base_image" in names, names
    human = _toolkit("check-env", str(trained), env={"TOOLKIT_BASE_IMAGE": ""})
    assert human.returncode == 1
    assert "MISMATCH" in human.stdout and "base_image" in human.stdout


# --- 4. an image with another scikit-learn ---------------------------------------------------


def test_check_env_in_an_image_with_another_sklearn_exits_1_and_names_it(trained: Path, variant_image: str) -> None:
    locked = _locked_version("scikit-learn")
    done = _toolkit("image", "check", str(trained), "--image", variant_image, "--json", "--verify-predictions")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    sklearn = [d for d in report["differences"] if d["name"] == "scikit-learn"]
    assert sklearn == [{"field": "package", "name": "scikit-learn", "expected": locked, "actual": VARIANT_SKLEARN}]
    # --verify-predictions says whether the old pipeline still predicts the same in the new image.
    # The probe really ran in the new image, and its verdict is what its own numbers say.
    probe = report["predictions"]
    assert probe["error"] is None and probe["rows"] > 0, probe
    assert probe["ok"] is (probe["label_mismatches"] == 0 and probe["max_abs_diff"] <= probe["tolerance"]), probe
    human = _toolkit("image", "check", str(trained), "--image", variant_image)
    assert human.returncode == 1
    assert "scikit-learn" in human.stdout and locked in human.stdout and VARIANT_SKLEARN in human.stdout


def test_train_in_image_from_a_parquet_file(image: str, tmp_path: Path) -> None:
    # pyarrow is the image's largest package: a leaner image must still read Parquet.
    import pandas as pd

    rows = 200
    frame = pd.DataFrame(
        {
            "x1": [i % 17 for i in range(rows)],
            "x2": [(i * 7) % 13 for i in range(rows)],
            "y": [i % 2 for i in range(rows)],
        }
    )
    data = tmp_path / "data" / "toy.parquet"
    data.parent.mkdir()
    frame.to_parquet(data)
    out = tmp_path / "out"
    done = _toolkit(
        "image", "train", "--image", image, "--dataset", str(data), "--target", "y", "--model", "logistic_regression",
        "--name", "toy", "--version", "1.0.0", "--no-register", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    card = json.loads((out / "toy-1.0.0.card.json").read_text())
    # The card records the Parquet file the container read: its bytes, its rows, its columns.
    assert card["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert card["data"]["n_train"] + card["data"]["n_test"] == rows
    assert [f["name"] for f in card["data"]["features"]] == ["x1", "x2"]
    assert sorted(p.name for p in out.iterdir()) == [
        "toy-1.0.0.card.json",
        "toy-1.0.0.card.md",
        "toy-1.0.0.joblib",
        "toy-1.0.0.reference.json.gz",
    ]


# --- 5. an unpinned base is refused ----------------------------------------------------------


def test_build_with_an_unpinned_base_fails_clearly(base_ref: str, client: Any) -> None:
    tag = base_ref.split("@")[0] + ":bookworm"  # a tag the engine has, so nothing is pulled
    done = _toolkit("image", "build", "--base-image", tag, "--tag", f"{IMAGE}-unpinned")
    assert done.returncode == 2
    assert "BASE_IMAGE must be pinned by digest as name@sha256:<64 hex>" in done.stderr
    assert tag in done.stderr
    # The Dockerfile refuses it too, for a plain `docker build` that skips the toolkit.
    output = _raw_build(client, {"BASE_IMAGE": tag})
    assert f"error: BASE_IMAGE must be pinned by digest as name@sha256:<64 hex>, got '{tag}'" in output


def test_build_refuses_a_lock_hash_that_lies(base_ref: str, client: Any, image: str) -> None:
    args = {"BASE_IMAGE": base_ref, "BASE_DIGEST": base_ref.rpartition("@")[2], "LOCK_SHA256": "0" * 64}
    assert "error: LOCK_SHA256 must be the sha256 of requirements.lock" in _raw_build(client, args)


# --- 6. make train twice ----------------------------------------------------------------------


def test_make_train_twice_gives_byte_identical_artifacts(
    trained: Path, image: str, base_ref: str, tmp_path: Path
) -> None:
    runs = []
    for run in ("a", "b"):
        registry = tmp_path / run
        with _timed(f"make train ({run})"):
            done = subprocess.run(
                # The venv and wheelhouse are the ones running this test: never rebuild them mid-run.
                [
                    "make",
                    "-o",
                    ".venv/.stamp",
                    "-o",
                    "wheelhouse/.stamp",
                    "train",
                    f"IMAGE={image}",
                    f"REGISTRY={registry}",
                    f"BASE_IMAGE={base_ref}",
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
                env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "CI": "1"},
            )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        runs.append(registry / "credit" / "1.0.0")
    for name in ARTIFACT_FILES:
        first, second = ((r / name).read_bytes() for r in runs)
        assert first == second, f"{name} differs between two `make train` runs"
        # ... and from the session's own training in the same image.
        assert first == trained.with_name(name).read_bytes(), name


# --- helpers -----------------------------------------------------------------------------------


class _timed:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        _timings[self.name] = time.monotonic() - self.started


def _toolkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    merged = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=merged,
    )


def _raw_build(client: Any, buildargs: dict[str, str]) -> str:
    """A plain build of the repository's Dockerfile (the SDK reads .dockerignore); must fail."""
    lines = []
    for chunk in client.api.build(
        path=str(REPO), buildargs=buildargs, network_mode="none", pull=False, rm=True, forcerm=True, decode=True
    ):
        lines.append(chunk.get("stream", "") + chunk.get("error", ""))
        if "error" in chunk:
            return "".join(lines)
    pytest.fail("the build succeeded: " + "".join(lines)[-2000:])


def _locked_version(name: str) -> str:
    match = re.search(rf"^{re.escape(name)}==(\S+)", (REPO / "requirements.lock").read_text(), re.MULTILINE)
    assert match, f"{name} is not in requirements.lock"
    return match.group(1)


def _variant_wheel() -> Path:
    """scikit-learn VARIANT_SKLEARN's wheel for this interpreter, downloaded once into .cache."""
    cache = REPO / ".cache" / "variant-wheels"
    found = sorted(cache.glob(f"scikit_learn-{VARIANT_SKLEARN}-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"scikit-learn=={VARIANT_SKLEARN}",
                "-d",
                str(cache),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"},
        )
        assert done.returncode == 0, done.stderr
        found = sorted(cache.glob(f"scikit_learn-{VARIANT_SKLEARN}-*.whl"))
    assert len(found) == 1, found
    return found[0]


def test_a_registry_the_container_cannot_write_is_exit_4_never_70(
    trained: Path, image: str, client: Any, tmp_path: Path
) -> None:
    """Promote inside the image (where the gate passes: the model was trained there) against a
    registry it cannot write: a `:ro` bind mount (EROFS), and a writable folder whose
    registry.db the container's non-root user does not own (SQLite opens that read-only without
    a word and used to refuse only at the UPDATE: exit 70). Both: exit 4, the documented line."""
    from toolkit.registry.registry import Registry

    root = tmp_path / "reg"
    with Registry(root) as reg:
        entry = reg.add(trained)
    (root / "registry.db").chmod(0o644)  # root's, as the host wrote it
    root.chmod(0o777)  # the folder itself is open to the container's user
    before = (root / "registry.db").read_bytes()
    for read_only in (True, False):
        printed = bytearray()
        result = tdocker.run_in_container(
            image,
            ["registry", "promote", entry.name, entry.version, "--registry", "/reg"],
            mounts=[tdocker.Mount(source=root, target="/reg", read_only=read_only)],
            on_output=lambda stream, chunk, printed=printed: printed.extend(chunk),
            client=client,
        )
        text = printed.decode()
        assert result.exit_code == 4, (read_only, text)
        assert "the registry /reg is read-only here" in text and "reading works, writing does not" in text, text
        assert "internal error" not in text and "Traceback" not in text, text
    assert (root / "registry.db").read_bytes() == before  # nothing was promoted
