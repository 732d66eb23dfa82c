"""upgrade-check's verdicts, reports and usage errors, retrain, and image rebuild's refusals,
in this runtime (no Docker: tests/test_upgrade_e2e.py runs them in real images)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from toolkit.artifact import artifact_paths, read_card
from toolkit.card import parse_card
from toolkit.cli import app
from toolkit.errors import IntegrityError, UsageError
from toolkit.registry import Registry
from toolkit.training.config import TrainConfig
from toolkit.training.train import train
from toolkit.upgrade.runtime_image import cache_key, rebuild_source
from toolkit.upgrade.verdict import ModelCheck, PackageChange, RetrainOutcome, UpgradeReport, check_artifact, junit_xml

ROOT = Path(__file__).resolve().parents[1]


def _rewrite_card(artifact: Path, change: Callable[[dict[str, Any]], None]) -> None:
    paths = artifact_paths(artifact)
    d = json.loads(paths.card_json.read_text())
    change(d)
    paths.card_json.write_text(json.dumps(d, indent=2))
    paths.card_md.write_text(parse_card(paths.card_json.read_bytes()).to_markdown())


def _to_schema1(d: dict[str, Any]) -> None:
    d["schema_version"] = 1
    for key in ("image", "system_packages", "threads"):  # schema 3
        d["environment"].pop(key)
    d.pop("reference")
    del d["environment"]["lock"], d["references"]["globals"], d["references"]["local_modules"]
    del d["training"], d["lineage"]


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained here by the toolkit's recipe (card schema 2, with its recipe)."""
    out = tmp_path_factory.mktemp("wine")
    # 2 folds (the recipe carries them, so every retrain of it is as cheap): no test here is about the folds.
    config = TrainConfig(
        dataset="builtin:wine", model="logistic_regression", name="wine", version="1.0.0", cv_folds=2, out=out
    )
    return train(config).path


def _copy(artifact: Path, to: Path) -> Path:
    for src in artifact.parent.glob(f"{artifact.name.removesuffix('.joblib')}.*"):
        (to / src.name).write_bytes(src.read_bytes())
    return to / artifact.name


# --- verdicts in this runtime --------------------------------------------------------------


def test_a_model_in_its_own_runtime_is_safe_with_no_package_change(artifact: Path) -> None:
    check = check_artifact(artifact, status="production")
    assert (check.verdict, check.status, check.name, check.version) == ("safe", "production", "iris", "1.0.0")
    assert check.reason == "same runtime as the card; probe predictions agree"
    assert check.packages == () and check.warnings == ()
    assert check.probe is not None and check.probe["ok"] is True and check.probe["label_mismatches"] == 0


def test_moved_reference_predictions_are_drift_with_how_much(artifact: Path) -> None:
    def shift(d: dict[str, Any]) -> None:
        d["probe"]["probabilities"][0] = [p + 0.01 for p in d["probe"]["probabilities"][0]]

    _rewrite_card(artifact, shift)
    check = check_artifact(artifact)
    assert check.verdict == "drift"
    assert check.reason == "loads, but predictions moved: no probe label changed, max |diff| 0.01 > tolerance 1e-06"


def test_a_flipped_label_is_drift_and_counted(artifact: Path) -> None:
    def flip(d: dict[str, Any]) -> None:
        d["probe"]["predictions"][0] = 2 if d["probe"]["predictions"][0] != 2 else 0

    _rewrite_card(artifact, flip)
    check = check_artifact(artifact)
    assert check.verdict == "drift" and check.reason.startswith(
        "loads, but predictions moved: 1 of 8 probe predictions"
    )


def test_a_recorded_package_difference_is_listed_and_still_safe(artifact: Path) -> None:
    def older(d: dict[str, Any]) -> None:
        d["environment"]["packages"]["scikit-learn"] = "1.0.0"

    _rewrite_card(artifact, older)
    check = check_artifact(artifact)
    import sklearn

    assert check.verdict == "safe" and "1 runtime difference(s)" in check.reason
    assert check.packages == (PackageChange(name="scikit-learn", card="1.0.0", candidate=sklearn.__version__),)


def test_bytes_that_fail_the_checksum_are_broken_and_never_unpickled(artifact: Path) -> None:
    with artifact.open("r+b") as f:
        f.seek(-2, 2)
        f.write(b"\x00\x00")
    check = check_artifact(artifact)
    assert check.verdict == "broken"
    assert check.reason.startswith("does not load: ") and "does not match the card" in check.reason


def test_an_unreadable_card_is_broken_not_a_crash(artifact: Path) -> None:
    artifact_paths(artifact).card_json.write_text("{")
    check = check_artifact(artifact)
    assert (check.verdict, check.name, check.version) == ("broken", "iris", "1.0.0")
    assert check.reason.startswith("unreadable card: ")


