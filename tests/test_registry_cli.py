"""``toolkit registry ...`` through the real typer app: tables, --json, exit codes, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _registry_support import clone_artifact, tamper
from typer.testing import CliRunner

from toolkit.artifact import artifact_paths, read_card
from toolkit.card import ModelCard
from toolkit.cli import app
from toolkit.registry import Registry


def run(runner: CliRunner, root: Path, *args: str):
    return runner.invoke(app, ["registry", *args, "--registry", str(root)])


def as_json(runner: CliRunner, root: Path, *args: str):
    result = run(runner, root, *args, "--json")
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def three(base_artifact: Path, tmp_path: Path, root: Path) -> list[Path]:
    """iris 1.0.0, 1.1.0, 1.2.0 registered (staging), with rising test roc_auc."""
    paths = [
        clone_artifact(base_artifact, tmp_path / "src", version=v, metrics={"test": {"roc_auc": auc}})
        for v, auc in (("1.0.0", 0.7), ("1.1.0", 0.9), ("1.2.0", 0.8))
    ]
    with Registry(root) as reg:
        for p in paths:
            reg.add(p)
    return paths


def test_add_list_show_history_in_json_and_tables(runner: CliRunner, root: Path, base_artifact: Path) -> None:
    code, added = as_json(runner, root, "add", str(base_artifact), "--reason", "first")
    assert code == 0 and (added["name"], added["version"], added["status"]) == ("iris", "1.0.0", "staging")
    code, names = as_json(runner, root, "list")
    assert names == [{"name": "iris", "versions": 1, "production": None, "latest": "1.0.0"}]
    code, versions = as_json(runner, root, "list", "iris")
    assert [v["version"] for v in versions] == ["1.0.0"]
    code, shown = as_json(runner, root, "show", "iris")
    assert shown["card"]["name"] == "iris" and shown["card_error"] is None
    code, events = as_json(runner, root, "history", "iris")
    assert [(e["event"], e["reason"]) for e in events] == [("register", "first")]
    for args in (["list"], ["list", "iris"], ["show", "iris"], ["history", "iris"]):
        result = run(runner, root, *args)
        assert result.exit_code == 0 and "iris" in result.stdout, result.output


def test_the_root_comes_from_the_environment_without_the_flag(
    runner: CliRunner, root: Path, base_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLKIT_REGISTRY", str(root))
    assert runner.invoke(app, ["registry", "add", str(base_artifact)]).exit_code == 0
    assert Registry(root).has("iris", "1.0.0")


def test_errors_have_their_exit_codes_and_one_line(runner: CliRunner, root: Path, base_artifact: Path) -> None:
    assert run(runner, root, "add", str(base_artifact)).exit_code == 0
    duplicate = run(runner, root, "add", str(base_artifact))
    assert duplicate.exit_code == 4 and duplicate.stderr.strip().count("\n") == 0
    assert "already registered" in duplicate.stderr
    for args in (
        ["show", "../etc"],
        ["show", "nope"],
        ["show", "iris", "9.9.9"],
        ["history", "Bad"],
        ["add", str(base_artifact), "--name", "/abs"],
        ["promote", "iris", "1.0"],
        ["rollback", "iris"],
    ):
        result = run(runner, root, *args)
        assert result.exit_code == 4, (args, result.output)
    assert run(runner, root, "promote", "iris").exit_code == 2  # neither VERSION nor --best-by
    assert run(runner, root, "promote", "iris", "1.0.0", "--policy", "lenient").exit_code == 2
    code, body = as_json(runner, root, "show", "nope")
    assert code == 4 and body["ok"] is False and "no model named 'nope'" in body["error"]


def test_list_of_a_name_is_newest_first_and_limited_in_the_table(
    runner: CliRunner, root: Path, base_artifact: Path, tmp_path: Path
) -> None:
    with Registry(root) as reg:
        for minor in range(25):
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=f"1.{minor}.0"))
    table = run(runner, root, "list", "iris")
    assert "1.24.0" in table.stdout and "1.0.0 " not in table.stdout and "20 of 25 shown" in table.stdout
    code, everything = as_json(runner, root, "list", "iris")
    assert [v["version"] for v in everything][:3] == ["1.24.0", "1.23.0", "1.22.0"] and len(everything) == 25
    code, two = as_json(runner, root, "list", "iris", "--limit", "2")
    assert code == 0 and len(two) == 2


def test_promote_best_by_then_rollback_with_history(runner: CliRunner, root: Path, three: list[Path]) -> None:
    code, change = as_json(runner, root, "promote", "iris", "1.0.0", "--reason", "baseline")
    assert code == 0 and change["changed"]
    code, change = as_json(runner, root, "promote", "iris", "--best-by", "roc_auc", "--reason", "best")
    assert (change["version"], change["previous"]) == ("1.1.0", "1.0.0")
    result = run(runner, root, "rollback", "iris", "--reason", "errors in prod")
    assert result.exit_code == 0 and "production -> 1.0.0" in result.stdout
    code, shown = as_json(runner, root, "show", "iris", "1.1.0")
    assert (shown["status"], shown["rolled_back"]) == ("archived", True)
    code, events = as_json(runner, root, "history", "iris")
    assert [(e["event"], e["version"], e["from_status"], e["to_status"], e["reason"]) for e in events][3:] == [
        ("promote", "1.0.0", "staging", "production", "baseline"),
        ("archive", "1.0.0", "production", "archived", "best"),
        ("promote", "1.1.0", "staging", "production", "best"),
        ("rolled_back", "1.1.0", "production", "archived", "errors in prod"),
        ("rollback", "1.0.0", "archived", "production", "errors in prod"),
    ]
    assert all(e["user"] and e["at"] for e in events)
    assert "rolled back" in run(runner, root, "list", "iris").stdout


def test_a_tampered_target_is_refused_by_rollback_and_production_stays(
    runner: CliRunner, root: Path, three: list[Path]
) -> None:
    assert run(runner, root, "promote", "iris", "1.0.0").exit_code == 0
    assert run(runner, root, "promote", "iris", "1.1.0").exit_code == 0
    tamper(Registry(root).get("iris", "1.0.0").path)
    result = run(runner, root, "rollback", "iris")
    assert result.exit_code == 3 and "does not match" in result.stderr
    assert Registry(root).get("iris").version == "1.1.0"


def test_registered_copies_work_with_the_other_commands(runner: CliRunner, root: Path, three: list[Path]) -> None:
    path = Registry(root).get("iris", "1.1.0").path
    assert runner.invoke(app, ["verify", str(path)]).exit_code == 0
    assert runner.invoke(app, ["check-env", str(path), "--policy", "compatible"]).exit_code == 0


def test_show_still_answers_when_the_card_is_broken(runner: CliRunner, root: Path, three: list[Path]) -> None:
    card = artifact_paths(Registry(root).get("iris", "1.2.0").path).card_json
    card.chmod(0o644)
    card.write_text("{")
    code, shown = as_json(runner, root, "show", "iris", "1.2.0")
    assert code == 0 and shown["card"] is None and shown["card_error"]


# -- compare --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wine_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real wine models trained by the training code on the same data and split."""
    from toolkit.config import TrainConfig
    from toolkit.train import train

    out = tmp_path_factory.mktemp("wine")
    a = train(
        TrainConfig(
            dataset="builtin:wine",
            model="logistic_regression",
            params={"C": 0.01},
            name="wine",
            version="1.0.0",
            cv_folds=2,
            out=out,
            register=False,
        )
    )
    b = train(
        TrainConfig(
            dataset="builtin:wine",
            model="logistic_regression",
            params={"C": 1.0},
            name="wine",
            version="1.1.0",
            cv_folds=2,
            out=out,
            register=False,
        )
    )
    return a.path, b.path


