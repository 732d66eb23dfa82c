"""``toolkit sbom``: the artifact's CycloneDX 1.6 ML-BOM (JSON), from its card alone.

The model is a ``machine-learning-model`` component with a ``modelCard``; the dataset a
``data`` component; every entry of the card's lock a ``library`` with its purl and hashes;
the base image (and, card schema 3, the training image) a ``container``; the recipe or the
API entry point the ``formulation``. Written by hand: cyclonedx-python-lib cannot write a
``modelCard`` yet (its issue #912); the tests validate our output with its schema and reader.
Same card, same bytes: the serial number is derived from the card's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from toolkit import _files
from toolkit.errors import UsageError
from toolkit.provenance.statement import base_image_digest

if TYPE_CHECKING:
    from toolkit.card import ModelCard

__all__ = ["LockEntry", "build_sbom", "lock_entries", "render_sbom", "write_sbom"]

SPEC_VERSION = "1.6"
_REQ_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s;\\]+)")
_HASH_RE = re.compile(r"--hash=(?P<alg>sha256|sha384|sha512):(?P<hex>[0-9a-f]+)")
_ALG = {"sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}
_SEPARATORS = re.compile(r"[-_.]+")


@dataclass(frozen=True, kw_only=True, slots=True)
class LockEntry:
    """One pinned distribution of a hash-locked requirements file."""

    name: str  # canonical (PEP 503)
    version: str
    hashes: tuple[tuple[str, str], ...]  # (algorithm, hex)


def render_sbom(artifact: str | os.PathLike[str]) -> bytes:
    """The BOM of the artifact whose card is beside ``artifact`` (nothing is unpickled).

    Raises: IntegrityError/CardError (the card), UsageError.
    """
    from toolkit.artifact import artifact_paths
    from toolkit.card import MAX_CARD_BYTES, parse_card

    paths = artifact_paths(artifact)
    card_bytes = _files.read_regular(paths.card_json, "card", limit=MAX_CARD_BYTES)
    card = parse_card(card_bytes, where=str(paths.card_json))
    bom = build_sbom(card, card_sha256=hashlib.sha256(card_bytes).hexdigest())
    return (json.dumps(bom, indent=2, ensure_ascii=False) + "\n").encode()


def write_sbom(artifact: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """``render_sbom`` written atomically to ``out``. Raises: as ``render_sbom``; UsageError (``out``)."""
    target = Path(out)
    if target.is_dir():
        raise UsageError(f"--out {target} is a directory; give the BOM file's path")
    data = render_sbom(artifact)
    _files.save(target, data)
    return target


def build_sbom(card: ModelCard, *, card_sha256: str) -> dict[str, Any]:
    """The BOM as a JSON document."""
    from toolkit import __version__

    model_ref = f"model:{card.name}@{card.version}"
    components: list[dict[str, Any]] = []
    depends: list[str] = []
    dataset = _dataset(card)
    if dataset is not None:
        components.append(dataset)
        depends.append(dataset["bom-ref"])
    for image in _images(card):
        components.append(image)
        depends.append(image["bom-ref"])
    libraries = list(_libraries(card))
    components += libraries
    depends += [lib["bom-ref"] for lib in libraries]
    model = _model(card, model_ref, dataset["bom-ref"] if dataset is not None else None)
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": uuid.uuid5(uuid.NAMESPACE_URL, f"toolkit-card:sha256:{card_sha256}").urn,
        "version": 1,
        "metadata": {
            "timestamp": card.created_at,
            "tools": {"components": [{"type": "application", "name": "toolkit", "version": __version__}]},
            "component": model,
            "properties": [{"name": "toolkit:card.sha256", "value": card_sha256}],
        },
        "components": components,
        "dependencies": [
            {"ref": model_ref, "dependsOn": depends},
            *({"ref": ref} for ref in depends),
        ],
        "formulation": [_formulation(card, model_ref, dataset["bom-ref"] if dataset is not None else None)],
    }


def lock_entries(text: str) -> list[LockEntry]:
    """Every ``name==version`` of a pip-compile lock with its ``--hash`` options, in order."""
    entries: list[LockEntry] = []
    for line in _logical_lines(text):
        m = _REQ_RE.match(line)
        if m is None:
            continue
        hashes = tuple((_ALG[h["alg"]], h["hex"]) for h in _HASH_RE.finditer(line))
        entries.append(LockEntry(name=_canonical(m["name"]), version=m["version"], hashes=hashes))
    return entries


# -- the parts ----------------------------------------------------------------------------------


def _model(card: ModelCard, ref: str, dataset_ref: str | None) -> dict[str, Any]:
    task = _task(card)
    parameters: dict[str, Any] = {
        "approach": {"type": "supervised"},
        "task": task,
        "architectureFamily": _family(card.algorithm),
        "modelArchitecture": " -> ".join([*card.preprocessing, card.algorithm])
        if card.preprocessing
        else card.algorithm,
    }
    if dataset_ref is not None:
        parameters["datasets"] = [{"ref": dataset_ref}]
    if card.data.features:
        parameters["inputs"] = [{"format": f"{f.name}: {f.dtype}"} for f in card.data.features]
    target = card.data.target or "prediction"
    if card.data.classes:
        shown = ", ".join(map(str, card.data.classes))
        parameters["outputs"] = [{"format": f"{target}: class label ({shown})"}]
    else:
        parameters["outputs"] = [{"format": f"{target}: {'number' if task == 'regression' else 'label'}"}]
    model_card: dict[str, Any] = {"bom-ref": f"model-card:{card.name}@{card.version}", "modelParameters": parameters}
    # The hyperparameters: modelParameters has no place for them, properties do.
    hyper = [
        {"name": f"toolkit:param.{k}", "value": json.dumps(v, sort_keys=True)} for k, v in sorted(card.params.items())
    ]
    if hyper:
        model_card["properties"] = hyper
    metrics = [
        {"type": metric, "value": repr(float(value)), "slice": section}
        for section, values in card.metrics.items()
        for metric, value in values.items()
    ]
    if metrics:
        model_card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    considerations: dict[str, Any] = {}
    if card.intended_use:
        considerations["useCases"] = [card.intended_use]
    if card.limitations:
        considerations["technicalLimitations"] = [card.limitations]
    if considerations:
        model_card["considerations"] = considerations
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": ref,
        "name": card.name,
        "version": card.version,
        "authors": [{"name": card.author}],
        "hashes": [{"alg": "SHA-256", "content": card.artifact.sha256}],
        "properties": [
            {"name": "toolkit:artifact.file", "value": card.artifact.file},
            {"name": "toolkit:artifact.size", "value": str(card.artifact.size)},
            {"name": "toolkit:card.schema_version", "value": str(card.schema_version)},
        ],
        "modelCard": model_card,
    }
    if card.intended_use:
        component["description"] = card.intended_use
    return component


def _dataset(card: ModelCard) -> dict[str, Any] | None:
    source = card.training.dataset_source if card.training is not None else card.data.source
    sha = card.training.dataset_sha256 if card.training is not None else card.data.sha256
    if sha is None:
        return None
    name = source or "training data"
    sizes = f"{card.data.n_train} train and {card.data.n_test} test rows" if card.data.n_train is not None else ""
    data: dict[str, Any] = {"type": "dataset", "name": name}
    if sizes:
        data["description"] = sizes
    return {
        "type": "data",
        "bom-ref": f"dataset:sha256:{sha}",
        "name": name,
        "hashes": [{"alg": "SHA-256", "content": sha}],
        "data": [data],
    }


def _images(card: ModelCard) -> Iterator[dict[str, Any]]:
    env = card.environment
    if env.base_image is not None:
        name, hex_digest = base_image_digest(env.base_image)
        assert name is not None  # the card's parser requires name@sha256:HEX
        yield _container("base-image", name, hex_digest)
    image = env.image  # card schema 3: the image the model was trained in
    if image is not None:
        yield _container("training-image", image.ref or "training-image", image.id.removeprefix("sha256:"))


def _container(ref: str, name: str, hex_digest: str) -> dict[str, Any]:
    repository = name.rsplit("/", 1)[-1].split(":", 1)[0] if "/" in name else name.split(":", 1)[0]
    # As packageurl-python writes it (the reference reader): the digest's colon stays as it is.
    purl = f"pkg:oci/{quote(repository.lower(), safe='')}@sha256:{hex_digest}"
    purl += f"?repository_url={quote(name, safe='/:')}"
    return {
        "type": "container",
        "bom-ref": ref,
        "name": name,
        "version": f"sha256:{hex_digest}",
        "hashes": [{"alg": "SHA-256", "content": hex_digest}],
        "purl": purl,
    }


def _libraries(card: ModelCard) -> Iterator[dict[str, Any]]:
    env = card.environment
    if env.lock is not None:
        for entry in lock_entries(env.lock):
            yield _library(entry.name, entry.version, entry.hashes)
        return
    # No lock text in the card (schema 1, or trained outside the image): what was installed, unhashed.
    for name, version in env.packages.items():
        yield _library(name, version, ())


def _library(name: str, version: str, hashes: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    purl = f"pkg:pypi/{quote(name, safe='')}@{quote(version, safe='')}"
    component: dict[str, Any] = {"type": "library", "bom-ref": purl, "name": name, "version": version, "purl": purl}
    if hashes:
        component["hashes"] = [{"alg": alg, "content": hex_} for alg, hex_ in hashes]
    return component


def _formulation(card: ModelCard, model_ref: str, dataset_ref: str | None) -> dict[str, Any]:
    if card.training is not None:
        recipe = json.dumps(card.training.to_dict(), sort_keys=True, separators=(",", ":"))
        how = [{"name": "toolkit:training.recipe", "value": recipe}]
        description = f"toolkit train: {card.training.model} on {card.training.dataset_source}"
    else:
        how = [{"name": "toolkit:training.entry_point", "value": "toolkit.save"}]
        description = "saved through the API with toolkit.save (no recipe recorded)"
    if card.lineage is not None:
        how.append({"name": "toolkit:lineage.parent", "value": card.lineage.parent})
        how.append({"name": "toolkit:lineage.reason", "value": card.lineage.reason})
    workflow: dict[str, Any] = {
        "bom-ref": f"workflow:{card.name}@{card.version}",
        "uid": f"train:{card.name}@{card.version}",
        "name": "train",
        "description": description,
        "taskTypes": ["build"],
        "outputs": [{"resource": {"ref": model_ref}}],
        "properties": how,
    }
    if dataset_ref is not None:
        workflow["inputs"] = [{"resource": {"ref": dataset_ref}}]
    return {"bom-ref": f"formula:{card.name}@{card.version}", "workflows": [workflow]}


def _task(card: ModelCard) -> str:
    if card.training is not None and card.training.task:
        return card.training.task
    if card.data.classes is not None:
        return "classification"
    sections = {m for values in card.metrics.values() for m in values}
    return "regression" if sections & {"rmse", "mae", "r2"} else "classification"


def _family(algorithm: str) -> str:
    # The estimator's family, from scikit-learn's own naming (LogisticRegression -> linear model).
    lowered = algorithm.lower()
    for words, family in (
        (("boosting",), "gradient-boosted trees"),
        (("forest", "tree", "extratrees"), "decision trees"),
        (("logistic", "ridge", "linear", "lasso", "elasticnet", "sgd"), "linear model"),
        (("svc", "svr", "svm"), "support vector machine"),
        (("neighbors", "knn"), "nearest neighbours"),
        (("mlp",), "neural network"),
        (("bayes",), "naive Bayes"),
    ):
        if any(w in lowered for w in words):
            return family
    return algorithm


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield (pending + line).strip()
        pending = ""
    if pending:
        yield pending.strip()


def _canonical(name: str) -> str:
    return _SEPARATORS.sub("-", name).lower()
