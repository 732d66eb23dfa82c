"""``toolkit init | lock | base``: a project of one's own (toolkit.toml, its lock, its pinned base)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli._common import app, plain
from toolkit.cli._output import echo, echo_err

__all__: list[str] = []


@app.command("init")
def init(
    folder: Annotated[Path, typer.Argument(metavar="[DIR]", help="The project folder (default: this one).")] = Path(),
) -> None:
    """Start a project: write DIR/toolkit.toml (its settings) and DIR/requirements.in (its packages).

    Never overwrites a file: exit 2 naming it. Every toolkit command run in DIR or below reads
    toolkit.toml (found by walking up, as pytest and ruff find theirs); a flag still wins.
    """
    from toolkit.project import init as run

    for path in run(folder):
        echo_err(plain(f"wrote {path}"))
    echo_err("next: add your packages to requirements.in, then `toolkit lock`")


@app.command("lock")
def lock(
    upgrade: Annotated[bool, typer.Option("--upgrade", help="Re-resolve every package to its newest version.")] = False,
    upgrade_package: Annotated[
        list[str] | None,
        typer.Option("--upgrade-package", "-P", metavar="NAME[==V]", help="Re-resolve only this one (repeatable)."),
    ] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the lock here (default: toolkit.toml's lock).")
    ] = None,
) -> None:
    """Compile requirements.in plus the toolkit's own runtime into a hash-locked lock (pip-tools).

    Existing pins are kept unless --upgrade or --upgrade-package says otherwise; a candidate lock
    for upgrade-check: `toolkit lock --upgrade-package scikit-learn==1.8.0 --out candidate.lock`.
    Prints what changed (added, removed, moved).
    """
    from toolkit.lock import compile_lock
    from toolkit.project import current

    settings = current()
    target = out_file if out_file is not None else settings.lock
    tty = sys.stderr.isatty()
    started = time.monotonic()
    what = f"{settings.requirements.name} + the toolkit's runtime"
    echo_err(plain(f"lock: resolving {what} with pip-compile"))

    def progress(line: str) -> None:
        if tty:  # one line, redrawn: what pip-compile is doing now
            text = f"  {time.monotonic() - started:5.0f}s {line}"[:100]
            sys.stderr.write("\r\x1b[2K" + plain(text))
            sys.stderr.flush()

    try:
        result = compile_lock(
            settings.requirements,
            target,
            previous=settings.lock if settings.lock.is_file() else None,
            upgrade=upgrade,
            upgrade_packages=upgrade_package or (),
            on_line=progress,
        )
    finally:
        if tty:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
    changes = result.changes
    for name, version in changes.added:
        echo(plain(f"  + {name}=={version}"))
    for name, version in changes.removed:
        echo(plain(f"  - {name}=={version}"))
    for name, old, new in changes.moved:
        echo(plain(f"  ~ {name} {old} -> {new}"))
    summary = (
        "no pin changed"
        if changes.empty
        else f"{len(changes.added)} added, {len(changes.removed)} removed, {len(changes.moved)} moved"
    )
    echo(plain(f"wrote {result.path}: {result.pins} pins ({summary}) in {result.seconds:.0f}s"))


@app.command("base")
def base(
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build a new base even if one is pinned.")] = False,
) -> None:
    """Build the offline pinned base (Debian bookworm minbase + python3, from Debian's packages;
    debootstrap, docker import, pushed to a loopback registry for its digest) and record it as
    toolkit.toml's base_image (without a toolkit.toml: .cache/base-image, as `make base`)."""
    from toolkit.docker.base import build_base
    from toolkit.project import current, record

    settings = current()
    ref = build_base(in_project=settings.path is not None, rebuild=rebuild)
    if settings.path is not None:
        record(settings.path, "base_image", ref)
        echo_err(plain(f"recorded base_image in {settings.path}"))
    echo(ref)
