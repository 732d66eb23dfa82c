"""The OCI distribution client: models travel as one OCI image manifest in a registry.

An artifact's files (``.joblib``, ``.card.json``, ``.card.md`` and ``.sig`` when signed)
are the layers of one OCI image manifest, in the CNCF ModelPack media types, each layer
annotated with its file name. The manifest is deterministic: the same artifact gives the
same bytes and so the same digest, and blobs the registry has are skipped with a HEAD.

Written on ``requests`` rather than oras-py: oras-py sets no request timeout (a silent
registry hangs it), retries with sleeps of up to minutes (a stopped registry must fail in
seconds), switches every request to plain HTTP with one ``insecure`` flag, and neither
checks a downloaded blob's digest nor takes an ``artifactType``. Credentials come from the
docker SDK's reader of the Docker client's config (``auths``, ``credsStore``, ``credHelpers``,
``DOCKER_CONFIG``), as ``docker login`` stores them.

Every network or registry failure is translated here into a ``RemoteError`` (exit 6) that
names the host, an unknown repository or tag into a ``RegistryError`` (exit 4), and any
digest, size or layout failure into an ``IntegrityError`` (exit 3).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import ipaddress
import json
import os
import queue
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from toolkit import _files
from toolkit.card import MAX_CARD_BYTES, ModelCard, parse_card
from toolkit.errors import IntegrityError, RegistryError, RemoteError, UsageError

__all__ = [
    "ANNOTATION_BASE_IMAGE",
    "ANNOTATION_CARD_SHA256",
    "ANNOTATION_LOCK_SHA256",
    "ANNOTATION_NAME",
    "ANNOTATION_VERSION",
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "DOC_MEDIA_TYPE",
    "FILEPATH_ANNOTATION",
    "MANIFEST_MEDIA_TYPE",
    "MAX_MANIFEST_BYTES",
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

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
# CNCF ModelPack (model-spec v1): the artifact type, the config, weights and documents.
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"
DOC_MEDIA_TYPE = "application/vnd.cncf.model.doc.v1.raw"
# ModelPack has no place for a signature; <stem>.sig is a Sigstore bundle v0.3 (SPEC: Signatures).
SIGNATURE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
FILEPATH_ANNOTATION = "org.cncf.model.filepath"
TITLE_ANNOTATION = "org.opencontainers.image.title"
# What ModelPack has no place for goes into the manifest's own annotations.
ANNOTATION_NAME = "dev.toolkit.name"
ANNOTATION_VERSION = "dev.toolkit.version"
ANNOTATION_CARD_SHA256 = "dev.toolkit.card.sha256"
ANNOTATION_BASE_IMAGE = "dev.toolkit.base_image"
ANNOTATION_LOCK_SHA256 = "dev.toolkit.lock_sha256"

# Everything a tag may point at: a registry that cannot serve what a client accepts tries to
# convert it (distribution 2.8 to schema 1, which fails with HTTP 400); we would rather see
# what is there and refuse it by name.
_ACCEPT = ", ".join(
    (
        MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
# Our manifests are ~2 KB; distribution itself refuses manifests over 4 MiB.
MAX_MANIFEST_BYTES = 256 * 1024
_MAX_ERROR_BODY = 64 * 1024
_MAX_MD_BYTES = 4 * MAX_CARD_BYTES
_MAX_SIG_BYTES = 1024 * 1024
_CHUNK = 1 << 20
# Blobs this large are hashed in a second thread, overlapping the download.
_THREADED_HASH_BYTES = 8 * _CHUNK
_HASH_QUEUE = 16
# Connect within 3 s (an address that never answers), then at most 30 s between two reads.
DEFAULT_TIMEOUT = (3.0, 30.0)

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?)(?::[0-9]{1,5})?\Z")
# The distribution spec's grammar for repository names and tags.
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
# A layer's file name is a plain base name: no directory, no "..", nothing hidden.
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,250}\Z")

_MODEL_SUFFIX = ".joblib"
_CARD_JSON_SUFFIX = ".card.json"
_CARD_MD_SUFFIX = ".card.md"
_SIG_SUFFIX = ".sig"

Progress = Callable[[str, int, int], None]
"""Called as ``progress(file_name, bytes_done, bytes_total)`` while a blob moves."""


# --- references ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    """``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``; a digest, when given, wins over the tag."""

    host: str  # as written, port included: "127.0.0.1:5000"
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def hostname(self) -> str:
        """The host without its port (and without the brackets of an IPv6 literal)."""
        return _split_host(self.host)[0]

    @property
    def reference(self) -> str:
        """What goes into ``/v2/<repo>/manifests/<reference>``."""
        ref = self.digest or self.tag
        assert ref is not None  # parse_reference guarantees one of them
        return ref

    def pinned(self, digest: str) -> Reference:
        """The same reference, pinned to a manifest digest (the tag kept for people)."""
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = f"oci://{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, *, require_tag: bool = False) -> Reference:
    """Parse ``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``. Raises: UsageError."""
    if not text.startswith("oci://"):
        raise UsageError(f"{text!r}: an OCI reference starts with oci://")
    host, sep, rest = text[len("oci://") :].partition("/")
    if not sep or not _HOST_RE.match(host):
        raise UsageError(f"{text!r}: expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX")
    port = _split_host(host)[1]
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"{text!r}: port {port} is out of range")
    rest, at, digest = rest.partition("@")
    repository, colon, tag = rest.partition(":")
    if not _REPO_RE.match(repository):
        raise UsageError(f"{text!r}: invalid repository name {repository!r} (lowercase, digits, '._-', '/')")
    if colon and not _TAG_RE.match(tag):
        raise UsageError(f"{text!r}: invalid tag {tag!r}")
    if at and not _DIGEST_RE.match(digest):
        raise UsageError(f"{text!r}: invalid digest {digest!r} (sha256:<64 lowercase hex>)")
    if not colon and not at:
        raise UsageError(f"{text!r}: name a tag (:TAG) or a digest (@sha256:HEX)")
    if require_tag and not colon:
        raise UsageError(f"{text!r}: a push needs a tag (:TAG)")
    return Reference(host=host, repository=repository, tag=tag if colon else None, digest=digest if at else None)


def _split_host(host: str) -> tuple[str, str | None]:
    """("hostname", "port" or None) of HOST[:PORT]; an IPv6 literal loses its brackets."""
    if host.startswith("["):
        end = host.index("]")
        port = host[end + 1 :].lstrip(":")
        return host[1:end], port or None
    name, colon, port = host.partition(":")
    return name, port if colon else None


def is_loopback(hostname: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only hosts spoken to in plain HTTP by default."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


# --- manifests ----------------------------------------------------------------------------------


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
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as e:
        raise IntegrityError(f"{where}: manifest is not valid JSON ({e})") from e
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

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        return (self.model, self.card_json, self.card_md, *((self.signature,) if self.signature else ()))


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
    models = [n for n in by_name if n.endswith(_MODEL_SUFFIX)]
    if len(models) != 1:
        raise IntegrityError(f"{where}: expected one {_MODEL_SUFFIX} layer, found {len(models)}")
    stem = models[0][: -len(_MODEL_SUFFIX)]
    wanted = {
        stem + _MODEL_SUFFIX: WEIGHT_MEDIA_TYPE,
        stem + _CARD_JSON_SUFFIX: DOC_MEDIA_TYPE,
        stem + _CARD_MD_SUFFIX: DOC_MEDIA_TYPE,
        stem + _SIG_SUFFIX: SIGNATURE_MEDIA_TYPE,
    }
    for name, layer in by_name.items():
        if name not in wanted:
            raise IntegrityError(f"{where}: unexpected layer {name!r} (not a file of artifact {stem!r})")
        if layer.media_type != wanted[name]:
            raise IntegrityError(f"{where}: layer {name!r} has media type {layer.media_type!r}, not {wanted[name]}")
    for suffix in (_CARD_JSON_SUFFIX, _CARD_MD_SUFFIX):
        if stem + suffix not in by_name:
            raise IntegrityError(f"{where}: layer {stem + suffix!r} is missing")
    return Layout(
        model=by_name[stem + _MODEL_SUFFIX],
        card_json=by_name[stem + _CARD_JSON_SUFFIX],
        card_md=by_name[stem + _CARD_MD_SUFFIX],
        signature=by_name.get(stem + _SIG_SUFFIX),
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
            media_type=CONFIG_MEDIA_TYPE, digest=_digest(config), size=len(config), annotations={}
        ).to_dict(),
        "layers": [layer.to_dict() for layer in layers],
        "annotations": dict(sorted(annotations.items())),
    }
    return _canonical(manifest), config


# --- the client ---------------------------------------------------------------------------------


class Client:
    """One registry host: a session, its credentials and tokens, bounded timeouts.

    TLS unless the host is loopback or ``insecure`` is set. Credentials default to the
    Docker client's config for this host; pass ``credentials=(user, password)`` to override
    or ``use_docker_config=False`` for anonymous access. Not thread-safe: one per thread.
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        credentials: tuple[str, str] | None = None,
        use_docker_config: bool = True,
        session: Any = None,
    ) -> None:
        try:
            import requests
        except ImportError as e:  # pragma: no cover - in the lock; only a bare install lacks it
            raise UsageError("the OCI commands need the 'oci' extra: pip install 'toolkit[oci]'") from e

        self.host = host
        self.scheme = "http" if insecure or is_loopback(_split_host(host)[0]) else "https"
        self.base = f"{self.scheme}://{host}"
        self.timeout = timeout
        self._credentials = credentials
        self._credentials_loaded = credentials is not None or not use_docker_config
        self._session = session if session is not None else requests.Session()
        self._authorization: str | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- blobs --

    def blob_size(self, repository: str, digest: str) -> int | None:
        """HEAD a blob: its size when the registry has it, else None."""
        with self._request("HEAD", f"/v2/{repository}/blobs/{digest}", what=f"blob {digest[:19]}") as r:
            if r.status_code == 404:
                return None
            self._check(r, f"blob {digest[:19]}", ok=(200,))
            length = r.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def push_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Path | bytes,
        *,
        chunk_size: int | None = None,
        progress: Progress | None = None,
    ) -> bool:
        """Upload a blob unless the registry has it; True when it was uploaded.

        Monolithic (POST, then one streamed PUT) by default; with ``chunk_size``, PATCHes of at
        most that many bytes, for registries or proxies that cap a request's body.
        """
        what = f"blob {descriptor.file_name or descriptor.digest[:19]}"
        if self.blob_size(repository, descriptor.digest) == descriptor.size:
            return False
        with self._request(
            "POST", f"/v2/{repository}/blobs/uploads/", headers={"Content-Length": "0"}, what=f"upload of {what}"
        ) as r:
            self._check(r, f"upload of {what}", ok=(202,))
            location = self._location(r, what)
        name = descriptor.file_name or descriptor.digest[:19]
        with _open_source(source) as f:
            if chunk_size is not None and descriptor.size > chunk_size:
                location = self._patch_chunks(location, f, descriptor, chunk_size, what, progress)
                body: Callable[[], Any] = lambda: b""  # noqa: E731
                length = 0
            else:

                def body() -> Any:
                    f.seek(0)  # a retry after an authentication challenge sends it again
                    return _ProgressReader(f, name, descriptor.size, progress)

                length = descriptor.size
            with self._request(
                "PUT",
                _with_query(location, digest=descriptor.digest),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
                body=body,
                what=f"upload of {what}",
            ) as r:
                self._check(r, f"upload of {what}", ok=(201,))
        return True

    def _patch_chunks(
        self, location: str, f: BinaryIO, descriptor: Descriptor, chunk_size: int, what: str, progress: Progress | None
    ) -> str:
        name = descriptor.file_name or descriptor.digest[:19]
        offset = 0
        while offset < descriptor.size:
            chunk = f.read(min(chunk_size, descriptor.size - offset))
            if not chunk:
                raise IntegrityError(f"{name}: shorter than its {descriptor.size} bytes while uploading")
            end = offset + len(chunk) - 1
            with self._request(
                "PATCH",
                location,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(chunk)),
                },
                body=lambda c=chunk: c,  # type: ignore[misc]
                what=f"upload of {what}",
            ) as r:
                self._check(r, f"upload of {what}", ok=(202,))
                location = self._location(r, what)
            offset = end + 1
            if progress:
                progress(name, offset, descriptor.size)
        return location

    def fetch_blob(
        self, repository: str, descriptor: Descriptor, dest: BinaryIO, *, progress: Progress | None = None
    ) -> None:
        """Stream a blob into ``dest`` while hashing; memory stays at one chunk.

        Raises: IntegrityError (missing blob, wrong size or digest, larger than declared).
        """
        name = descriptor.file_name or descriptor.digest[:19]
        r = self._request("GET", f"/v2/{repository}/blobs/{descriptor.digest}", what=f"blob {name}")
        with r:
            if r.status_code == 404:
                raise IntegrityError(f"{self.host}/{repository}: blob {name} ({descriptor.digest[:19]}…) is missing")
            self._check(r, f"blob {name}", ok=(200,))
            digest = _Hasher(threaded=descriptor.size >= _THREADED_HASH_BYTES)
            done = 0
            try:
                for chunk in r.iter_content(_CHUNK):
                    done += len(chunk)
                    if done > descriptor.size:
                        raise IntegrityError(f"{name}: blob is larger than its declared {descriptor.size} bytes")
                    digest.update(chunk)
                    dest.write(chunk)
                    if progress:
                        progress(name, done, descriptor.size)
            except IntegrityError:
                raise
            except Exception as e:  # requests' and urllib3's read errors, timeouts mid-stream
                raise _network_error(self.host, e, f"blob {name}") from e
            finally:
                digest.close()
        if done != descriptor.size:
            raise IntegrityError(f"{name}: blob is {done} bytes, the manifest says {descriptor.size}")
        actual = "sha256:" + digest.hexdigest()
        if actual != descriptor.digest:
            raise IntegrityError(
                f"{name}: blob digest {actual[:19]}… does not match the manifest's {descriptor.digest[:19]}…; refused"
            )

    def fetch_blob_bytes(self, repository: str, descriptor: Descriptor, *, limit: int) -> bytes:
        """A small blob in memory, refused before download when it declares over ``limit`` bytes."""
        if descriptor.size > limit:
            name = descriptor.file_name or descriptor.digest[:19]
            raise IntegrityError(f"{name}: {descriptor.size} bytes is over the {limit}-byte limit; refused")
        buffer = io.BytesIO()
        self.fetch_blob(repository, descriptor, buffer)
        return buffer.getvalue()

    # -- manifests --

    def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch and parse a manifest (size-capped, digest-checked).

        Raises: RegistryError (unknown repository or tag), IntegrityError, RemoteError.
        """
        r = self._request(
            "GET",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            headers={"Accept": _ACCEPT},
            what=f"manifest {ref.reference}",
        )
        with r:
            if r.status_code == 404:
                code = _error_codes(r)
                raise RegistryError(f"{ref}: unknown repository or tag{f' ({code})' if code else ''}")
            self._check(r, f"manifest {ref.reference}", ok=(200,))
            media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
            if media_type != MANIFEST_MEDIA_TYPE:
                raise IntegrityError(f"{ref}: media type {media_type!r} is not an OCI image manifest; refused")
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
                raise IntegrityError(f"{ref}: manifest of {length} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
            raw = _read_capped(r, MAX_MANIFEST_BYTES, self.host, f"{ref}: manifest")
            header_digest = r.headers.get("Docker-Content-Digest")
        manifest = parse_manifest(raw, where=str(ref))
        for expected in (ref.digest, header_digest):
            if expected and expected != manifest.digest:
                raise IntegrityError(
                    f"{ref}: manifest digest {manifest.digest[:19]}… does not match {expected[:19]}…; refused"
                )
        return manifest

    def put_manifest(self, repository: str, tag: str, raw: bytes) -> str:
        """Store a manifest under a tag; returns its digest (checked against the registry's)."""
        digest = _digest(raw)
        with self._request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            headers={"Content-Type": MANIFEST_MEDIA_TYPE},
            body=lambda: raw,
            what=f"manifest {tag}",
        ) as r:
            self._check(r, f"manifest {tag}", ok=(201,))
            stored = r.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise IntegrityError(f"{self.host}/{repository}:{tag}: the registry stored digest {stored}, not {digest}")
        return digest

    # -- HTTP, authentication, errors --

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        what: str,
    ) -> Any:
        """One request, authenticated on a 401 challenge. Always streamed: no response body,
        an error page included, is read into memory unless its reader caps it."""
        url = path if "://" in path else self.base + path
        challenged: set[str] = set()
        while True:
            sent = dict(headers or {})
            if self._authorization:
                sent["Authorization"] = self._authorization
            try:
                r = self._session.request(
                    method,
                    url,
                    headers=sent,
                    data=body() if body else None,
                    stream=True,
                    timeout=self.timeout,
                    allow_redirects=method in ("GET", "HEAD"),
                )
            except Exception as e:
                raise _network_error(self.host, e, what) from e
            if r.status_code != 401:
                return r
            challenge = r.headers.get("WWW-Authenticate", "")
            r.close()
            # One try per distinct challenge: a second 401 for the same one means "refused".
            if challenge in challenged or not self._authenticate(challenge, what):
                return r
            challenged.add(challenge)

    def _authenticate(self, challenge: str, what: str) -> bool:
        scheme, params = _parse_challenge(challenge)
        credentials = self._get_credentials()
        if scheme == "basic":
            if credentials is None:
                raise RemoteError(
                    f"{self.host} requires credentials for {what}; none for it in the Docker config"
                    f" (docker login {self.host})"
                )
            import base64

            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            new = f"Basic {token}"
        elif scheme == "bearer" and "realm" in params:
            new = f"Bearer {self._fetch_token(params, credentials, what)}"
        else:
            return False
        if new == self._authorization:
            return False
        self._authorization = new
        return True

    def _fetch_token(self, params: Mapping[str, str], credentials: tuple[str, str] | None, what: str) -> str:
        realm = params["realm"]
        realm_host = urlsplit(realm).hostname or ""
        if urlsplit(realm).scheme != "https" and not (is_loopback(realm_host) or self.scheme == "http"):
            raise RemoteError(f"{self.host}: token realm {realm} is not HTTPS; refused")
        query = {k: params[k] for k in ("service", "scope") if k in params}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        try:
            r = self._session.get(url, auth=credentials, timeout=self.timeout)
        except Exception as e:
            raise _network_error(self.host, e, f"token for {what}") from e
        with r:
            if r.status_code in (401, 403):
                if credentials is None:
                    raise RemoteError(
                        f"{self.host} requires credentials for {what}; none for it in the Docker config"
                        f" (docker login {self.host})"
                    )
                raise RemoteError(f"{self.host} refused the credentials (token service {realm_host})")
            self._check(r, f"token for {what}", ok=(200,))
            try:
                doc = json.loads(_read_capped(r, _MAX_ERROR_BODY, self.host, "token"))
                token = doc.get("token") or doc.get("access_token")
            except (ValueError, AttributeError):
                token = None
        if not isinstance(token, str) or not token:
            raise RemoteError(f"{self.host}: the token service {realm_host} answered without a token")
        return token

    def _get_credentials(self) -> tuple[str, str] | None:
        if not self._credentials_loaded:
            self._credentials = docker_credentials(self.host)
            self._credentials_loaded = True
        return self._credentials

    def _check(self, r: Any, what: str, *, ok: tuple[int, ...]) -> None:
        code = r.status_code
        if code in ok:
            return
        detail = _error_codes(r)
        suffix = f" ({detail})" if detail else ""
        if code in (401, 403):
            if self._get_credentials() is None:
                raise RemoteError(
                    f"{self.host} denied {what} without credentials; none for it in the Docker config{suffix}"
                )
            raise RemoteError(f"{self.host} refused the credentials for {what}{suffix}")
        if "DIGEST_INVALID" in detail:
            raise IntegrityError(f"{self.host}: the registry refused {what}: its content does not match its digest")
        if code >= 500:
            raise RemoteError(f"{self.host}: registry error HTTP {code} on {what}{suffix}")
        raise RemoteError(f"{self.host}: HTTP {code} on {what}{suffix}")

    def _location(self, r: Any, what: str) -> str:
        location = r.headers.get("Location")
        if not location:
            raise RemoteError(f"{self.host}: upload of {what} answered without a Location")
        absolute = urljoin(self.base + "/", str(location))
        if urlsplit(absolute).netloc != urlsplit(self.base).netloc:
            # An upload sent elsewhere would carry our credentials to another host.
            raise RemoteError(f"{self.host}: upload of {what} redirected to another host; refused")
        return absolute


