"""Registry references (NAME@production, NAME@staging, NAME:X.Y.Z) wherever a command takes ARTIFACT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _registry_support import clone_artifact
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.errors import InvalidVersion, RegistryError, UsageError
from toolkit.registry import Registry
from toolkit.registry.refs import Reference, parse_reference, resolve_artifact


@pytest.fixture
def root(tmp_path: Path, base_artifact: Path) -> Path:
    """iris 1.0.0 (production), 1.1.0 and 1.2.0 (staging)."""
    root = tmp_path / "models"
    with Registry(root) as reg:
        for v in ("1.0.0", "1.1.0", "1.2.0"):
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v))
        reg.promote("iris", "1.0.0")
    return root


def test_the_rule_tells_references_from_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_reference("iris@production") == Reference(name="iris", stage="production")
    assert parse_reference("iris@staging") == Reference(name="iris", stage="staging")
    assert parse_reference("iris:1.2.0") == Reference(name="iris", version="1.2.0")
    # Paths: a slash, a .joblib suffix, an existing file, or not a valid name.
    for value in ("./iris@production", "out/iris:1.0.0", "iris@production.joblib", "Iris@production", ""):
        assert parse_reference(value) is None, value
    (tmp_path / "iris@staging").write_text("x")
    assert parse_reference("iris@staging") is None
    with pytest.raises(UsageError, match=r"NAME@production, NAME@staging or NAME:X\.Y\.Z"):
        parse_reference("iris@prod")
    with pytest.raises(InvalidVersion):
        parse_reference("iris:1.0")


def test_resolution_uses_the_registry(root: Path) -> None:
    assert resolve_artifact("iris@production", root) == Registry(root).get("iris", "1.0.0").path
    assert resolve_artifact("iris@staging", root) == Registry(root).get("iris", "1.2.0").path  # the newest staging
    assert resolve_artifact("iris:1.1.0", root) == Registry(root).get("iris", "1.1.0").path
    assert resolve_artifact("some/file.joblib", root) == Path("some/file.joblib")


def test_resolution_takes_the_root_from_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_REGISTRY", str(root))
    assert resolve_artifact("iris:1.1.0", None).parent.name == "1.1.0"


def test_unknown_names_versions_and_stages_are_registry_errors(root: Path, tmp_path: Path, base_artifact: Path) -> None:
    with pytest.raises(RegistryError, match="no model named 'wine'"):
        resolve_artifact("wine@production", root)
    with pytest.raises(RegistryError, match=r"no version 9\.9\.9"):
        resolve_artifact("iris:9.9.9", root)
    other = tmp_path / "other"
    with Registry(other) as reg:
        reg.add(base_artifact)
    with pytest.raises(RegistryError, match="iris has no production version"):
        resolve_artifact("iris@production", other)


def _run(runner: CliRunner, root: Path, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args, "--registry", str(root)])


def test_every_artifact_command_takes_a_reference(runner: CliRunner, root: Path, tmp_path: Path) -> None:
    prod = Registry(root).get("iris", "1.0.0")
    result = _run(runner, root, "check-env", "iris@production", "--policy", "compatible")
    assert result.exit_code == 0 and "MATCH iris 1.0.0" in result.stdout, result.output
    result = _run(runner, root, "verify", "iris:1.1.0", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["version"] == "1.1.0"
    assert json.loads(result.stdout)["artifact"] == str(Registry(root).get("iris", "1.1.0").path)
    result = _run(runner, root, "card", "iris@staging", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["version"] == "1.2.0"
    result = _run(runner, root, "diff", "iris@production", "iris:1.0.0", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["identical_pickles"] is True
    # predict: the probe's feature rows are enough input.
    import pandas as pd

    from toolkit.artifact import read_card

    probe = read_card(prod.path).probe
    features = tmp_path / "in.csv"
    pd.DataFrame(probe.rows, columns=list(probe.columns)).to_csv(features, index=False)
    result = _run(runner, root, "predict", "iris@production", str(features))
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == len(probe.rows) + 1, result.output


def test_sign_takes_a_reference(runner: CliRunner, tmp_path: Path, base_artifact: Path) -> None:
    # sign writes beside the artifact: a registry of a writable copy (registered files are read-only).
    root = tmp_path / "signable"
    with Registry(root) as reg:
        entry = reg.add(base_artifact)
    entry.path.parent.chmod(0o755)
    key = tmp_path / "k"
    assert runner.invoke(app, ["keygen", "--out", str(key)]).exit_code == 0
    result = _run(runner, root, "sign", "iris:1.0.0", "--key", f"{key}.key")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(entry.path.with_name("iris-1.0.0.sig"))


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["check-env", "wine@production"], 4, "no model named 'wine'"),
        (["verify", "iris:9.9.9"], 4, "iris has no version 9.9.9"),
        (["card", "iris:1.0"], 4, "invalid version '1.0'"),
        (["diff", "iris@production", "iris@prod"], 2, "invalid reference 'iris@prod'"),
        (["predict", "wine@staging", "x.csv"], 4, "no model named 'wine'"),
        (["sign", "wine@staging", "--key", "k.key"], 4, "no model named 'wine'"),
        (["push", "wine@staging", "oci://127.0.0.1:1/x:y"], 4, "no model named 'wine'"),
        (["image", "check", "wine@staging"], 4, "no model named 'wine'"),
    ],
)
def test_bad_references_exit_with_one_line(
    runner: CliRunner, root: Path, args: list[str], code: int, line: str
) -> None:
    result = _run(runner, root, *args)
    assert result.exit_code == code, result.output
    assert line in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr


def test_check_env_json_reports_a_bad_reference_as_one_object(runner: CliRunner, root: Path) -> None:
    result = _run(runner, root, "check-env", "iris@staging", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["version"] == "1.2.0"
    result = _run(runner, root, "check-env", "wine@staging", "--json")
    assert result.exit_code == 4 and json.loads(result.stdout)["exit_code"] == 4
