"""The README cannot go stale: every ```sh block in it runs, in order, in a temporary clone.

The README's walk-through is what a newcomer types. Each command line of a ```sh block (a
``\\`` continues it) runs in a copy of the repository's tracked files, from the same shell
state, and must exit as its trailing comment says (``# ... exit 1 ...``), else 0. Blocks that
only illustrate (CI files, output, a remote you do not have) are not ```sh. One command is not
run: ``make test`` itself (this test is part of it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent
NOT_RUN = {"make test": "this test is part of `make test`"}
_EXIT = re.compile(r"#.*\bexit (\d+)\b")
_SH_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def readme_commands(text: str) -> list[tuple[str, int]]:
    """``(command, expected exit code)`` for every command line of every ```sh block, in order."""
    commands = []
    for block in _SH_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if not command or command in NOT_RUN:
                continue
            expected = _EXIT.search(line)
            commands.append((command, int(expected.group(1)) if expected else 0))
    return commands


def test_the_readme_parser_reads_exit_codes_and_continuations() -> None:
    text = "x\n```sh\nmake train   # builds\n# a comment\ntoolkit a \\\n  b   # on the host: exit 1\nmake test\n```\n"
    assert readme_commands(text) == [("make train", 0), ("toolkit a    b", 1)]


def test_every_readme_command_runs_in_a_fresh_clone(tmp_path: Path) -> None:
    commands = readme_commands((REPO / "README.md").read_text())
    assert any(c.startswith("make train") for c, _ in commands), "the README must show `make train`"
    clone = _clone(tmp_path / "clone")
    env = {
        **os.environ,
        "IMAGE": "toolkit:e2e-readme",  # the README's commands, not the user's image tag
        "TOOLKIT_IMAGE": "toolkit:e2e-readme",
        "TOOLKIT_REGISTRY": "",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    # A reader's shell: no trust configured, and not a sub-make of `make test`.
    for name in ("TOOLKIT_TRUSTED_KEYS", "MAKEFLAGS", "MAKELEVEL", "MFLAGS"):
        env.pop(name, None)
    # One shell for the whole walk-through, as a reader's terminal: each command's exit code is
    # printed after a marker so it can be checked against the README's comment.
    script = "".join(f'{command}\necho "@@exit $? {i}"\n' for i, (command, _) in enumerate(commands))
    done = subprocess.run(
        ["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    codes = {int(i): int(code) for code, i in re.findall(r"^@@exit (\d+) (\d+)$", done.stdout, re.M)}
    for i, (command, expected) in enumerate(commands):
        assert codes.get(i) == expected, (
            f"README command {command!r} exited {codes.get(i)}, the README says {expected}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
        )


def _clone(dest: Path) -> Path:
    """The tracked files as they are in the working tree, with the host's venv and wheelhouse
    (already installed from these same locks) and their stamps marked current."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    )
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    # A clone is a git checkout: make reads the last commit's time for SOURCE_DATE_EPOCH.
    git = ["git", "-c", "user.name=readme", "-c", "user.email=readme@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "readme walk-through"], cwd=dest, check=True)
    for shared in (".venv", "wheelhouse"):
        (dest / shared).symlink_to(REPO / shared)
    # Copies are newer than the stamps: without this, make would reinstall into the real venv.
    for stamp in (REPO / "wheelhouse" / ".stamp", REPO / ".venv" / ".stamp"):
        stamp.touch()
    return dest
