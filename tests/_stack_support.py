"""Old scikit-learn runtimes for the cross-version tests: hash-locked venvs, built once.

Each stack is a lock in tests/fixtures/ (compiled with hashes for this Python); its venv is
``.cache/venv-<lock stem>-<lock sha256[:16]>``, so an edited lock gets a fresh venv and a
second run (or another test file) reuses the first one's. pip's own download cache makes a
cold rebuild cheaper, and ``--no-compile`` leaves the byte-code to the first import (which
compiles only the modules a test imports, not the whole of scipy and pandas).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["FIXTURES", "stack_python"]

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def stack_python(lock_name: str) -> Path:
    """The interpreter of the venv built from ``tests/fixtures/<lock_name>``."""
    lock = FIXTURES / lock_name
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    venv = REPO / ".cache" / f"venv-{lock.stem}-{digest}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
             "--no-compile", "--require-hashes", "-r", str(lock)],
            check=True,
            env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
        )  # fmt: skip
        (venv / ".complete").touch()
    return python
