"""The ``check-env`` gate: does this runtime match the card? Never unpickles by default."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.artifact import runtime_differences, verify
from toolkit.card import ModelCard
from toolkit.errors import Difference, EnvironmentMismatch
from toolkit.fingerprint import capture
from toolkit.policy import validate_policy
from toolkit.probe import ProbeResult
from toolkit.signing import TrustedKeys

if TYPE_CHECKING:
    from toolkit.reference import ReferenceResult

__all__ = ["Report", "assess", "check_env"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """The gate's verdict on one artifact in this runtime."""

    artifact: str
    name: str
    version: str
    sha256: str
    policy: str
    differences: tuple[Difference, ...]
    # Only with verify_predictions: a ReferenceResult (card schema 3) or a ProbeResult.
    predictions: ProbeResult | ReferenceResult | None = None
    # Under the certified policy: the certification that accepted this runtime's differences
    # (they are then in ``certified_differences``, not ``differences``), and the ones refused.
    certification: str | None = None
    certified_differences: tuple[Difference, ...] = ()
    refused_certifications: tuple[str, ...] = ()
    remedies: tuple[str, ...] = ()  # what would make it pass, most direct first

    @property
    def environment_ok(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        return self.environment_ok and (self.predictions is None or self.predictions.ok)

    @property
    def exit_code(self) -> int:
        """0 when the runtime matches the card. Otherwise 1, even when ``--verify-predictions``
        found every output in agreement: the gate answers "is this the card's runtime?", and
        agreement on the rows checked is evidence for a decision (a looser policy, a
        certification), not that decision. ``outputs_agree`` says which kind of 1 it is."""
        return 0 if self.ok else EnvironmentMismatch.exit_code

    @property
    def outputs_agree(self) -> bool | None:
        """With ``--verify-predictions``: whether every output agreed; else None."""
        return None if self.predictions is None else self.predictions.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "artifact": self.artifact,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "policy": self.policy,
            "integrity": "ok",
            "environment_ok": self.environment_ok,
            "differences": [d.to_dict() for d in self.differences],
            "predictions": None if self.predictions is None else self.predictions.to_dict(),
            "outputs_agree": self.outputs_agree,
            "certification": self.certification,
            "certified_differences": [d.to_dict() for d in self.certified_differences],
            "refused_certifications": list(self.refused_certifications),
            "remedies": list(self.remedies),
        }


def check_env(
    path: str | os.PathLike[str],
    *,
    policy: str = "strict",
    verify_predictions: bool = False,
    trusted_keys: TrustedKeys = None,
    require_provenance: bool = False,
    certifications: str | os.PathLike[str] | None = None,
    trusted: Iterable[str] = (),
) -> Report:
    """Check integrity, then this runtime against the card, under ``policy``.

    Without ``verify_predictions`` nothing is unpickled and scikit-learn is not imported.
    With it, the artifact is loaded through the guarded loader (explicitly allowing a
    mismatch, so the report can say whether predictions still agree) and the probe re-run.
    With trusted keys (or $TOOLKIT_TRUSTED_KEYS) the signature is checked too, before any unpickling.
    With ``require_provenance`` (which needs a trusted key), also ``<stem>.provenance.json``: signed
    by a trusted key, its subjects these very files, its base image, lock and dataset the card's.
    ``trusted``: callables (``MODULE.NAME``) the loader may resolve beyond its default trust.
    ``certifications``: the folder ``--policy certified`` honours (None: $TOOLKIT_CERTIFICATIONS,
    else none); under strict, a certification there that would apply is named in the remedy.
    Raises: IntegrityError, CardError, SignatureError, ProvenanceError, UsageError (unknown policy
    or key file; provenance required with no trusted key).
    """
    validate_policy(policy)
    if require_provenance:  # no trusted key: a usage error before a gigabyte is hashed
        from toolkit.provenance.verify import require_trust

        require_trust(trusted_keys)
    card = verify(path, trusted_keys=trusted_keys)
    if require_provenance:
        from toolkit.artifact import artifact_paths
        from toolkit.provenance.verify import require_provenance as check_provenance

        paths = artifact_paths(path)
        # verify() proved the .joblib hashes to the card's sha256: it is not hashed again.
        check_provenance(paths, card, trusted_keys, known={paths.model: card.artifact.sha256})
    predictions = _probe(path, policy, trusted_keys, trusted, certifications) if verify_predictions else None
    return assess(
        card,
        artifact=str(path),
        policy=policy,
        predictions=predictions,
        certifications=certifications,
        trusted_keys=trusted_keys,
    )


