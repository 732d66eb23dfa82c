"""The ``toolkit`` command: a thin typer layer over the library.

Each sub-module registers its commands on ``app``; errors are mapped to exit codes
once, in ``_common.ToolkitGroup``.
"""

from __future__ import annotations

from toolkit.cli._common import app
from toolkit.cli import core, image, registry, train  # noqa: F401  (they register commands)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