def docker_credentials(host: str) -> tuple[str, str] | None:
    """(user, password) for ``host`` from the Docker client's config, as ``docker login`` stores them.

    Reads ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``: ``auths`` entries
    (base64 ``user:pass``), and ``credsStore``/``credHelpers`` through their helper programs.
    Raises: UsageError (an unreadable config), RemoteError (a credential helper failed).
    """
    try:
        from docker import auth as docker_auth  # type: ignore[import-untyped]
        from docker import errors as docker_errors
    except ImportError:  # pragma: no cover - the docker SDK is in the lock
        return None
    try:
        config = docker_auth.load_config()
        entry = config.resolve_authconfig(host)
    except docker_errors.InvalidConfigFile as e:
        raise UsageError(f"the Docker config is invalid: {e}") from e
    except docker_errors.DockerException as e:
        raise RemoteError(f"{host}: the Docker credential helper failed: {e}") from e
    if not entry:
        return None
    user = entry.get("username") or entry.get("Username")
    password = entry.get("password") or entry.get("Password")
    if isinstance(user, str) and isinstance(password, str) and user:
        return user, password
    return None


# --- push, pull, fetch the card -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class PushResult:
    """What a push stored: the pinned reference, and which blobs moved."""

    reference: Reference
    digest: str
    uploaded: tuple[str, ...]  # file names (and "config") actually uploaded
    skipped: tuple[str, ...]  # already in the registry (HEAD)


