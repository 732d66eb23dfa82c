"""``toolkit data``: the builtin datasets as files, so a newcomer has input to score."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli._common import ToolkitGroup, app

__all__: list[str] = []

data_app = typer.Typer(cls=ToolkitGroup, no_args_is_help=True, help="The builtin datasets as CSV files.")
app.add_typer(data_app, name="data")


@data_app.command("export")
def export(
    dataset: Annotated[str, typer.Argument(help="A builtin dataset: builtin:credit, builtin:wine, ...")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the CSV here (never overwritten); default: stdout.")
    ] = None,
) -> None:
    """Write a builtin dataset, target column included, as CSV (its sha256 is the card's dataset sha256)."""
    from toolkit import _files
    from toolkit.errors import UsageError
    from toolkit.training.datasets import builtin_csv

    content = builtin_csv(dataset)
    if out is None:
        typer.echo(content.decode(), nl=False)
        return
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; name a file")
    _files.save(out, content, overwrite=False)
    rows = content.count(b"\n") - 1  # less the header
    typer.echo(f"wrote {out} ({rows} rows)", err=True)
