"""One model made ready to serve: every check of the start-up order, in that order, or a refusal.

The order is the contract (SPEC "Serving"): signature (with trusted keys) and integrity of the
files, the gate for this very process, the guarded load (``toolkit.load``: the bytes it
unpickles are hashed again, so a file swapped after the first check changes nothing), then the
probe. A version is served only when all of them pass; ``prepare`` never returns a half-checked
model, and raises ``Refused`` naming the step that said no.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any

from toolkit.errors import CertifiedRuntimeWarning, Difference, EnvironmentMismatch, IntegrityError, ToolkitError

__all__ = ["SERVER_DISTRIBUTIONS", "STEPS", "Refused", "ServedModel", "checker_packages", "prepare"]

# What `toolkit serve` itself runs on. They are the checker's, as the toolkit's own distribution
# is (toolkit.policy.SELF_DISTRIBUTION): a card recorded in a runtime without them (an older lock,
# a rebuilt runtime) is still served when everything it does record matches; a card that records
# them has them compared like any other package.
SERVER_DISTRIBUTIONS = ("uvicorn", "starlette", "prometheus-client")
STEPS = ("resolve", "signature", "integrity", "gate", "load", "probe")


class Refused(ToolkitError):
    """A version that failed one step of the start-up order; ``step`` says which."""

    def __init__(self, step: str, message: str, *, differences: tuple[Difference, ...] = (), exit_code: int = 1):
        self.step = step
        self.differences = differences
        self.exit_code = exit_code
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "error": str(self),
            "exit_code": self.exit_code,
            "differences": [d.to_dict() for d in self.differences],
        }


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class ServedModel:
    """A pipeline that passed every step, with what the routes and metrics say about it."""

    pipeline: Any
    card: Any  # toolkit.card.ModelCard
    name: str
    version: str
    sha256: str
    lock_sha256: str | None
    features: tuple[tuple[str, str], ...]  # (name, dtype) as the card records them
    classes: tuple[Any, ...] | None  # a classifier's classes (probability columns), else None
    probe_max_abs_diff: float
    source: str  # the path or reference it was loaded from, for logs
    certification: str | None = None  # under --policy certified: the one that accepted this runtime

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None


def prepare(
    path: str | os.PathLike[str],
    *,
    policy: str,
    trusted_keys: Any = None,
    trusted: tuple[str, ...] = (),
    source: str = "",
) -> ServedModel:
    """Run signature, integrity, gate, guarded load and probe on ``path``, in that order.

    Raises: Refused (with the step and the one-line reason).
    """
    from toolkit import probe
    from toolkit.artifact import load, verify
    from toolkit.errors import SignatureError
    from toolkit.gate import assess
    from toolkit.prediction import feature_columns

    shown = source or str(path)
    checker = checker_packages()
    try:
        card = verify(path, trusted_keys=trusted_keys)
    except SignatureError as e:
        raise Refused("signature", f"{shown}: {e}", exit_code=e.exit_code) from e
    except ToolkitError as e:
        raise Refused("integrity", f"{shown}: {e}", exit_code=e.exit_code) from e
    try:
        # Certifications: $TOOLKIT_CERTIFICATIONS, weighed by the gate's one rule (toolkit.certification).
        report = assess(card, artifact=str(path), policy=policy, checker=checker, trusted_keys=trusted_keys)
    except ToolkitError as e:  # a configured certifications folder that does not exist
        raise Refused("gate", f"{shown}: {e}", exit_code=e.exit_code) from e
    if report.differences:
        mismatch = EnvironmentMismatch(report.differences, policy=policy)
        refused = "".join(f"; certification refused: {r}" for r in report.refused_certifications)
        raise Refused(
            "gate",
            f"{card.name} {card.version}: {mismatch}{refused}{_remedy(report.remedies)}",
            differences=report.differences,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CertifiedRuntimeWarning)  # the report above names it
            pipeline = load(path, policy=policy, trusted_keys=trusted_keys, checker_packages=checker, trusted=trusted)
    except EnvironmentMismatch as e:
        raise Refused("gate", f"{card.name} {card.version}: {e}", differences=e.differences) from e
    except IntegrityError as e:  # the file changed between the first check and the load
        raise Refused("load", f"{shown}: {e}", exit_code=e.exit_code) from e
    except ToolkitError as e:
        raise Refused("load", f"{shown}: {e}", exit_code=e.exit_code) from e
    result = probe.check(card.probe, pipeline)
    if not result.ok:
        raise Refused("probe", f"{card.name} {card.version}: {result}")
    classes = tuple(pipeline.classes_) if hasattr(pipeline, "predict_proba") and hasattr(pipeline, "classes_") else None
    return ServedModel(
        pipeline=pipeline,
        card=card,
        name=card.name,
        version=card.version,
        sha256=card.artifact.sha256,
        lock_sha256=card.environment.lock_sha256,
        features=feature_columns(card),
        classes=classes,
        probe_max_abs_diff=result.max_abs_diff if math.isfinite(result.max_abs_diff) else -1.0,
        source=shown,
        certification=report.certification,
    )


@cache
def checker_packages() -> frozenset[str]:
    """The server's distributions and everything they require, as installed here (canonical names)."""
    from packaging.requirements import InvalidRequirement, Requirement

    from toolkit.fingerprint import canonical_name

    seen: set[str] = set()
    todo = [canonical_name(n) for n in SERVER_DISTRIBUTIONS]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in dist.requires or ():
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical_name(req.name))
    return frozenset(seen)


def _remedy(remedies: tuple[str, ...]) -> str:
    return f"; {remedies[0]}" if remedies else ""
