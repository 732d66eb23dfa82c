"""``toolkit registry ...`` through the real typer app: tables, --json, exit codes, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _registry_support import clone_artifact, tamper
from typer.testing import CliRunner

from toolkit.artifact import artifact_paths, read_card
from toolkit.card import card_from_dict
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
    from toolkit.training.config import TrainConfig
    from toolkit.training.train import train

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
        low, high = result["interval"][metric]
        assert low <= high and low - 1e-12 <= diff <= high + 1e-12  # wine's test split: no degenerate draw
    assert result["bootstrap"] == {
        "method": "paired bootstrap over the same rows (percentile interval)",
        "resamples": 1000,
        "skipped": 0,
        "seed": 0,
        "level": 0.95,
    }
    # Seeded: the same seed gives the same intervals; another seed other ones (on fewer
    # resamples: wine has three classes, so each one is scikit-learn's scoring twice).
    few = ["--resamples", "100"]
    seeded = as_json(runner, root, "compare", "wine", "1.0.0", "1.1.0", *few)[1]["interval"]
    assert as_json(runner, root, "compare", "wine", "1.0.0", "1.1.0", *few, "--seed", "0")[1]["interval"] == seeded
    other = as_json(runner, root, "compare", "wine", "1.0.0", "1.1.0", *few, "--seed", "7")[1]["interval"]
    assert other != seeded
    # The table prints the same result as --json (one option, one default: the 1000 above), on
    # the 100 seeded resamples already drawn rather than another 1000 (~1 s).
    table = run(runner, root, "compare", "wine", "1.0.0", "1.1.0", *few)
    assert table.exit_code == 0 and "roc_auc" in table.stdout and "1.1.0 - 1.0.0" in table.stdout
    assert "95% interval" in table.stdout
    low, high = seeded["accuracy"]
    assert f"[{low:+.4f}, {high:+.4f}]" in table.stdout
    assert (
        f"intervals: paired bootstrap, 100 resamples of the same {card.data.n_test} rows for both versions (seed 0); "
        in table.stdout
    )
    none = as_json(runner, root, "compare", "wine", "1.0.0", "1.1.0", "--resamples", "0")[1]
    assert set(none["interval"].values()) == {None} and none["difference"] == result["difference"]
    assert run(runner, root, "compare", "wine", "1.0.0", "1.1.0", "--resamples", "-1").exit_code == 2


def test_the_bootstrap_skips_and_counts_draws_where_a_metric_is_undefined(
    tiny_pipeline: Any, iris_frame: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.training import scoring as evaluate

    X, y = iris_frame
    # 13 rows, 8/3/2 of the three classes: about 1 draw in 7 misses a class, where ROC AUC is undefined.
    rows = [*range(8), 50, 51, 52, 100, 101]
    X13, y13 = X.iloc[rows], y.iloc[rows]
    fast = evaluate.paired_scores(tiny_pipeline, tiny_pipeline, X13, y13, resamples=200, seed=3)
    assert 8 < fast.skipped < 70
    assert fast.difference == {"roc_auc": 0.0, "accuracy": 0.0, "f1": 0.0}
    assert set(fast.intervals.values()) == {(0.0, 0.0)}  # the same model twice: no difference in any draw
    # The numpy path and train.score agree draw by draw (the same skips, the same intervals), on
    # the first 40 draws of the same seed: scikit-learn's scoring is ~30 ms a draw.
    few = evaluate.paired_scores(tiny_pipeline, tiny_pipeline, X13, y13, resamples=40, seed=3)
    monkeypatch.setattr(evaluate._FastClassification, "of", classmethod(lambda cls, *a: None))
    slow = evaluate.paired_scores(tiny_pipeline, tiny_pipeline, X13, y13, resamples=40, seed=3)
    assert slow.skipped > 0 and (slow.skipped, slow.intervals) == (few.skipped, few.intervals)


def test_the_bootstraps_ranks_are_scipys_ties_included() -> None:
    import numpy as np
    from scipy.stats import rankdata

    from toolkit.training.scoring import _average_ranks

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 36, 500):
        for values in (rng.random(n), rng.integers(0, 3, size=n) / 2.0, np.zeros(n)):  # ties: forests' probabilities
            assert np.array_equal(_average_ranks(values), rankdata(values)), values


def test_the_fast_and_the_sklearn_scores_give_the_same_intervals(
    wine_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.artifact import load
    from toolkit.training import scoring as evaluate

    card = read_card(wine_pair[0])
    rows = evaluate.held_out(card)
    a, b = (load(p, policy="compatible") for p in wine_pair)
    # 40 draws: each is scikit-learn's scoring of two three-class models (~60 ms) on the slow side.
    fast = evaluate.paired_scores(a, b, rows.X, rows.y, resamples=40, seed=1)
    monkeypatch.setattr(evaluate._FastClassification, "of", classmethod(lambda cls, *a: None))
    slow = evaluate.paired_scores(a, b, rows.X, rows.y, resamples=40, seed=1)
    assert fast.skipped == slow.skipped
    for metric, bounds in slow.intervals.items():
        assert bounds is not None and fast.intervals[metric] == pytest.approx(bounds, abs=1e-9), metric


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
    if raw.get("reference") is not None:  # card schema 3: the reference set travels under the new stem
        raw["reference"]["file"] = target.reference.name
        target.reference.write_bytes(artifact_paths(wine_pair[1]).reference.read_bytes())
    card = card_from_dict(raw)
    target.card_json.write_bytes(card.to_json())
    target.card_md.write_text(card.to_markdown())
    for p in (wine_pair[0], target.model):
        assert run(runner, root, "add", str(p)).exit_code == 0
    refused = run(runner, root, "compare", "wine", "1.0.0", "1.2.0")
    assert refused.exit_code == 4 and "no common held-out set" in refused.stderr
    # What is checked is the data the versions are scored on; 20 resamples, not 1000, draw its intervals.
    code, result = as_json(
        runner, root, "compare", "wine", "1.0.0", "1.2.0", "--dataset", "builtin:wine", "--resamples", "20"
    )
    assert code == 0 and result["data"]["how"] == "whole dataset" and result["data"]["rows"] == 178
    assert result["bootstrap"]["resamples"] == 20 and None not in result["interval"].values()


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


# -- check ----------------------------------------------------------------------------------------


def _with_package(artifact: Path, package: str, version: str) -> Path:
    """Rewrite the card (and its .card.md) to say it was trained with another ``package`` version."""
    paths = artifact_paths(artifact)
    raw = json.loads(paths.card_json.read_text())
    raw["environment"]["packages"][package] = version
    card = card_from_dict(raw)
    paths.card_json.write_bytes(card.to_json())
    paths.card_md.write_text(card.to_markdown())
    return artifact


@pytest.fixture
def mixed(base_artifact: Path, tmp_path: Path, root: Path) -> Path:
    """iris 1.0.0 loads here, 1.1.0 needs another scikit-learn, 1.2.0's pickle was tampered with; wine 1.0.0 loads."""
    with Registry(root) as reg:
        reg.add(clone_artifact(base_artifact, tmp_path / "src", version="1.0.0"))
        reg.add(
            _with_package(clone_artifact(base_artifact, tmp_path / "src", version="1.1.0"), "scikit-learn", "0.1.0")
        )
        reg.add(clone_artifact(base_artifact, tmp_path / "src", version="1.2.0"))
        reg.add(clone_artifact(base_artifact, tmp_path / "src", version="1.0.0", name="wine"))
        tamper(reg.get("iris", "1.2.0").path)
    return root


