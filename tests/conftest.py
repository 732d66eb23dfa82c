"""Shared fixtures: a tiny fitted pipeline, saved artifacts, a CLI runner, the pinned base image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

# One OpenMP and BLAS thread per test process, set before numpy or scikit-learn loads (and
# inherited by every CLI subprocess a test starts). make test runs two xdist workers on two
# cores: two threads each oversubscribe them, and OpenMP's spin-waiting barriers then make a
# HistGradientBoosting fit 10-50x slower on a loaded machine (552 s against 10 s for three fits,
# measured at load 14). A test that is about threads sets its own (test_reference.py); a
# developer's own setting is kept. Cards record these variables, never compare them.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import functools  # noqa: E402

import pytest  # noqa: E402
import typer.main  # noqa: E402
import typer.testing  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import toolkit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# typer's CliRunner.invoke builds the whole click command tree from the app's function
# signatures on every call (get_type_hints over some 40 commands): about 80 ms each, a third of
# make test-unit's CPU over its ~600 invocations. The tree depends only on the app, which no
# test changes, so it is built once per app; click still makes a fresh context per invocation,
# as the real entry point does once per process.
typer.testing._get_command = functools.cache(typer.main.get_command)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def iris_frame() -> tuple[Any, Any]:
    """Iris as (X DataFrame, y Series); fits in milliseconds."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def tiny_pipeline(iris_frame: tuple[Any, Any]) -> Any:
    """A fitted preprocessing + model pipeline on iris."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = iris_frame
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)


@pytest.fixture
def make_artifact(tiny_pipeline: Any, iris_frame: tuple[Any, Any], tmp_path: Path) -> Callable[..., Path]:
    """Save the tiny pipeline as an artifact and return its .joblib path."""

    def make(name: str = "iris", version: str = "1.0.0", directory: Path | None = None, **kwargs: Any) -> Path:
        path = (directory or tmp_path) / f"{name}-{version}.joblib"
        X, _ = iris_frame
        toolkit.save(tiny_pipeline, path, name=name, version=version, probe=X.head(8), **kwargs)
        return path

    return make


@pytest.fixture
def artifact(base_artifact: Path, tmp_path: Path) -> Path:
    """A fresh copy of the session's iris artifact (three files), safe to tamper with."""
    for src in base_artifact.parent.iterdir():
        shutil.copy2(src, tmp_path / src.name)
    return tmp_path / base_artifact.name


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session")
def base_artifact(tmp_path_factory: pytest.TempPathFactory, tiny_pipeline: Any, iris_frame: tuple[Any, Any]) -> Path:
    """A real artifact of the iris pipeline, saved once per session through the core."""
    path = tmp_path_factory.mktemp("base") / "iris-1.0.0.joblib"
    toolkit.save(
        tiny_pipeline,
        path,
        name="iris",
        version="1.0.0",
        probe=iris_frame[0].head(8),
        metrics={"test": {"roc_auc": 0.9, "accuracy": 0.8}, "cv": {"roc_auc": 0.85, "accuracy": 0.8}},
    )
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A real PostgreSQL server for the whole session (scripts/postgres.sh); fails, never skips."""
    from _postgres import pg_server as start

    try:
        with start() as server:
            yield server
    except RuntimeError as e:
        pytest.fail(f"cannot start PostgreSQL for the team-registry tests: {e}")


def _require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    # A test that reaches a service through request.getfixturevalue escapes the marking in
    # pytest_collection_modifyitems, and would start the service inside `make test-unit`.
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(f"{request.node.nodeid} uses a {marker} service: mark it (or its parameter) {marker}")


@pytest.fixture
def pg_url(pg_server: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server, as a libpq URL."""
    from _postgres import scratch_database

    _require_marker(request, "team")

    with scratch_database(pg_server) as url:
        yield url


@pytest.fixture(scope="session")
def team_oci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real `docker-registry` on a free loopback port for the team-registry tests (never :5000)."""
    from _oci_support import LoopbackRegistry

    registry = LoopbackRegistry(tmp_path_factory.mktemp("team-oci"))
    yield registry
    registry.stop()


@pytest.fixture
def team(pg_url: str, team_oci: Any, request: pytest.FixtureRequest) -> Any:
    """A team registry: a fresh PostgreSQL database and a fresh repository in the session's OCI registry."""
    import uuid

    from _postgres import Team

    _require_marker(request, "oci")

    return Team(url=pg_url, store=f"oci://{team_oci.host}/teamreg/t{uuid.uuid4().hex[:12]}", oci=team_oci)


@pytest.fixture
def own_team(pg_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A team registry on its own OCI registry process, for tests that tamper with its blobs on disk."""
    from _oci_support import LoopbackRegistry
    from _postgres import Team

    _require_marker(request, "oci")

    registry = LoopbackRegistry(tmp_path / "own-oci")
    yield Team(url=pg_url, store=f"oci://{registry.host}/teamreg/own", oci=registry)
    registry.stop()


def pytest_configure(config: pytest.Config) -> None:
    # An xdist worker runs with COLUMNS=80 set for it, so rich would wrap our tables at 80 where
    # a serial run (and a user's pipe) gets 160: a worker's output must read as the serial one's.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    # pytest caches each test module's assert-rewritten code in __pycache__, but not while
    # PYTHONDONTWRITEBYTECODE is set (as on these machines): every run, and each xdist worker,
    # would rewrite all test modules again (~8 s of a collection's 11 s). Allowed during
    # collection only, so nothing a test imports or writes later gains a __pycache__.
    saved = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        return (yield)
    finally:
        sys.dont_write_bytecode = saved


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # What needs a real PostgreSQL (every fixture that does starts from pg_server) is `team`;
    # what starts a loopback registry (team_oci, own_team) is `oci` too: marked by what they use,
    # so a new test cannot forget its marker and slip into `make test-unit`.
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "pg_server" in fixtures:
            item.add_marker(pytest.mark.team)
        if "team_oci" in fixtures or "own_team" in fixtures:
            item.add_marker(pytest.mark.oci)


@pytest.fixture(scope="session")
def base_ref() -> str:
    """The pinned base image (``make base``), built or found once per run for every Docker test."""
    from toolkit import docker as tdocker
    from toolkit.errors import DockerError

    try:
        tdocker.connect().close()
    except DockerError as e:
        pytest.fail(f"the Docker end-to-end tests need a Docker engine: {e}", pytrace=False)
    done = subprocess.run(["scripts/base.sh"], cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    return tdocker.validate_base_image(done.stdout.strip().splitlines()[-1])