def test_compare_rescores_both_on_the_rebuilt_test_split(
    runner: CliRunner, root: Path, wine_pair: tuple[Path, Path]
) -> None:
    for p in wine_pair:
        assert run(runner, root, "add", str(p)).exit_code == 0
    code, result = as_json(runner, root, "compare", "wine", "1.0.0", "1.1.0")
    assert code == 0, result
    card = read_card(wine_pair[1])
    assert result["data"]["how"] == "held-out test split" and result["data"]["rows"] == card.data.n_test
    assert result["data"]["sha256"] == card.data.sha256
    # Re-scored on the same rows the cards' test metrics came from, so they agree.
    for version, path in zip(("1.0.0", "1.1.0"), wine_pair, strict=True):
        for metric, value in read_card(path).metrics["test"].items():
            assert result["scores"][version][metric] == pytest.approx(value)
    for metric, diff in result["difference"].items():
        assert diff == pytest.approx(result["scores"]["1.1.0"][metric] - result["scores"]["1.0.0"][metric])
    table = run(runner, root, "compare", "wine", "1.0.0", "1.1.0")
    assert table.exit_code == 0 and "roc_auc" in table.stdout and "1.1.0 - 1.0.0" in table.stdout


def test_compare_refuses_different_data_unless_a_dataset_is_named(
    runner: CliRunner, root: Path, wine_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    # 1.2.0: the same pipeline, but its card says it was trained on other data.
    raw = read_card(wine_pair[1]).to_dict()
    raw.update(version="1.2.0")
    raw["artifact"]["file"] = "wine-1.2.0.joblib"
    raw["data"]["sha256"] = "0" * 64
    target = artifact_paths(tmp_path / "wine-1.2.0.joblib")
    target.model.write_bytes(wine_pair[1].read_bytes())
    card = ModelCard.from_dict(raw)
    target.card_json.write_bytes(card.to_json())
    target.card_md.write_text(card.to_markdown())
    for p in (wine_pair[0], target.model):
        assert run(runner, root, "add", str(p)).exit_code == 0
    refused = run(runner, root, "compare", "wine", "1.0.0", "1.2.0")
    assert refused.exit_code == 4 and "no common held-out set" in refused.stderr
    code, result = as_json(runner, root, "compare", "wine", "1.0.0", "1.2.0", "--dataset", "builtin:wine")
    assert code == 0 and result["data"]["how"] == "whole dataset" and result["data"]["rows"] == 178


HOSTILE = "\x1b[2J\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07 [bold red]boom[/] \u202etxt"


def test_card_fields_and_reasons_are_printed_as_escaped_text(
    runner: CliRunner, root: Path, base_artifact: Path, tmp_path: Path
) -> None:
    src = clone_artifact(base_artifact, tmp_path / "src", version="1.0.0")
    paths = artifact_paths(src)
    raw = json.loads(paths.card_json.read_bytes())
    raw["author"] = HOSTILE
    raw["intended_use"] = "line one\nFAKE: line two"
    paths.card_json.write_text(json.dumps(raw))
    result = run(runner, root, "add", str(src), "--reason", HOSTILE)
    assert result.exit_code == 0, result.output
    for args in (["show", "iris"], ["history", "iris"], ["list", "iris"]):
        result = run(runner, root, *args)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\u202e" not in result.stdout
    shown = run(runner, root, "show", "iris").stdout
    assert "\\x1b[2J" in shown and "\\x1b]8;;http://evil.example/\\x07click" in shown
    assert "[bold red]boom[/]" in shown  # rich markup shown as the text it is, not interpreted
    assert "\\u202etxt" in shown
    assert "line one\\nFAKE: line two" in shown  # no forged second line
    history = run(runner, root, "history", "iris").stdout
    assert "[bold red]boom[/]" in " ".join(history.split())  # the reason, folded but intact
    assert "\\x1b[2J" in history
    # --json keeps the exact value (JSON escapes control characters itself).
    code, events = as_json(runner, root, "history", "iris")
    assert code == 0 and events[0]["reason"] == HOSTILE
