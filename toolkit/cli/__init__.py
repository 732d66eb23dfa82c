"""The ``toolkit`` command: a thin typer layer over the library.

Each sub-module registers its commands on the shared app when imported; errors are
mapped to exit codes once, in ``_common.ToolkitGroup``. ``main`` imports only the module
of the command being run: typer builds every registered command's parameters on each
start-up (~25 ms for all of them), and the gate runs on every deploy.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any

__all__ = ["app", "main"]

# First argument -> the module that registers it. Anything else (--help, a typo) loads all.
_MODULE_OF = {
    "check-env": "core",
    "verify": "core",
    "fingerprint": "core",
    "card": "core",
    "diff": "core",
    "train": "train",
    "predict": "train",
    "registry": "registry",
    "image": "image",  # and "serve", for `image serve` (_ALSO)
    "keygen": "signing",
    "sign": "signing",
    "push": "oci",
    "pull": "oci",
    "data": "data",
    "upgrade-check": "upgrade",
    "retrain": "upgrade",
    "provenance": "provenance",
    "verify-provenance": "provenance",
    "sbom": "provenance",
    "init": "project",
    "lock": "project",
    "base": "project",
    "serve": "serve",
}


# Command groups whose sub-commands live in more than one module.
_ALSO = {"image": ("serve",)}


def main() -> None:
    """Console-script entry point."""
    _with_commands(sys.argv[1:2])()


def _with_commands(argv: list[str]) -> Any:
    first = argv[0] if argv else None
    modules = [_MODULE_OF[first], *_ALSO.get(first, ())] if first in _MODULE_OF else dict.fromkeys(_MODULE_OF.values())
    for module in modules:
        import_module(f"toolkit.cli.{module}")
    from toolkit.cli._common import app

    return app


def __getattr__(name: str) -> Any:
    # `from toolkit.cli import app` (tests, embedding) gets the app with every command.
    if name == "app":
        return _with_commands([])
    raise AttributeError(f"module 'toolkit.cli' has no attribute {name!r}")
