"""Predictions from an artifact: the card's feature columns, a guarded load, one record.

``toolkit.predict`` is this module's ``predict``. The module is not ``toolkit/predict.py``:
importing a submodule binds its name on the package, which would shadow the function.

``predict`` picks and coerces the input columns the card records (by name, in the
recorded order, to the recorded kind), loads the pipeline with ``toolkit.load`` and
predicts. ``write_csv`` publishes the result atomically and never over its own input.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import _files
from toolkit.errors import UsageError
from toolkit.inputs import model_input

if TYPE_CHECKING:
    import pandas as pd

    from toolkit.card import ModelCard
    from toolkit.signing import TrustedKeys

__all__ = ["Predictions", "check_output", "feature_columns", "predict", "publish_csv", "read_input", "write_csv"]


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Predictions:
    """One prediction per input row, and each class's probability when the model has them."""

    predictions: Any  # numpy array, one entry per input row
    classes: tuple[Any, ...] | None  # the order of the probability columns (None: no probabilities)
    probabilities: Any | None  # numpy array of shape (rows, classes), or None
    ignored: tuple[str, ...]  # input columns the model does not use (e.g. the target)
    ids: Any | None = None  # the --id column's values, passed through (None: no id column)
    id_column: str | None = None

    def __len__(self) -> int:
        return len(self.predictions)

    def to_frame(self) -> pd.DataFrame:
        """The id column (when asked for), ``prediction``, then ``proba_<class>`` per class."""
        import pandas as pd

        columns: dict[str, Any] = {}
        if self.id_column is not None:
            columns[self.id_column] = self.ids
        columns["prediction"] = self.predictions
        if self.probabilities is not None and self.classes is not None:
            for i, cls in enumerate(self.classes):
                columns[f"proba_{cls}"] = self.probabilities[:, i]
        return pd.DataFrame(columns)

    def to_csv(self) -> bytes:
        """The CSV the ``predict`` command prints: UTF-8, LF, a header row, no index."""
        text: str = self.to_frame().to_csv(index=False, lineterminator="\n")
        return text.encode("utf-8")


def feature_columns(card: ModelCard) -> tuple[tuple[str, str], ...]:
    """``(name, dtype)`` of each input column the model was trained on, from its card.

    Raises: UsageError when the card records none (then the input cannot be checked).
    """
    features = tuple((f.name, f.dtype) for f in card.data.features)
    if not features:  # a card saved by toolkit.save without DataInfo: the probe has them
        features = tuple(zip(card.probe.columns, card.probe.dtypes, strict=True))
    if not features:
        raise UsageError(f"{card.artifact.file}: the card records no feature columns; cannot check the input")
    return features


