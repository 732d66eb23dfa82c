"""``card --plots``: a saved model's evaluation plots, drawn where they can be.

matplotlib is a host-only extra (``plots``): the runtime image does not carry it, so the plots of
a model trained in an image are drawn on a host whose runtime is not the card's (another base
image, OS, and packages that never touch the pickle). The strict gate would refuse every such
host. So the model is loaded under ``compatible`` by default (what matters for unpickling: the
interpreter and the exact versions of what the pickle imports), and when this runtime differs
from the card's under ``strict`` the pipeline's outputs are first re-checked on its reference set
(or probe): the plots are drawn only when the model gives here the outputs it gave where it was
saved. The differences are returned (the CLI prints one line each) and the Markdown card says
the plots were drawn in a different runtime. ``policy="strict"`` still refuses any difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import Difference, ProbeMismatch
from toolkit.policy import validate_policy

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.signing import TrustedKeys
    from toolkit.training.plots import Plot

__all__ = ["DEFAULT_POLICY", "PlotRun", "plot_artifact"]

DEFAULT_POLICY = "compatible"


@dataclass(frozen=True, kw_only=True, slots=True)
class PlotRun:
    """What ``plot_artifact`` drew, on which rows, and how this runtime differs from the card's."""

    card: ModelCard
    plots: tuple[Plot, ...]
    markdown: Path  # the Markdown card embedding them
    rows: int
    how: str  # "held-out test split" | "recorded held-out rows"
    differences: tuple[Difference, ...]  # under strict; empty: drawn in the card's own runtime
    outputs: str | None  # the output re-check's verdict when there were differences


def plot_artifact(
    artifact: str | os.PathLike[str],
    out_dir: Path,
    *,
    policy: str = DEFAULT_POLICY,
    trusted_keys: TrustedKeys = None,
) -> PlotRun:
    """Draw ``artifact``'s plots on the rows its test metrics came from into ``out_dir``.

    The rows are found (or refused) before anything is unpickled.
    Raises:
        UsageError: the card records no held-out rows to draw on; ``out_dir`` unusable.
        DataError: the data at the card's source changed.
        IntegrityError, SignatureError, EnvironmentMismatch: from the guarded load under ``policy``.
        ProbeMismatch: this runtime differs and the outputs moved (nothing is drawn).
    """
    from toolkit.artifact import check_outputs, load_verified, read_card, runtime_differences
    from toolkit.training.plots import write_plots
    from toolkit.training.scoring import held_out_of

    validate_policy(policy)
    card = read_card(artifact)
    rows = held_out_of(artifact, card)
    loaded = load_verified(artifact, policy=policy, allow_mismatch=False, trusted_keys=trusted_keys)
    strict = runtime_differences(card, policy="strict")
    verdict = None
    if strict or loaded.differences:
        result = check_outputs(artifact, loaded)
        if not result.ok:
            raise ProbeMismatch(strict or loaded.differences, policy=policy, detail=str(result))
        verdict = str(result)
    note = None
    if strict:
        note = (
            f"Drawn in a runtime that differs from the card's ({len(strict)} differences under strict: "
            + "; ".join(str(d) for d in strict[:5])
            + ("; ..." if len(strict) > 5 else "")
            + f"), after the pipeline's outputs were checked here: {verdict}."
        )
    plots = write_plots(card, loaded.pipeline, rows.X, rows.y, out_dir, how=rows.how, note=note)
    return PlotRun(
        card=card,
        plots=plots,
        markdown=out_dir / f"{card.artifact.file.removesuffix('.joblib')}.card.md",
        rows=len(rows.y),
        how=rows.how,
        differences=strict,
        outputs=verdict,
    )
