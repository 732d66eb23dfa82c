"""The in-toto Statement v1 with SLSA provenance v1 that a card and its files make.

Everything in it comes from the card (read strictly) and the digests of the files on disk;
nothing is unpickled. A card of schema 1 or 2 lacks some of what SLSA asks for (the training
image, the run's times): each gap is one line in ``Statement.notes`` and the field is left
out, never invented. Schema 3's fields (``environment.image``, ``environment.system_packages``)
are read when present and never required.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.fingerprint import Fingerprint

__all__ = [
    "BUILDER_ID",
    "BUILD_TYPE",
    "DEP_BASE_IMAGE",
    "DEP_DATASET",
    "DEP_LOCK",
    "DEP_PARENT",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "Script",
    "Statement",
    "base_image_digest",
    "build_statement",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# The toolkit's own build type and builder: URNs, since the toolkit has no web home to point at.
# The build type's parameters are the card's training recipe or the user's script.
BUILD_TYPE = "urn:toolkit:build-type:train:v1"
BUILDER_ID = "urn:toolkit:builder"  # + ":image:sha256:<id>" when the card names its training image
# resolvedDependencies' names, which verify-provenance and the gate look them up by.
DEP_BASE_IMAGE = "base-image"
DEP_LOCK = "requirements.lock"
DEP_DATASET = "dataset"
DEP_PARENT = "parent-model"
_LOCAL_MODULE = "local-module:"
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True, kw_only=True, slots=True)
class Script:
    """The user's training script, as the host ran it (its path relative to the project)."""

    path: str
    sha256: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Statement:
    """A statement's JSON document, its canonical bytes, and what the card could not tell."""

    document: Mapping[str, Any]
    notes: tuple[str, ...]

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys): same card, same files, same payload."""
        return json.dumps(self.document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def build_statement(
    card: ModelCard, digests: Mapping[str, str], *, script: Script | None = None, toolkit_version: str
) -> Statement:
    """The statement for an artifact whose files (name -> sha256) are ``digests``."""
    notes: list[str] = []
    env = card.environment
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": _external(card, script, notes),
            "internalParameters": {
                "name": card.name,
                "version": card.version,
                "algorithm": card.algorithm,
                "card_schema_version": card.schema_version,
                "python": f"{env.python_implementation} {env.python_version}",
                "platform": f"{env.os} {env.machine}, {env.libc}",
                "in_container": env.in_container,
            },
            "resolvedDependencies": _dependencies(card, notes),
        },
        "runDetails": {
            "builder": _builder(card, toolkit_version, notes),
            "metadata": _metadata(card, notes),
        },
    }
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": n, "digest": {"sha256": digests[n]}} for n in sorted(digests)],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    return Statement(document=document, notes=tuple(notes))


def base_image_digest(value: str) -> tuple[str | None, str]:
    """(name or None, sha256 hex) of ``name@sha256:HEX``, ``sha256:HEX`` or ``HEX``."""
    name, _, digest = value.rpartition("@")
    return (name or None), digest.removeprefix("sha256:")


def _external(card: ModelCard, script: Script | None, notes: list[str]) -> dict[str, Any]:
    if script is not None:
        return {"script": {"path": script.path, "sha256": script.sha256, "args": list(script.args)}}
    if card.training is not None:
        return {"recipe": card.training.to_dict()}
    if card.schema_version < 2:
        notes.append(f"card schema {card.schema_version} has no training recipe: externalParameters name the API only")
    else:
        notes.append("the card has no training recipe and no script was given: externalParameters name the API only")
    return {"entryPoint": "toolkit.save"}


def _dependencies(card: ModelCard, notes: list[str]) -> list[dict[str, Any]]:
    env = card.environment
    deps: list[dict[str, Any]] = []
    if env.base_image is not None:
        _, hex_digest = base_image_digest(env.base_image)
        deps.append({"name": DEP_BASE_IMAGE, "uri": f"docker://{env.base_image}", "digest": {"sha256": hex_digest}})
    else:
        notes.append("the card records no base image (trained outside the pinned image)")
    if env.lock_sha256 is not None:
        lock: dict[str, Any] = {"name": DEP_LOCK, "digest": {"sha256": env.lock_sha256}, "mediaType": "text/plain"}
        # The card's parser proved its lock text hashes to lock_sha256: the digest is of that content.
        lock["annotations"] = {"content_in_card": env.lock is not None}
        deps.append(lock)
    else:
        notes.append("the card records no requirements.lock")
    source = card.training.dataset_source if card.training is not None else card.data.source
    sha = card.training.dataset_sha256 if card.training is not None else card.data.sha256
    if sha is not None:
        dataset: dict[str, Any] = {"name": DEP_DATASET, "digest": {"sha256": sha}}
        if source:
            dataset["annotations"] = {"source": source}
            if _URI_RE.match(source) and "\\" not in source:
                dataset["uri"] = source
        deps.append(dataset)
    else:
        notes.append("the card records no dataset sha256")
    for module in card.references.local_modules or ():
        deps.append({"name": _LOCAL_MODULE + module.module, "digest": {"sha256": module.sha256}})
    if card.lineage is not None:
        deps.append(
            {
                "name": DEP_PARENT,
                "uri": f"toolkit-model:{card.lineage.parent}",
                "annotations": {"parent": card.lineage.parent, "reason": card.lineage.reason},
            }
        )
    for package in _system_packages(env):  # card schema 3
        deps.append({"name": f"deb:{package[0]}", "uri": f"pkg:deb/debian/{package[0]}@{package[1]}"})
    return deps


def _builder(card: ModelCard, toolkit_version: str, notes: list[str]) -> dict[str, Any]:
    version = {"toolkit": card.environment.packages.get("toolkit", toolkit_version)}
    image_id = _image_id(card)
    if image_id is None:
        notes.append(f"card schema {card.schema_version} names no training image: the builder is the toolkit alone")
        return {"id": BUILDER_ID, "version": version}
    return {"id": f"{BUILDER_ID}:image:{image_id}", "version": version}


def _metadata(card: ModelCard, notes: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"invocationId": f"{card.name}@{card.version}"}
    finished = card.created_at
    if _rfc3339(finished) is None:
        notes.append(f"created_at {finished!r} is not an RFC 3339 time: the run's times are left out")
        return meta
    notes.append("the card records one time (created_at): startedOn and finishedOn both take it")
    meta["startedOn"] = meta["finishedOn"] = finished
    return meta


def _image_id(card: ModelCard) -> str | None:
    image = card.environment.image  # card schema 3; its parser checked the id's form
    return None if image is None else image.id


def _system_packages(env: Fingerprint) -> list[tuple[str, str]]:
    return [(p.name, p.version) for p in env.system_packages or ()]


def _rfc3339(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None
