"""The ``check-env`` gate: does this runtime match the card? Never unpickles by default."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from toolkit.artifact import runtime_differences, verify
from toolkit.card import ModelCard
from toolkit.errors import Difference, EnvironmentMismatch
from toolkit.fingerprint import capture
from toolkit.policy import validate_policy
from toolkit.probe import ProbeResult
from toolkit.signing import TrustedKeys

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
    predictions: ProbeResult | None = None  # only with verify_predictions
    remedies: tuple[str, ...] = ()  # what would make it pass, most direct first

    @property
    def environment_ok(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        return self.environment_ok and (self.predictions is None or self.predictions.ok)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else EnvironmentMismatch.exit_code

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
            "remedies": list(self.remedies),
        }


def check_env(
    path: str | os.PathLike[str],
    *,
    policy: str = "strict",
    verify_predictions: bool = False,
    trusted_keys: TrustedKeys = None,
    trusted: Iterable[str] = (),
) -> Report:
    """Check integrity, then this runtime against the card, under ``policy``.

    Without ``verify_predictions`` nothing is unpickled and scikit-learn is not imported.
    With it, the artifact is loaded through the guarded loader (explicitly allowing a
    mismatch, so the report can say whether predictions still agree) and the probe re-run.
    With trusted keys (or $TOOLKIT_TRUSTED_KEYS) the signature is checked too, before any unpickling.
    ``trusted``: callables (``MODULE.NAME``) the loader may resolve beyond its default trust.
    Raises: IntegrityError, CardError, SignatureError, UsageError (unknown policy or key file).
    """
    validate_policy(policy)
    card = verify(path, trusted_keys=trusted_keys)
    predictions = _probe(path, policy, trusted_keys, trusted) if verify_predictions else None
    return assess(card, artifact=str(path), policy=policy, predictions=predictions)


def assess(card: ModelCard, *, artifact: str, policy: str, predictions: ProbeResult | None = None) -> Report:
    """The verdict on a card already checked for integrity: its differences from this runtime
    under ``policy``, and the remedies that apply (shared by the file and the remote gate)."""
    from toolkit.remedy import remedies

    runtime = capture(blas=False)
    diffs = runtime_differences(card, policy=policy, runtime=runtime)
    # Only worth computing for the advice: would the looser policy already pass?
    compatible = (
        runtime_differences(card, policy="compatible", runtime=runtime) if diffs and policy == "strict" else None
    )
    return Report(
        artifact=artifact,
        name=card.name,
        version=card.version,
        sha256=card.artifact.sha256,
        policy=policy,
        differences=diffs,
        predictions=predictions,
        remedies=remedies(card, diffs, policy=policy, compatible_differences=compatible, artifact=artifact),
    )


def _probe(path: str | os.PathLike[str], policy: str, trusted_keys: TrustedKeys, trusted: Iterable[str]) -> ProbeResult:
    from toolkit import probe
    from toolkit.artifact import load_verified

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report already lists every difference
            loaded = load_verified(path, policy=policy, allow_mismatch=True, trusted_keys=trusted_keys, trusted=trusted)
    except EnvironmentMismatch as e:  # the pickle does not even load in this runtime
        return ProbeResult(
            ok=False, rows=0, label_mismatches=0, max_abs_diff=float("inf"), tolerance=0.0, error=e.detail or str(e)
        )
    return probe.check(loaded.card.probe, loaded.pipeline)
