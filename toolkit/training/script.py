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
from collections.abc import Iterator, Sequence
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
    from toolkit.training.config import TrainConfig

__all__ = [
    "OUT_ENV",
    "TAIL_LINES",
    "OutputTail",
    "collect_artifacts",
    "register_or_move",
    "resolve_script",
    "run_script",
    "script_failed",
]


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
    for stream, chunk in _interleaved(process.stdout, process.stderr):
        tail(stream, chunk)
    code = process.wait()
    if code != 0:
        raise script_failed(script, code, tail.lines())
    return collect_artifacts(out, script=script)


def register_or_move(
    staged: Sequence[Path], cfg: TrainConfig, *, sign_key: Path | None = None
) -> Iterator[tuple[Path, str]]:
    """Sign (``sign_key``), then register each staged artifact (``cfg.register``) or move it into ``cfg.out``.

    Yields each artifact's final path and a line saying where it went.
    Raises: RegistryError (a version registered already), IntegrityError, UsageError.
    """
    from toolkit.artifact import artifact_paths

    if sign_key is not None:  # on this host, before registering: with trust configured, add requires it
        from toolkit.artifact import sign

        for path in staged:
            sign(path, sign_key)

    if cfg.register:
        from toolkit.registry.registry import Registry, resolve_root

        registry = Registry(resolve_root(cfg.registry))
        with registry:
            for path in staged:
                entry = registry.add(path)
                # A directory registry (resolve_root) always keeps the files; entry.path says where.
                yield entry.path or path, f"registered {entry.name} {entry.version} ({entry.status}) in {registry.root}"
        return
    import shutil

    for path in staged:
        files = artifact_paths(path)
        signature = files.signature
        present = [p for p in (files.model, files.card_json, files.card_md, signature) if p.exists()]
        targets = [(p, cfg.out / p.name) for p in present]
        existing = [t for _, t in targets if t.exists()]
        if existing:
            raise UsageError(f"{existing[0]}: already exists; not overwriting it")
        try:
            cfg.out.mkdir(parents=True, exist_ok=True)
            for source, target in targets:
                shutil.move(source, target)
        except OSError as e:
            raise UsageError(f"{cfg.out}: cannot write the artifact there ({e.strerror or e})") from e
        yield cfg.out / files.model.name, f"not registered; artifact written to {cfg.out}"


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
