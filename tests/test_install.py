"""The toolkit installs like a Python tool: a wheel built from the tree, into a fresh venv with no lock.

Real venv, real pip, no network: the wheel is built with `pip wheel --no-build-isolation` and its
dependencies come from the local wheelhouse with `--no-index`. Everything runs from a folder
outside the repository, so nothing can lean on a clone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WHEELHOUSE = REPO / "wheelhouse"

pytestmark = pytest.mark.install


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TOOLKIT_", "VIRTUAL_ENV"))}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


def test_a_wheel_installs_into_a_fresh_venv_and_works_outside_the_repository(tmp_path: Path) -> None:
    assert WHEELHOUSE.is_dir(), f"{WHEELHOUSE}: the local wheelhouse is missing (make wheelhouse)"
    dist = tmp_path / "dist"
    offline = ["-q", "--no-deps", "--no-build-isolation", "--no-index"]
    done = _run([sys.executable, "-m", "pip", "wheel", *offline, "-w", str(dist), str(REPO)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (wheel,) = dist.glob("toolkit-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read("toolkit/docker/Dockerfile") == (REPO / "toolkit/docker/Dockerfile").read_bytes()
    # What a project needs from this repository ships in the package: no clone needed.
    assert {"toolkit/py.typed", "toolkit/docker/Dockerfile", "toolkit/docker/base.sh"} <= names
    assert "toolkit/docker/debian_mirror.py" in names

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    done = _run(
        [*pip, "install", "-q", "--no-compile", "--no-index", "--find-links", str(WHEELHOUSE), str(wheel)], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    done = _run([*pip, "check"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # Not editable: the package is the venv's own copy, not this tree.
    done = _run([str(venv / "bin" / "python"), "-c", "import toolkit; print(toolkit.__file__)"], cwd=tmp_path)
    assert done.stdout.startswith(str(venv)), done.stdout

    toolkit_cli = str(venv / "bin" / "toolkit")
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = _run([toolkit_cli, "--help"], cwd=work)
    assert done.returncode == 0 and "init" in done.stdout and "lock" in done.stdout, done.stderr
    done = _run([toolkit_cli, "init", "proj"], cwd=work)
    assert done.returncode == 0, done.stderr
    assert (work / "proj" / "toolkit.toml").is_file() and (work / "proj" / "requirements.in").is_file()
    done = _run([toolkit_cli, "init", "proj"], cwd=work)
    assert done.returncode == 2 and "already exists" in done.stderr
    done = _run([toolkit_cli, "fingerprint", "--json"], cwd=work / "proj")
    assert done.returncode == 0, done.stderr
    names = set(json.loads(done.stdout)["packages"])
    assert {"toolkit", "scikit-learn", "click", "typer"} <= names
    # Without the lock extra: one line saying what to install, never a traceback.
    done = _run([toolkit_cli, "lock"], cwd=work / "proj")
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.strip().splitlines()[-1]
        == "error: toolkit lock needs pip-tools on this host: pip install 'toolkit[lock]'"
    )
    # The packaged Dockerfile and base recipe are found from the installed package.
    code = (
        "from toolkit.docker.context import packaged_dockerfile; from toolkit.docker.base import RECIPE; "
        f"print(packaged_dockerfile().is_file(), RECIPE.is_file(), str(RECIPE).startswith({str(venv)!r}))"
    )
    done = _run([str(venv / "bin" / "python"), "-c", code], cwd=work)
    assert done.stdout.split() == ["True", "True", "True"], done.stderr
