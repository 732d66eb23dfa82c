"""``registry compare``: two registered versions re-scored on the same rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import DockerError, UsageError
from toolkit.policy import validate_policy

if TYPE_CHECKING:
    from toolkit.registry.registry import Registry
    from toolkit.training.compare import Comparison

__all__ = ["DEFAULT_POLICY", "InImage", "compare_versions"]

# The container seam: (image, registry folder, compare's arguments, host files they name) -> its JSON
# answer. toolkit.docker.jobs.compare_in_container is the real one.
InImage = Callable[[str, Path, Sequence[str], Sequence[Path]], dict[str, Any]]

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
    in_image: InImage | None = None,
    on_image: Callable[[str], None] | None = None,
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

    With ``in_image``, when this host cannot load a version under ``policy`` (the gate says so, as
    promote's does) and the cards name the image they were trained in (else toolkit.toml's), the
    whole comparison runs there instead and ``on_image`` is told its name; two different images
    are refused (UsageError naming both), as is a team registry (the container cannot reach it);
    no image known: the host's own error, as without ``in_image``.
    """
    from toolkit.artifact import load
    from toolkit.training.compare import compare_pipelines, comparison_rows
    from toolkit.training.scoring import recorded_held_out

    validate_policy(policy)
    if v1 == v2:
        raise UsageError(f"compare needs two different versions, got {v1} twice")
    with registry.local_versions(name, v1, v2) as local:
        (p1, c1), (p2, c2) = local
        image = _image_needed(registry, (p1, p2), policy) if in_image is not None else None
        if image is not None and in_image is not None:
            return _compare_in(
                image, in_image, registry, name, (v1, v2), dataset, target, policy, resamples, seed, on_image
            )
        kept = (None, None) if dataset is not None else (recorded_held_out(p1, c1), recorded_held_out(p2, c2))
        rows = comparison_rows(name, (v1, c1), (v2, c2), dataset=dataset, target=target, recorded=kept)
        pipelines = (
            load(p1, policy=policy, trusted_keys=registry.trusted_keys),
            load(p2, policy=policy, trusted_keys=registry.trusted_keys),
        )
    return compare_pipelines(name, (v1, v2), pipelines, rows, resamples=resamples, seed=seed)


def _image_needed(registry: Registry, models: tuple[Path, Path], policy: str) -> str | None:
    """The one image to compare in: None when this host passes the gate for both versions (or no
    image is known: the host's own error follows). Raises: UsageError (the cards name two images)."""
    from toolkit.docker.jobs import model_image
    from toolkit.gate import check_env

    if all(check_env(m, policy=policy, trusted_keys=registry.trusted_keys).ok for m in models):
        return None
    images = sorted({i for i in map(model_image, models) if i})
    if len(images) > 1:
        raise UsageError(
            f"compare: the two versions were trained in different images ({images[0]} and {images[1]}); "
            "both must load in one image to be re-scored on the same rows"
        )
    return images[0] if images else None


def _compare_in(
    image: str,
    in_image: InImage,
    registry: Registry,
    name: str,
    versions: tuple[str, str],
    dataset: str | None,
    target: str | None,
    policy: str,
    resamples: int,
    seed: int,
    on_image: Callable[[str], None] | None,
) -> Comparison:
    from toolkit.training.compare import Comparison

    if registry.root is None:
        raise UsageError(
            f"compare: this host cannot load {name} {versions[0]} and {versions[1]}, and a team registry cannot "
            f"be mounted into their image {image}; run compare where the project's requirements.lock is installed"
        )
    args = [name, *versions, "--policy", policy, "--resamples", str(resamples), "--seed", str(seed)]
    inputs: list[Path] = []
    if dataset is not None:
        args += ["--dataset", dataset]
        if not dataset.startswith("builtin:"):
            inputs.append(Path(dataset))
    if target is not None:
        args += ["--target", target]
    for key in registry.trusted_keys or ():
        if isinstance(key, str | Path):
            args += ["--trusted-key", str(key)]
            inputs.append(Path(key))
    answer = in_image(image, registry.root, args, inputs)
    try:
        result = Comparison.from_dict(answer)
    except ValueError as e:
        raise DockerError(f"compare in {image}: its answer is not a comparison ({e})") from None
    if result.name != name or result.versions != versions:
        raise DockerError(f"compare in {image}: it answered for {result.name} {' '.join(result.versions)}")
    if on_image is not None:
        on_image(image)
    return result