def assess(
    card: ModelCard,
    *,
    artifact: str,
    policy: str,
    predictions: ProbeResult | ReferenceResult | None = None,
    checker: Iterable[str] = (),
    certifications: str | os.PathLike[str] | None = None,
    trusted_keys: TrustedKeys = None,
    registry: Path | None = None,
) -> Report:
    """The verdict on a card already checked for integrity: its differences from this runtime
    under ``policy``, weighed against the certifications (``toolkit.certification.decide``:
    the one rule), and the remedies that apply (shared by the file, the registry, the server
    and the remote gate). ``checker``: the checking process's own distributions
    (``toolkit.policy.differences``). ``certifications``: the folder (else
    ``toolkit.certification.locate``'s: $TOOLKIT_CERTIFICATIONS, then ``registry``'s folder).

    Raises: UsageError (under certified: the certifications folder does not exist).
    """
    runtime = capture(blas=False)
    diffs = runtime_differences(card, policy=policy, runtime=runtime, checker=checker)
    if not diffs:  # the common path: nothing to weigh, nothing more imported
        return Report(
            artifact=artifact,
            name=card.name,
            version=card.version,
            sha256=card.artifact.sha256,
            policy=policy,
            differences=diffs,
            predictions=predictions,
        )
    from toolkit.certification import decide, locate
    from toolkit.remedy import remedies

    decision = decide(
        diffs,
        model_sha256=card.artifact.sha256,
        policy=policy,
        runtime=runtime,
        certifications=locate(certifications, registry=registry),
        trusted_keys=trusted_keys,
        checker=checker,
    )
    if decision.certification is not None and not decision.differences:
        advice: tuple[str, ...] = ()
    else:
        # Only worth computing for the advice: would the looser policy already pass?
        compatible = (
            runtime_differences(card, policy="compatible", runtime=runtime) if diffs and policy == "strict" else None
        )
        advice = remedies(card, diffs, policy=policy, compatible_differences=compatible, artifact=artifact)
    if decision.remedy is not None:
        # Under certified the certification is the way asked for; under strict, exact versions first.
        advice = (decision.remedy, *advice) if policy == "certified" else (*advice, decision.remedy)
    return Report(
        artifact=artifact,
        name=card.name,
        version=card.version,
        sha256=card.artifact.sha256,
        policy=policy,
        differences=decision.differences,
        predictions=predictions,
        certification=None if decision.certification is None else str(decision.certification),
        certified_differences=decision.accepted,
        refused_certifications=decision.refused,
        remedies=advice,
    )


def _probe(
    path: str | os.PathLike[str],
    policy: str,
    trusted_keys: TrustedKeys,
    trusted: Iterable[str],
    certifications: str | os.PathLike[str] | None,
) -> ProbeResult | ReferenceResult:
    from toolkit.artifact import check_outputs, load_verified

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report already lists every difference
            loaded = load_verified(
                path,
                policy=policy,
                allow_mismatch=True,
                trusted_keys=trusted_keys,
                trusted=trusted,
                certifications=certifications,
            )
    except EnvironmentMismatch as e:  # the pickle does not even load in this runtime
        return ProbeResult(
            ok=False, rows=0, label_mismatches=0, max_abs_diff=float("inf"), tolerance=0.0, error=e.detail or str(e)
        )
    result: ProbeResult | ReferenceResult = check_outputs(path, loaded)
    return result
