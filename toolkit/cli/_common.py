"""What every command shares: the app and the error-to-exit-code mapping (output helpers: ``_output``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from toolkit import env
from toolkit.cli._output import echo_err, err, out, plain, print_json, safe
from toolkit.errors import EXIT_INTERNAL, ToolkitError
from toolkit.source_date import source_date_epoch

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

INTERNAL_ERROR_EXIT = EXIT_INTERNAL  # the name the CLI used before errors.py held it
_BROKEN_PIPE_EXIT = 128 + 13  # killed by SIGPIPE, as the shell reports it
_TRUE = frozenset({"1", "true", "yes", "on"})


class ToolkitGroup(TyperGroup):
    """Turns a ``ToolkitError`` into one line on stderr and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            # Before any command imports numpy, whose import crashes on a bad value.
            source_date_epoch()
            return super().invoke(ctx)
        except ToolkitError as e:
            echo_err(f"error: {plain(e)}")
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
            echo_err(f"internal error: {type(e).__name__}: {plain(e)} (set {env.DEBUG}=1 for a traceback)")
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
    return os.environ.get(env.DEBUG, "").strip().lower() in _TRUE


def artifact_arg(value: str, registry: Path | None) -> Path:
    """ARTIFACT as given to a command: a path, or a registry reference resolved in ``registry``."""
    from toolkit.registry.refs import resolve_artifact

    return resolve_artifact(value, registry)
