"""The one strict JSON loader (toolkit/_json.py), and that it is the only one."""

from __future__ import annotations

import ast

import pytest
from _sources import ROOT, nodes, sources

from toolkit import _json
from toolkit.errors import IntegrityError
from toolkit.oci.manifest import parse_manifest


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": [Infinity]}', "Infinity is not JSON"),
        (b'{"a": -Infinity}', "-Infinity is not JSON"),
        (b'{"a": "\xff"}', "not UTF-8 (invalid start byte at byte 7)"),
        (b'{"a": }', "not valid JSON (Expecting value at line 1 column 7)"),
        (b"[" * 66 + b"]" * 66, "'[0][0][0]"),  # the root is level 0: 65 lists nest 64 deep
        (b'{"a": ' * 66 + b"1" + b"}" * 66, "'a.a.a."),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
    ],
)
def test_what_the_strict_loader_refuses(raw: bytes, message: str) -> None:
    with pytest.raises(_json.JsonError) as caught:
        _json.loads(raw)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_what_it_accepts() -> None:
    assert _json.loads(b'{"a": [1, 2.5, "x", null, true], "b": {"c": {}}}') == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": {}},
    }
    assert _json.loads("[" * 65 + "]" * 65) is not None  # exactly the limit
    assert _json.loads("[[1]]", max_depth=2) == [[1]]
    with pytest.raises(_json.JsonError, match=r"'\[0\]\[0\]' is nested deeper than 1 levels"):
        _json.loads("[[1]]", max_depth=1)


def test_a_manifest_with_nan_is_refused() -> None:
    # The manifest parser once took NaN (json.loads does); it goes through the strict loader now.
    with pytest.raises(IntegrityError, match=r"manifest is not strict JSON \(NaN is not JSON\)"):
        parse_manifest(b'{"schemaVersion": 2, "size": NaN}')


def test_no_module_parses_json_but_the_strict_loader() -> None:
    lenient = []
    for path, tree in sources():
        if path == ROOT / "toolkit" / "_json.py":
            continue
        for node in nodes(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("loads", "load")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "json"
            ):
                lenient.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert lenient == []