def test_check_reports_every_version_and_exits_with_the_worst(runner: CliRunner, mixed: Path) -> None:
    result = run(runner, mixed, "check")
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("iris 1.2.0 (staging): FAILS INTEGRITY: ") and "does not match" in lines[0]
    assert lines[1].startswith(
        "iris 1.1.0 (staging): would not load here: 1 difference: scikit-learn 0.1.0 in the card"
    )
    assert lines[2].startswith("    what to do: ")
    assert "iris 1.0.0 (staging): loads here" in lines and "wine 1.0.0 (staging): loads here" in lines
    assert lines[-1] == "4 versions checked under policy compatible: 2 load, 1 would not, 1 fails integrity"


def test_check_of_one_name_and_its_json(runner: CliRunner, mixed: Path) -> None:
    code, result = as_json(runner, mixed, "check", "iris")
    assert code == 3 and result["exit_code"] == 3 and result["ok"] is False
    verdicts = {v["version"]: (v["verdict"], v["exit_code"]) for v in result["versions"]}
    assert verdicts == {"1.2.0": ("integrity", 3), "1.1.0": ("mismatch", 1), "1.0.0": ("loads", 0)}
    mismatch = next(v for v in result["versions"] if v["version"] == "1.1.0")
    assert mismatch["differences"][0]["name"] == "scikit-learn" and mismatch["remedies"]
    code, result = as_json(runner, mixed, "check", "wine")
    assert code == 0 and [v["verdict"] for v in result["versions"]] == ["loads"]


