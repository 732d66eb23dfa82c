"""`make test`'s two pytest runs, as the Makefile spells them, select every test exactly once,
and `make test-unit` is a part of the parallel one, with nothing it must leave out.

Checked over every combination of the markers pyproject.toml declares (`--strict-markers`
refuses any other), so a test with any markers at all lands in exactly one part.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression

REPO = Path(__file__).resolve().parents[1]
_VARIABLE = re.compile(r"^([A-Z_]+) := (.*)$", re.M)
_SELECTION = re.compile(r'-m "([^"]*)"')


def _declared_markers(config: pytest.Config) -> list[str]:
    builtin = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings", "tryfirst", "trylast"}
    names = [line.split(":", 1)[0].split("(", 1)[0] for line in config.getini("markers")]
    return [name for name in names if name not in builtin]


def _selections(target: str) -> list[str]:
    """The -m expression of each pytest run in ``target``'s recipe, its make variables expanded."""
    text = (REPO / "Makefile").read_text()
    variables = dict(_VARIABLE.findall(text))
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe is not None, f"no {target} target in the Makefile"
    runs = [line for line in recipe.group(1).splitlines() if "-m pytest" in line]
    found = []
    for line in runs:
        match = _SELECTION.search(line)
        assert match is not None, f"{target}: a pytest run without -m selects everything: {line.strip()}"
        found.append(re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables[m.group(1)], match.group(1)))
    return found


def _selects(expression: str, markers: set[str]) -> bool:
    return Expression.compile(expression).evaluate(lambda name, **_: name in markers)


def _combinations(names: list[str]) -> list[set[str]]:
    return [set(c) for r in range(len(names) + 1) for c in itertools.combinations(names, r)]


def test_make_test_runs_every_test_exactly_once(pytestconfig: pytest.Config) -> None:
    parallel, serial = _selections("test")
    assert {"docker", "slow", "team", "oci", "process", "serve"} <= set(_declared_markers(pytestconfig))
    for markers in _combinations(_declared_markers(pytestconfig)):
        assert _selects(parallel, markers) != _selects(serial, markers), sorted(markers)


def test_make_test_unit_is_the_parallel_part_without_what_needs_a_service_or_a_server(
    pytestconfig: pytest.Config,
) -> None:
    (parallel, _), (unit,) = _selections("test"), _selections("test-unit")
    for markers in _combinations(_declared_markers(pytestconfig)):
        if _selects(unit, markers):
            assert _selects(parallel, markers), sorted(markers)
    # What needs the engine, PostgreSQL, the loopback registry, kills processes or serves.
    for marker in ("docker", "slow", "team", "oci", "process", "serve"):
        assert not _selects(unit, {marker}), marker
    assert _selects(unit, set())  # an unmarked test is a unit test
