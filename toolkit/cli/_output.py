"""How the CLI prints: the two consoles, text a terminal cannot act on, and the one ``--json`` shape.

Every command prints through these, so three rules hold everywhere: nothing read from a card,
a registry or the network reaches the terminal as control characters (``plain``) or as rich
markup (``markup``, ``safe``, ``echo``); ``--json`` prints one JSON value on stdout
(``print_json``), and a failure under ``--json`` is one shape (``json_error``).
rich is imported on first use only: the gate's common path prints one line.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

import typer

from toolkit import env

if TYPE_CHECKING:
    from rich.text import Text

    from toolkit.errors import ToolkitError

__all__ = ["BuildProgress", "echo", "echo_err", "err", "json_error", "markup", "out", "plain", "print_json", "safe"]

_PIPED_WIDTH = 160
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
            if env.COLUMNS not in os.environ and not stream.isatty():
                # Piped or in CI: rich would assume 80 columns and squeeze tables; logs are wide.
                options["width"] = _PIPED_WIDTH
            self._console = Console(**options)
        return getattr(self._console, name)


out: Any = _LazyConsole(highlight=False, soft_wrap=True)
err: Any = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)


def echo(text: object) -> None:
    """Print ``text`` on stdout as it is: rich parses no markup in it (the caller made it ``plain``
    where it holds what it read)."""
    out.print(text, markup=False)


def echo_err(text: object) -> None:
    """``echo`` on stderr: notes, progress and the one error line."""
    err.print(text, markup=False)


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


def markup(value: object) -> str:
    """``value`` to embed in a rich markup string (``f"[bold]{markup(card.name)}[/]"``): ``plain``,
    with rich's markup escaped, so a card's ``[link=...]`` stays text."""
    from rich.markup import escape

    return escape(plain(value))


def print_json(obj: Any) -> None:
    """The one JSON value a ``--json`` command prints on stdout."""
    typer.echo(json.dumps(obj, indent=2, allow_nan=False))


def json_error(e: ToolkitError, **context: Any) -> None:
    """A failure under ``--json``, in its one shape: ``{"ok": false, "exit_code", ...context, "error"}``."""
    print_json({"ok": False, "exit_code": e.exit_code, **context, "error": str(e)})


class BuildProgress:
    """An image build's progress on stderr, for ``image build`` and ``image rebuild`` alike.

    ``-v``: every line the build prints. Otherwise the host's own stages (the wheel download,
    each system package) are one line each, and on a terminal the current wheel (``wheel n/N``)
    and the current Dockerfile step are one line, redrawn; in a log or a pipe those are dropped,
    so a log gets one line per stage. ``quiet``: nothing. Call :meth:`done` at the end.
    """

    def __init__(self, *, quiet: bool, verbose: bool) -> None:
        self._quiet, self._verbose = quiet, verbose
        self._tty = sys.stderr.isatty()
        self._drawn = False

    def __call__(self, text: str) -> None:
        if self._quiet:
            return
        if self._verbose:
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        for raw in text.splitlines():
            line = plain(raw.strip())
            if line.startswith(("downloading ", "system package ")):
                self._clear()
                sys.stderr.write(f"  {line}\n")
            elif self._tty and line.startswith(("wheel ", "Step ")):
                sys.stderr.write("\r\x1b[2K  " + line[:100])
                self._drawn = True
        sys.stderr.flush()

    def done(self) -> None:
        self._clear()
        sys.stderr.flush()

    def _clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r\x1b[2K")
            self._drawn = False
