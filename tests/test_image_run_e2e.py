"""`toolkit image run` and `image train --script` in the real image: the user's own training code.

Needs a Docker engine (FAILS, never skips, without one: `.ci/run` starts it). The image is built
once for this module under a tag of its own, so other Docker tests never race it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toolkit import docker as tdocker

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom"
IMAGE = "toolkit:e2e-trainany"
EPOCH = "1700000000"
STEM = "diabetes-custom-1.0.0"

# Runs in the image: reports what the container looks like from inside, then exits 7.
INSPECT = """\
import json, os, sys
try:
    open("/work/written-by-container", "w")
    work_writable = True
except OSError:
    work_writable = False
with open(os.path.join(os.environ["TOOLKIT_OUT"], "hello.txt"), "w") as f:
    f.write("hello")
report = {
    "cwd": os.getcwd(),
    "argv": sys.argv[1:],
    "work_writable": work_writable,
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "env": {k: os.environ.get(k) for k in
            ("TOOLKIT_OUT", "PYTHONHASHSEED", "TOOLKIT_BASE_IMAGE", "TOOLKIT_LOCK_SHA256", "SOURCE_DATE_EPOCH")},
}
print(json.dumps(report))
sys.exit(7)
"""


@pytest.fixture(scope="module")
def image(base_ref: str) -> str:
    client = tdocker.connect()
    try:
        tdocker.build_image(base_image=base_ref, tag=IMAGE, context=REPO, client=client)
    finally:
        client.close()  # not left to the garbage collector's ResourceWarning in a later test
    return IMAGE


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the worked example: a project folder with train.py and its local module."""
    folder = tmp_path / "project"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("out", "__pycache__"))
    return folder


def _toolkit(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": EPOCH, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600
    )


def _image_env(image: str) -> dict[str, str]:
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Env}}", image], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return dict(item.split("=", 1) for item in json.loads(done.stdout))


def test_image_run_mounts_environment_ownership_network_and_exit_code(image: str, tmp_path: Path) -> None:
    project = _project_folder(tmp_path)
    (project / "report.py").write_text(INSPECT)
    done = _toolkit(
        "image", "run", "--image", image, "--out", str(tmp_path / "o"), "--", "python", "report.py", "a b", cwd=project
    )
    assert done.returncode == 7, done.stderr  # the command's exit code is kept
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cwd"] == "/work" and report["argv"] == ["a b"]
    assert report["work_writable"] is False and not (project / "written-by-container").exists()
    assert report["interfaces"] == ["lo"]  # network off
    baked = _image_env(image)
    assert report["env"] == {
        "TOOLKIT_OUT": "/out",
        "PYTHONHASHSEED": baked["PYTHONHASHSEED"],
        "TOOLKIT_BASE_IMAGE": baked["TOOLKIT_BASE_IMAGE"],
        "TOOLKIT_LOCK_SHA256": baked["TOOLKIT_LOCK_SHA256"],
        "SOURCE_DATE_EPOCH": EPOCH,
    }
    hello = tmp_path / "o" / "hello.txt"
    assert hello.read_text() == "hello"
    for path in (hello, hello.parent):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_image_run_refuses_no_command_and_reports_an_unknown_one(image: str, tmp_path: Path) -> None:
    project = _project_folder(tmp_path)
    none = _toolkit("image", "run", "--image", image, cwd=project)
    assert none.returncode == 2 and "needs a command after --" in none.stderr
    unknown = _toolkit("image", "run", "--image", image, "--", "no-such-command", cwd=project)
    assert unknown.returncode == 5
    assert unknown.stderr.count("\n") == 1 and "no-such-command" in unknown.stderr
    if os.getuid() == 0:  # root runs it as the image's user, who must be able to read the project
        project.chmod(0o700)
        hidden = _toolkit("image", "run", "--image", image, "--", "true", cwd=project)
        assert hidden.returncode == 2 and "not readable by the image's user" in hidden.stderr


