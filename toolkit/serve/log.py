"""The server's log: one line per event on stderr, as text or as one JSON object.

A log line carries no control characters (card fields and refusal reasons are escaped as the
CLI escapes them), so a hostile card cannot forge log lines.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO

__all__ = ["FORMATS", "Log"]

FORMATS = ("text", "json")
# As toolkit.cli._common.plain: controls and the Unicode characters that can fake a line.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


class Log:
    """Writes events; safe from any thread."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.format = fmt
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()

    def event(self, event: str, message: str, **fields: Any) -> None:
        if self.format == "json":
            record = {"ts": _now(), "event": event, "message": message, **fields}
            line = json.dumps(record, sort_keys=False, allow_nan=False, default=str)
        else:
            line = f"toolkit serve: {_plain(message)}"
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plain(text: str) -> str:
    return _UNSAFE.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )
