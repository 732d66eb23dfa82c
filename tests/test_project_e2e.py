"""A newcomer's project, end to end, with a real engine: the toolkit from its wheel, a folder of
one's own outside this repository, packages this repository's lock does not hold.

imbalanced-learn (pure Python, its sampler in the pipeline) and LightGBM (its wheel links
libgomp.so.1, which the minbase base lacks: `system_packages = ["libgomp1"]`). The host venv
has neither, as a newcomer's laptop or a CI runner would not. Needs a Docker engine (FAILS,
never skips, without one), PyPI for `toolkit lock` and the wheels, Debian's archive for the .deb.

Each step's time is printed (`pytest -s`) and written to $TOOLKIT_E2E_TIMES when set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit import docker as tdocker
from toolkit.errors import DockerError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / "wheelhouse"
SCRIPT = REPO / "tests" / "fixtures" / "project" / "train.py"
IMAGE = "imbalanced-project:e2e"
# Downloads (wheels, .debs, the base's state) persist between runs, as a user's cache does.
CACHE = REPO / ".cache" / "project-e2e"


class Steps:
    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.times = env, []  # type: list[tuple[str, float, int]]

    def run(self, title: str, args: list[str], cwd: Path, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        self.times.append((title, time.monotonic() - started, done.returncode))
        return done

    def report(self) -> str:
        lines = [f"{seconds:7.1f}s  exit {code}  {title}" for title, seconds, code in self.times]
        return "\n".join(lines)


def _outcome(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


def test_a_project_of_ones_own_from_pip_install_to_a_gated_model(tmp_path: Path) -> None:
    try:
        tdocker.connect().ping()
    except DockerError as e:
        pytest.fail(f"the project end-to-end test needs a Docker engine: {e}", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TOOLKIT_", "VIRTUAL_ENV", "BASE_IMAGE"))}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TOOLKIT_CACHE": str(CACHE)}
    steps = Steps(env)
    try:
        _walk(steps, tmp_path)
    finally:
        print("\n" + steps.report())
        if os.environ.get("TOOLKIT_E2E_TIMES"):
            Path(os.environ["TOOLKIT_E2E_TIMES"]).write_text(steps.report() + "\n")


def _walk(steps: Steps, tmp: Path) -> None:
    # 1. pip install: a wheel of this tree into a fresh venv, dependencies from the wheelhouse.
    offline = ["-q", "--no-deps", "--no-build-isolation", "--no-index"]
    pip_wheel = [sys.executable, "-m", "pip", "wheel", *offline, "-w", str(tmp / "dist"), str(REPO)]
    done = steps.run("pip wheel (the toolkit's wheel, offline)", pip_wheel, cwd=tmp)
    assert done.returncode == 0, _outcome(done)
    (wheel,) = (tmp / "dist").glob("toolkit-*.whl")
    venv = tmp / "venv"
    assert steps.run("python -m venv", [sys.executable, "-m", "venv", str(venv)], cwd=tmp).returncode == 0
    python = str(venv / "bin" / "python")
    done = steps.run(
        "pip install 'toolkit[project]'",
        [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(WHEELHOUSE), f"{wheel}[project]"],
        cwd=tmp,
    )
    assert done.returncode == 0, _outcome(done)
    toolkit = str(venv / "bin" / "toolkit")
    # The host has neither of the project's packages.
    done = subprocess.run([python, "-c", "import imblearn"], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    done = subprocess.run([python, "-c", "import lightgbm"], capture_output=True, text=True, check=False)
    assert done.returncode != 0

    # 2. init, one pure-Python package and one that needs a Debian package.
    work = tmp / "work"
    work.mkdir()
    done = steps.run("toolkit init imbalanced-project", [toolkit, "init", "imbalanced-project"], cwd=work)
    assert done.returncode == 0, _outcome(done)
    project = work / "imbalanced-project"
    with (project / "requirements.in").open("a") as f:
        f.write("imbalanced-learn\nlightgbm\n")
    settings = project / "toolkit.toml"
    text = settings.read_text()
    text = text.replace('image = "imbalanced-project:latest"', f'image = "{IMAGE}"')
    settings.write_text(text.replace("system_packages = []", 'system_packages = ["libgomp1"]'))
    shutil.copy(SCRIPT, project / "train.py")

    # 3. lock: the project's packages plus the toolkit's own runtime, hash-locked.
    done = steps.run("toolkit lock", [toolkit, "lock"], cwd=project)
    assert done.returncode == 0, _outcome(done)
    lock_text = (project / "requirements.lock").read_text()
    for name in ("imbalanced-learn==", "lightgbm==", "scikit-learn==", "typer==", "click==", "--hash=sha256:"):
        assert name in lock_text, name
    assert "+ lightgbm==" in done.stdout and "wrote " in done.stdout
    done = steps.run("toolkit lock (again: pins kept)", [toolkit, "lock"], cwd=project)
    assert done.returncode == 0 and "no pin changed" in done.stdout, _outcome(done)

    # 4. base: the offline pinned base, recorded in toolkit.toml.
    done = steps.run("toolkit base", [toolkit, "base"], cwd=project)
    assert done.returncode == 0, _outcome(done)
    base = done.stdout.strip().splitlines()[-1]
    assert f'base_image = "{base}"' in settings.read_text()

    # 5. image build: the lock's wheels (downloaded, hash-checked), libgomp1, this toolkit.
    done = steps.run("toolkit image build", [toolkit, "image", "build"], cwd=project)
    assert done.returncode == 0, _outcome(done)
    assert f"built {IMAGE}" in done.stdout and "added libgomp1=" in done.stdout

    # 6. the project's own script in its image (network off), saving with toolkit.save.
    done = steps.run(
        "toolkit image run -- python train.py", [toolkit, "image", "run", "--", "python", "train.py"], cwd=project
    )
    assert done.returncode == 0, _outcome(done)
    assert f"image {IMAGE} sha256:" in done.stdout + done.stderr
    assert "added [{'name': 'libgomp1', 'version': '" in done.stdout + done.stderr
    model = project / "out" / "imbalanced-1.0.0.joblib"
    assert model.is_file()
    card = json.loads((project / "out" / "imbalanced-1.0.0.card.json").read_text())
    assert "lightgbm" in card["environment"]["packages"] and "imbalanced-learn" in card["environment"]["packages"]

    # 7. the gate in the model's image, with no --image: toolkit.toml (or the card) names it.
    done = steps.run("toolkit image check MODEL", [toolkit, "image", "check", str(model)], cwd=project)
    assert done.returncode == 0, _outcome(done)
    assert f"checked in image {IMAGE}" in done.stdout
    # On this host (no imbalanced-learn, no LightGBM, another Python): the gate says no.
    done = steps.run("toolkit check-env MODEL (host: exit 1)", [toolkit, "check-env", str(model)], cwd=project)
    assert done.returncode == 1, _outcome(done)

    # 8. register from the host venv that lacks both packages (the registry from toolkit.toml).
    done = steps.run("toolkit registry add MODEL", [toolkit, "registry", "add", str(model)], cwd=project)
    assert done.returncode == 0, _outcome(done)
    assert (project / "models" / "imbalanced" / "1.0.0" / "imbalanced-1.0.0.joblib").is_file()
    done = steps.run("toolkit registry list", [toolkit, "registry", "list"], cwd=project)
    assert done.returncode == 0 and "imbalanced" in done.stdout, _outcome(done)

    # 9. promote from the same host: the gate runs in the model's image (this host lacks its packages).
    done = steps.run(
        "toolkit registry promote imbalanced 1.0.0",
        [toolkit, "registry", "promote", "imbalanced", "1.0.0"],
        cwd=project,
    )
    assert done.returncode == 0, _outcome(done)
    assert f"checked in image {IMAGE}" in done.stdout

    # 10. upgrade-check with the project's own lock: the same runtime, every model safe.
    lock = str(project / "requirements.lock")
    done = steps.run(
        "toolkit upgrade-check --lock requirements.lock", [toolkit, "upgrade-check", "--lock", lock], cwd=project
    )
    assert done.returncode == 0, _outcome(done)

    # 11. the model's runtime rebuilt from its card alone, gated inside under strict.
    registered = project / "models" / "imbalanced" / "1.0.0" / "imbalanced-1.0.0.joblib"
    done = steps.run("toolkit image rebuild MODEL", [toolkit, "image", "rebuild", str(registered)], cwd=project)
    assert done.returncode == 0, _outcome(done)

    # 12. a candidate lock with one package moved, and the verdict on every production model.
    candidate = ["--upgrade-package", "scikit-learn==1.8.0", "--out", "candidate.lock"]
    lock_text = (project / "requirements.lock").read_text()
    done = steps.run("toolkit lock --upgrade-package scikit-learn==1.8.0", [toolkit, "lock", *candidate], cwd=project)
    assert done.returncode == 0, _outcome(done)
    assert "~ scikit-learn 1.9.1 -> 1.8.0" in done.stdout
    assert (project / "requirements.lock").read_text() == lock_text  # the project's own lock is untouched
    check = [toolkit, "upgrade-check", "--lock", "candidate.lock", "--json"]
    done = steps.run("toolkit upgrade-check --lock candidate.lock", check, cwd=project)
    assert done.returncode in (0, 1), _outcome(done)
    verdicts = {m["name"]: m["verdict"] for m in json.loads(done.stdout)["models"]}
    assert set(verdicts) == {"imbalanced"} and verdicts["imbalanced"] in ("safe", "drift", "broken")

    # --- s3-serve: 13. the model served from its own image (no --image: the card's), OIP infer and
    # /predict checked against `toolkit image predict` on the same rows, then SIGTERM and exit 0.
    from tests._serve_support import image_serve_round_trip

    started = time.monotonic()
    image_serve_round_trip(toolkit, model, image=IMAGE, cwd=project, env=steps.env)
    steps.times.append(("toolkit image serve MODEL (+ image predict)", time.monotonic() - started, 0))
    # --- end s3-serve
