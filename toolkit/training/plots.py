"""Evaluation plots for a card, recomputed on the card's own held-out rows.

Classification: a confusion matrix, ROC and precision-recall curves (one-vs-rest for
more than two classes). Regression: predicted against actual, and residuals. Each is a
PNG of a fixed size whose title is also stored in the PNG's ``Title`` text chunk, so a
tool (or a test) can tell what a file shows without looking at it. matplotlib runs on
the host only; the runtime image does not carry it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit.card import ModelCard
from toolkit.errors import UsageError

__all__ = ["FIGURE_PIXELS", "Plot", "render", "write_plots"]

_Draw = Callable[[Any, Any, Any, Any], None]

# 640 x 480 pixels: figsize in inches times dpi.
_FIGSIZE = (6.4, 4.8)
_DPI = 100
FIGURE_PIXELS = (640, 480)


@dataclass(frozen=True, kw_only=True, slots=True)
class Plot:
    """One rendered plot: where it was written and what it shows."""

    file: Path
    title: str


def write_plots(
    card: ModelCard,
    pipeline: Any,
    X: Any,
    y: Any,
    out_dir: Path,
    *,
    how: str = "held-out test split",
    note: str | None = None,
) -> tuple[Plot, ...]:
    """Render the card's plots on ``X``/``y`` into ``out_dir``, with a Markdown card embedding them.

    ``how`` names the rows (``toolkit.training.scoring.HeldOut.how``); ``note``, when given, is
    said under the plots and kept in each PNG's ``Description`` (e.g. drawn in another runtime).
    Each file is written atomically; an existing file of the same name is replaced.
    Raises: UsageError (``out_dir`` is not a usable directory).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--plots {out_dir}: not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--plots {out_dir}: cannot create it: {e.strerror or e}") from e
    plots = []
    for file_name, title, png in render(card, pipeline, X, y, note=note):
        target = out_dir / file_name
        _write(target, png)
        plots.append(Plot(file=target, title=title))
    stem = card.artifact.file.removesuffix(".joblib")
    _write(out_dir / f"{stem}.card.md", _markdown(card, plots, rows=len(y), how=how, note=note).encode())
    return tuple(plots)


def render(card: ModelCard, pipeline: Any, X: Any, y: Any, *, note: str | None = None) -> list[tuple[str, str, bytes]]:
    """``(file name, title, PNG bytes)`` for each plot that fits the model's task."""
    import matplotlib

    from toolkit.inputs import model_input

    matplotlib.use("Agg", force=True)  # no display on a server, and no GUI toolkit import
    import matplotlib.pyplot as plt

    kinds = _CLASSIFICATION if hasattr(pipeline, "classes_") else _REGRESSION
    X = model_input(pipeline, X)  # a pipeline fitted on a plain array is given one again
    label = f"{card.name} {card.version}"
    rendered = []
    for file_name, what, draw in kinds:
        title = f"{what}: {label}"
        fig, ax = plt.subplots(figsize=_FIGSIZE, dpi=_DPI)
        try:
            draw(pipeline, X, y, ax)
            ax.set_title(title)
            fig.tight_layout()
            buffer = io.BytesIO()
            # No timestamp in the metadata: the same model and data give the same bytes.
            metadata = {"Title": title, "Software": None, **({"Description": note} if note else {})}
            fig.savefig(buffer, format="png", dpi=_DPI, metadata=metadata)
        finally:
            plt.close(fig)
        rendered.append((file_name, title, buffer.getvalue()))
    return rendered


def _confusion(pipeline: Any, X: Any, y: Any, ax: Any) -> None:
    from sklearn.metrics import ConfusionMatrixDisplay

    ConfusionMatrixDisplay.from_predictions(
        y, pipeline.predict(X), labels=list(pipeline.classes_), ax=ax, colorbar=False
    )


def _curves(kind: str) -> _Draw:
    """ROC or precision-recall: one curve for two classes, one per class (one-vs-rest) otherwise."""

    def draw(pipeline: Any, X: Any, y: Any, ax: Any) -> None:
        from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

        display = RocCurveDisplay if kind == "roc" else PrecisionRecallDisplay
        classes = list(pipeline.classes_)
        proba = pipeline.predict_proba(X)
        for cls in classes[1:] if len(classes) == 2 else classes:
            display.from_predictions(y == cls, proba[:, classes.index(cls)], name=f"class {cls}", ax=ax)

    return draw


def _predicted_vs_actual(pipeline: Any, X: Any, y: Any, ax: Any) -> None:
    from sklearn.metrics import PredictionErrorDisplay

    PredictionErrorDisplay.from_predictions(y, pipeline.predict(X), kind="actual_vs_predicted", ax=ax)


def _residuals(pipeline: Any, X: Any, y: Any, ax: Any) -> None:
    from sklearn.metrics import PredictionErrorDisplay

    PredictionErrorDisplay.from_predictions(y, pipeline.predict(X), kind="residual_vs_predicted", ax=ax)


_CLASSIFICATION: tuple[tuple[str, str, _Draw], ...] = (
    ("confusion_matrix.png", "Confusion matrix", _confusion),
    ("roc.png", "ROC curve", _curves("roc")),
    ("precision_recall.png", "Precision-recall curve", _curves("pr")),
)
_REGRESSION: tuple[tuple[str, str, _Draw], ...] = (
    ("predicted_vs_actual.png", "Predicted vs actual", _predicted_vs_actual),
    ("residuals.png", "Residuals", _residuals),
)


def _markdown(card: ModelCard, plots: list[Plot], *, rows: int, how: str, note: str | None) -> str:
    lines = [card.to_markdown().rstrip("\n"), "", "## Plots", ""]
    what = "held-out split" if how == "held-out test split" else how
    lines.append(f"Recomputed on the card's {what} ({rows} rows).")
    if note:
        lines += ["", note]
    for plot in plots:
        lines += ["", f"![{plot.title}]({plot.file.name})"]
    return "\n".join(lines) + "\n"


def _write(target: Path, content: bytes) -> None:
    try:
        _files.publish(_files.write_temp(target, content), target, overwrite=True)
    except OSError as e:
        raise UsageError(f"{target}: cannot write it: {e.strerror or e}") from e
