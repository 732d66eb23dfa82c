"""The gate and read-only commands through the real CLI: exit codes and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from toolkit.artifact import artifact_paths
from toolkit.card import card_from_dict
from toolkit.cli import app


def _tamper_env(artifact: Path, package: str, version: str) -> None:
    path = artifact_paths(artifact).card_json
    d = json.loads(path.read_text())
    d["environment"]["packages"][package] = version
    path.write_text(json.dumps(d))
    # Keep the .card.md the card's rendering, or verify refuses the edit as tampering first.
    artifact_paths(artifact).card_md.write_text(card_from_dict(d).to_markdown())


def _run(runner: CliRunner, *args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_check_env_match_exits_0(runner: CliRunner, artifact: Path) -> None:
    result = _run(runner, "check-env", artifact)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("MATCH iris 1.0.0")


def test_check_env_mismatch_exits_1_and_names_package_and_versions(runner: CliRunner, artifact: Path) -> None:
    _tamper_env(artifact, "scikit-learn", "1.2.2")
    result = _run(runner, "check-env", artifact)
    assert result.exit_code == 1
    assert result.output.startswith("MISMATCH")
    row = next(line for line in result.output.splitlines() if "scikit-learn" in line)
    assert "1.2.2" in row


def test_check_env_json_is_one_object(runner: CliRunner, artifact: Path) -> None:
    _tamper_env(artifact, "numpy", "1.24.4")
    result = _run(runner, "check-env", artifact, "--json", "--policy", "compatible")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["exit_code"] == 1 and report["policy"] == "compatible"
    assert {"field": "package", "name": "numpy", "expected": "1.24.4"}.items() <= report["differences"][0].items()


def test_check_env_integrity_failure_exits_3(runner: CliRunner, artifact: Path) -> None:
    artifact.write_bytes(b"garbage")
    result = _run(runner, "check-env", artifact)
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    result = _run(runner, "check-env", artifact, "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["exit_code"] == 3


def test_check_env_verify_predictions(runner: CliRunner, artifact: Path) -> None:
    result = _run(runner, "check-env", artifact, "--verify-predictions", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["predictions"]["ok"] is True


@pytest.mark.parametrize("args", [["check-env"], ["check-env", "x.joblib", "--policy", "lenient"], ["nonsense"]])
def test_usage_errors_exit_2(runner: CliRunner, args: list[str]) -> None:
    assert _run(runner, *args).exit_code == 2


def test_verify_and_card(runner: CliRunner, artifact: Path) -> None:
    result = _run(runner, "verify", artifact)
    assert result.exit_code == 0 and result.output.startswith("OK iris 1.0.0 sha256 ")
    result = _run(runner, "card", artifact, "--format", "json")
    assert result.exit_code == 0
    assert result.stdout.encode() == artifact_paths(artifact).card_json.read_bytes()
    assert _run(runner, "card", artifact).stdout.startswith("# Model card: iris 1.0.0")
    artifact_paths(artifact).card_json.write_text("{")
    assert _run(runner, "verify", artifact).exit_code == 3


def test_fingerprint_json(runner: CliRunner) -> None:
    result = _run(runner, "fingerprint", "--json")
    assert result.exit_code == 0
    fp = json.loads(result.stdout)
    assert fp["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert "scikit-learn" in fp["packages"]


def test_diff_shows_environment_and_metrics(runner: CliRunner, make_artifact: Any, tmp_path: Path) -> None:
    a = make_artifact(version="1.0.0", metrics={"test": {"accuracy": 0.9}})
    b = make_artifact(version="1.1.0", metrics={"test": {"accuracy": 0.95}})
    _tamper_env(b, "numpy", "1.24.4")
    result = _run(runner, "diff", a, b, "--json")
    assert result.exit_code == 1  # they differ
    d = json.loads(result.stdout)
    assert d["metrics"] == [{"metric": "test.accuracy", "a": 0.9, "b": 0.95}]
    assert [e["name"] for e in d["environment"]] == ["numpy"]
    assert d["identical_pickles"] is True and d["differ"] is True
    human = _run(runner, "diff", a, b)
    assert human.exit_code == 1
    assert "+0.0500" in human.output
    assert "Pickles are byte-identical" in human.output


def test_diff_of_the_same_model_twice_exits_0(runner: CliRunner, make_artifact: Any) -> None:
    a = make_artifact(version="1.0.0", metrics={"test": {"accuracy": 0.9}})
    b = make_artifact(version="2.0.0", metrics={"test": {"accuracy": 0.9}})
    result = _run(runner, "diff", a, b)
    assert result.exit_code == 0, result.output
    assert "Pickles are byte-identical" in result.output
    assert "Same algorithm, hyperparameters, data and preprocessing." in result.output
    assert "Environments are identical." in result.output


def test_diff_names_algorithm_hyperparameters_and_data(
    runner: CliRunner, make_artifact: Any, iris_frame: tuple[Any, Any]
) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import toolkit
    from toolkit.card import DataInfo

    X, y = iris_frame
    a = make_artifact(version="1.0.0")
    b = a.with_name("iris-rf-1.0.0.joblib")
    forest = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5, random_state=0)).fit(X, y)
    toolkit.save(forest, b, name="iris", version="1.0.1", probe=X.head(8), data=DataInfo(sha256="ab" * 32))
    d = json.loads(_run(runner, "diff", a, b, "--json").stdout)
    fields = {c["field"]: (c["a"], c["b"]) for c in d["model"]}
    assert fields["algorithm"] == ("LogisticRegression", "RandomForestClassifier")
    assert fields["params.n_estimators"] == (None, "5")
    assert fields["data.sha256"] == (None, "ab" * 32)
    assert d["identical_pickles"] is False
    human = _run(runner, "diff", a, b)
    assert human.exit_code == 1
    assert "Pickles differ" in human.output
    assert "params.n_estimators" in human.output


def test_check_env_never_imports_sklearn_and_a_traceback_never_escapes(artifact: Path) -> None:
    code = (
        "import sys; from toolkit.cli import app\n"
        f"try: app(['check-env', {str(artifact)!r}])\n"
        "except SystemExit as e: code = e.code\n"
        "print(code, 'sklearn' in sys.modules, 'joblib' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 False False False"


def test_check_env_by_registry_reference_stays_light(artifact: Path, tmp_path: Path) -> None:
    from toolkit.registry import Registry

    with Registry(tmp_path / "models") as reg:
        reg.add(artifact)
        reg.promote("iris", "1.0.0")
    code = (
        "import sys; from toolkit.cli import app\n"
        f"try: app(['check-env', 'iris@production', '--registry', {str(tmp_path / 'models')!r}])\n"
        "except SystemExit as e: code = e.code\n"
        "print(code, 'sklearn' in sys.modules, 'joblib' in sys.modules, 'pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 False False False"
    assert "MATCH iris 1.0.0" in done.stdout


def test_python_dash_m_toolkit_help() -> None:
    result = subprocess.run([sys.executable, "-m", "toolkit", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "check-env" in result.stdout


@pytest.mark.parametrize(
    ("value", "traceback"),
    [("0", False), ("", False), ("no", False), ("1", True), ("TRUE", True), ("yes", True), ("On", True)],
)
def test_toolkit_debug_shows_a_traceback_only_when_true(
    runner: CliRunner, artifact: Path, monkeypatch: pytest.MonkeyPatch, value: str, traceback: bool
) -> None:
    import toolkit.gate

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(toolkit.gate, "check_env", broken)
    monkeypatch.setenv("TOOLKIT_DEBUG", value)
    result = _run(runner, "check-env", artifact)
    if traceback:  # the exception goes up to the caller (python -m toolkit prints its traceback)
        assert isinstance(result.exception, RuntimeError)
        assert result.exit_code != 70
    else:
        assert result.exit_code == 70
        assert result.stderr == "internal error: RuntimeError: a bug (set TOOLKIT_DEBUG=1 for a traceback)\n"


def test_verify_json(runner: CliRunner, artifact: Path) -> None:
    ok = _run(runner, "verify", artifact, "--json")
    assert ok.exit_code == 0
    report = json.loads(ok.stdout)
    assert report["ok"] is True and report["name"] == "iris" and len(report["sha256"]) == 64
    with artifact.open("r+b") as f:
        f.seek(10)
        byte = f.read(1)
        f.seek(10)
        f.write(bytes([byte[0] ^ 1]))
    bad = _run(runner, "verify", artifact, "--json")
    assert bad.exit_code == 3
    assert json.loads(bad.stdout)["ok"] is False


def test_cli_basics_version_short_help_and_one_suggestion(runner: CliRunner) -> None:
    import toolkit

    # In-process: these are the app's own behaviour (the entry point's own process is
    # test_python_dash_m_toolkit_help's, and the installed script's is the completion below).
    version = _run(runner, "--version")
    assert (version.exit_code, version.stdout) == (0, f"toolkit {toolkit.__version__}\n")
    short = _run(runner, "-h")
    assert short.exit_code == 0 and "check-env" in short.stdout
    assert _run(runner, "registry", "-h").exit_code == 0
    typo = _run(runner, "registri")
    assert typo.exit_code == 2
    assert typo.stderr.count("Did you mean") == 1 and "'registry'" in typo.stderr
    assert "--install-completion" in short.stdout
    # Completion itself, as the installed script asks for it (no shell detection involved).
    toolkit_bin = Path(sys.executable).with_name("toolkit")
    env = {**os.environ, "_TOOLKIT_COMPLETE": "complete_bash", "COMP_WORDS": "toolkit registry pro", "COMP_CWORD": "2"}
    completion = subprocess.run([str(toolkit_bin)], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert (completion.returncode, completion.stdout.split()) == (0, ["promote"])


def test_check_env_prints_card_values_as_escaped_text(runner: CliRunner, artifact: Path) -> None:
    hostile = "1.0\x1b[2J\x1b]8;;http://evil.example/\x07x\x1b]8;;\x07[red]y[/]"
    _tamper_env(artifact, "scikit-learn", hostile)
    result = _run(runner, "check-env", artifact)
    assert result.exit_code == 1
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    row = next(line for line in result.stdout.splitlines() if line.startswith("scikit-learn"))
    assert "1.0\\x1b[2J\\x1b]8;;http://evil.example/\\x07x\\x1b]8;;\\x07[red]y[/]" in row


def test_check_env_text_lists_every_difference_one_per_line(runner: CliRunner, artifact: Path) -> None:
    # The text table is built in one pass (no rich layout): 100,000 rows cost about what --json
    # costs (benchmarks/bench_check_env_text.py); here: every difference is there, whole.
    path = artifact_paths(artifact).card_json
    d = json.loads(path.read_text())
    d["environment"]["packages"].update({f"zz-pkg-{i:05d}": f"9.{i}.0-{'x' * 60}" for i in range(2000)})
    path.write_text(json.dumps(d))
    artifact_paths(artifact).card_md.write_text(card_from_dict(d).to_markdown())
    result = _run(runner, "check-env", artifact)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1] == "2000 difference(s)"
    rows = [line for line in lines if line.startswith("zz-pkg-")]
    assert len(rows) == 2000
    assert rows[1999].split() == ["zz-pkg-01999", f"9.1999.0-{'x' * 60}", "(absent)"]  # never truncated
