"""The manifest of a model: the CNCF ModelPack media types, strict parsing, the artifact's layout.

An artifact's files (``.joblib``, ``.card.json``, ``.card.md`` and ``.sig`` when signed) are
the layers of one OCI image manifest, each annotated with its file name. Building is
deterministic (canonical JSON, nothing but the card's time): same artifact, same digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit import _json
from toolkit.artifact import (
    CARD_JSON_SUFFIX,
    CARD_MD_SUFFIX,
    MODEL_SUFFIX,
    PROVENANCE_SUFFIX,
    REFERENCE_SUFFIX,
    SIG_SUFFIX,
)
from toolkit.card import ModelCard
from toolkit.errors import IntegrityError
from toolkit.oci.reference import DIGEST_RE

__all__ = [
    "ANNOTATION_BASE_IMAGE",
    "ANNOTATION_CARD_SHA256",
    "ANNOTATION_LOCK_SHA256",
    "ANNOTATION_NAME",
    "ANNOTATION_VERSION",
    "ARTIFACT_TYPE",
    "CARD_JSON_SUFFIX",
    "CARD_MD_SUFFIX",
    "CONFIG_MEDIA_TYPE",
    "DOC_MEDIA_TYPE",
    "FILEPATH_ANNOTATION",
    "MANIFEST_MEDIA_TYPE",
    "MAX_MANIFEST_BYTES",
    "MODEL_SUFFIX",
    "PROVENANCE_MEDIA_TYPE",
    "REFERENCE_MEDIA_TYPE",
    "SIGNATURE_MEDIA_TYPE",
    "SIG_SUFFIX",
    "TITLE_ANNOTATION",
    "WEIGHT_MEDIA_TYPE",
    "Descriptor",
    "Layout",
    "Manifest",
    "build_manifest",
    "digest_of",
    "layer_descriptor",
    "layout_of",
    "parse_manifest",
]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
# CNCF ModelPack (model-spec v1): the artifact type, the config, weights and documents.
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"
DOC_MEDIA_TYPE = "application/vnd.cncf.model.doc.v1.raw"
# ModelPack has no place for a signature; <stem>.sig is a Sigstore bundle v0.3 (SPEC: Signatures).
SIGNATURE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
# <stem>.provenance.json: SLSA provenance in a DSSE envelope (the media type in-toto and Sigstore use).
PROVENANCE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
# Nor for a model's reference outputs: <stem>.reference.json.gz (card schema 3) is the toolkit's own.
REFERENCE_MEDIA_TYPE = "application/vnd.toolkit.reference.v1+json+gzip"
FILEPATH_ANNOTATION = "org.cncf.model.filepath"
TITLE_ANNOTATION = "org.opencontainers.image.title"
# What ModelPack has no place for goes into the manifest's own annotations.
ANNOTATION_NAME = "dev.toolkit.name"
ANNOTATION_VERSION = "dev.toolkit.version"
ANNOTATION_CARD_SHA256 = "dev.toolkit.card.sha256"
ANNOTATION_BASE_IMAGE = "dev.toolkit.base_image"
ANNOTATION_LOCK_SHA256 = "dev.toolkit.lock_sha256"

# Our manifests are ~2 KB; distribution itself refuses manifests over 4 MiB.
MAX_MANIFEST_BYTES = 256 * 1024
# A layer's file name is a plain base name: no directory, no "..", nothing hidden.
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,250}\Z")


@dataclass(frozen=True, kw_only=True, slots=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its size."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str]

    @property
    def file_name(self) -> str | None:
        return self.annotations.get(FILEPATH_ANNOTATION)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    """A parsed OCI image manifest and the exact bytes it was parsed from."""

    digest: str
    raw: bytes
    artifact_type: str | None
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str]


def parse_manifest(raw: bytes, *, where: str = "manifest") -> Manifest:
    """Parse an OCI image manifest strictly (unknown fields are ignored, as OCI asks).

    Raises: IntegrityError naming the field.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{where}: manifest is over the {MAX_MANIFEST_BYTES}-byte limit; refused")
    try:
        doc = _json.loads(raw)
    except _json.JsonError as e:
        raise IntegrityError(f"{where}: manifest is not strict JSON ({e})") from e
    if not isinstance(doc, dict):
        raise IntegrityError(f"{where}: manifest is not a JSON object")
    if doc.get("schemaVersion") != 2 or isinstance(doc.get("schemaVersion"), bool):
        raise IntegrityError(f"{where}: manifest schemaVersion must be 2")
    if doc.get("mediaType") != MANIFEST_MEDIA_TYPE:
        raise IntegrityError(f"{where}: manifest mediaType {doc.get('mediaType')!r} is not {MANIFEST_MEDIA_TYPE}")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise IntegrityError(f"{where}: manifest artifactType must be a string")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise IntegrityError(f"{where}: manifest layers must be a list")
    return Manifest(
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        raw=raw,
        artifact_type=artifact_type,
        config=_descriptor(doc.get("config"), f"{where}: config"),
        layers=tuple(_descriptor(layer, f"{where}: layers[{i}]") for i, layer in enumerate(layers)),
        annotations=_annotations(doc.get("annotations"), f"{where}: annotations"),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class Layout:
    """The layers of one toolkit artifact, found and checked by file name."""

    model: Descriptor
    card_json: Descriptor
    card_md: Descriptor
    signature: Descriptor | None
    reference: Descriptor | None = None  # card schema 3: the reference set
    provenance: Descriptor | None = None

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        extra = tuple(d for d in (self.reference, self.signature, self.provenance) if d is not None)
        return (self.model, self.card_json, self.card_md, *extra)


def layout_of(manifest: Manifest, *, where: str) -> Layout:
    """The artifact's layers in a manifest: one model, two cards, at most one signature,
    all of one stem, each a plain file name. Raises: IntegrityError."""
    if manifest.artifact_type != ARTIFACT_TYPE:
        raise IntegrityError(f"{where}: artifactType {manifest.artifact_type!r} is not a model ({ARTIFACT_TYPE})")
    if manifest.config.media_type != CONFIG_MEDIA_TYPE:
        raise IntegrityError(f"{where}: config media type {manifest.config.media_type!r} is not {CONFIG_MEDIA_TYPE}")
    by_name: dict[str, Descriptor] = {}
    for i, layer in enumerate(manifest.layers):
        name = layer.file_name
        if name is None:
            raise IntegrityError(f"{where}: layers[{i}] has no {FILEPATH_ANNOTATION} annotation")
        if not _FILE_NAME_RE.match(name) or ".." in name:
            raise IntegrityError(f"{where}: layers[{i}] file name {name!r} is not a plain file name; refused")
        title = layer.annotations.get(TITLE_ANNOTATION)
        if title is not None and title != name:
            raise IntegrityError(f"{where}: layers[{i}] title {title!r} differs from its file path {name!r}")
        if name in by_name:
            raise IntegrityError(f"{where}: two layers are named {name!r}; refused")
        by_name[name] = layer
    models = [n for n in by_name if n.endswith(MODEL_SUFFIX)]
    if len(models) != 1:
        raise IntegrityError(f"{where}: expected one {MODEL_SUFFIX} layer, found {len(models)}")
    stem = models[0][: -len(MODEL_SUFFIX)]
    wanted = {
        stem + MODEL_SUFFIX: WEIGHT_MEDIA_TYPE,
        stem + CARD_JSON_SUFFIX: DOC_MEDIA_TYPE,
        stem + CARD_MD_SUFFIX: DOC_MEDIA_TYPE,
        stem + SIG_SUFFIX: SIGNATURE_MEDIA_TYPE,
        stem + PROVENANCE_SUFFIX: PROVENANCE_MEDIA_TYPE,
        stem + REFERENCE_SUFFIX: REFERENCE_MEDIA_TYPE,
    }
    for name, layer in by_name.items():
        if name not in wanted:
            raise IntegrityError(f"{where}: unexpected layer {name!r} (not a file of artifact {stem!r})")
        if layer.media_type != wanted[name]:
            raise IntegrityError(f"{where}: layer {name!r} has media type {layer.media_type!r}, not {wanted[name]}")
    for suffix in (CARD_JSON_SUFFIX, CARD_MD_SUFFIX):
        if stem + suffix not in by_name:
            raise IntegrityError(f"{where}: layer {stem + suffix!r} is missing")
    return Layout(
        model=by_name[stem + MODEL_SUFFIX],
        card_json=by_name[stem + CARD_JSON_SUFFIX],
        card_md=by_name[stem + CARD_MD_SUFFIX],
        signature=by_name.get(stem + SIG_SUFFIX),
        reference=by_name.get(stem + REFERENCE_SUFFIX),
        provenance=by_name.get(stem + PROVENANCE_SUFFIX),
    )


def build_manifest(card: ModelCard, card_json: bytes, layers: list[Descriptor]) -> tuple[bytes, bytes]:
    """(manifest bytes, config bytes) for an artifact: deterministic, same input, same bytes."""
    config = _config_blob(card, layers)
    annotations = {
        ANNOTATION_NAME: card.name,
        ANNOTATION_VERSION: card.version,
        ANNOTATION_CARD_SHA256: hashlib.sha256(card_json).hexdigest(),
        "org.opencontainers.image.created": card.created_at,
        TITLE_ANNOTATION: card.name,
        "org.opencontainers.image.version": card.version,
    }
    if card.environment.base_image:
        annotations[ANNOTATION_BASE_IMAGE] = card.environment.base_image
    if card.environment.lock_sha256:
        annotations[ANNOTATION_LOCK_SHA256] = card.environment.lock_sha256
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": Descriptor(
            media_type=CONFIG_MEDIA_TYPE, digest=digest_of(config), size=len(config), annotations={}
        ).to_dict(),
        "layers": [layer.to_dict() for layer in layers],
        "annotations": dict(sorted(annotations.items())),
    }
    return _canonical(manifest), config


def layer_descriptor(media_type: str, name: str, digest: str, size: int) -> Descriptor:
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        annotations={FILEPATH_ANNOTATION: name, TITLE_ANNOTATION: name},
    )


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _config_blob(card: ModelCard, layers: list[Descriptor]) -> bytes:
    """A ModelPack model config, generated only from the card (so it is deterministic)."""
    return _canonical(
        {
            "descriptor": {
                "name": card.name,
                "version": card.version,
                "family": card.algorithm,
                "authors": [card.author],
                "createdAt": card.created_at,
            },
            "config": {"format": "joblib"},
            "modelfs": {"type": "layers", "diffIds": [d.digest for d in layers]},
        }
    )


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise IntegrityError(f"{where}: a descriptor must be a JSON object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise IntegrityError(f"{where}.mediaType: must be a non-empty string")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise IntegrityError(f"{where}.digest: must be sha256:<64 lowercase hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise IntegrityError(f"{where}.size: must be a non-negative integer")
    return Descriptor(
        media_type=media_type, digest=digest, size=size, annotations=_annotations(raw.get("annotations"), where)
    )


def _annotations(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise IntegrityError(f"{where}: annotations must map strings to strings")
    return dict(raw)
