"""What a user's training script must do, and how its failures read: the contract both runners share.

A script saves its artifacts with ``toolkit.save`` into the folder named by ``$TOOLKIT_OUT``;
it must exist inside the project folder, exit 0, and leave at least one artifact behind (each
rule one line, exit 2). The local runner (``toolkit.training.script``) and the image's
(``toolkit.docker.usercode``) both hold a script to these rules; this module imports nothing of
either, so the Docker layer needs nothing of training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from toolkit.errors import UsageError

__all__ = [
    "OUT_ENV",
    "TAIL_LINES",
    "OutputCallback",
    "OutputTail",
    "collect_artifacts",
    "resolve_script",
    "script_failed",
]

OUT_ENV = "TOOLKIT_OUT"  # where a script saves its artifacts
TAIL_LINES = 3  # the last lines of a failed script's stderr that its error carries
_TAIL_BYTES = 8192

OutputCallback = Callable[[str, bytes], None]  # ("stdout" | "stderr", chunk)


class OutputTail:
    """Passes a process's output on and keeps the last lines of its stderr."""

    def __init__(self, forward: OutputCallback | None = None) -> None:
        self._forward = forward
        self._stderr = bytearray()

    def __call__(self, stream: str, chunk: bytes) -> None:
        if stream == "stderr":
            self._stderr += chunk
            del self._stderr[:-_TAIL_BYTES]
        if self._forward is not None:
            self._forward(stream, chunk)

    def lines(self, count: int = TAIL_LINES) -> list[str]:
        """The last ``count`` non-blank lines of stderr, stripped."""
        text = self._stderr.decode("utf-8", errors="replace")
        return [line.strip() for line in text.splitlines() if line.strip()][-count:]


def resolve_script(script: Path, *, workdir: Path) -> str:
    """``script`` as a POSIX path relative to ``workdir``, where it runs from.

    Raises:
        UsageError: no such file, not a file, or outside ``workdir`` (the image sees only that).
    """
    host = script.expanduser()
    host = host if host.is_absolute() else Path.cwd() / host
    if not host.exists():
        raise UsageError(f"script {script}: no such file")
    if not host.is_file():
        raise UsageError(f"script {script}: not a file")
    try:
        return host.resolve().relative_to(workdir.resolve()).as_posix()
    except ValueError:
        raise UsageError(
            f"script {script}: outside the project folder {workdir.resolve()}; run from a folder that holds it"
        ) from None


def script_failed(script: str, code: int, tail: Sequence[str]) -> UsageError:
    """The one-line error of a script that exited ``code``, with its last stderr lines."""
    said = f"; last stderr: {' | '.join(tail)}" if tail else "; it wrote nothing to stderr"
    return UsageError(f"script {script} exited with code {code}{said}")


def collect_artifacts(out: Path, *, script: str) -> list[Path]:
    """Every artifact (a ``.joblib`` with its ``.card.json``) a script left in ``out``.

    Raises:
        UsageError: none, or a ``.joblib`` without its card (not saved with toolkit.save).
    """
    found = sorted(p for p in out.rglob("*.joblib") if p.is_file())
    if not found:
        raise UsageError(
            f"script {script} exited 0 but saved no artifact in ${OUT_ENV}; "
            f'save with toolkit.save(pipeline, os.environ["{OUT_ENV}"] + "/NAME-X.Y.Z.joblib", ...)'
        )
    for path in found:
        if not path.with_suffix(".card.json").is_file():
            raise UsageError(f"script {script} left {path.name} without a card: save it with toolkit.save")
    return found