@dataclass(frozen=True, kw_only=True, slots=True)
class PullResult:
    """What a pull published: the pinned reference, the card, and the files in ``out``."""

    reference: Reference
    digest: str
    card: ModelCard
    files: tuple[Path, ...]  # model first


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteCard:
    """A remote artifact's card, fetched without the model and checked against its manifest."""

    reference: Reference  # pinned to the manifest digest
    manifest: Manifest
    layout: Layout
    card: ModelCard
    card_json: bytes  # the card layer's bytes, digest-checked: a pull writes them, never re-fetches


def push(
    artifact: str | os.PathLike[str],
    reference: Reference | str,
    *,
    client: Client | None = None,
    insecure: bool = False,
    chunk_size: int | None = None,
    progress: Progress | None = None,
) -> PushResult:
    """Push a verified artifact's files as one manifest under a tag; returns its digest.

    Raises: UsageError, IntegrityError (the artifact fails its checksum), RemoteError, RegistryError.
    """
    from toolkit.artifact import artifact_paths, verify

    ref = parse_reference(reference, require_tag=True) if isinstance(reference, str) else reference
    if not ref.tag:
        raise UsageError(f"{ref}: a push needs a tag (:TAG)")
    paths = artifact_paths(artifact)
    card = verify(paths.model)  # never push an artifact that fails its own card
    card_json = _files.read_regular(paths.card_json, "card", limit=MAX_CARD_BYTES)
    card_md = _files.read_regular(paths.card_md, "card (Markdown)", limit=_MAX_MD_BYTES)
    sig_path = paths.model.with_name(paths.model.name[: -len(_MODEL_SUFFIX)] + _SIG_SUFFIX)
    signature = _files.read_regular(sig_path, "signature", limit=_MAX_SIG_BYTES) if os.path.lexists(sig_path) else None
    sources: list[tuple[Descriptor, Path | bytes]] = [
        (
            _layer(WEIGHT_MEDIA_TYPE, paths.model.name, "sha256:" + card.artifact.sha256, card.artifact.size),
            paths.model,
        ),
        (_layer(DOC_MEDIA_TYPE, paths.card_json.name, _digest(card_json), len(card_json)), card_json),
        (_layer(DOC_MEDIA_TYPE, paths.card_md.name, _digest(card_md), len(card_md)), card_md),
    ]
    if signature is not None:
        sources.append((_layer(SIGNATURE_MEDIA_TYPE, sig_path.name, _digest(signature), len(signature)), signature))
    raw, config = build_manifest(card, card_json, [d for d, _ in sources])
    config_desc = Descriptor(media_type=CONFIG_MEDIA_TYPE, digest=_digest(config), size=len(config), annotations={})
    uploaded: list[str] = []
    skipped: list[str] = []
    own = client is None
    c = client or Client(ref.host, insecure=insecure)
    try:
        for desc, source in [(config_desc, config), *sources]:
            moved = c.push_blob(ref.repository, desc, source, chunk_size=chunk_size, progress=progress)
            (uploaded if moved else skipped).append(desc.file_name or "config")
        assert ref.tag is not None
        digest = c.put_manifest(ref.repository, ref.tag, raw)
    finally:
        if own:
            c.close()
    return PushResult(reference=ref.pinned(digest), digest=digest, uploaded=tuple(uploaded), skipped=tuple(skipped))


