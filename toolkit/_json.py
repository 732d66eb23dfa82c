"""The one strict JSON loader, for every document the toolkit did not just write itself.

Cards, OCI manifests, signature bundles and their payloads, token answers, what a container
leaves behind: all are hostile until checked, and Python's ``json.loads`` is lenient on purpose.
Here a document must be UTF-8, have no duplicate key (two parsers would read two different
documents), no ``NaN``/``Infinity`` (not JSON, and not a number any consumer agrees on), and no
nesting deeper than ``max_depth`` (checked without recursion). Each caller turns ``JsonError``
into its own error class, with its own "where".
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DEFAULT_MAX_DEPTH", "JsonError", "loads"]

DEFAULT_MAX_DEPTH = 64


class JsonError(ValueError):
    """Why a document is not strict JSON: one line, without the caller's "where"."""


def loads(data: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``data`` strictly. Raises: JsonError (one line saying what is wrong, and where in it)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonError(f"not UTF-8 ({e.reason} at byte {e.start})") from e
    else:
        text = data
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except JsonError:
        raise
    except json.JSONDecodeError as e:
        raise JsonError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except RecursionError:
        raise JsonError(f"nested deeper than {max_depth} levels") from None
    too_deep = _too_deep(value, max_depth)
    if too_deep is not None:
        raise JsonError(f"'{too_deep}' is nested deeper than {max_depth} levels")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise JsonError(f"{name} is not JSON")


def _too_deep(value: Any, limit: int) -> str | None:
    """The path of the first value nested deeper than ``limit``, or None; iterative, so a hostile
    document cannot exhaust the stack here. The walk visits containers only and builds no path
    until one is too deep: it runs on every request body a server parses."""
    if limit < 0:
        return _path_deeper_than(value, limit)
    todo: list[tuple[Any, int]] = [(value, 0)] if isinstance(value, (dict, list)) else []
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item
        depth += 1  # the children's level: a scalar there counts as much as a container
        if depth > limit and children:
            return _path_deeper_than(value, limit)
        todo.extend((v, depth) for v in children if isinstance(v, (dict, list)))
    return None


def _path_deeper_than(value: Any, limit: int) -> str:
    todo: list[tuple[Any, str, int]] = [(value, "", 0)]
    while todo:
        item, path, depth = todo.pop()
        if depth > limit:
            return path if len(path) <= 80 else path[:77] + "..."
        if isinstance(item, dict):
            todo.extend((v, f"{path}.{k}" if path else str(k), depth + 1) for k, v in item.items())
        elif isinstance(item, list):
            todo.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
    raise AssertionError("no value deeper than the limit")  # _too_deep found one
