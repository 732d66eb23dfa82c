"""What a person at a terminal sees, with a real engine: `make train` under a pseudo-terminal, and
`image predict` scoring inside the image the model was trained in.

`make train` runs in a temporary clone of the repository (its committed files), reusing this
checkout's wheelhouse and the engine's layer cache, with an image tag and a registry of its own.
These tests FAIL (never skip) when no engine answers.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
IMAGE = f"toolkit:{os.environ.get('TOOLKIT_E2E_TAG', 'e2e')}-imageux"
EPOCH = "1700000000"
CONTAINER_PATHS = ("/out/", "/artifact/", "/work/", "/input/", "/in/")
# CSI sequences (colours, cursor moves, erase) and the OSC ones rich may write; what is left is text.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed repository in a temporary folder, sharing this checkout's wheelhouse."""
    root = tmp_path_factory.mktemp("clone") / "toolkit"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(root)], check=True, timeout=120)
    (root / "wheelhouse").symlink_to((REPO / "wheelhouse").resolve())
    return root


@pytest.fixture(scope="module")
def make_train(clone: Path, base_ref: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """`make train` under a pseudo-terminal (util-linux `script`): its text, and the registry."""
    registry = tmp_path_factory.mktemp("registry")
    make = (
        # The venv and wheelhouse are this test run's own: never rebuilt; the clone's code runs.
        f"make -o .venv/.stamp -o wheelhouse/.stamp train IMAGE={IMAGE} REGISTRY={registry} "
        f"BASE_IMAGE={base_ref} 'TOOLKIT={sys.executable} -m toolkit'"
    )
    env = {**os.environ, "PYTHONPATH": str(clone), "SOURCE_DATE_EPOCH": EPOCH, "TERM": "xterm-256color"}
    # As a user at a terminal runs it: not as a sub-make of `make test` (no MAKELEVEL, no flags).
    for name in ("CI", "COLUMNS", "NO_COLOR", "V", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(name, None)
    done = subprocess.run(
        ["script", "-qec", make, "/dev/null"],
        cwd=clone,
        capture_output=True,
        timeout=900,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    raw = done.stdout.decode("utf-8", errors="replace")
    assert done.returncode == 0, raw[-3000:] + done.stderr.decode(errors="replace")[-2000:]
    return raw, registry


def test_make_train_on_a_terminal_reads_as_one_story(make_train: tuple[str, Path]) -> None:
    raw, registry = make_train
    assert "\x1b[" in raw  # the container had a terminal: its progress came in colour
    # What the terminal shows: a line erased in place (ESC[2K, as the image build's redrawn step
    # line ends) keeps only what was written after its last erase.
    shown = "\n".join(line.rsplit("\x1b[2K", 1)[-1] for line in raw.replace("\r\n", "\n").split("\n"))
    text = _ANSI.sub("", shown)
    # Each progress redraw ends with \r: the line a person finally sees is the last segment.
    lines = [line.rstrip("\r").split("\r")[-1].rstrip() for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    found = [p for p in CONTAINER_PATHS if p in text]
    assert not found, f"container paths {found} reached the terminal:\n" + "\n".join(lines)
    assert "not registered" not in text
    assert "Step " not in text and "--->" not in text  # no build steps without -v
    assert "SetuptoolsDeprecationWarning" not in text
    assert any(line.startswith("✓ save") for line in lines), lines
    assert f"  artifact  {registry}/credit/1.0.0/credit-1.0.0.joblib" in lines
    assert lines[-1] == f"registered credit 1.0.0 (staging) in {registry}", lines[-5:]
    assert (registry / "credit" / "1.0.0" / "credit-1.0.0.joblib").is_file()


def test_image_predict_scores_in_the_image_with_ids(make_train: tuple[str, Path], tmp_path: Path) -> None:
    _, registry = make_train
    artifact = registry / "credit" / "1.0.0" / "credit-1.0.0.joblib"
    source = tmp_path / "in" / "credit.csv"
    source.parent.mkdir()
    exported = _toolkit("data", "export", "builtin:credit", "--out", str(source))
    assert exported.returncode == 0, exported.stderr
    frame = pd.read_csv(source).head(40).assign(customer=[f"{i:05d}" for i in range(40)])
    frame.to_csv(source, index=False)
    for path in (tmp_path, source.parent, source):  # the image's user reads it when root runs this
        path.chmod(0o755 if path.is_dir() else 0o644)
    out = tmp_path / "scores.csv"
    done = _toolkit(
        "image", "predict", str(artifact), str(source), "--id", "customer", "--out", str(out), "--image", IMAGE
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"wrote 40 predictions to {out} (in image {IMAGE}, sha256:")
    in_image = pd.read_csv(out, dtype={"customer": str})
    assert list(in_image.columns) == ["customer", "prediction", "proba_0", "proba_1"]
    assert in_image["customer"].tolist() == frame["customer"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "scores.csv"]  # no temp file left
    # The same rows scored on the host (another runtime: compatible policy) agree.
    host = _toolkit("predict", str(artifact), str(source), "--policy", "compatible")
    assert host.returncode == 0, host.stderr
    assert pd.read_csv(io.StringIO(host.stdout))["prediction"].tolist() == in_image["prediction"].tolist()
    # A missing id column: exit 2, the container's one line, with this host's path, nothing written.
    bad = _toolkit(
        "image",
        "predict",
        str(artifact),
        str(source),
        "--id",
        "nope",
        "--out",
        str(tmp_path / "x.csv"),
        "--image",
        IMAGE,
    )
    assert bad.returncode == 2, bad.stderr
    lines = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: --id 'nope': no such column in {source} "
        "(its columns: age, income, credit, loan_amt, educ, default, customer)"
    ]
    assert not (tmp_path / "x.csv").exists()
    # The check names the host's path and the image it ran.
    checked = _toolkit("image", "check", str(artifact), "--image", IMAGE)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not any(p in checked.stdout + checked.stderr for p in CONTAINER_PATHS)
    assert checked.stdout.strip().splitlines()[-1].startswith(f"checked in image {IMAGE} (sha256:")


def _toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": EPOCH, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