def fetch_card(client: Client, reference: Reference) -> RemoteCard:
    """The manifest and the card blob only (never the model), checked against each other.

    The model's layer digest and size must be the card's ``artifact.sha256`` and ``size``:
    the registry addresses the model by that digest, so a pull of this manifest can only
    ever yield the bytes the card describes.
    Raises: RegistryError, IntegrityError, CardError, RemoteError.
    """
    manifest = client.get_manifest(reference)
    pinned = reference.pinned(manifest.digest)
    layout = layout_of(manifest, where=str(pinned))
    data = client.fetch_blob_bytes(reference.repository, layout.card_json, limit=MAX_CARD_BYTES)
    card = parse_card(data, where=f"{pinned} {layout.card_json.file_name}")
    _check_card_layout(card, layout, manifest, str(pinned))
    return RemoteCard(reference=pinned, manifest=manifest, layout=layout, card=card, card_json=data)


def pull(
    reference: Reference | str,
    out: str | os.PathLike[str],
    *,
    client: Client | None = None,
    insecure: bool = False,
    progress: Progress | None = None,
    trusted_keys: Any = None,
) -> PullResult:
    """Download an artifact into ``out``: every blob streamed to a private temp dir while
    hashed, the card parsed strictly and checked against the manifest, the signature checked
    when trust is configured, and only then the files published (card JSON last). On any
    failure nothing is left in ``out``.

    Raises: UsageError (a file exists in ``out``), RegistryError, IntegrityError, RemoteError.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    out_dir = Path(out)
    own = client is None
    c = client or Client(ref.host, insecure=insecure)
    try:
        remote = fetch_card(c, ref)
        layout = remote.layout
        order = [layout.model, layout.card_md, *([layout.signature] if layout.signature else []), layout.card_json]
        targets = [out_dir / str(d.file_name) for d in order]
        for target in targets:  # fail before downloading anything
            if os.path.lexists(target):
                raise UsageError(f"{target} already exists; refusing to overwrite it")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create {out_dir}: {e.strerror}") from e
        # Same file system as ``out``, so publishing is a link, never a copy; mode 0700.
        try:
            staging = Path(tempfile.mkdtemp(prefix=".toolkit-pull-", dir=out_dir))
        except OSError as e:
            raise UsageError(f"cannot write into {out_dir}: {e.strerror}") from e
        try:
            for desc in order:
                target = staging / str(desc.file_name)
                if desc is layout.card_json:
                    _write_new(target, remote.card_json)
                else:
                    _download(c, ref.repository, desc, target, progress)
            require_signature(staging, layout, trusted_keys)
            _publish_all([(staging / t.name, t) for t in targets])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if own:
            c.close()
    return PullResult(reference=remote.reference, digest=remote.manifest.digest, card=remote.card, files=tuple(targets))


# --- helpers ------------------------------------------------------------------------------------


def _signing() -> Any:
    """``toolkit.signing`` when this toolkit has it (signatures land in their own change), else None."""
    try:
        return importlib.import_module("toolkit.signing")
    except ModuleNotFoundError as e:
        if e.name != "toolkit.signing":
            raise
        return None


def trust_configured(trusted_keys: Any = None) -> bool:
    """Whether a signature is required: trusted keys given, or in ``$TOOLKIT_TRUSTED_KEYS``."""
    signing = _signing()
    return signing is not None and bool(signing.trusted_keys_from_env(trusted_keys))


def require_signature(directory: Path, layout: Layout, trusted_keys: Any = None) -> None:
    """THE one place the OCI paths check an artifact's signature (SPEC: Signatures): on the
    files staged in ``directory``, before anything is published or a verdict given.

    Delegates to ``toolkit.signing.require_signature``, which does nothing when no trusted key
    is configured and raises SignatureError (exit 3) for a missing, invalid or untrusted
    signature. The layers' digests are passed as known (each was checked as it was
    downloaded, the model's against the card), so the model file need not even be there:
    the remote gate checks a signature with the model still in the registry.
    """
    signing = _signing()
    if signing is None:
        return
    from toolkit.artifact import artifact_paths

    known = {
        directory / str(d.file_name): d.digest.removeprefix("sha256:")
        for d in (layout.model, layout.card_json, layout.card_md)
    }
    signing.require_signature(artifact_paths(directory / str(layout.model.file_name)), trusted_keys, known=known)


def _write_new(target: Path, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _download(client: Client, repository: str, desc: Descriptor, target: Path, progress: Progress | None) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        client.fetch_blob(repository, desc, f, progress=progress)
        f.flush()
        os.fsync(f.fileno())


def _publish_all(moves: list[tuple[Path, Path]]) -> None:
    """Link each staged file into place (never clobbering); undo them all if one fails."""
    done: list[Path] = []
    try:
        for staged, final in moves:
            try:
                os.link(staged, final)
            except FileExistsError as e:
                raise UsageError(f"{final} already exists; refusing to overwrite it") from e
            done.append(final)
    except BaseException:
        for final in done:
            with suppress(OSError):
                final.unlink()
        raise
    _files.fsync_dir(moves[0][1].parent)


def _check_card_layout(card: ModelCard, layout: Layout, manifest: Manifest, where: str) -> None:
    model = layout.model
    if model.file_name != card.artifact.file:
        raise IntegrityError(
            f"{where}: the card describes {card.artifact.file!r}, the model layer is {model.file_name!r}"
        )
    if model.digest != "sha256:" + card.artifact.sha256 or model.size != card.artifact.size:
        raise IntegrityError(f"{where}: the model layer's digest or size does not match the card's; refused")
    recorded = manifest.annotations.get(ANNOTATION_CARD_SHA256)
    if recorded is not None and "sha256:" + recorded != layout.card_json.digest:
        raise IntegrityError(f"{where}: the card layer does not match the manifest's {ANNOTATION_CARD_SHA256}")


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


def _layer(media_type: str, name: str, digest: str, size: int) -> Descriptor:
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        annotations={FILEPATH_ANNOTATION: name, TITLE_ANNOTATION: name},
    )


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise IntegrityError(f"{where}: a descriptor must be a JSON object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise IntegrityError(f"{where}.mediaType: must be a non-empty string")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
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


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read_capped(r: Any, limit: int, host: str, what: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    try:
        for chunk in r.iter_content(64 * 1024):
            total += len(chunk)
            if total > limit:
                raise IntegrityError(f"{what}: over the {limit}-byte limit; refused")
            chunks.append(chunk)
    except IntegrityError:
        raise
    except Exception as e:
        raise _network_error(host, e, what) from e
    return b"".join(chunks)


def _error_codes(r: Any) -> str:
    """The registry's error codes (``MANIFEST_UNKNOWN``...), read from a bounded body."""
    try:
        body = r.raw.read(_MAX_ERROR_BODY, decode_content=True) if r.raw is not None else b""
        doc = json.loads(body or b"{}")
        errors = doc.get("errors") if isinstance(doc, dict) else None
        codes = [str(e.get("code")) for e in errors or [] if isinstance(e, dict) and e.get("code")]
        return ", ".join(codes[:3])
    except Exception:  # an error body is only a hint; never let it mask the status
        return ""


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) for m in re.finditer(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


def _network_error(host: str, e: BaseException, what: str) -> RemoteError:
    import requests

    if isinstance(e, requests.exceptions.SSLError):
        return RemoteError(f"{host}: TLS failed for {what} (use --insecure only for a registry without TLS)")
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return RemoteError(f"{host}: unreachable (no connection within the timeout)")
    if isinstance(e, requests.exceptions.ConnectionError) and "Read timed out" not in str(e):
        reason = _root_reason(e)
        return RemoteError(f"{host}: unreachable ({reason})")
    if isinstance(e, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        return RemoteError(f"{host}: stopped answering during {what}")
    if isinstance(e, requests.exceptions.RequestException):
        return RemoteError(f"{host}: {what} failed: {_root_reason(e)}")
    return RemoteError(f"{host}: {what} failed: {type(e).__name__}: {e}")


def _root_reason(e: BaseException) -> str:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _open_source(source: Path | bytes) -> BinaryIO:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    fd, _ = _files.open_regular(source, "artifact file")
    return os.fdopen(fd, "rb")


class _Hasher:
    """sha256 of a stream; for big blobs in a second thread, so hashing overlaps receiving
    and writing (hashlib releases the GIL on large updates). The queue holds at most
    ``_HASH_QUEUE`` chunks, so memory stays bounded when the network outruns the hash."""

    def __init__(self, *, threaded: bool) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=_HASH_QUEUE)
            self._thread = threading.Thread(target=self._run, name="toolkit-oci-sha256", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._queue is None:
            self._hash.update(chunk)
        else:
            self._queue.put(chunk)

    def close(self) -> None:
        """Finish (or abandon) the hashing thread; idempotent."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()


class _ProgressReader:
    """A file wrapper that reports progress while requests streams it into an upload.

    Deliberately not an io.IOBase: requests would call its tell(), take the failure for
    "at the end", and send a chunked body instead of the Content-Length we declare.
    """

    def __init__(self, f: BinaryIO, name: str, total: int, progress: Progress | None) -> None:
        self._f, self._name, self._total, self._progress, self._done = f, name, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        # Never past the declared length (a file that grew would corrupt the request); a file
        # that changed is caught by the registry, which checks the digest of what it received.
        left = self._total - self._done
        data = self._f.read(left if size is None or size < 0 else min(size, left))
        self._done += len(data)
        if self._progress and data:
            self._progress(self._name, self._done, self._total)
        return data

    def __len__(self) -> int:
        return self._total
