"""The CycloneDX 1.6 ML-BOM: validated by cyclonedx-python-lib's bundled schema, read back by its reader."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from _provenance_support import pinned_artifact
from typer.testing import CliRunner

import toolkit
from toolkit.cli import app
from toolkit.provenance.sbom import lock_entries

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pinned_model(tiny_pipeline: Any, iris_frame: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe model with a base image and the project's real lock in its card; saved once for
    the module (no test changes it: each reads it or writes its BOM elsewhere)."""
    directory = tmp_path_factory.mktemp("pinned")

    def make(directory: Path, **kwargs: Any) -> Path:
        path = directory / "iris-1.0.0.joblib"
        toolkit.save(tiny_pipeline, path, name="iris", version="1.0.0", probe=iris_frame[0].head(8), **kwargs)
        return path

    with pytest.MonkeyPatch.context() as monkeypatch:
        return pinned_artifact(
            make,
            iris_frame[0],
            monkeypatch,
            directory,
            metrics={"test": {"accuracy": 0.9, "roc_auc": 0.95}, "cv": {"accuracy": 0.88}},
            preprocessing=("StandardScaler on 4 numeric columns",),
            intended_use="Sorting iris flowers in the demo.",
            limitations="Three species only.",
        )


def _sbom(runner: CliRunner, artifact: Path) -> tuple[str, dict[str, Any]]:
    result = runner.invoke(app, ["sbom", str(artifact)])
    assert result.exit_code == 0, result.output
    return result.stdout, json.loads(result.stdout)


