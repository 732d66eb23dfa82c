"""A lock is data, not pip options: the one rule for what a lock file may hold.

A lock reaches pip (``pip download -r``, ``pip install -r`` in the image build), and pip obeys
whatever options it finds there: ``--index-url http://user:pw@host/`` sends credentials,
``-r /etc/hostname`` sends a local file's content as a package name. So every lock the toolkit
runs (a candidate lock for ``upgrade-check``, a card's embedded lock for ``image rebuild``,
what ``toolkit lock`` writes) is checked here first: only ``name==version`` requirements, each
with at least one ``--hash``, plus comments, blank lines and backslash continuations. Anything
else (an option line, a URL, a path, a requirement without a hash) is one UsageError (exit 2)
naming the line, never echoing it (it may hold credentials).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.errors import UsageError

__all__ = ["Pin", "parse_lock"]

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REQUIREMENT = re.compile(
    rf"(?P<name>{_NAME})(?:\[(?P<extras>[A-Za-z0-9._,\s-]*)\])?\s*==\s*(?P<version>[A-Za-z0-9.+!_-]+)"
    r"(?:\s*;(?P<marker>(?:(?!\s--).)+?))?"
    r"(?P<hashes>(?:\s+--hash[=\s]sha256:[0-9a-f]{64})+)\s*\Z"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Pin:
    """One locked requirement."""

    name: str  # canonical
    version: str
    hashes: tuple[str, ...]
    marker: str | None
    line: int  # where it starts, 1-based


def parse_lock(text: str, *, where: str) -> tuple[Pin, ...]:
    """The pins of a lock's ``text``, or UsageError for the first line that is not a pin.

    Raises: UsageError (an option line, a URL or path, a pin without a hash, a bad version
    or marker, no pins at all).
    """
    from packaging.markers import InvalidMarker, Marker
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    pins: list[Pin] = []
    for number, logical in _logical_lines(text):
        if not logical:
            continue
        m = _REQUIREMENT.match(logical)
        if m is None:
            raise UsageError(
                f"{where}: line {number}: {_why(logical)}; a lock holds only name==version lines with --hash"
            )
        try:
            Version(m["version"])
        except InvalidVersion:
            raise UsageError(f"{where}: line {number}: {m['name']}=={m['version']} is not a valid version") from None
        marker = m["marker"].strip() if m["marker"] else None
        if marker is not None:
            try:
                Marker(marker)
            except InvalidMarker:
                raise UsageError(f"{where}: line {number}: {m['name']} has an invalid environment marker") from None
        hashes = tuple(re.findall(r"sha256:([0-9a-f]{64})", m["hashes"]))
        pins.append(
            Pin(name=canonicalize_name(m["name"]), version=m["version"], hashes=hashes, marker=marker, line=number)
        )
    if not pins:
        raise UsageError(f"{where}: no pinned requirements (name==version with --hash) found")
    return tuple(pins)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) per logical line: comments dropped, continuations joined."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending:
            start = number
        if line.startswith("#") and not pending:
            continue
        # A comment after content ends the content (pip's rule: " #" starts a comment).
        if " #" in line:
            line = line.split(" #", 1)[0].rstrip()
        elif line.startswith("#"):
            line = ""
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        out.append((start, " ".join(p for p in pending if p)))
        pending = []
    if pending:
        out.append((start, " ".join(p for p in pending if p)))
    return out


def _why(logical: str) -> str:
    first = logical.split()[0]
    if first.startswith("-"):
        option = first.split("=", 1)[0]
        return f"{option} is a pip option (not passed on)" if len(option) <= 40 else "a pip option (not passed on)"
    if "://" in logical or "@" in logical:
        return "a URL or direct reference"
    if "/" in first or first.startswith(".") or first.endswith((".whl", ".tar.gz", ".zip")):
        return "a path"
    if "==" in logical and "--hash" not in logical:
        return "a requirement without --hash"
    return "not a name==version requirement"