def test_the_worked_example_end_to_end(image: str, project: Path, tmp_path: Path) -> None:
    out = project / "out"
    trained = _toolkit("image", "run", "--image", image, "--", "python", "train.py", cwd=project)
    assert trained.returncode == 0, trained.stderr
    assert "saved diabetes-custom 1.0.0" in trained.stdout
    files = [out / f"{STEM}{s}" for s in (".joblib", ".card.json", ".card.md")]
    for path in files:
        assert path.stat().st_uid == os.getuid()
    card = json.loads(files[1].read_text())
    assert card["environment"]["in_container"] is True
    assert card["environment"]["base_image"] == _image_env(image)["TOOLKIT_BASE_IMAGE"]
    assert card["environment"]["lock_sha256"] == hashlib.sha256((REPO / "requirements.lock").read_bytes()).hexdigest()
    assert "features" in card["references"]["modules"]
    _assert_local_module(card, project)

    # Byte-identical on a second run (same image, same SOURCE_DATE_EPOCH).
    again = _toolkit("image", "run", "--image", image, "--out", "again", "--", "python", "train.py", cwd=project)
    assert again.returncode == 0, again.stderr
    for path in files:
        assert (project / "again" / path.name).read_bytes() == path.read_bytes(), path.name

    gate = ["image", "run", "--image", image, "--", "toolkit", "check-env", f"/out/{STEM}.joblib"]
    ok = _toolkit(*gate, cwd=project)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # The artifact registers and promotes on the host, beside the project it came from.
    registry = tmp_path / "registry"
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{project}"}
    added = _toolkit("registry", "add", str(files[0]), "--registry", str(registry), cwd=project, env=env)
    assert added.returncode == 0, added.stderr
    promoted = _toolkit(
        "registry", "promote", "diabetes-custom", "--best-by", "rmse", "--registry", str(registry), cwd=project, env=env
    )
    assert promoted.returncode == 0, promoted.stderr
    assert "production -> 1.0.0" in promoted.stdout and "lower is better" in promoted.stdout

    # Its plots are drawn on the host (matplotlib is not in the image): under compatible, after the
    # outputs are re-checked on the rows the script kept, each strict difference one note line.
    plots = tmp_path / "plots"
    drawn = _toolkit("card", str(files[0]), "--plots", str(plots), cwd=project, env=env)
    assert drawn.returncode == 0, drawn.stderr
    notes = [line for line in drawn.stderr.splitlines() if line.startswith("note: drawn in a runtime that differs")]
    assert any(": base_image: card " in line for line in notes), drawn.stderr
    assert "note: reference outputs agree on" in drawn.stderr
    assert sorted(p.name for p in plots.glob("*.png")) == ["predicted_vs_actual.png", "residuals.png"]
    markdown = (plots / f"{STEM}.card.md").read_text()
    assert f"recorded held-out rows ({card['data']['n_test']} rows)" in markdown
    assert "Drawn in a runtime that differs from the card's" in markdown

    # The user's module changes: the gate in the image says no.
    with (project / "features.py").open("a") as f:
        f.write("\n# a change to the feature code\n")
    changed = _toolkit(*gate, cwd=project)
    assert changed.returncode == 1, changed.stdout + changed.stderr


def test_image_train_runs_a_script_and_registers_its_artifact(image: str, project: Path, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    # What follows the options is the script's own arguments (here the version it saves).
    done = _toolkit(
        "image", "train", "--image", image, "--script", "train.py", "--registry", str(registry), "2.0.0", cwd=project
    )
    assert done.returncode == 0, done.stderr
    final = Path(done.stdout.strip())
    assert final.is_relative_to(registry) and final.name == "diabetes-custom-2.0.0.joblib"
    assert "registered diabetes-custom 2.0.0 (staging)" in done.stderr
    assert not (project / "out").exists()  # staged elsewhere, then registered


@pytest.mark.parametrize(
    ("script", "body", "needle"),
    [
        ("missing.py", None, "error: script missing.py: no such file"),
        (
            "fails.py",
            "import sys\nprint('loading data', file=sys.stderr)\nsys.exit('KeyError: price')\n",
            "error: script fails.py exited with code 1; last stderr: loading data | KeyError: price",
        ),
        ("nothing.py", "print('done')\n", "error: script nothing.py exited 0 but saved no artifact in $TOOLKIT_OUT"),
    ],
    ids=["missing", "fails", "saves-nothing"],
)
def test_image_train_bad_scripts_exit_2_with_one_line(
    image: str, tmp_path: Path, script: str, body: str | None, needle: str
) -> None:
    project = _project_folder(tmp_path)
    if body is not None:
        (project / script).write_text(body)
    registry = tmp_path / "registry"
    done = _toolkit("image", "train", "--image", image, "--script", script, "--registry", str(registry), cwd=project)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(needle), done.stderr
    assert done.stdout == "" and not registry.exists()


def _project_folder(tmp_path: Path) -> Path:
    # pytest's temporary folders are 0700; the image's user must be able to read the project.
    folder = tmp_path / "project"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    return folder


def _assert_local_module(card: dict[str, Any], project: Path) -> None:
    """Card schema 2 and later: the local module and the sha256 of its source."""
    assert card["schema_version"] >= 2
    local = card["references"]["local_modules"]
    digest = hashlib.sha256((project / "features.py").read_bytes()).hexdigest()
    assert {"module": "features", "sha256": digest} in local
