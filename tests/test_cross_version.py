"""A real second virtualenv with scikit-learn 1.2.2 saves a model; this runtime must refuse it.

The old stack is hash-pinned in tests/fixtures/old-stack.lock. The venv is built once
under .cache/ and reused while that lock is unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _stack_support import stack_python

import toolkit
from toolkit.artifact import read_card
from toolkit.errors import EnvironmentMismatch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OLD_SKLEARN = "1.2.2"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def old_stack_python() -> Path:
    return stack_python("old-stack.lock")


@pytest.fixture(scope="session")
def old_artifact(old_stack_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("old-stack")
    result = subprocess.run(
        [str(old_stack_python), str(FIXTURES / "save_with_old_stack.py"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "self-check True []" in result.stdout  # the toolkit itself runs on the old stack
    return out / "forest-1.0.0.joblib"


def test_card_records_the_old_stack(old_artifact: Path) -> None:
    card = read_card(old_artifact)
    assert card.environment.packages["scikit-learn"] == OLD_SKLEARN
    assert card.environment.packages["numpy"] == "1.24.4"
    assert "scikit-learn" in card.references.distributions


@pytest.mark.parametrize("policy", ["strict", "compatible"])
def test_check_env_exits_1_and_names_scikit_learn_with_both_versions(old_artifact: Path, policy: str) -> None:
    import sklearn

    result = subprocess.run(
        [sys.executable, "-m", "toolkit", "check-env", str(old_artifact), "--policy", policy],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if "scikit-learn" in line)
    assert OLD_SKLEARN in row and sklearn.__version__ in row


@pytest.mark.filterwarnings("ignore::UserWarning")  # scikit-learn's own InconsistentVersionWarning
def test_plain_joblib_load_fails_raw_where_toolkit_load_refuses_by_name(old_artifact: Path) -> None:
    import joblib
    import sklearn

    # What people hit today: the raw error of a mismatched library, deep inside unpickling.
    with pytest.raises(ValueError, match="node array from the pickle has an incompatible dtype"):
        joblib.load(old_artifact)
    # The guarded loader refuses before unpickling, and says why.
    with pytest.raises(EnvironmentMismatch) as info:
        toolkit.load(old_artifact)
    found = {d.name: (d.expected, d.actual) for d in info.value.differences}
    assert found["scikit-learn"] == (OLD_SKLEARN, sklearn.__version__)
    # Even when forced, the raw error never escapes: it becomes a named mismatch.
    with pytest.warns(UserWarning), pytest.raises(EnvironmentMismatch, match="unpickling failed: ValueError"):
        toolkit.load(old_artifact, allow_mismatch=True)


def test_verify_predictions_reports_that_it_cannot_load(old_artifact: Path) -> None:
    report = toolkit.check_env(old_artifact, verify_predictions=True)
    assert report.exit_code == 1
    assert report.predictions is not None and not report.predictions.ok
    assert "incompatible dtype" in (report.predictions.error or "")
