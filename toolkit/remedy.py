"""What to do when the gate says no: the remedies that apply to one mismatch.

A verdict that only says "no" strands the user. Each remedy here is a command that
would get the artifact a runtime it loads in, chosen from what the card records:
a looser policy that already passes, the pinned image it was trained in (or a rebuild
of it from the card's base digest and lock), or a retrain from the card's recipe.
"""

from __future__ import annotations

from toolkit.card import ModelCard
from toolkit.errors import Difference

__all__ = ["remedies"]


def remedies(
    card: ModelCard,
    differences: tuple[Difference, ...],
    *,
    policy: str,
    compatible_differences: tuple[Difference, ...] | None,
    artifact: str,
) -> tuple[str, ...]:
    """One line per remedy that applies, most direct first; empty when nothing differs.

    ``compatible_differences`` are the differences under the compatible policy (None when
    ``policy`` already is compatible).
    """
    if not differences:
        return ()
    found = []
    if policy == "strict" and compatible_differences is not None and not compatible_differences:
        found.append(
            "the packages the pickle needs all match: it passes under the compatible policy "
            f"(toolkit check-env {artifact} --policy compatible)"
        )
    if any(d.field == "local_module" for d in differences):
        found.append("restore the module source the card records (its sha256 is in references.local_modules)")
    base = card.environment.base_image
    runtime_gone = any(d.field in ("base_image", "python_version", "package", "libc", "os") for d in differences)
    if base and runtime_gone:
        found.append(f"it was trained in the pinned image {base}: run the gate there (toolkit image check {artifact})")
        if card.environment.lock is not None:
            found.append(f"if that image is gone, rebuild it from the card (toolkit image rebuild {artifact})")
    if card.training is not None and (not base or card.environment.lock is None):
        found.append(f"retrain it from the card's recipe in this runtime (toolkit retrain {artifact} --version X.Y.Z)")
    pins = _pins(differences, "package", "==")
    if pins:
        found.append(f"or install the card's exact versions here: pip install {pins}")
    debs = _pins(differences, "system_package", "=")
    if debs:
        found.append(f"or add the card's Debian packages to the image: apt-get install {debs}")
    if not found:
        found.append(
            f"install the versions the card records (toolkit card {artifact} --format json: environment.packages)"
        )
    return tuple(found)


def _pins(differences: tuple[Difference, ...], field: str, op: str, shown: int = 10) -> str:
    """``name==version`` for each differing package the card records (at most ``shown``);
    one the card does not have is left out: installing cannot remove it."""
    pins = [f"{d.name}{op}{d.expected}" for d in differences if d.field == field and d.expected]
    more = f" (and {len(pins) - shown} more)" if len(pins) > shown else ""
    return " ".join(pins[:shown]) + more