def read_input(artifact: str | os.PathLike[str], path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CSV or Parquet input for ``artifact``; its text columns are read as text.

    Raises: IntegrityError, CardError (the card), DataError (the file).
    """
    from toolkit.artifact import read_card

    return _read_table(path, feature_columns(read_card(artifact)))


def predict(
    artifact: str | os.PathLike[str],
    frame: pd.DataFrame | str | os.PathLike[str],
    *,
    policy: str = "strict",
    allow_mismatch: bool = False,
    trusted_keys: TrustedKeys = None,
    id_column: str | None = None,
    trusted: Iterable[str] = (),
) -> Predictions:
    """Predict with the artifact's pipeline on ``frame`` (a DataFrame, or a CSV/Parquet path).

    ``id_column`` is passed through, as read (text), as the output's first column; it must
    exist and must not be named like an output column (UsageError, before loading anything).
    Columns are matched by name; extra ones are ignored and listed in ``ignored``. The
    input is checked (missing columns, text or infinity in a numeric column) before the
    pipeline is loaded; the load is ``toolkit.load``'s, with ``policy`` and ``allow_mismatch``.
    Raises: DataError (the input), UsageError, IntegrityError, CardError, EnvironmentMismatch.
    """
    from toolkit.artifact import load, read_card
    from toolkit.training.datasets import coerce_features

    features = feature_columns(read_card(artifact))
    if id_column is not None and (id_column == "prediction" or id_column.startswith("proba_")):
        raise UsageError(f"--id {id_column!r}: the output already has a column of that name; the id cannot take it")
    if isinstance(frame, (str, os.PathLike)):
        source = str(frame)
        frame = _read_table(frame, features, id_column)
    else:
        source = "input"
    if id_column is not None and id_column not in frame.columns:
        shown = ", ".join(str(c) for c in list(frame.columns)[:10]) + (", ..." if len(frame.columns) > 10 else "")
        raise UsageError(f"--id {id_column!r}: no such column in {source} (its columns: {shown})")
    X = coerce_features(frame, features, source)
    used = {name for name, _ in features} | ({id_column} if id_column is not None else set())
    ignored = tuple(str(c) for c in frame.columns if c not in used)
    ids = frame[id_column].to_numpy() if id_column is not None else None
    pipeline = load(artifact, policy=policy, allow_mismatch=allow_mismatch, trusted_keys=trusted_keys, trusted=trusted)
    X = model_input(pipeline, X)  # a pipeline fitted on a plain array (card columns x0...) gets one again
    predicted = pipeline.predict(X)
    if hasattr(pipeline, "predict_proba"):
        return Predictions(
            predictions=predicted,
            classes=tuple(pipeline.classes_),
            probabilities=pipeline.predict_proba(X),
            ignored=ignored,
            ids=ids,
            id_column=id_column,
        )
    return Predictions(
        predictions=predicted, classes=None, probabilities=None, ignored=ignored, ids=ids, id_column=id_column
    )


def check_output(out: str | os.PathLike[str], *, sources: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Refuse, before any work, an output path that cannot take the CSV or that is one of ``sources``.

    "Is an input" means the same file however it is named (a symlink, a hard link,
    ``./x/../in.csv``): compared by device and inode, not by name.
    Raises: UsageError.
    """
    out_path = Path(out)
    try:
        out_st: os.stat_result | None = os.stat(out_path)
    except FileNotFoundError:
        out_st = None  # a new file (or a dangling symlink, which the rename replaces)
    except OSError as e:
        raise UsageError(f"--out {out_path}: cannot use it: {e.strerror or e}") from e
    if out_st is not None:
        if stat.S_ISDIR(out_st.st_mode):
            raise UsageError(f"--out {out_path} is a folder; give a file path")
        for source in sources:
            try:
                in_st = os.stat(source)
            except OSError:
                continue  # reading the input reports it
            if (in_st.st_dev, in_st.st_ino) == (out_st.st_dev, out_st.st_ino):
                raise UsageError(f"--out {out_path} is the input file {source}; write the predictions elsewhere")
    parent = out_path.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out_path}: the folder {parent} does not exist")


def write_csv(
    predictions: Predictions, out: str | os.PathLike[str], *, sources: Sequence[str | os.PathLike[str]] = ()
) -> None:
    """Write ``predictions.to_csv()`` to ``out`` atomically: a temp file beside it, fsync, rename.

    A failure (disk full) leaves ``out`` as it was and no temp file behind.
    Raises: UsageError (``check_output``'s, or the write failed; the message names ``out``).
    """
    publish_csv(predictions.to_csv(), out, sources=sources)


def publish_csv(data: bytes, out: str | os.PathLike[str], *, sources: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Write CSV bytes (e.g. from a container) to ``out`` as ``write_csv`` does. Raises: UsageError."""
    check_output(out, sources=sources)
    final = Path(out)
    _files.save(final, data)


def _read_table(
    path: str | os.PathLike[str], features: tuple[tuple[str, str], ...], id_column: str | None = None
) -> pd.DataFrame:
    from toolkit.training.datasets import read_table

    # Text columns as text: a category "007" must not become the number 7, nor an id "007" 7.
    text = tuple(n for n, dtype in features if dtype == "object")
    if id_column is not None and id_column not in text:
        text += (id_column,)
    return read_table(Path(path), text_columns=text)
