"""Which modules a pickle imports when loaded, found by reading opcodes, never by loading."""

from __future__ import annotations

import pickle
import pickletools
import sys
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement

from toolkit.fingerprint import _name_and_version, canonical_name

__all__ = ["distributions_for", "referenced_modules"]

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
)


def referenced_modules(obj: Any) -> tuple[str, ...]:
    """Modules named by GLOBAL/STACK_GLOBAL/INST opcodes when ``obj`` is pickled.

    joblib interleaves raw array bytes with pickle opcodes, so its file cannot be
    walked by pickletools; a plain pickle of the same object names the same classes
    and functions (plus joblib's own array wrapper, which the caller adds).
    """
    stream = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    modules: set[str] = set()
    strings: list[str | None] = []  # values pushed by string opcodes or memo gets, in order
    memo: dict[int, str | None] = {}
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in _STRING_OPS:
            strings.append(arg if isinstance(arg, str) else None)
        elif name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = strings[-1] if strings else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            strings.append(memo.get(arg))
        elif name in ("GLOBAL", "INST"):
            modules.add(str(arg).split(" ", 1)[0])
            strings.append(None)
        elif name == "STACK_GLOBAL":
            if len(strings) >= 2 and strings[-2]:
                modules.add(strings[-2])  # type: ignore[arg-type]
            strings.append(None)
        elif op.stack_after:
            # Any other push breaks the "module, name" pair a STACK_GLOBAL consumes.
            strings.append(None)
    return tuple(sorted(modules))


def distributions_for(modules: Iterable[str], installed: dict[str, str]) -> tuple[str, ...]:
    """The installed distributions that provide ``modules``, closed over their requirements."""
    tops = {m.split(".", 1)[0] for m in modules} - set(sys.stdlib_module_names)
    dists = {}
    for dist in metadata.distributions():
        name, _ = _name_and_version(dist)
        if name and canonical_name(name) in installed:
            dists.setdefault(canonical_name(name), dist)  # first on sys.path wins, as on import
    roots = {name for name, dist in dists.items() if _provides_any(dist, tops)}
    env = default_environment()
    closure: set[str] = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in closure or name not in dists:
            continue
        closure.add(name)
        for line in _requires(dists[name]):
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            # Only what is installed unconditionally: extras are not part of the import closure.
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(canonical_name(req.name))
    return tuple(sorted(closure))


def _provides_any(dist: metadata.Distribution, tops: set[str]) -> bool:
    # What packages_distributions() answers, for just the names we need: top_level.txt when
    # there is one, else a text search of RECORD's first column (no CSV parsing, no
    # PackagePath objects), which made it ~8x faster on a 40-package environment.
    declared = dist.read_text("top_level.txt")
    if declared:
        return not tops.isdisjoint(declared.split())
    record = dist.read_text("RECORD")
    if record is None:  # egg-info and the like: the slow, general way
        return any(str(f).split("/", 1)[0].removesuffix(".py") in tops for f in dist.files or ())
    text = "\n" + record
    return any(f"\n{top}{suffix}" in text for top in tops for suffix in ("/", ".py,", ".cpython-", ".abi3.", ".so,"))


def _requires(dist: metadata.Distribution) -> list[str]:
    # Requires-Dist lines of the metadata header; dist.requires would run the whole file
    # (long description included) through the email parser.
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    found = []
    for line in text.splitlines():
        if not line:
            break
        if line.startswith("Requires-Dist:"):
            found.append(line[len("Requires-Dist:") :].strip())
    return found
