"""Every environment variable is named once (toolkit/env.py), and the README's table lists exactly them."""

from __future__ import annotations

import ast
import re

from _sources import ROOT, nodes, sources

from toolkit import env

NAMES = {v.name for v in env.VARIABLES}
# The same spelling, another namespace: the Dockerfile's build argument, not the environment.
NOT_VARIABLES = {("toolkit/docker/jobs.py", "BASE_IMAGE")}


def _string_constants(tree: ast.Module) -> list[tuple[int, str]]:
    """Every string literal but docstrings (prose may name a variable; code may not spell one)."""
    docstrings = set()
    for node in nodes(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.add(id(value))
    return [
        (node.lineno, node.value)
        for node in nodes(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_module_spells_an_environment_variable_but_env_py() -> None:
    spelled = []
    for path, tree in sources():
        if path.name == "env.py" and path.parent.name == "toolkit":
            continue
        for line, value in _string_constants(tree):
            if (path.relative_to(ROOT).as_posix(), value) in NOT_VARIABLES:
                continue
            if value in NAMES or value in env.EXTERNAL or re.fullmatch(r"TOOLKIT_[A-Z0-9_]+", value):
                spelled.append(f"{path.relative_to(ROOT)}:{line}: {value}")
    assert spelled == []


def test_each_name_is_listed_once() -> None:
    names = [v.name for v in env.VARIABLES] + list(env.EXTERNAL)
    assert len(names) == len(set(names))
    assert all(v.reads or v.sets for v in env.VARIABLES)


def readme_variables(text: str) -> list[str]:
    """The names in the first column of the README's environment table."""
    section = text.split("\n## Environment and Make variables\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("| variable |", 1)[1].split("\n\n", 1)[0]
    names = []
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        # `PGPASSFILE` (`~/.pgpass`): only the backticked words that are names, not paths.
        names += [n for n in re.findall(r"`([^`]+)`", first) if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)]
    return names


def test_the_readme_table_lists_exactly_the_variables() -> None:
    listed = readme_variables((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(listed) == len(set(listed)), "a variable the table lists twice"
    expected = NAMES | set(env.EXTERNAL)
    assert sorted(expected - set(listed)) == [], "variables the README does not list"
    assert sorted(set(listed) - expected) == [], "variables the README lists that toolkit/env.py does not name"


def test_the_table_parser_reads_names_not_paths() -> None:
    text = (
        "\n## Environment and Make variables\n\n| variable | read by | meaning |\n| --- | --- | --- |\n"
        "| `A_B`, `C` (`~/.c`) | x | y |\n| `D` | x | `E` is not in the first column |\n\n| Make variable |\n"
    )
    assert readme_variables(text) == ["A_B", "C", "D"]
