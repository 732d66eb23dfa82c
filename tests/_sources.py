"""The toolkit's sources, parsed and walked once per test process. The rule tests (environment
variables, JSON loading, imports, CLI output) each look at every node of every module, and
parsing the package and walking its trees was nearly all of their time, paid once per test.
Callers only read the trees and node lists, never change them."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

__all__ = ["PACKAGE", "ROOT", "nodes", "parse", "sources"]

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolkit"


@functools.cache
def _parse(path: Path, stamp: tuple[int, int]) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def parse(path: Path) -> ast.Module:
    """``path``'s syntax tree, shared by every caller in this process while the file is unchanged."""
    stat = path.stat()
    return _parse(path, (stat.st_mtime_ns, stat.st_size))


@functools.cache
def nodes(tree: ast.Module) -> tuple[ast.AST, ...]:
    """Every node of ``tree`` in ``ast.walk``'s order: iterating the tuple is several times faster
    than walking again."""
    return tuple(ast.walk(tree))


def sources(root: Path = PACKAGE) -> list[tuple[Path, ast.Module]]:
    """Every module under ``root`` (``__pycache__`` aside), sorted by path, with its tree."""
    return [(path, parse(path)) for path in sorted(root.rglob("*.py")) if "__pycache__" not in path.parts]