# --- the report: JSON and JUnit ------------------------------------------------------------


def _report() -> UpgradeReport:
    safe = ModelCheck(name="a", version="1.0.0", status="production", verdict="safe", reason="fine", seconds=0.5)
    drift = ModelCheck(
        name="b",
        version="2.0.0",
        status="production",
        verdict="drift",
        reason="loads, but predictions moved",
        packages=(PackageChange(name="scikit-learn", card="1.3.2", candidate="1.9.1"),),
        warnings=("InconsistentVersionWarning: x",),
        retrain=RetrainOutcome(
            version="2.0.1", metrics={"test": {"accuracy": 0.9}}, parent_metrics={"test": {"accuracy": 0.8}}
        ),
    )
    broken = ModelCheck(name="c", version="1.0.0", status="staging", verdict="broken", reason='no <"&> load')
    return UpgradeReport(
        lock="cand.lock",
        lock_sha256="ab" * 32,
        image="toolkit-runtime:x",
        image_id="sha256:1",
        cached=True,
        base_image="b@sha256:" + "0" * 64,
        registry="models",
        stage="all",
        models=(safe, drift, broken),
        seconds=3.0,
    )


def test_report_json_round_trips_every_model_field() -> None:
    report = _report()
    d = json.loads(json.dumps(report.to_dict()))
    assert (d["ok"], d["exit_code"]) == (False, 1)
    assert d["summary"] == {"safe": 1, "drift": 1, "broken": 1, "total": 3}
    assert d["candidate"]["cached"] is True and d["candidate"]["lock_sha256"] == "ab" * 32
    assert [ModelCheck.from_dict(m) for m in d["models"]] == list(report.models)


def test_junit_has_one_case_per_model_and_a_failure_for_drift_and_broken() -> None:
    root = ElementTree.fromstring(junit_xml(_report()))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "2", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["a 1.0.0", "b 2.0.0", "c 1.0.0"]
    assert [c.get("classname") for c in cases] == ["upgrade-check.a", "upgrade-check.b", "upgrade-check.c"]
    assert cases[0].find("failure") is None
    drift, broken = cases[1].find("failure"), cases[2].find("failure")
    assert drift is not None and broken is not None
    assert (drift.get("type"), drift.get("message")) == ("drift", "loads, but predictions moved")
    assert "package: scikit-learn 1.3.2 -> 1.9.1" in (drift.text or "")
    assert "retrain: 2.0.1: accuracy 0.8000 -> 0.9000" in (drift.text or "")
    assert (broken.get("type"), broken.get("message")) == ("broken", 'no <"&> load')  # escaped, read back intact
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["lock"] == "cand.lock" and props["stage"] == "all"


def test_a_record_the_container_never_writes_is_refused() -> None:
    d = _report().models[0].to_dict()
    with pytest.raises(ValueError, match="unknown verdict 'fine'"):
        ModelCheck.from_dict({**d, "verdict": "fine"})


