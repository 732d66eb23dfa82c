"""Whole artifacts: push the files as one manifest, fetch the card alone, pull atomically."""

from __future__ import annotations

import importlib
import os
import shutil
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit.card import MAX_CARD_BYTES, ModelCard, parse_card
from toolkit.errors import IntegrityError, UsageError
from toolkit.oci.client import Client, Progress
from toolkit.oci.manifest import (
    ANNOTATION_CARD_SHA256,
    CONFIG_MEDIA_TYPE,
    DOC_MEDIA_TYPE,
    PROVENANCE_MEDIA_TYPE,
    REFERENCE_MEDIA_TYPE,
    SIGNATURE_MEDIA_TYPE,
    WEIGHT_MEDIA_TYPE,
    Descriptor,
    Layout,
    Manifest,
    build_manifest,
    digest_of,
    layer_descriptor,
    layout_of,
)
from toolkit.oci.reference import Reference, parse_reference

__all__ = [
    "PullResult",
    "PushResult",
    "RemoteCard",
    "fetch_card",
    "pull",
    "push",
    "require_signature",
    "trust_configured",
]

_MAX_MD_BYTES = 4 * MAX_CARD_BYTES
_MAX_SIG_BYTES = 1024 * 1024


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
    sig_path = paths.signature
    signature = _files.read_regular(sig_path, "signature", limit=_MAX_SIG_BYTES) if os.path.lexists(sig_path) else None
    ref_info = card.reference  # verify checked the file against it
    sources: list[tuple[Descriptor, Path | bytes]] = [
        (
            layer_descriptor(WEIGHT_MEDIA_TYPE, paths.model.name, "sha256:" + card.artifact.sha256, card.artifact.size),
            paths.model,
        ),
        (layer_descriptor(DOC_MEDIA_TYPE, paths.card_json.name, digest_of(card_json), len(card_json)), card_json),
        (layer_descriptor(DOC_MEDIA_TYPE, paths.card_md.name, digest_of(card_md), len(card_md)), card_md),
    ]
    if ref_info is not None:
        sources.append(
            (
                layer_descriptor(REFERENCE_MEDIA_TYPE, ref_info.file, "sha256:" + ref_info.sha256, ref_info.size),
                paths.reference,
            )
        )
    if signature is not None:
        sources.append(
            (layer_descriptor(SIGNATURE_MEDIA_TYPE, sig_path.name, digest_of(signature), len(signature)), signature)
        )
    prov_path = paths.provenance
    if os.path.lexists(prov_path):  # carried like the .sig; pull checks it with trust
        from toolkit.provenance.envelope import MAX_ENVELOPE_BYTES

        prov = _files.read_regular(prov_path, "provenance", limit=MAX_ENVELOPE_BYTES)
        sources.append((layer_descriptor(PROVENANCE_MEDIA_TYPE, prov_path.name, digest_of(prov), len(prov)), prov))
    raw, config = build_manifest(card, card_json, [d for d, _ in sources])
    config_desc = Descriptor(media_type=CONFIG_MEDIA_TYPE, digest=digest_of(config), size=len(config), annotations={})
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
        extra = [d for d in (layout.reference, layout.signature, layout.provenance) if d is not None]
        order = [layout.model, layout.card_md, *extra, layout.card_json]
        targets = [out_dir / str(d.file_name) for d in order]
        for target in targets:  # fail before downloading anything
            if os.path.lexists(target):
                raise UsageError(f"{target} already exists; refusing to overwrite it")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create {out_dir}: {e.strerror}") from e
        # Same file system as ``out``, so publishing is a link, never a copy; mode 0700. Named in
        # the one temp scheme: a pull killed before here left a folder the sweep removes.
        _files.sweep_stale_temps(out_dir)
        try:
            staging = _files.make_temp_dir(out_dir, "toolkit-pull")
        except OSError as e:
            raise UsageError(f"cannot write into {out_dir}: {e.strerror}") from e
        try:
            for desc in order:
                target = staging / str(desc.file_name)
                try:
                    if desc is layout.card_json:
                        _write_new(target, remote.card_json)
                    else:
                        _download(c, ref.repository, desc, target, progress)
                except OSError as e:  # the network's failures are RemoteError already: this is ours
                    raise _files.write_failed(out_dir / target.name, e) from e
            require_signature(staging, layout, trusted_keys)
            _require_provenance(staging, layout, trusted_keys)
            _publish_all([(staging / t.name, t) for t in targets])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if own:
            c.close()
    return PullResult(reference=remote.reference, digest=remote.manifest.digest, card=remote.card, files=tuple(targets))


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
        for d in (layout.model, layout.card_json, layout.card_md, *([layout.reference] if layout.reference else []))
    }
    signing.require_signature(artifact_paths(directory / str(layout.model.file_name)), trusted_keys, known=known)


def _require_provenance(directory: Path, layout: Layout, trusted_keys: Any = None) -> None:
    """With trust configured, a provenance layer must verify against the staged files (the
    layers' digests, each checked on download, are passed as known: nothing is hashed twice)."""
    if layout.provenance is None:
        return
    from toolkit.artifact import artifact_paths
    from toolkit.provenance.carry import require_if_trusted

    known = {
        directory / str(d.file_name): d.digest.removeprefix("sha256:")
        for d in (layout.model, layout.card_json, layout.card_md)
    }
    require_if_trusted(artifact_paths(directory / str(layout.model.file_name)), trusted_keys, known=known)


def _write_new(target: Path, data: bytes) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _download(client: Client, repository: str, desc: Descriptor, target: Path, progress: Progress | None) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
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
    ref, layer = card.reference, layout.reference
    if (ref is None) != (layer is None):
        raise IntegrityError(f"{where}: the reference-set layer and the card's reference disagree; refused")
    if (
        ref is not None
        and layer is not None
        and (layer.file_name != ref.file or layer.digest != "sha256:" + ref.sha256 or layer.size != ref.size)
    ):
        raise IntegrityError(f"{where}: the reference-set layer does not match the card's; refused")
    recorded = manifest.annotations.get(ANNOTATION_CARD_SHA256)
    if recorded is not None and "sha256:" + recorded != layout.card_json.digest:
        raise IntegrityError(f"{where}: the card layer does not match the manifest's {ANNOTATION_CARD_SHA256}")
