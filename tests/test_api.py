"""The public API: what ``import toolkit`` offers, and that it stays light."""

from __future__ import annotations

import subprocess
import sys

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
    from toolkit.artifact import EnvironmentMismatchWarning

    assert EnvironmentMismatchWarning is toolkit.EnvironmentMismatchWarning


def test_import_toolkit_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, toolkit; toolkit.UsageError; toolkit.EnvironmentMismatchWarning; "
        "print(sorted(m for m in ('sklearn', 'joblib', 'pandas', 'numpy', 'rich', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_names_are_the_library_objects_themselves() -> None:
    from toolkit.artifact import read_card, sign, verify
    from toolkit.card import ModelCard
    from toolkit.gate import Report
    from toolkit.prediction import Predictions
    from toolkit.registry.registry import Registry

    assert toolkit.Registry is Registry and toolkit.ModelCard is ModelCard and toolkit.Report is Report
    assert toolkit.Predictions is Predictions and toolkit.verify is verify and toolkit.read_card is read_card
    assert toolkit.sign is sign and toolkit.Difference.__module__ == "toolkit.errors"
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
