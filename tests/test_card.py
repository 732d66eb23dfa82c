"""The card's strict JSON form: every malformed card is refused with the field named."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import toolkit
from toolkit.artifact import artifact_paths, read_card
from toolkit.card import (
    MAX_CARD_BYTES,
    SCHEMA_VERSION,
    card_from_dict,
    parse_card,
    require_schema2,
    require_schema3,
)
from toolkit.errors import CardError, IntegrityError, UsageError


def _card_dict(artifact: Path) -> dict[str, Any]:
    return json.loads(artifact_paths(artifact).card_json.read_text())


def test_card_round_trips_byte_for_byte(artifact: Path) -> None:
    raw = artifact_paths(artifact).card_json.read_bytes()
    card = parse_card(raw)
    assert card.to_json() == raw
    assert card_from_dict(card.to_dict()) == card


def test_card_carries_every_spec_field(artifact: Path) -> None:
    d = _card_dict(artifact)
    for key in (
        "schema_version",
        "name",
        "version",
        "algorithm",
        "created_at",
        "author",
        "intended_use",
        "limitations",
        "artifact",
        "data",
        "metrics",
        "params",
        "preprocessing",
        "environment",
        "references",
        "probe",
    ):
        assert key in d, key
    assert set(d["artifact"]) == {"file", "sha256", "size"}
    env = d["environment"]
    for key in (
        "python_implementation",
        "python_version",
        "os",
        "machine",
        "libc",
        "packages",
        "blas",
        "in_container",
        "base_image",
        "lock_sha256",
    ):
        assert key in env, key
    assert env["packages"]["scikit-learn"]
    assert "sklearn.pipeline" in d["references"]["modules"]
    assert {"scikit-learn", "numpy", "joblib"} <= set(d["references"]["distributions"])
    assert len(d["probe"]["rows"]) == len(d["probe"]["predictions"]) == 8


def _mutate(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[p]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("version", _DELETE, "missing field 'version'"),
        ("artifact.sha256", _DELETE, "missing field 'artifact.sha256'"),
        ("artifact.size", "12", "'artifact.size' must be an integer"),
        ("artifact.size", True, "'artifact.size' must be an integer"),
        ("artifact.sha256", "abc", "'artifact.sha256' is not a lowercase hex sha256"),
        ("environment.packages", ["numpy"], "'environment.packages' must be an object"),
        ("environment.in_container", "yes", "'environment.in_container' must be a boolean"),
        ("environment.base_image", "python:3.11", "'environment.base_image' is not name@sha256"),
        ("schema_version", SCHEMA_VERSION + 1, "unsupported schema_version"),
        ("schema_version", "1", "'schema_version' must be an integer"),
        ("name", "../etc", "'name' is not a registry name"),
        ("name", "iris\n", "'name' is not a registry name"),
        ("artifact.sha256", "a" * 64 + "\n", "'artifact.sha256' is not a lowercase hex sha256"),
        ("version", "latest", "'version' is not a semantic version"),
        ("surprise", 1, "unknown field 'surprise'"),
        ("probe.rows", [[1, 2]], "'probe.rows[0]' must be 4 scalars"),
        ("metrics.test", {"accuracy": "high"}, "'metrics.test.accuracy' must be a number"),
    ],
)
def test_invalid_cards_are_refused_naming_the_field(artifact: Path, field: str, value: Any, message: str) -> None:
    d = _card_dict(artifact)
    _mutate(d, field, value)
    with pytest.raises(CardError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_card(json.dumps(d).encode())


def test_duplicate_keys_are_refused(artifact: Path) -> None:
    raw = artifact_paths(artifact).card_json.read_text()
    doubled = raw.replace('"name": "iris",', '"name": "iris",\n  "name": "evil",', 1)
    with pytest.raises(CardError, match="duplicate key 'name'"):
        parse_card(doubled.encode())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(artifact: Path, constant: str) -> None:
    d = _card_dict(artifact)
    d["metrics"] = {"test": {"accuracy": 0.5}}
    raw = json.dumps(d).replace("0.5", constant)
    with pytest.raises(CardError, match=f"{constant} is not JSON"):
        parse_card(raw.encode())


def test_truncated_card_is_refused(artifact: Path) -> None:
    path = artifact_paths(artifact).card_json
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CardError, match="not valid JSON"):
        read_card(artifact)


def test_empty_and_non_utf8_cards_are_refused(artifact: Path) -> None:
    path = artifact_paths(artifact).card_json
    path.write_bytes(b"")
    with pytest.raises(CardError, match="not valid JSON"):
        read_card(artifact)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CardError, match="not UTF-8"):
        read_card(artifact)


def test_oversized_card_is_refused_before_reading(artifact: Path) -> None:
    path = artifact_paths(artifact).card_json
    with path.open("r+b") as f:
        f.truncate(MAX_CARD_BYTES + 1)  # sparse: the size alone must trigger the refusal
    with pytest.raises(IntegrityError, match="over the"):
        read_card(artifact)


def test_card_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CardError, match="'card' must be an object"):
        parse_card(b"[1, 2, 3]")


def test_markdown_card_names_the_essentials(artifact: Path) -> None:
    md = artifact_paths(artifact).card_md.read_text()
    card = read_card(artifact)
    assert md.startswith("# Model card: iris 1.0.0")
    assert card.artifact.sha256 in md
    assert "scikit-learn" in md


_RECIPE = {
    "dataset": {"source": "builtin:wine", "sha256": "a" * 64},
    "target": "quality",
    "model": "random_forest",
    "params": {"n_estimators": 10, "max_depth": None},
    "preprocessing": {"scaler": "standard"},
    "test_size": 0.2,
    "seed": 42,
    "cv_folds": 5,
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("environment.lock", 7, "'environment.lock' must be a string or null"),
        ("environment.lock", "numpy==2.0\n", "'environment.lock' does not match 'environment.lock_sha256'"),
        ("environment.lock", _DELETE, "missing field 'environment.lock'"),
        ("training", _DELETE, "missing field 'training'"),
        ("training", [], "'training' must be an object or null"),
        ("training", {**_RECIPE, "seed": -1}, "'training.seed' must not be negative"),
        ("training", {**_RECIPE, "seed": "42"}, "'training.seed' must be an integer"),
        ("training", {**_RECIPE, "test_size": 1.5}, "'training.test_size' must be between 0 and 1"),
        ("training", {**_RECIPE, "cv_folds": 1}, "'training.cv_folds' must be at least 2"),
        ("training", {**_RECIPE, "dataset": {"source": "x"}}, "missing field 'training.dataset.sha256'"),
        ("training", {**_RECIPE, "dataset": {"source": "x", "sha256": "z"}}, "'training.dataset.sha256' is not"),
        ("training", {**_RECIPE, "params": []}, "'training.params' must be an object"),
        ("training", {**_RECIPE, "preprocessing": {"scaler": [1]}}, "'training.preprocessing.scaler' must be"),
        ("training", {**_RECIPE, "extra": 1}, "unknown field 'training.extra'"),
        ("lineage", _DELETE, "missing field 'lineage'"),
        ("lineage", {"parent": "iris", "reason": "x"}, "'lineage.parent' is not NAME@VERSION"),
        ("lineage", {"parent": "iris@latest", "reason": "x"}, "'lineage.parent' is not NAME@VERSION"),
        ("lineage", {"parent": "iris@1.0.0"}, "missing field 'lineage.reason'"),
        ("lineage", {"parent": "iris@1.0.0", "reason": 3}, "'lineage.reason' must be a string"),
        ("references.globals", _DELETE, "missing field 'references.globals'"),
        ("references.globals", [["numpy"]], "'references.globals[0]' must be a [module, name] pair"),
        ("references.globals", [["numpy", 1]], "'references.globals[0]' must be a [module, name] pair"),
        ("references.globals", [["os", "system"]], "'references.globals[0]' lists os.system"),
        ("references.globals", [["builtins", "eval"]], "'references.globals[0]' lists builtins.eval"),
        ("references.globals", [["b", "x"], ["a", "x"]], "'references.globals' must be sorted"),
        ("references.globals", [["not a module", "x"]], "'references.globals[0]' is not a module and a name"),
        ("references.modules", ["numpy"], "'references.modules' must be exactly the modules of"),
        ("references.modules", ["os"], "'references.modules[0]' lists 'os'"),
        ("references.local_modules", [{"module": "mine"}], "'references.local_modules[0].module' is not in"),
        ("references.local_modules", _DELETE, "missing field 'references.local_modules'"),
    ],
)
def test_schema2_fields_are_parsed_strictly_naming_the_field(
    artifact: Path, field: str, value: Any, message: str
) -> None:
    d = _card_dict(artifact)
    assert d["schema_version"] == 3  # what save writes; schema 2 fields are still there
    _mutate(d, field, value)
    with pytest.raises(CardError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_card(json.dumps(d).encode())


def test_schema2_round_trips_training_lineage_and_the_lock(artifact: Path) -> None:
    import hashlib

    d = _card_dict(artifact)
    lock = "numpy==2.4.6 \\\n    --hash=sha256:" + "b" * 64 + "\n"
    d["environment"].update(lock=lock, lock_sha256=hashlib.sha256(lock.encode()).hexdigest())
    d["training"] = _RECIPE
    d["lineage"] = {"parent": "iris@1.0.0", "reason": "retrained on new data"}
    card = parse_card(json.dumps(d).encode())
    assert card.training is not None and card.training.cv_folds == 5 and card.lineage is not None
    assert card.environment.lock == lock
    assert json.loads(card.to_json()) == d
    md = card.to_markdown()
    assert "## Training recipe" in md and "iris@1.0.0" in md and "requirements.lock" in md


def test_schema1_card_still_parses_and_round_trips_to_the_same_bytes(artifact: Path) -> None:
    d = _card_dict(artifact)
    d["schema_version"] = 1
    _drop_schema3(d)
    del d["environment"]["lock"], d["references"]["globals"], d["references"]["local_modules"]
    del d["training"], d["lineage"]
    raw = json.dumps(d, indent=2, ensure_ascii=False).encode() + b"\n"
    card = parse_card(raw)
    assert card.schema_version == 1 and card.references.globals is None and card.training is None
    assert card.to_json() == raw
    assert "## Training recipe" not in card.to_markdown()
    for field in ("training", "lineage"):  # a schema 1 card cannot carry schema 2 fields
        with pytest.raises(CardError, match=f"unknown field '{field}'"):
            parse_card(json.dumps({**d, field: None}).encode())
    with pytest.raises(UsageError, match=r"^image rebuild needs a card of schema 2; iris 1\.0\.0 has schema 1"):
        require_schema2(card, "image rebuild")
    require_schema2(parse_card(artifact_paths(artifact).card_json.read_bytes()), "image rebuild")


def _drop_schema3(d: dict[str, Any]) -> None:
    for key in ("image", "system_packages", "threads"):
        del d["environment"][key]
    del d["reference"]


def test_schema2_card_still_parses_and_round_trips_to_the_same_bytes(artifact: Path) -> None:
    d = _card_dict(artifact)
    d["schema_version"] = 2
    _drop_schema3(d)
    raw = json.dumps(d, indent=2, ensure_ascii=False).encode() + b"\n"
    card = parse_card(raw)
    assert card.schema_version == 2 and card.reference is None and card.environment.system_packages is None
    assert card.to_json() == raw
    md = card.to_markdown()
    assert "## Training recipe" in md and "## Reference set" not in md and "## Runtime image" not in md
    for field in ("reference",):  # a schema 2 card cannot carry schema 3 fields
        with pytest.raises(CardError, match=f"unknown field '{field}'"):
            parse_card(json.dumps({**d, field: None}).encode())
    with pytest.raises(CardError, match=r"unknown field 'environment\.threads'"):
        parse_card(json.dumps({**d, "environment": {**d["environment"], "threads": None}}).encode())
    with pytest.raises(
        UsageError, match=r"^upgrade-check --certify needs a card of schema 3; iris 1\.0\.0 has schema 2"
    ):
        require_schema3(card, "upgrade-check --certify")


def test_schema3_card_records_the_runtime_and_renders_its_sections(artifact: Path) -> None:
    card = parse_card(artifact_paths(artifact).card_json.read_bytes())
    assert card.schema_version == 3
    env = card.environment
    assert env.system_packages == () and env.image is None  # not in an image: nothing added, no image named
    assert env.threads is not None and env.threads.limit == 1
    assert set(env.threads.variables) >= {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
    md = card.to_markdown()
    assert "## Runtime image" in md and "## Reference set" in md
    assert "- **Reference outputs computed under:** 1 thread(s)" in md


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("data.split", {"test_size": 0.2}, "missing field 'data.split.seed'"),
        ("data.split", {"test_size": "0.2", "seed": 1}, "'data.split.test_size' must be a number"),
        ("data.split", {"test_size": 2, "seed": 1}, "'data.split.test_size' must be between 0 and 1"),
        ("data.split", {"test_size": 0.2, "seed": -1}, "'data.split.seed' must not be negative"),
        ("data.split", {"test_size": 0.2, "seed": 1, "x": 1}, "unknown field 'data.split.x'"),
        ("data.split", [0.2, 1], "'data.split' must be an object or null"),
        ("environment.image", {"ref": "x", "id": "sha256:abc"}, "'environment.image.id' is not sha256:<64 hex>"),
        ("environment.image", {"id": "sha256:" + "0" * 64}, "missing field 'environment.image.ref'"),
        ("environment.system_packages", None, "'environment.system_packages' must be a list"),
        ("environment.system_packages", [{"name": "curl"}], "missing field 'environment.system_packages[0].version'"),
        (
            "environment.system_packages",
            [{"name": "b", "version": "1"}, {"name": "a", "version": "1"}],
            "'environment.system_packages' must be sorted",
        ),
        ("environment.threads", {"variables": {}}, "missing field 'environment.threads.blas'"),
        ("reference", {"file": "x"}, "'reference.file' is not a <stem>.reference.json.gz file name"),
    ],
)
def test_schema3_fields_are_parsed_strictly_naming_the_field(
    artifact: Path, field: str, value: Any, message: str
) -> None:
    d = _card_dict(artifact)
    *parents, key = field.split(".")
    target = d
    for part in parents:
        target = target[part]
    target[key] = value
    with pytest.raises(CardError, match=re.escape(message)):
        parse_card(json.dumps(d).encode())


def test_a_malformed_split_is_exit_3_for_card_plots_not_a_crash(artifact: Path, runner: Any, tmp_path: Path) -> None:
    """Issue 22's bug: a card whose data.split is malformed passed the parser, then
    ``card --plots`` crashed (exit 70). The parser now refuses it: exit 3, one line."""
    from toolkit.cli import app

    paths = artifact_paths(artifact)
    d = json.loads(paths.card_json.read_text())
    d["data"]["split"] = {"test_size": "a fifth", "seed": 42}
    paths.card_json.write_text(json.dumps(d, indent=2) + "\n")
    result = runner.invoke(app, ["card", str(artifact), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 3, result.output
    assert "'data.split.test_size' must be a number" in result.output
    assert "Traceback" not in result.output


def test_save_refuses_a_malformed_split_before_writing_anything(
    tmp_path: Path, tiny_pipeline: Any, iris_frame: tuple[Any, Any]
) -> None:
    from toolkit.card import DataInfo

    pipeline, (X, _) = tiny_pipeline, iris_frame
    with pytest.raises(UsageError, match=r"'data\.split\.seed' must not be negative"):
        toolkit.save(
            pipeline,
            tmp_path / "m.joblib",
            name="m",
            version="1.0.0",
            probe=X.head(4),
            data=DataInfo(split={"test_size": 0.2, "seed": -3}),  # type: ignore[arg-type]
        )
    assert list(tmp_path.iterdir()) == []


def test_a_card_nested_thousands_deep_is_a_card_error(artifact: Path, runner: Any) -> None:
    # 36 KB: params 5,000 levels deep. json.loads would raise a raw RecursionError.
    d = _card_dict(artifact)
    text = json.dumps(d)
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    raw = text.replace('"params": {', '"params": {"deep": ' + deep + ", ", 1).encode()
    assert 30_000 < len(raw) < 60_000
    with pytest.raises(CardError, match="nested"):
        parse_card(raw)
    # Just over the limit, where json.loads succeeds: refused by depth, naming the field.
    shallow = text.replace('"params": {', '"params": {"deep": ' + '{"a":' * 70 + "1" + "}" * 70 + ", ", 1)
    with pytest.raises(CardError, match=r"'params\.deep\.a\.a.*' is nested deeper than 64 levels"):
        parse_card(shallow.encode())
    # API and CLI: exit 3, one line, never a RecursionError.
    artifact_paths(artifact).card_json.write_bytes(raw)
    with pytest.raises(CardError):
        toolkit.load(artifact)
    from toolkit.cli import app

    result = runner.invoke(app, ["verify", str(artifact)])
    assert result.exit_code == 3 and len(result.stderr.strip().splitlines()) == 1 and "nested" in result.stderr