def test_check_exits_1_when_a_version_would_not_load_and_none_is_broken(
    runner: CliRunner, base_artifact: Path, tmp_path: Path, root: Path
) -> None:
    with Registry(root) as reg:
        reg.add(_with_package(clone_artifact(base_artifact, tmp_path / "src", version="2.0.0"), "numpy", "0.0.1"))
    result = run(runner, root, "check", "iris")
    assert result.exit_code == 1 and "would not load here: 1 difference: numpy 0.0.1 in the card" in result.stdout
    assert (
        result.stdout.splitlines()[-1]
        == "1 version checked under policy compatible: 0 load, 1 would not, 0 fail integrity"
    )


def test_check_errors_are_one_line(runner: CliRunner, mixed: Path, tmp_path: Path) -> None:
    for args, code in ((["check", "nope"], 4), (["check", "Bad/"], 4), (["check", "--policy", "loose"], 2)):
        result = run(runner, mixed, *args)
        assert result.exit_code == code, (args, result.output)
    unknown = run(runner, mixed, "check", "nope")
    assert "no model named 'nope'" in unknown.stderr and unknown.stderr.strip().count("\n") == 0
    empty = run(runner, tmp_path / "empty", "check")
    assert empty.exit_code == 0 and "no models registered" in empty.stdout


# -- add's same-bytes note, the --best-by tie rule -----------------------------------------------------


def test_add_notes_the_same_bytes_under_another_version_and_still_registers(
    runner: CliRunner, root: Path, base_artifact: Path, tmp_path: Path
) -> None:
    first = run(runner, root, "add", str(base_artifact))
    assert first.exit_code == 0 and "note:" not in first.stderr
    # clone_artifact keeps the pickle's bytes: 1.1.0 is the same model under another version.
    twin = clone_artifact(base_artifact, tmp_path / "src", version="1.1.0")
    result = run(runner, root, "add", str(twin))
    assert result.exit_code == 0 and "registered iris 1.1.0 as staging" in result.stdout
    sha = Registry(root).get("iris", "1.1.0").sha256
    assert result.stderr.strip() == (
        f"note: the same bytes (sha256 {sha[:12]}…) are already registered as iris 1.0.0; registered anyway"
    )
    code, added = as_json(runner, root, "add", str(clone_artifact(base_artifact, tmp_path / "src", version="1.2.0")))
    assert code == 0 and added["same_bytes_as"] == ["1.1.0", "1.0.0"]
    assert Registry(root).count("iris") == 3


def test_best_by_prints_the_tie_rule_when_it_decides(
    runner: CliRunner, root: Path, base_artifact: Path, tmp_path: Path
) -> None:
    with Registry(root) as reg:
        for v, auc in (("1.0.0", 0.91), ("1.10.0", 0.91), ("1.9.0", 0.91), ("2.0.0", 0.5)):
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v, metrics={"test": {"roc_auc": auc}}))
    result = run(runner, root, "promote", "iris", "--best-by", "roc_auc")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "iris: production -> 1.10.0; best by test.roc_auc = 0.91 (higher is better); "
        "tie on test.roc_auc 0.91 between 1.0.0, 1.9.0, 1.10.0: the highest version wins; policy compatible"
    )
    events = as_json(runner, root, "history", "iris")[1]
    assert "the highest version wins" in events[-1]["detail"]


def test_best_by_without_a_tie_says_nothing_about_ties(runner: CliRunner, root: Path, three: list[Path]) -> None:
    result = run(runner, root, "promote", "iris", "--best-by", "roc_auc")
    assert result.exit_code == 0 and "production -> 1.1.0" in result.stdout and "tie" not in result.stdout
