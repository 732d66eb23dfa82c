"""The card's strict JSON form: every malformed card is refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from toolkit.artifact import artifact_paths, read_card
from toolkit.card import MAX_CARD_BYTES, SCHEMA_VERSION, ModelCard, parse_card
from toolkit.errors import CardError, IntegrityError


def _card_dict(artifact: Path) -> dict[str, Any]:
    return json.loads(artifact_paths(artifact).card_json.read_text())


def test_card_round_trips_byte_for_byte(artifact: Path) -> None:
    raw = artifact_paths(artifact).card_json.read_bytes()
    card = parse_card(raw)
    assert card.to_json() == raw
    assert ModelCard.from_dict(card.to_dict()) == card


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
    with pytest.raises(CardError, match=f"{constant} is not allowed"):
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
