"""``toolkit registry ...`` (placeholder until the registry lands)."""

from __future__ import annotations

import typer

from toolkit.cli._common import ToolkitGroup, app

registry_app = typer.Typer(cls=ToolkitGroup, no_args_is_help=True, help="Versions, promotion, rollback, history.")
app.add_typer(registry_app, name="registry")