# --- upgrade-check: usage, before any Docker --------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        ([], "error: --lock CANDIDATE.lock is required"),
        (["--lock", "requirements.lock", "--stage", "prod"], "error: --stage: unknown stage 'prod'"),
    ],
)
def test_upgrade_check_usage_errors_exit_2_in_one_line(args: list[str], line: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["upgrade-check", *args, "--registry", str(tmp_path), "--base-image", "b@sha256:" + "0" * 64]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(line) and len(result.output.strip().splitlines()) == 1


def test_upgrade_check_with_nothing_to_check_exits_2(tmp_path: Path) -> None:
    lock = tmp_path / "cand.lock"
    lock.write_text((ROOT / "requirements.lock").read_text())
    result = CliRunner().invoke(
        app,
        [
            "upgrade-check",
            "--lock",
            str(lock),
            "--registry",
            str(tmp_path / "reg"),
            "--base-image",
            "b@sha256:" + "0" * 64,
        ],
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"error: no production model in the registry {tmp_path / 'reg'} to check"


def test_upgrade_check_of_a_missing_lock_exits_2(artifact: Path, tmp_path: Path) -> None:
    with Registry(tmp_path / "reg") as reg:
        reg.add(artifact)
    result = CliRunner().invoke(
        app,
        [
            "upgrade-check",
            "--lock",
            str(tmp_path / "nope.lock"),
            "--registry",
            str(tmp_path / "reg"),
            "--stage",
            "staging",
            "--base-image",
            "b@sha256:" + "0" * 64,
        ],
    )
    assert result.exit_code == 2 and result.output.strip() == f"error: {tmp_path / 'nope.lock'}: no such lock file"


# --- retrain ---------------------------------------------------------------------------------


def test_retrain_registers_staging_with_lineage_and_prints_metrics_beside_the_parent(
    wine: Path, tmp_path: Path
) -> None:
    registry = tmp_path / "reg"
    result = CliRunner().invoke(app, ["retrain", str(wine), "--version", "1.0.1", "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    entry = Registry(registry).get("wine", "1.0.1")
    assert entry.status == "staging"
    card = read_card(entry.path)
    assert card.lineage is not None and card.lineage.parent == "wine@1.0.0"
    assert card.training is not None and card.training == read_card(wine).training
    header = next(line for line in result.stdout.splitlines() if line.lstrip().startswith("metric"))
    assert "wine 1.0.0" in header and "wine 1.0.1" in header
    row = next(line for line in result.stdout.splitlines() if line.startswith("test.accuracy"))
    parent, new = read_card(wine).metrics["test"]["accuracy"], card.metrics["test"]["accuracy"]
    assert f"{parent:.4f}" in row and f"{new:.4f}" in row  # the same recipe, the same data
    assert result.stdout.strip().splitlines()[-1] == str(entry.path)
    history = Registry(registry).history("wine")
    assert history[-1].reason == "retrained from wine@1.0.0"


def test_retrain_refuses_other_data_naming_both_hashes(tmp_path: Path) -> None:
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    data = tmp_path / "wine.csv"
    frame.to_csv(data, index=False)
    config = TrainConfig(
        dataset=str(data), target="target", model="logistic_regression", name="w", cv_folds=2, out=tmp_path / "o"
    )
    model = train(config).path
    recorded = hashlib.sha256(data.read_bytes()).hexdigest()
    frame.iloc[:-1].to_csv(data, index=False)  # one row fewer: another dataset version
    now = hashlib.sha256(data.read_bytes()).hexdigest()
    result = CliRunner().invoke(
        app, ["retrain", str(model), "--version", "1.0.1", "--no-register", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {data}: sha256 {now} is not the card's training data {recorded}; "
        "retrain needs the same data (pass the original with --dataset)"
    ]
    assert not (tmp_path / "r").exists()


def test_retrain_of_a_schema1_card_exits_2_in_one_line(wine: Path, tmp_path: Path) -> None:
    model = _copy(wine, tmp_path)
    _rewrite_card(model, _to_schema1)
    model.with_name("wine-1.0.0.reference.json.gz").unlink()  # a schema 1 card has none
    result = CliRunner().invoke(
        app, ["retrain", str(model), "--version", "1.0.1", "--no-register", "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: retrain needs a card of schema 2; wine 1.0.0 has schema 1 "
        "(save or train it again with this toolkit to get one)"
    )


def test_retrain_of_a_card_without_recipe_exits_2(artifact: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["retrain", str(artifact), "--version", "1.0.1", "--no-register", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: iris 1.0.0 has no training recipe on its card")


def test_retrain_refuses_a_registered_version_before_training(wine: Path, tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    with Registry(registry) as reg:
        reg.add(wine)
    result = CliRunner().invoke(app, ["retrain", str(wine), "--version", "1.0.0", "--registry", str(registry)])
    assert result.exit_code == 4 and "already registered" in result.output
    assert [e.version for e in Registry(registry).list_versions("wine")] == ["1.0.0"]


# --- image rebuild: what a card must hold ------------------------------------------------------


def test_rebuild_of_a_host_trained_artifact_says_there_is_no_runtime(wine: Path) -> None:
    with pytest.raises(
        UsageError,
        match=r"^wine 1\.0\.0 was not trained in an image \(its card records no base image\): there is no runtime",
    ):
        rebuild_source(read_card(wine))


def test_rebuild_cli_of_a_host_trained_artifact_exits_2_before_docker(wine: Path) -> None:
    result = CliRunner().invoke(app, ["image", "rebuild", str(wine)])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: wine 1.0.0 was not trained in an image")
    assert len(result.output.strip().splitlines()) == 1


def test_rebuild_of_a_schema1_card_exits_2(wine: Path, tmp_path: Path) -> None:
    model = _copy(wine, tmp_path)
    _rewrite_card(model, _to_schema1)
    with pytest.raises(UsageError, match=r"has a schema 1 card, which records no lock text"):
        rebuild_source(read_card(model))


def test_rebuild_refuses_lock_text_that_is_not_the_recorded_lock(wine: Path, tmp_path: Path) -> None:
    model = _copy(wine, tmp_path)
    base = "127.0.0.1:5000/python-base@sha256:" + "1" * 64

    def in_image(d: dict[str, Any]) -> None:
        d["environment"].update(base_image=base, lock="numpy==1.0\n", lock_sha256="0" * 64)

    card_json = artifact_paths(model).card_json
    d = json.loads(card_json.read_text())
    in_image(d)
    card_json.write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match=r"'environment\.lock' does not match 'environment\.lock_sha256'"):
        read_card(model)  # the card itself is refused: its lock is not the lock it names

    def honest(d: dict[str, Any]) -> None:
        in_image(d)
        d["environment"]["lock"] = _HASHED_LOCK
        d["environment"]["lock_sha256"] = hashlib.sha256(_HASHED_LOCK.encode()).hexdigest()

    _rewrite_card(model, honest)
    assert rebuild_source(read_card(model)) == (base, _HASHED_LOCK)


_HASHED_LOCK = "numpy==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"


def test_cache_key_follows_base_lock_debs_and_the_installed_toolkit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.docker import selfwheel
    from toolkit.docker.system import SystemPackage

    # The toolkit the image gets is the installed package, wherever the command runs.
    source = tmp_path / "a.py"
    source.write_text("A = 1\n")
    monkeypatch.setattr(selfwheel, "package_files", lambda: [("toolkit/a.py", source)])
    base = "b@sha256:" + "0" * 64
    key = cache_key(base_image=base, lock_sha256="1" * 64)
    assert key == cache_key(base_image=base, lock_sha256="1" * 64, context=tmp_path / "anywhere")
    assert key != cache_key(base_image="b@sha256:" + "2" * 64, lock_sha256="1" * 64)
    assert key != cache_key(base_image=base, lock_sha256="3" * 64)
    gomp = SystemPackage(name="libgomp1", version="12.2.0-14+deb12u1")
    assert key != cache_key(base_image=base, lock_sha256="1" * 64, system_packages=[gomp])
    source.write_text("A = 2\n")
    assert key != cache_key(base_image=base, lock_sha256="1" * 64)


def test_upgrade_check_with_trusted_keys_refuses_an_unsigned_model_before_docker(
    artifact: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    with Registry(tmp_path / "reg") as reg:
        reg.add(artifact)
    result = runner.invoke(
        app,
        ["upgrade-check", "--lock", str(ROOT / "requirements.lock"), "--registry", str(tmp_path / "reg"),
         "--stage", "staging", "--trusted-key", str(tmp_path / "k.pub"), "--base-image", "b@sha256:" + "0" * 64],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert result.output.startswith("error: ") and "signature" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_upgrade_check_without_an_engine_exits_5_in_one_line(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with Registry(tmp_path / "reg") as reg:
        reg.add(artifact)
    result = CliRunner().invoke(
        app,
        ["upgrade-check", "--lock", str(ROOT / "requirements.lock"), "--registry", str(tmp_path / "reg"),
         "--stage", "staging", "--base-image", "b@sha256:" + "0" * 64, "--json"],
    )  # fmt: skip
    assert result.exit_code == 5, result.output
    assert result.output.startswith(f"error: no Docker engine answers at unix://{tmp_path}/no-engine.sock")
    assert len(result.output.strip().splitlines()) == 1


def test_upgrade_check_of_an_unknown_name_exits_4(artifact: Path, tmp_path: Path) -> None:
    with Registry(tmp_path / "reg") as reg:
        reg.add(artifact)
    result = CliRunner().invoke(
        app,
        ["upgrade-check", "--lock", str(ROOT / "requirements.lock"), "--registry", str(tmp_path / "reg"),
         "--name", "nope", "--base-image", "b@sha256:" + "0" * 64],
    )  # fmt: skip
    assert result.exit_code == 4, result.output
    assert result.output.startswith("error: ") and "nope" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_retrain_takes_a_registry_reference(wine: Path, tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    with Registry(registry) as reg:
        reg.add(wine)
    result = CliRunner().invoke(app, ["retrain", "wine:1.0.0", "--version", "1.0.1", "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    card = read_card(Registry(registry).get("wine", "1.0.1").path)
    assert card.lineage is not None and card.lineage.parent == "wine@1.0.0"


def test_retrain_in_upgrade_check_is_once_per_name_from_production_as_the_next_free_patch(
    wine: Path, tmp_path: Path
) -> None:
    from toolkit.upgrade.check import _retrain_versions, select

    registry = tmp_path / "reg"
    second = tmp_path / "second"
    second.mkdir()
    train(
        TrainConfig(
            dataset="builtin:wine", model="logistic_regression", name="wine", version="1.0.1", cv_folds=2, out=second
        )
    )
    with Registry(registry) as reg:
        reg.add(wine)
        reg.add(second / "wine-1.0.1.joblib")
        reg.promote("wine", "1.0.0")
    selected = select(registry, stage="all")
    assert [(s.version, s.status) for s in selected] == [("1.0.0", "production"), ("1.0.1", "staging")]
    assert _retrain_versions(registry, selected) == {("wine", "1.0.0"): "1.0.2"}
    assert _retrain_versions(registry, select(registry, stage="staging")) == {("wine", "1.0.1"): "1.0.2"}
