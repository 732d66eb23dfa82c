"""The package tree is the architecture: an import graph built from the sources (not a picture) holds
the one-way rules, and the README's Layout section lists exactly the modules there are."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from _sources import PACKAGE, ROOT, nodes, parse, sources

# (importer, imported): a module in the first package never imports one in the second, at any
# depth (lazy imports inside functions count; `if TYPE_CHECKING:` blocks do not: they never run).
FORBIDDEN = [
    # The registry stores and checks, it does not score: comparing is toolkit.workflows.compare.
    ("toolkit.registry", "toolkit.training"),
    # Training never registers: delivering an artifact is toolkit.workflows.deliver.
    ("toolkit.training", "toolkit.registry"),
    # The Docker layer runs what it is given; a script's contract is toolkit.userscript.
    ("toolkit.docker", "toolkit.training"),
    # Only the CLI uses typer and rich's widgets; nothing below imports the CLI.
    *((pkg, "toolkit.cli") for pkg in ("toolkit.registry", "toolkit.training", "toolkit.upgrade", "toolkit.signing")),
    ("toolkit.workflows", "toolkit.cli"),
]
# Signing is below the artifact: the artifact's read points require signatures.
FORBIDDEN.append(("toolkit.signing", "toolkit.artifact"))


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Every module under ``root``, by dotted name (a package by its ``__init__``)."""
    found = {}
    for path, _ in sources(root):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The toolkit modules ``name`` imports when it runs (top level and inside functions)."""
    tree = parse(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_node(other)
                continue
            visit_node(child)

    def visit_node(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "toolkit")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            if base.split(".")[0] == "toolkit":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in known else base)
        visit(node)

    visit(tree)
    found.discard(name)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


# -- the rules --------------------------------------------------------------------------------


def test_the_graph_sees_lazy_imports_and_skips_type_checking_blocks(tmp_path: Path) -> None:
    pkg = tmp_path / "toolkit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toolkit import c\n"
        "def f():\n    from toolkit.sub import b\n"
    )
    (pkg / "sub" / "b.py").write_text("import toolkit.a\n")
    (pkg / "c.py").write_text("")
    graph = import_graph(pkg)
    assert graph["toolkit.a"] == {"toolkit.sub.b"}  # the lazy one counts, the TYPE_CHECKING one does not
    assert graph["toolkit.sub"] == {"toolkit.sub.b"}  # a relative import, resolved
    assert cycles(graph) == [["toolkit.a", "toolkit.sub.b"]]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_there_is_no_import_cycle(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN)
def test_dependencies_run_one_way(graph: dict[str, set[str]], importer: str, imported: str) -> None:
    assert any(_within(m, importer) for m in graph), f"no package {importer}: the rule would hold vacuously"
    broken = sorted(
        f"{m} -> {d}" for m, deps in graph.items() if _within(m, importer) for d in deps if _within(d, imported)
    )
    assert broken == []


def test_only_the_cli_imports_typer_and_rich() -> None:
    offenders = []
    for name, path in modules().items():
        if _within(name, "toolkit.cli"):
            continue
        for node in nodes(parse(path)):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in ("typer", "rich", "click")]
    assert offenders == []


# -- the README's tree ----------------------------------------------------------------------


def readme_tree(text: str) -> set[str]:
    """The module paths the README's Layout section lists (``toolkit/registry/index/sqlite.py``...)."""
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(toolkit/\n.*?)```", section, re.DOTALL)
    assert block is not None, "the Layout section holds no toolkit/ tree"
    paths: set[str] = set()
    stack: list[str] = []
    for line in block.group(1).splitlines():
        entry = line.split()[0]
        depth = (len(line) - len(line.lstrip(" "))) // 2
        del stack[depth:]
        if entry.endswith("/"):
            stack.append(entry.rstrip("/"))
        else:
            paths.add("/".join([*stack, entry]))
    return paths


def test_the_readme_layout_lists_exactly_the_modules_there_are() -> None:
    listed = readme_tree((ROOT / "README.md").read_text(encoding="utf-8"))
    actual = {p.relative_to(ROOT).as_posix() for p in modules().values()}
    assert sorted(actual - listed) == [], "modules the README's Layout does not list"
    assert sorted(listed - actual) == [], "modules the README's Layout lists that do not exist"


def test_the_readme_tree_parser_reads_nesting() -> None:
    text = "x\n## Layout\n\n```\ntoolkit/\n  a.py  one\n  sub/  two\n    b.py  three\n  c.py\n```\n## Next\n"
    assert readme_tree(text) == {"toolkit/a.py", "toolkit/sub/b.py", "toolkit/c.py"}


def test_the_public_names_are_the_library_objects_themselves() -> None:
    # `toolkit/__init__.py` re-exports lazily (PEP 562): each name must be the object its module
    # defines, not a copy. (tests/test_api.py tests the surface as a user sees it, from `toolkit` only.)
    import toolkit
    from toolkit.artifact import EnvironmentMismatchWarning, read_card, sign, verify
    from toolkit.card import ModelCard
    from toolkit.gate import Report
    from toolkit.prediction import Predictions
    from toolkit.registry.registry import Registry

    assert toolkit.Registry is Registry and toolkit.ModelCard is ModelCard and toolkit.Report is Report
    assert toolkit.Predictions is Predictions and toolkit.verify is verify and toolkit.read_card is read_card
    assert toolkit.sign is sign and toolkit.Difference.__module__ == "toolkit.errors"
    assert toolkit.EnvironmentMismatchWarning is EnvironmentMismatchWarning
