"""``check-env oci://...``: the gate on an artifact in an OCI registry, before its model is downloaded.

The manifest and the card blob are fetched, never the model: the model's layer digest must
equal the card's sha256, so the registry can only ever serve the bytes the card describes
(and ``pull`` checks them when they are downloaded). The verdict, exit codes and JSON are
the file gate's. ``verify_predictions`` needs the model: the artifact is pulled into a
private temporary directory first, gated there as a file, and the directory removed.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterable
from typing import Any

from toolkit import _files
from toolkit.card import MAX_CARD_BYTES
from toolkit.card.records import MAX_REFERENCE_BYTES as _MAX_REFERENCE_BYTES
from toolkit.gate import Report, assess
from toolkit.gate import check_env as check_file
from toolkit.oci import (
    Client,
    RemoteCard,
    fetch_card,
    parse_reference,
    pull,
    require_signature,
    trust_configured,
)
from toolkit.policy import validate_policy

__all__ = ["check_env"]


def check_env(
    reference: str,
    *,
    policy: str = "strict",
    verify_predictions: bool = False,
    insecure: bool = False,
    client: Client | None = None,
    trusted_keys: Any = None,
    require_provenance: bool = False,
    trusted: Iterable[str] = (),
) -> Report:
    """The gate's report for ``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``.

    With ``require_provenance``, the provenance layer is fetched (the model still is not) and
    checked as the file gate checks it, the model's digest vouched for by the manifest.
    Raises: UsageError, RegistryError (unknown repository or tag), IntegrityError/CardError,
    ProvenanceError, RemoteError (unreachable, credentials refused, registry error).
    """
    ref = parse_reference(reference)
    validate_policy(policy)
    if require_provenance:  # no trusted key: a usage error before any network
        from toolkit.provenance.verify import require_trust

        require_trust(trusted_keys)
    own = client is None
    c = client or Client(ref.host, insecure=insecure)
    try:
        if verify_predictions:
            staging = _files.scratch_dir("toolkit-gate")
            try:
                pulled = pull(ref, staging / "artifact", client=c, trusted_keys=trusted_keys)
                report = check_file(
                    pulled.files[0],
                    policy=policy,
                    verify_predictions=True,
                    trusted_keys=trusted_keys if require_provenance else None,  # pull checked the .sig
                    require_provenance=require_provenance,
                    trusted=trusted,
                )
                return dataclasses.replace(report, artifact=str(pulled.reference))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        remote = fetch_card(c, ref)
        if trust_configured(trusted_keys):
            _require_remote_signature(c, remote, trusted_keys)
        if require_provenance:
            _require_remote_provenance(c, remote, trusted_keys)
    finally:
        if own:
            c.close()
    # Certifications: $TOOLKIT_CERTIFICATIONS only (the gate's one rule, toolkit.certification).
    return assess(remote.card, artifact=str(remote.reference), policy=policy, trusted_keys=trusted_keys)


def _require_remote_signature(client: Client, remote: RemoteCard, trusted_keys: Any) -> None:
    """With trust configured, the small files (both cards and the signature) are fetched into a
    private temp dir and the signature checked there; the model stays in the registry, its
    digest (the card's sha256) vouched for by the manifest."""
    layout = remote.layout
    staging = _files.scratch_dir("toolkit-gate-sig")
    try:
        # No signature layer: nothing to fetch for it, and the check says "no signature".
        (staging / str(layout.card_json.file_name)).write_bytes(remote.card_json)
        # The reference set (when there is one) is signed with the rest: it must be there to check.
        extra = [d for d in (layout.reference, layout.signature) if d is not None]
        for desc in (layout.card_md, *extra):
            limit = _MAX_REFERENCE_BYTES if desc is layout.reference else 4 * MAX_CARD_BYTES
            data = client.fetch_blob_bytes(remote.reference.repository, desc, limit=limit)
            (staging / str(desc.file_name)).write_bytes(data)
        require_signature(staging, layout, trusted_keys)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _require_remote_provenance(client: Client, remote: RemoteCard, trusted_keys: Any) -> None:
    """The provenance layer and both cards, fetched into a private temp dir and checked there as
    the file gate checks them; the model's digest is the manifest's (equal to the card's)."""
    from toolkit.artifact import artifact_paths
    from toolkit.provenance.envelope import MAX_ENVELOPE_BYTES
    from toolkit.provenance.verify import require_provenance

    layout = remote.layout
    staging = _files.scratch_dir("toolkit-gate-provenance")
    try:
        (staging / str(layout.card_json.file_name)).write_bytes(remote.card_json)
        data = client.fetch_blob_bytes(remote.reference.repository, layout.card_md, limit=4 * MAX_CARD_BYTES)
        (staging / str(layout.card_md.file_name)).write_bytes(data)
        if layout.provenance is not None:  # without one, the check says "no provenance"
            data = client.fetch_blob_bytes(remote.reference.repository, layout.provenance, limit=MAX_ENVELOPE_BYTES)
            (staging / str(layout.provenance.file_name)).write_bytes(data)
        known = {
            staging / str(d.file_name): d.digest.removeprefix("sha256:")
            for d in (layout.model, layout.card_json, layout.card_md)
        }
        require_provenance(
            artifact_paths(staging / str(layout.model.file_name)), remote.card, trusted_keys, known=known
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
