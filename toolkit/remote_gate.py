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
import tempfile
from pathlib import Path

from toolkit.fingerprint import capture
from toolkit.gate import Report
from toolkit.gate import check_env as check_file
from toolkit.oci import Client, fetch_card, parse_reference, pull
from toolkit.policy import differences, validate_policy

__all__ = ["check_env"]


def check_env(
    reference: str,
    *,
    policy: str = "strict",
    verify_predictions: bool = False,
    insecure: bool = False,
    client: Client | None = None,
) -> Report:
    """The gate's report for ``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``.

    Raises: UsageError, RegistryError (unknown repository or tag), IntegrityError/CardError,
    RemoteError (unreachable, credentials refused, registry error).
    """
    ref = parse_reference(reference)
    validate_policy(policy)
    own = client is None
    c = client or Client(ref.host, insecure=insecure)
    try:
        if verify_predictions:
            staging = Path(tempfile.mkdtemp(prefix="toolkit-gate-"))
            try:
                pulled = pull(ref, staging / "artifact", client=c)
                report = check_file(pulled.files[0], policy=policy, verify_predictions=True)
                return dataclasses.replace(report, artifact=str(pulled.reference))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        remote = fetch_card(c, ref)
    finally:
        if own:
            c.close()
    card = remote.card
    # TODO(signing): with trusted keys configured, the file gate requires a valid signature; the
    # remote one must too (the .sig layer is small, and its resources are the layers' digests).
    diffs = differences(card.environment, capture(blas=False), policy=policy, referenced=card.references.distributions)
    return Report(
        artifact=str(remote.reference),
        name=card.name,
        version=card.version,
        sha256=card.artifact.sha256,
        policy=policy,
        differences=diffs,
    )
