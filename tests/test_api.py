"""The public API: what ``import toolkit`` offers, and that it stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import toolkit


@pytest.mark.parametrize("name", toolkit.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(toolkit, name) is not None


def test_errors_and_the_warning_are_exported_with_their_exit_codes() -> None:
    assert issubclass(toolkit.EnvironmentMismatchWarning, UserWarning)
    expected = {
        toolkit.UsageError: 2,
        toolkit.DataError: 2,
        toolkit.IntegrityError: 3,
        toolkit.SignatureError: 3,
        toolkit.RegistryError: 4,
        toolkit.InvalidName: 4,
        toolkit.DockerError: 5,
        toolkit.RemoteError: 6,
        toolkit.EnvironmentMismatch: 1,
    }
    assert {cls: cls.exit_code for cls in expected} == expected


def test_import_toolkit_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, toolkit; toolkit.UsageError; toolkit.EnvironmentMismatchWarning; "
        "print(sorted(m for m in ('sklearn', 'joblib', 'pandas', 'numpy', 'rich', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_names_are_all_there_and_nothing_else() -> None:
    assert set(dir(toolkit)) == set(toolkit.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        toolkit.nope  # noqa: B018


def test_the_records_of_the_api_import_nothing_heavy() -> None:
    # The types a caller annotates with must not cost the gate's start-up: the card, the report.
    code = (
        "import sys, toolkit; toolkit.ModelCard; toolkit.Report; toolkit.Difference; toolkit.read_card; "
        "print(sorted(m for m in ('sklearn', 'joblib', 'pandas', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_this_file_uses_the_toolkit_only_as_a_user_would() -> None:
    # What is tested here is the public surface: `import toolkit`, or a name of toolkit.__all__
    # from it; never a module inside it (those are the unit tests' business).
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "toolkit" and a.name != "toolkit"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "toolkit":
            if node.module != "toolkit":
                found.append(node.module or "")
            else:
                found += [f"toolkit.{a.name}" for a in node.names if a.name not in toolkit.__all__]
    assert found == []