@functools.cache
def _validator() -> Any:
    """cyclonedx-python-lib's strict 1.6 validator, built once: it compiles the bundled schema
    (and its SPDX and JSF parts) on first use. Its import, jsonschema's format checkers, costs
    about 3 s of CPU once per process (rfc3987-syntax builds 39 Earley parsers when imported)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


def _validate(text: str) -> None:
    errors = _validator().validate_str(text)
    assert errors is None, str(errors)[:2000]


def test_sbom_is_valid_cyclonedx_1_6_with_model_dataset_libraries_base_and_recipe(
    pinned_model: Path, runner: CliRunner
) -> None:
    text, bom = _sbom(runner, pinned_model)
    _validate(text)
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    model = bom["metadata"]["component"]
    assert model["type"] == "machine-learning-model"
    card = json.loads(pinned_model.with_suffix(".card.json").read_text())
    assert model["hashes"] == [{"alg": "SHA-256", "content": card["artifact"]["sha256"]}]
    params = model["modelCard"]["modelParameters"]
    assert params["task"] == "classification" and params["approach"] == {"type": "supervised"}
    assert params["architectureFamily"] == "linear model"
    assert params["inputs"][0] == {"format": f"{card['data']['features'][0]['name']}: float64"}
    assert params["outputs"] == [{"format": "target: class label (0, 1, 2)"}]
    metrics = model["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert {"type": "roc_auc", "value": "0.95", "slice": "test"} in metrics and len(metrics) == 3
    assert model["modelCard"]["considerations"] == {
        "useCases": ["Sorting iris flowers in the demo."],
        "technicalLimitations": ["Three species only."],
    }
    by_type: dict[str, list[dict[str, Any]]] = {}
    for c in bom["components"]:
        by_type.setdefault(c["type"], []).append(c)
    [dataset] = by_type["data"]
    assert dataset["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(b"iris").hexdigest()}]
    assert params["datasets"] == [{"ref": dataset["bom-ref"]}]
    [base] = by_type["container"]
    assert base["hashes"][0]["content"] == "ab" * 32 and base["purl"].startswith("pkg:oci/python-base@sha256:")
    # Every entry of the lock, with its purl and every hash the lock lists.
    lock = (ROOT / "requirements.lock").read_text()
    pinned = re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", lock, flags=re.M)
    libraries = {c["name"]: c for c in by_type["library"]}
    assert len(libraries) == len(pinned) > 10
    for name, version in pinned:
        lib = libraries[re.sub(r"[-_.]+", "-", name)]
        assert lib["purl"] == f"pkg:pypi/{lib['name']}@{version}"
        assert lib["hashes"] and all(h["alg"] == "SHA-256" and len(h["content"]) == 64 for h in lib["hashes"])
    assert sum(len(c.get("hashes", [])) for c in by_type["library"]) == lock.count("--hash=sha256:")
    [formula] = bom["formulation"]
    [workflow] = formula["workflows"]
    recipe = {p["name"]: p["value"] for p in workflow["properties"]}["toolkit:training.recipe"]
    assert json.loads(recipe)["model"] == "logistic_regression"
    refs = {c["bom-ref"] for c in bom["components"]} | {model["bom-ref"]}
    assert {d["ref"] for d in bom["dependencies"]} == refs


# Next to the other validation: xdist hands out neighbouring tests together, and the
# validator's import (above) is then paid by one worker, not both.
def test_sbom_of_an_api_model_without_lock_or_dataset_is_valid_too(artifact: Path, runner: CliRunner) -> None:
    text, bom = _sbom(runner, artifact)
    _validate(text)
    assert not [c for c in bom["components"] if c["type"] in ("data", "container")]
    assert all("purl" in c for c in bom["components"])


def test_sbom_round_trips_through_the_reference_reader(pinned_model: Path, runner: CliRunner) -> None:
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import ComponentType

    _, bom = _sbom(runner, pinned_model)
    read = Bom.from_json(bom)  # type: ignore[attr-defined]
    assert read.metadata.component.type is ComponentType.MACHINE_LEARNING_MODEL
    assert read.metadata.component.name == "iris"
    purls = {str(c.purl) for c in read.components if c.purl is not None}
    assert {c["purl"] for c in bom["components"] if "purl" in c} == purls
    kinds = {c.type for c in read.components}
    assert {ComponentType.DATA, ComponentType.CONTAINER, ComponentType.LIBRARY} <= kinds


def test_model_card_completeness_against_the_spec(pinned_model: Path, runner: CliRunner) -> None:
    """How many of CycloneDX 1.6's modelCard fields the BOM fills, counted against the schema itself."""
    import cyclonedx.schema._res as res

    schema = json.loads((Path(os.path.dirname(res.__file__)) / "bom-1.6.SNAPSHOT.schema.json").read_text())
    spec = schema["definitions"]["modelCard"]["properties"]
    fields = []
    for key, value in spec.items():
        nested = value.get("properties")
        fields += [f"{key}.{sub}" for sub in nested] if nested else [key]
    _, bom = _sbom(runner, pinned_model)
    card = bom["metadata"]["component"]["modelCard"]
    filled = [f for f in fields if _get(card, f) not in (None, [], {})]
    print(f"modelCard fields filled: {len(filled)} of {len(fields)}: {', '.join(filled)}")
    assert len(fields) == 18  # bom-ref, 7 modelParameters, 2 quantitativeAnalysis, 7 considerations, properties
    assert len(filled) == 12, filled


def _get(obj: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)  # type: ignore[assignment]
    return obj


def test_sbom_out_file_is_written_atomically_and_is_reproducible(
    pinned_model: Path, runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "bom.cdx.json"
    result = runner.invoke(app, ["sbom", str(pinned_model), "--format", "cyclonedx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == _sbom(runner, pinned_model)[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert runner.invoke(app, ["sbom", str(pinned_model), "--format", "spdx"]).exit_code == 2


def test_lock_parser_reads_continuations_extras_markers_and_comments() -> None:
    text = (
        "# header\n"
        "Foo_Bar[extra]==1.2 ; python_version < '4' \\\n"
        "    --hash=sha256:" + "a" * 64 + " \\\n"
        "    --hash=sha256:" + "b" * 64 + "\n"
        "    # via baz\n"
        "zed==0.1 \\\n    --hash=sha256:" + "c" * 64 + "\n"
    )
    entries = lock_entries(text)
    assert [(e.name, e.version, len(e.hashes)) for e in entries] == [("foo-bar", "1.2", 2), ("zed", "0.1", 1)]
