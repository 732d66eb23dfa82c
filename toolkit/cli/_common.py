"""What every command shares: the app, error-to-exit-code mapping, consoles."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperGroup

from toolkit.errors import ToolkitError
from toolkit.source_date import source_date_epoch

if TYPE_CHECKING:
    from rich.text import Text

__all__ = [
    "INTERNAL_ERROR_EXIT",
    "ToolkitGroup",
    "app",
    "artifact_arg",
    "debug_enabled",
    "err",
    "out",
    "plain",
    "print_json",
    "safe",
]

# Unexpected errors must never exit 0 or 1 (1 means "the gate says no").
INTERNAL_ERROR_EXIT = 70
_PIPED_WIDTH = 160
_BROKEN_PIPE_EXIT = 128 + 13  # killed by SIGPIPE, as the shell reports it
_TRUE = frozenset({"1", "true", "yes", "on"})
# C0 and C1 controls, DEL, and the Unicode format/separator characters a terminal or a reader
# can be fooled by (bidi overrides, zero-width joiners, line/paragraph separators).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


class _LazyConsole:
    """A rich Console made on first use: importing rich costs ~25 ms that the gate's
    common path (one line of output) should not pay at start-up."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            options = dict(self._options)
            stream = sys.stderr if options.get("stderr") else sys.stdout
            if "COLUMNS" not in os.environ and not stream.isatty():
                # Piped or in CI: rich would assume 80 columns and squeeze tables; logs are wide.
                options["width"] = _PIPED_WIDTH
            self._console = Console(**options)
        return getattr(self._console, name)


out: Any = _LazyConsole(highlight=False, soft_wrap=True)
err: Any = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)


class ToolkitGroup(TyperGroup):
    """Turns a ``ToolkitError`` into one line on stderr and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            # Before any command imports numpy, whose import crashes on a bad value.
            source_date_epoch()
            return super().invoke(ctx)
        except ToolkitError as e:
            err.print(f"error: {plain(e)}", markup=False)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:
            # `toolkit ... | head`: the reader left. Exit as a shell would, without a message
            # (and without Python's own complaint when it flushes stdout at exit).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(_BROKEN_PIPE_EXIT) from None
        except Exception as e:
            # Exit, Abort and usage errors belong to typer/click, which turn them into exit codes.
            if _is_cli_control_flow(e) or debug_enabled():
                raise
            err.print(
                f"internal error: {type(e).__name__}: {plain(e)} (set TOOLKIT_DEBUG=1 for a traceback)", markup=False
            )
            raise typer.Exit(INTERNAL_ERROR_EXIT) from None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # click (8.2+) already suggests close matches for a mistyped command; typer's own
        # suggestion on top of it printed "Did you mean 'registry'?" twice.
        return click.Group.resolve_command(self, ctx, args)


app = typer.Typer(
    cls=ToolkitGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train, save, gate and register scikit-learn pipelines reproducibly.",
)


def _print_version(value: bool) -> None:
    if value:
        from toolkit import __version__

        typer.echo(f"toolkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Train, save, gate and register scikit-learn pipelines reproducibly."""


def _is_cli_control_flow(e: BaseException) -> bool:
    return type(e).__module__.split(".", 1)[0] in ("typer", "click")


def debug_enabled() -> bool:
    """Whether ``TOOLKIT_DEBUG`` asks for tracebacks: 1, true, yes or on (any case); 0 or "" do not."""
    return os.environ.get("TOOLKIT_DEBUG", "").strip().lower() in _TRUE


def plain(value: object) -> str:
    """``value`` as one line of text a terminal cannot act on: control characters become visible escapes.

    ESC (the start of every colour, cursor, clear-screen or OSC-8 link sequence) becomes
    ``\\x1b``, a newline ``\\n``, and so on, so a card field or a ``--reason`` can neither
    drive the terminal nor forge extra lines of output.
    """
    text = str(value)
    if _UNSAFE.search(text) is None:
        return text  # the common case costs one scan
    return _UNSAFE.sub(_escape_char, text)


def safe(value: object) -> Text:
    """``value`` for a rich table or print: ``plain`` text that rich never parses as markup."""
    from rich.text import Text

    return Text(plain(value))


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (
        f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
    )


def artifact_arg(value: str, registry: Path | None) -> Path:
    """ARTIFACT as given to a command: a path, or a registry reference resolved in ``registry``."""
    from toolkit.registry.refs import resolve_artifact

    return resolve_artifact(value, registry)


def print_json(obj: Any) -> None:
    """The one JSON value a ``--json`` command prints on stdout."""
    typer.echo(json.dumps(obj, indent=2, allow_nan=False))
