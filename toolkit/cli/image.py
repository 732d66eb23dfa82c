"""``toolkit image ...`` (placeholder until the Docker work lands)."""

from __future__ import annotations

import typer

from toolkit.cli._common import ToolkitGroup, app

image_app = typer.Typer(cls=ToolkitGroup, no_args_is_help=True, help="Build, train in and check the pinned image.")
app.add_typer(image_app, name="image")
