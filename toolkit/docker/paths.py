"""Container paths back to host paths in what a container prints.

A container sees its mounts (``/artifact``, ``/out``, ``/work``, ``/in/N``); the person at the
host never does. ``PathMap`` rewrites each mount's prefix, where it starts a path (not inside
another word), to the host path it stands for; ``rewriting`` applies it to a stream of chunks,
line by line, so a path split across two chunks is still found.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["PathMap", "Rewriter"]

OutputCallback = Callable[[str, bytes], None]
# What a terminal could act on: a host path is echoed visibly, never as controls (see cli.plain).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_LINE_END = re.compile(rb"[\r\n]")


@dataclass(frozen=True, kw_only=True, slots=True)
class PathMap:
    """``{container prefix: host prefix}``, e.g. ``{"/artifact/": "models/credit/1.0.0/"}``.

    A host prefix of ``""`` means "relative to the host's working directory". With ``as_json``
    the replacements are JSON-escaped (the stream is a JSON document).
    """

    prefixes: Mapping[str, str]
    as_json: bool = False
    _pattern: re.Pattern[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prefixes:
            # Longest first; a prefix counts only at the start of a path, not inside /x/out/.
            alternatives = b"|".join(re.escape(p.encode()) for p in sorted(self.prefixes, key=len, reverse=True))
            object.__setattr__(self, "_pattern", re.compile(rb"(?<![\w./~-])(?:" + alternatives + rb")"))

    def rewrite(self, data: bytes) -> bytes:
        """``data`` with every container prefix replaced by its host prefix."""
        if self._pattern is None:
            return data
        return self._pattern.sub(lambda m: self._replacement(m.group().decode()), data)

    def rewrite_text(self, text: str) -> str:
        return self.rewrite(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")

    def _replacement(self, prefix: str) -> bytes:
        host = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", self.prefixes[prefix])
        if self.as_json:
            host = json.dumps(self.prefixes[prefix])[1:-1]
        return host.encode("utf-8", "surrogateescape")


class Rewriter:
    """An output callback that rewrites paths line by line before passing chunks on.

    Text after the last line end (``\\n`` or ``\\r``, which a terminal's progress redraws with) is
    held until the next chunk or ``flush``; call ``flush`` when the container has ended.
    """

    def __init__(self, paths: PathMap, on_output: OutputCallback | None, *, drop: frozenset[str] = frozenset()):
        self.paths, self.on_output, self.drop = paths, on_output, drop
        self._held: dict[str, bytes] = {}

    def __call__(self, stream: str, chunk: bytes) -> None:
        if self.on_output is None or stream in self.drop:
            return
        data = self._held.pop(stream, b"") + chunk
        ends = [m.end() for m in _LINE_END.finditer(data)]
        cut = ends[-1] if ends else 0
        if cut < len(data):
            self._held[stream] = data[cut:]
        if cut:
            self.on_output(stream, self.paths.rewrite(data[:cut]))

    def flush(self) -> None:
        for stream, data in list(self._held.items()):
            if data and self.on_output is not None:
                self.on_output(stream, self.paths.rewrite(data))
        self._held.clear()
