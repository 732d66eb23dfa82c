"""``registry compare``: two registered versions re-scored on the same rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.errors import UsageError
from toolkit.policy import validate_policy

if TYPE_CHECKING:
    from toolkit.registry.registry import Registry
    from toolkit.training.compare import Comparison

__all__ = ["DEFAULT_POLICY", "compare_versions"]

# Comparing happens on a workstation, as promotion does: what matters for unpickling.
DEFAULT_POLICY = "compatible"


def compare_versions(
    registry: Registry,
    name: str,
    v1: str,
    v2: str,
    *,
    dataset: str | None = None,
    target: str | None = None,
    policy: str = DEFAULT_POLICY,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Re-score two versions on the same data: the cards' held-out split, the held-out rows both
    kept (script-saved with ``held_out=``, the same rows by sha256), or all of ``dataset``.

    Each metric's difference comes with a paired bootstrap interval (``resamples`` draws of the
    same rows for both, seeded). The rows are chosen (and refused) before anything is unpickled.

    Raises:
        UsageError: the same version twice; a negative ``resamples``.
        RegistryError: unknown versions; the cards' data, split or kept held-out rows differ (and
            no ``dataset``).
        DataError: the data at the cards' source no longer hashes to what they recorded.
        IntegrityError, EnvironmentMismatch: from loading either pipeline under ``policy``.
    """
    from toolkit.artifact import load
    from toolkit.training.compare import compare_pipelines, comparison_rows
    from toolkit.training.scoring import recorded_held_out

    validate_policy(policy)
    if v1 == v2:
        raise UsageError(f"compare needs two different versions, got {v1} twice")
    with registry.local_versions(name, v1, v2) as local:
        (p1, c1), (p2, c2) = local
        kept = (None, None) if dataset is not None else (recorded_held_out(p1, c1), recorded_held_out(p2, c2))
        rows = comparison_rows(name, (v1, c1), (v2, c2), dataset=dataset, target=target, recorded=kept)
        pipelines = (
            load(p1, policy=policy, trusted_keys=registry.trusted_keys),
            load(p2, policy=policy, trusted_keys=registry.trusted_keys),
        )
    return compare_pipelines(name, (v1, v2), pipelines, rows, resamples=resamples, seed=seed)
