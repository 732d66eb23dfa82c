"""The CLI's output rules, in one module (toolkit/cli/_output.py), and nowhere else."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from _sources import nodes, parse

from toolkit.cli import _output
from toolkit.cli.train import print_result
from toolkit.errors import IntegrityError

CLI = Path(__file__).resolve().parents[1] / "toolkit" / "cli"


def test_a_card_cannot_inject_markup_into_the_training_summary(capsys: pytest.CaptureFixture[str]) -> None:
    # A card is input: its algorithm (any class name a script's pipeline ends in) and its metric
    # names must print as text. An unmatched closing tag made rich raise before (exit 70).
    card = SimpleNamespace(
        name="iris",
        version="1.0.0",
        algorithm="Evil[/bold][link=https://x.example]",
        data=SimpleNamespace(source="builtin:iris", sha256="0" * 64),
        artifact=SimpleNamespace(sha256="1" * 64),
    )
    metrics = {"test": {"acc[red]": 0.5}, "cv": {"acc[red]": 0.4, "acc[red]_std": 0.1}}
    print_result(card, metrics, Path("out/iris-1.0.0.joblib"))
    shown = capsys.readouterr().out
    assert "iris 1.0.0 Evil[/bold][link=https://x.example] on builtin:iris" in shown
    assert "acc[red] 0.500" in shown and "acc[red] 0.400 ± 0.100" in shown


def test_markup_also_makes_control_characters_visible() -> None:
    assert _output.markup("a\x1b[2Jb[x]") == "a\\x1b[2Jb\\[x]"


def test_a_json_error_is_one_shape(capsys: pytest.CaptureFixture[str]) -> None:
    _output.json_error(IntegrityError("bad"), artifact="a.joblib")
    assert json.loads(capsys.readouterr().out) == {"ok": False, "exit_code": 3, "artifact": "a.joblib", "error": "bad"}


def _calls(tree: ast.Module) -> list[ast.Call]:
    return [n for n in nodes(tree) if isinstance(n, ast.Call)]


def test_only_the_output_module_spells_markup_false_or_the_error_object() -> None:
    found = []
    for path in sorted(CLI.glob("*.py")):
        if path.name == "_output.py":
            continue
        tree = parse(path)
        for call in _calls(tree):
            for kw in call.keywords:
                if kw.arg == "markup" and isinstance(kw.value, ast.Constant) and kw.value.value is False:
                    found.append(f"{path.name}:{call.lineno}: markup=False")
        for node in nodes(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if {"ok", "exit_code", "error"} <= keys:
                    found.append(f"{path.name}:{node.lineno}: a hand-made --json error object")
    assert found == []
