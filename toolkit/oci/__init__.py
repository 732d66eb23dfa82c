"""The OCI distribution client: models travel as one OCI image manifest in a registry.

- ``reference``: ``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``; plain HTTP only for loopback.
- ``manifest``: the CNCF ModelPack manifest of an artifact, built deterministically, parsed strictly.
- ``client``: one registry host (session, Docker-config credentials, tokens, timeouts): HEAD,
  upload and streamed, hashed download of blobs; get and put manifests.
- ``transfer``: whole artifacts: ``push``, ``fetch_card`` (never the model), atomic ``pull``.
"""

from __future__ import annotations

from toolkit.oci.client import DEFAULT_TIMEOUT, Client, Progress, docker_credentials
from toolkit.oci.manifest import (
    ANNOTATION_BASE_IMAGE,
    ANNOTATION_CARD_SHA256,
    ANNOTATION_LOCK_SHA256,
    ANNOTATION_NAME,
    ANNOTATION_VERSION,
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    DOC_MEDIA_TYPE,
    FILEPATH_ANNOTATION,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    REFERENCE_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE,
    TITLE_ANNOTATION,
    WEIGHT_MEDIA_TYPE,
    Descriptor,
    Layout,
    Manifest,
    build_manifest,
    layout_of,
    parse_manifest,
)
from toolkit.oci.reference import Reference, is_loopback, parse_reference
from toolkit.oci.transfer import (
    PullResult,
    PushResult,
    RemoteCard,
    fetch_card,
    pull,
    push,
    require_signature,
    trust_configured,
)

__all__ = [
    "ANNOTATION_BASE_IMAGE",
    "ANNOTATION_CARD_SHA256",
    "ANNOTATION_LOCK_SHA256",
    "ANNOTATION_NAME",
    "ANNOTATION_VERSION",
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "DEFAULT_TIMEOUT",
    "DOC_MEDIA_TYPE",
    "FILEPATH_ANNOTATION",
    "MANIFEST_MEDIA_TYPE",
    "MAX_MANIFEST_BYTES",
    "REFERENCE_MEDIA_TYPE",
    "SIGNATURE_MEDIA_TYPE",
    "TITLE_ANNOTATION",
    "WEIGHT_MEDIA_TYPE",
    "Client",
    "Descriptor",
    "Layout",
    "Manifest",
    "Progress",
    "PullResult",
    "PushResult",
    "Reference",
    "RemoteCard",
    "build_manifest",
    "docker_credentials",
    "fetch_card",
    "is_loopback",
    "layout_of",
    "parse_manifest",
    "parse_reference",
    "pull",
    "push",
    "require_signature",
    "trust_configured",
]
