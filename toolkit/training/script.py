"""The user's own training script: checked before it runs, judged after it ran.

A script saves its artifacts with ``toolkit.save`` into the folder named by ``$TOOLKIT_OUT``.
It runs here (``toolkit train`` with a script) or in the pinned image (``toolkit image train``
with a script); either way the same three rules hold, each one line and exit 2: the script
must exist inside the project folder, exit 0, and leave at least one artifact behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import UsageError
from toolkit.userscript import (
    OUT_ENV,
    TAIL_LINES,
    OutputCallback,
    OutputTail,
    collect_artifacts,
    resolve_script,
    script_failed,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "OUT_ENV",
    "RECIPE_FLAGS",
    "TAIL_LINES",
    "OutputTail",
    "collect_artifacts",
    "refuse_recipe_flags",
    "resolve_script",
    "run_script",
    "script_failed",
]

# What configures the built-in recipe, which a script replaces: `train` and `image train` both
# refuse these next to a script (the script names and versions what it saves itself).
RECIPE_FLAGS = ("--dataset", "--target", "--model", "--task", "--name", "--version")


def refuse_recipe_flags(script: str | os.PathLike[str], given: Mapping[str, object]) -> None:
    """Refuse the first of ``RECIPE_FLAGS`` that ``given`` (flag -> value, None when not given)
    holds a value for, naming the script. Raises: UsageError."""
    unknown = set(given) - set(RECIPE_FLAGS)
    if unknown:
        raise ValueError(f"not recipe flags: {sorted(unknown)}")  # a bug of ours, not the user's
    for flag in RECIPE_FLAGS:
        if given.get(flag) is not None:
            raise UsageError(f"{flag} configures the built-in recipe; a script ({Path(script).name}) is its own")


def run_script(
    script: str,
    args: Sequence[str] = (),
    *,
    out: Path,
    workdir: Path = Path(),
    on_output: OutputCallback | None = None,
) -> list[Path]:
    """Run ``python SCRIPT ARGS`` here, from ``workdir``, with ``$TOOLKIT_OUT`` = ``out``.

    Returns the artifacts it saved. Raises: UsageError (the script failed or saved nothing).
    """
    tail = OutputTail(on_output)
    environment = {**os.environ, OUT_ENV: str(out.resolve())}
    try:
        process = subprocess.Popen(  # the user's own script, by design
            [sys.executable, script, *args],
            cwd=workdir,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as e:
        raise UsageError(f"script {script}: cannot start it ({e.strerror or e})") from e
    assert process.stdout is not None and process.stderr is not None
    with process:  # closes both pipes when done (a left-open pipe is a ResourceWarning) and waits
        for stream, chunk in _interleaved(process.stdout, process.stderr):
            tail(stream, chunk)
    code = process.wait()
    if code != 0:
        raise script_failed(script, code, tail.lines())
    return collect_artifacts(out, script=script)


def _interleaved(stdout: object, stderr: object) -> Iterator[tuple[str, bytes]]:
    """Chunks of two pipes as they come (selectors: neither pipe can fill up and block the child)."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(stdout, selectors.EVENT_READ, "stdout")  # type: ignore[arg-type]
    selector.register(stderr, selectors.EVENT_READ, "stderr")  # type: ignore[arg-type]
    try:
        while selector.get_map():
            for key, _ in selector.select():
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                yield str(key.data), chunk
    finally:
        selector.close()
