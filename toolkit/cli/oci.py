"""``toolkit push`` and ``toolkit pull``: artifacts in an OCI registry."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli._common import app, artifact_arg
from toolkit.cli._options import ArtifactRefArg, InsecureOpt, RegistryOpt, TrustedKeyOpt
from toolkit.cli._output import echo_err

__all__: list[str] = []

# Progress bars only for blobs worth watching, and only on a terminal.
_PROGRESS_MIN_BYTES = 4 * 1024 * 1024

ReferenceArg = Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX")]


@app.command()
def push(
    artifact: ArtifactRefArg,
    reference: Annotated[str, typer.Argument(help="oci://HOST[:PORT]/REPO:TAG")],
    insecure: InsecureOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Push an artifact's files as one OCI manifest; prints the manifest digest."""
    from toolkit import oci

    with _progress() as progress:
        result = oci.push(artifact_arg(artifact, registry), reference, insecure=insecure, progress=progress)
    echo_err(
        f"pushed {result.reference} ({len(result.uploaded)} blob(s) uploaded, {len(result.skipped)} already there)"
    )
    typer.echo(result.digest)


@app.command()
def pull(
    reference: ReferenceArg,
    out: Annotated[Path, typer.Option("--out", help="Directory for the artifact's files (default: here).")] = Path(),
    insecure: InsecureOpt = False,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Download an artifact, verify every blob, the card and the model's sha256, then publish it."""
    from toolkit import oci

    with _progress() as progress:
        result = oci.pull(reference, out, insecure=insecure, progress=progress, trusted_keys=trusted_key)
    echo_err(f"pulled {result.reference}: {result.card.name} {result.card.version} verified")
    typer.echo(str(result.files[0]))


@contextmanager
def _progress() -> Iterator[Any]:
    """A progress callback drawing rich bars on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    tasks: dict[str, Any] = {}
    with Progress(
        "{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bars:

        def update(name: str, done: int, total: int) -> None:
            if total < _PROGRESS_MIN_BYTES:
                return
            if name not in tasks:
                tasks[name] = bars.add_task(name, total=total)
            bars.update(tasks[name], completed=done)

        yield update
