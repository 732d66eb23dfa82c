"""A newcomer's project, end to end, with a real engine: the README's "Your project" block, run.

Every command line of the README's "Your project" ```bash block runs, in order, as one terminal
would (each from the folder and exported variables the one before left), in a project folder
outside this repository, with HOME there too (``~/.venvs/toolkit`` is the test's). The one
substitution: the README's ``pip install 'toolkit[project]'`` installs this tree's wheel, offline,
from the wheelhouse. Each command must exit as the README says, and show what :data:`CHECKS` says
its step must show; a README that drops a step fails (every check must have run).

The project has imbalanced-learn (pure Python, its sampler in the pipeline) and LightGBM (its
wheel links libgomp.so.1, which the minbase base lacks: ``system_packages = ["libgomp1"]``). The
host venv has neither, as a newcomer's laptop or a CI runner would not. Needs a Docker engine
(FAILS, never skips, without one), PyPI for ``toolkit lock`` and the wheels, Debian's archive for
the .deb.

Each step's time is printed (``pytest -s``) and written to $TOOLKIT_E2E_TIMES when set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _project_readme import README, project_commands

from toolkit import docker as tdocker
from toolkit.errors import DockerError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / "wheelhouse"
SCRIPT = REPO / "tests" / "fixtures" / "project" / "train.py"
PROJECT = "my-project"  # the README's `toolkit init my-project`
IMAGE = f"{PROJECT}:latest"  # what init writes as the project's image
MODEL = "out/imbalanced-1.0.0.joblib"  # what the fixture's train.py saves
# Downloads (wheels, .debs, the base's state) persist between runs, as a user's cache does.
CACHE = REPO / ".cache" / "project-e2e"
INSTALL = "pip install 'toolkit[project]'"  # the README's; run as the wheel's offline install:
# --no-compile: no .pyc for every file of numpy, scipy, pandas, scikit-learn up front (152 s against
# 47 s for this step, two runs on a loaded machine); what runs is compiled when first imported.
INSTALLED_AS = "pip install -q --no-compile --no-index"


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


class Shell:
    """One terminal: each command runs in bash from the folder and the exported variables the
    previous one left (``cd``, ``. activate``), its output captured and its time kept in ``steps``."""

    def __init__(self, steps: Steps, cwd: Path, state: Path) -> None:
        self.steps, self.cwd, self.env, self._state = steps, cwd, dict(steps.env), state

    def run(self, command: str, *, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
        where, env_file = self._state / "cwd", self._state / "env"
        script = f'{command}\nrc=$?\nprintf %s "$PWD" > {where}\nenv -0 > {env_file}\nexit $rc\n'
        started = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.steps.times.append((command, time.monotonic() - started, done.returncode))
        if where.is_file():
            self.cwd = Path(where.read_text())
            pairs = (item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
            self.env = {k: v for k, v in pairs if k not in ("_", "PWD", "OLDPWD", "SHLVL")}
        return done


@dataclass(kw_only=True)
class Walk:
    """What the checks share: the shell, the temporary folder, the wheel, the project folder."""

    shell: Shell
    tmp: Path
    wheel: Path
    project: Path = Path()
    seen: set[str] = field(default_factory=set)


def _outcome(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"


def test_a_project_of_ones_own_from_pip_install_to_a_gated_model(tmp_path: Path) -> None:
    try:
        client = tdocker.connect()
        client.ping()
        client.close()
    except DockerError as e:
        pytest.fail(f"the project end-to-end test needs a Docker engine: {e}", pytrace=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TOOLKIT_", "VIRTUAL_ENV", "BASE_IMAGE"))}
    home = tmp_path / "home"
    home.mkdir()
    env |= {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "TOOLKIT_CACHE": str(CACHE),
        "HOME": str(home),  # the README's ~/.venvs/toolkit is the test's
        # pip's and pip-tools' caches stay the user's: a newcomer's second project reuses them too
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"),
        # `python3` is this interpreter (a 3.11 that has venv), as on the README's Debian host
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    steps = Steps(env)
    try:
        _walk(steps, tmp_path)
    finally:
        print("\n" + steps.report())
        if os.environ.get("TOOLKIT_E2E_TIMES"):
            Path(os.environ["TOOLKIT_E2E_TIMES"]).write_text(steps.report() + "\n")


def _walk(steps: Steps, tmp: Path) -> None:
    # The toolkit's wheel, built offline from this tree: what the README's `pip install` installs.
    offline = ["-q", "--no-deps", "--no-build-isolation", "--no-index"]
    pip_wheel = [sys.executable, "-m", "pip", "wheel", *offline, "-w", str(tmp / "dist"), str(REPO)]
    done = steps.run("pip wheel (the toolkit's wheel, offline)", pip_wheel, cwd=tmp)
    assert done.returncode == 0, _outcome(done)
    (wheel,) = (tmp / "dist").glob("toolkit-*.whl")
    work = tmp / "work"  # the folder the newcomer starts in: outside this repository
    work.mkdir()
    (tmp / "state").mkdir()
    walk = Walk(shell=Shell(steps, work, tmp / "state"), tmp=tmp, wheel=wheel)

    # The README's block, line by line: its exit code, then what its step must show.
    commands = project_commands(README.read_text())
    assert commands, "the README has no 'Your project' ```bash block"
    for command, expected in commands:
        run = command.replace(INSTALL, f"{INSTALLED_AS} --find-links {WHEELHOUSE} '{wheel}[project]'")
        done = walk.shell.run(run)
        checks = [(key, check) for key, (pattern, check) in CHECKS.items() if re.search(pattern, command)]
        allowed = OTHER_EXITS.get(next((k for k, _ in checks), ""), {expected})
        assert done.returncode in allowed, f"README: {command!r} (exit {expected} expected)\n" + _outcome(done)
        for key, check in checks:
            walk.seen.add(key)
            check(walk, done)
    missing = [key for key in CHECKS if key not in walk.seen]
    assert not missing, f"the README's 'Your project' block lacks these steps: {missing}"

    # --- further steps in the same project and the same shell (walk.shell.run, cwd: walk.project).
    # Other features' blocks go below this line, one block each: image serve, compare, plots.

    # --- s3-serve: the model served from its own image (no --image: the card's), OIP infer and
    # /predict checked against `toolkit image predict` on the same rows, then SIGTERM and exit 0.
    from tests._serve_support import image_serve_round_trip

    started = time.monotonic()
    toolkit = shutil.which("toolkit", path=walk.shell.env["PATH"])
    assert toolkit is not None and str(walk.tmp / "home") in toolkit, walk.shell.env["PATH"]
    image_serve_round_trip(toolkit, walk.project / MODEL, image=IMAGE, cwd=walk.project, env=walk.shell.env)
    steps.times.append(("toolkit image serve MODEL (+ image predict)", time.monotonic() - started, 0))
    # --- end s3-serve

    # --- s3-script: a second version trained in the project image (train.py VERSION TREES), then
    # compared from the host venv, which lacks LightGBM: the re-scoring runs in the cards' image.
    second = walk.shell.run("toolkit image run -- python train.py 1.1.0 80")
    assert second.returncode == 0, _outcome(second)
    added = walk.shell.run("toolkit registry add out/imbalanced-1.1.0.joblib")
    assert added.returncode == 0, _outcome(added)
    compared = walk.shell.run("toolkit registry compare imbalanced 1.0.0 1.1.0 --resamples 200")
    assert compared.returncode == 0, _outcome(compared)
    assert f"compared in image {IMAGE}" in compared.stderr, _outcome(compared)
    assert "recorded held-out rows" in compared.stdout and "roc_auc" in compared.stdout, _outcome(compared)
    # --- end s3-script


# --- what each README step must show -----------------------------------------------------


def _venv(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert walk.shell.env.get("VIRTUAL_ENV") == str(walk.tmp / "home" / ".venvs" / "toolkit"), walk.shell.env


def _installed(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    # The wheel's toolkit runs from outside the repository; the host has neither project package.
    which = walk.shell.run("command -v toolkit && toolkit --version")
    assert which.returncode == 0 and str(walk.tmp / "home") in which.stdout, _outcome(which)
    for module in ("imblearn", "lightgbm"):
        assert walk.shell.run(f"python -c 'import {module}'").returncode != 0, module


def _initialised(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    walk.project = walk.shell.cwd
    assert walk.project == walk.tmp / "work" / PROJECT
    assert f'image = "{IMAGE}"' in (walk.project / "toolkit.toml").read_text()
    assert "scikit-learn" in (walk.project / "requirements.in").read_text().splitlines()
    shutil.copy(SCRIPT, walk.project / "train.py")  # the README's "your script"


def _packages_added(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert 'system_packages = ["libgomp1"]' in (walk.project / "toolkit.toml").read_text()


def _locked(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    lock_text = (walk.project / "requirements.lock").read_text()
    for name in ("imbalanced-learn==", "lightgbm==", "scikit-learn==", "typer==", "click==", "--hash=sha256:"):
        assert name in lock_text, name
    assert "+ lightgbm==" in done.stdout and "wrote " in done.stdout
    again = walk.shell.run("toolkit lock")  # again: every pin kept
    assert again.returncode == 0 and "no pin changed" in again.stdout, _outcome(again)


def _based(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    base = done.stdout.strip().splitlines()[-1]
    assert f'base_image = "{base}"' in (walk.project / "toolkit.toml").read_text()


def _built(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert f"built {IMAGE}" in done.stdout and "added libgomp1=" in done.stdout


def _trained(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert f"image {IMAGE} sha256:" in done.stdout + done.stderr
    assert "added [{'name': 'libgomp1', 'version': '" in done.stdout + done.stderr
    assert (walk.project / MODEL).is_file()
    card = json.loads((walk.project / MODEL.replace(".joblib", ".card.json")).read_text())
    assert "lightgbm" in card["environment"]["packages"] and "imbalanced-learn" in card["environment"]["packages"]


def _checked_in_image(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert f"checked in image {IMAGE}" in done.stdout  # no --image: toolkit.toml (or the card) names it


def _refused_on_host(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert "lightgbm" in done.stdout + done.stderr  # says why: the host lacks the model's packages


def _registered(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert (walk.project / "models" / "imbalanced" / "1.0.0" / "imbalanced-1.0.0.joblib").is_file()


def _listed(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert "imbalanced" in done.stdout


def _promoted(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert f"checked in image {IMAGE}" in done.stdout  # this host lacks its packages


def _same_lock_safe(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert re.search(r"^1 models: 1 safe, 0 drift, 0 broken -> safe to merge$", done.stdout, re.M), _outcome(done)


def _rebuilt(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0


def _candidate_locked(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    # Every other pin of the project's lock is kept (pip-compile starts from it): one change only.
    changed = [line.strip() for line in done.stdout.splitlines() if line.startswith(("  + ", "  - ", "  ~ "))]
    assert len(changed) == 1 and re.fullmatch(r"~ scikit-learn \S+ -> 1\.8\.0", changed[0]), _outcome(done)
    candidate = (walk.project / "candidate.lock").read_text()
    assert "scikit-learn==1.8.0" in candidate
    assert "scikit-learn==1.8.0" not in (walk.project / "requirements.lock").read_text()  # the project's is untouched


def _candidate_verdict(walk: Walk, done: subprocess.CompletedProcess[str]) -> None:
    assert re.search(r"^1 models: \d safe, \d drift, \d broken -> ", done.stdout, re.M), _outcome(done)
    assert re.search(r"^imbalanced\s+1\.0\.0\s+production\s+(safe|drift|broken)", done.stdout, re.M), done.stdout


Check = Callable[[Walk, subprocess.CompletedProcess[str]], None]
# key: (a regex the README command matches, the check). Every key must match some command.
CHECKS: dict[str, tuple[str, Check]] = {
    "venv": (r"^python3 -m venv .*activate$", _venv),
    "install": (re.escape(INSTALL), _installed),
    "init": (rf"^toolkit init {PROJECT} && cd {PROJECT}$", _initialised),
    "system_packages": (r"system_packages", _packages_added),
    "lock": (r"^toolkit lock$", _locked),
    "base": (r"^toolkit base$", _based),
    "image build": (r"^toolkit image build$", _built),
    "script": (r"^toolkit image run -- python train\.py$", _trained),
    "image check": (rf"^toolkit image check {MODEL}$", _checked_in_image),
    "check-env on the host": (rf"^toolkit check-env {MODEL}$", _refused_on_host),
    "registry add": (rf"^toolkit registry add {MODEL}$", _registered),
    "registry list": (r"^toolkit registry list$", _listed),
    "promote": (r"^toolkit registry promote imbalanced 1\.0\.0$", _promoted),
    "upgrade-check, same lock": (r"^toolkit upgrade-check --lock requirements\.lock$", _same_lock_safe),
    "image rebuild": (r"^toolkit image rebuild models/imbalanced/1\.0\.0/imbalanced-1\.0\.0\.joblib$", _rebuilt),
    "candidate lock": (
        r"^toolkit lock --upgrade-package scikit-learn==1\.8\.0 --out candidate\.lock$",
        _candidate_locked,
    ),
    "upgrade-check, candidate": (r"^toolkit upgrade-check --lock candidate\.lock$", _candidate_verdict),
}
# A verdict other than safe is a finding of the check, not a failure of the walk-through.
OTHER_EXITS = {"upgrade-check, candidate": {0, 1}}
