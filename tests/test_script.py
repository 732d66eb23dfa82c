"""The user's own training script under `toolkit train` (here; the image's turn is in test_image_run_e2e)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from toolkit.cli import app
from toolkit.registry import Registry
from toolkit.training.script import RECIPE_FLAGS, OutputTail, resolve_script, script_failed

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "custom"

SCRIPTS = {
    "fails": "import sys\nprint('step one', file=sys.stderr)\nprint('ValueError: bad column', file=sys.stderr)\n"
    "sys.exit(3)\n",
    "saves-nothing": "print('trained, but forgot to save')\n",
    "bare-joblib": "import os, joblib\njoblib.dump([1], os.path.join(os.environ['TOOLKIT_OUT'], 'm.joblib'))\n",
}


def _toolkit(*args: str, cwd: Path) -> Result:
    # In-process through typer's runner: the user's script still runs in a child process the
    # toolkit starts (run_script), which inherits the environment given here; only the outer
    # CLI's own interpreter start (~0.4 s each) is saved. Its own entry point is tested in
    # test_cli_core.py.
    with contextlib.chdir(cwd):
        return CliRunner().invoke(app, list(args), env={"SOURCE_DATE_EPOCH": "1700000000"})


def _error_line(done: Result) -> str:
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("missing", "error: script missing.py: no such file"),
        ("fails", "error: script fails.py exited with code 3; last stderr: step one | ValueError: bad column"),
        ("saves-nothing", "error: script saves-nothing.py exited 0 but saved no artifact in $TOOLKIT_OUT"),
        ("bare-joblib", "error: script bare-joblib.py left m.joblib without a card"),
    ],
)
def test_bad_scripts_exit_2_with_one_line(tmp_path: Path, name: str, needle: str) -> None:
    if name in SCRIPTS:
        (tmp_path / f"{name}.py").write_text(SCRIPTS[name])
    registry = tmp_path / "registry"
    done = _toolkit("train", "--script", f"{name}.py", "--registry", str(registry), cwd=tmp_path)
    assert done.exit_code == 2, done.stderr
    assert _error_line(done).startswith(needle)
    assert done.stdout == ""
    assert not registry.exists()  # nothing registered, nothing half-made


def test_a_script_outside_the_project_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("pass\n")
    project = tmp_path / "project"
    project.mkdir()
    done = _toolkit("train", "--script", "../train.py", "--no-register", cwd=project)
    assert done.exit_code == 2
    assert "outside the project folder" in _error_line(done)


def test_the_example_trains_and_registers_from_a_config(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    config = tmp_path / "train.toml"
    # Relative to the config's own folder, like every path in a config.
    config.write_text(f'script = "{os.path.relpath(EXAMPLE / "train.py", tmp_path)}"\nscript_args = ["2.0.0"]\n')
    done = _toolkit("train", "--config", str(config), "--registry", str(registry), cwd=EXAMPLE)
    assert done.exit_code == 0, done.stderr
    final = Path(done.stdout.strip())
    assert final.name == "diabetes-custom-2.0.0.joblib" and final.is_relative_to(registry)
    assert "saved diabetes-custom 2.0.0" in done.stderr  # the script's own output, on stderr
    with Registry(registry) as reg:
        entry = reg.get("diabetes-custom", "2.0.0")
    assert entry.status == "staging"
    card = json.loads(final.with_suffix(".card.json").read_text())
    assert set(card["metrics"]["test"]) == {"rmse", "mae", "r2"}
    assert "features" in card["references"]["modules"]


def test_recipe_flags_with_a_script_are_refused(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    done = _toolkit("train", "--script", "train.py", "--model", "ridge", "--no-register", cwd=tmp_path)
    assert done.exit_code == 2
    assert _error_line(done) == "error: --model configures the built-in recipe; a script (train.py) is its own"


def test_image_train_refuses_recipe_flags_with_a_script(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("pass\n")
    done = _toolkit("image", "train", "--script", "train.py", "--dataset", "builtin:wine", cwd=tmp_path)
    assert done.exit_code == 2  # before any engine is asked
    assert _error_line(done) == "error: --dataset configures the built-in recipe; a script (train.py) is its own"


VALID = {
    "--dataset": "builtin:wine",
    "--target": "target",
    "--model": "ridge",
    "--task": "regression",
    "--name": "wine",
    "--version": "1.0.0",
}


@pytest.mark.parametrize("flag", RECIPE_FLAGS)
def test_train_and_image_train_refuse_the_same_recipe_flags_with_the_same_line(
    flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "train.py").write_text("raise SystemExit('must not run')\n")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    lines = []
    for command in (["train"], ["image", "train"]):
        result = runner.invoke(app, [*command, "--script", "train.py", flag, VALID[flag]])
        assert result.exit_code == 2, result.output  # before anything runs (no engine is asked)
        lines.append(result.stderr)
    assert lines == [f"error: {flag} configures the built-in recipe; a script (train.py) is its own\n"] * 2


def test_output_tail_keeps_the_last_stderr_lines() -> None:
    seen: list[tuple[str, bytes]] = []
    tail = OutputTail(lambda s, c: seen.append((s, c)))
    tail("stdout", b"not this\n")
    tail("stderr", b"one\n\ntwo\nthr")
    tail("stderr", b"ee\n")
    assert tail.lines() == ["one", "two", "three"] and tail.lines(1) == ["three"]
    assert len(seen) == 3
    assert str(script_failed("t.py", 1, [])) == "script t.py exited with code 1; it wrote nothing to stderr"


def test_resolve_script(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.py").write_text("")
    assert resolve_script(tmp_path / "sub" / "t.py", workdir=tmp_path) == "sub/t.py"
    with pytest.raises(Exception, match="not a file"):
        resolve_script(tmp_path / "sub", workdir=tmp_path)
