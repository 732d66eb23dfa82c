"""The reference set: held-out rows and a pipeline's outputs on them, kept beside the card.

Sized for detection, not for show: up to ``CAP`` rows of the held-out set (all of them when
fewer; a seeded sample, kept in row order, when more). If a runtime change moves the
outputs of a share ``p`` of the rows, a check of ``n`` rows sees at least one of them with
probability ``1 - (1 - p) ** n``; at the cap of 2,000 rows that is 99 % for ``p`` of 0.23 %
(``detectable_share``). The 16-row probe saw a 3 % drift about half the time.

Outputs are computed, at save and at every re-check, in the same batch layout
(``BATCH_SIZE`` rows per predict call, in file order) and under the same thread limit
(``THREAD_LIMIT`` BLAS and OpenMP threads, through threadpoolctl), because some estimators'
answers depend on both (scikit-learn's k-NN under OpenMP): the verdict must not depend on
the machine's core count.

The file is ``<stem>.reference.json.gz``: strict JSON (no NaN, no duplicate keys; floats
written with ``repr``, which round-trips exactly), gzip with a zero timestamp so the same
outputs give the same bytes. It is read with a size limit before and after decompression
and parsed without pickle; the card records its sha256 and size, which are checked first.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.card.records import MAX_REFERENCE_BYTES, ReferenceSet, jsonable
from toolkit.errors import IntegrityError

__all__ = [
    "BATCH_SIZE",
    "CAP",
    "DEFAULT_TOLERANCE",
    "MAX_FILE_BYTES",
    "THREAD_LIMIT",
    "OutputCheck",
    "Recorded",
    "ReferenceResult",
    "check",
    "decode",
    "detectable_share",
    "encode",
    "limited_threads",
    "outputs_of",
    "record",
    "sample",
]

CAP = 2000  # rows kept at most; the held-out set is sampled with a seed beyond it
SAMPLE_SEED = 0  # the seed for that sample (the card records it)
BATCH_SIZE = 512  # rows per predict call, the same at save and at every re-check
THREAD_LIMIT = 1  # BLAS and OpenMP threads, the same at save and at every re-check
DEFAULT_TOLERANCE = 1e-6  # as the probe's: absolute, relative beyond 1; labels exactly
FORMAT = 1
MAX_FILE_BYTES = MAX_REFERENCE_BYTES  # the card's rule, so the gate need not import this module
MAX_JSON_BYTES = 512 * 1024 * 1024
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def detectable_share(rows: int, probability: float = 0.99) -> float:
    """The smallest share of drifted rows that ``rows`` random rows catch with ``probability``:
    the ``p`` solving ``1 - (1 - p) ** rows == probability``."""
    return 1.0 - float((1.0 - probability) ** (1.0 / rows))


@dataclass(frozen=True, kw_only=True, slots=True)
class Recorded:
    """A reference set in memory: inputs as the card's probe lays them out, and each output."""

    columns: tuple[str, ...]
    dtypes: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    outputs: dict[str, list[Any]]  # "labels" | "probabilities" | "decision_values" | "values" -> per row
    # The true label or value of each row, when save was given the held-out target too
    # (``held_out=(X, y)``): what ``registry compare`` and ``card --plots`` score a script-saved
    # model on. None: inputs and outputs only (a file without the key reads as before).
    target: tuple[Any, ...] | None = None


def sample(frame: Any, *, cap: int = CAP, seed: int = SAMPLE_SEED) -> tuple[Any, int | None]:
    """The rows of ``frame`` to keep: all, in order, up to ``cap``; else ``cap`` rows drawn with
    ``seed`` and kept in their original order. Returns the rows and the seed (None: all kept)."""
    chosen = _chosen(len(frame), cap=cap, seed=seed)
    return (frame, None) if chosen is None else (frame.iloc[chosen], seed)


def _chosen(rows: int, *, cap: int, seed: int) -> Any:
    """The positions ``sample`` keeps, in order; None: every row."""
    if rows <= cap:
        return None
    import numpy as np

    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


@contextlib.contextmanager
def limited_threads(limit: int) -> Iterator[None]:
    """BLAS and OpenMP pools limited to ``limit`` threads (threadpoolctl), and the variables a
    library loaded meanwhile reads set to the same, all restored afterwards."""
    import threadpoolctl

    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(limit) for name in _THREAD_VARIABLES})
    try:
        with threadpoolctl.threadpool_limits(limits=limit):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def outputs_of(
    pipeline: Any,
    X: Any,
    *,
    batch_size: int = BATCH_SIZE,
    thread_limit: int = THREAD_LIMIT,
    derive_labels: bool = False,
) -> dict[str, list[Any]]:
    """Every output the pipeline has on ``X``, predicted ``batch_size`` rows at a time under
    ``thread_limit`` threads. A classifier (it has ``classes_``) gives labels, probabilities
    and decision values where it has them; a regressor gives values.

    ``derive_labels`` (save only): when the final estimator's ``predict`` is, by its library's
    own code, ``classes_.take(argmax(predict_proba(X)), axis=0)`` (``_labels_from_probabilities``),
    the labels are taken from the probabilities just computed instead of a second pass over
    every tree. They are the same values by construction; a re-check never derives: it calls
    ``predict`` itself, so what is compared is what ``predict`` returns.
    """
    classifier = hasattr(pipeline, "classes_")
    # A pipeline's steps transform each batch once, then the final estimator gives every output:
    # what Pipeline.predict does, without transforming the same rows three times.
    # An imbalanced-learn pipeline whose steps end in a sampler has no head transform (samplers act
    # in fit only): the pipeline's own methods are called then, which skip the sampler as it must.
    steps = getattr(pipeline, "steps", None)
    transform = getattr(pipeline[:-1], "transform", None) if steps and len(steps) > 1 else None
    final = pipeline if transform is None else pipeline[-1]
    calls = {"labels" if classifier else "values": final.predict}
    if classifier and hasattr(final, "predict_proba"):
        calls["probabilities"] = final.predict_proba
    if classifier and hasattr(final, "decision_function"):
        calls["decision_values"] = final.decision_function
    derived = derive_labels and classifier and "probabilities" in calls and _labels_from_probabilities(final)
    from toolkit.inputs import model_input

    out: dict[str, list[Any]] = {name: [] for name in calls}
    with limited_threads(thread_limit):
        for start in range(0, len(X), batch_size):
            batch = model_input(pipeline, X.iloc[start : start + batch_size])
            inputs = batch if transform is None else transform(batch)
            for name, call in calls.items():
                if name == "labels" and derived:
                    continue
                values = call(inputs)
                if name == "probabilities" and derived:
                    out["labels"].extend(_json_values(final.classes_.take(values.argmax(axis=1), axis=0)))
                out[name].extend(_json_values(values))
    return out


def _labels_from_probabilities(final: Any) -> bool:
    """Whether ``final.predict`` is scikit-learn's ``ForestClassifier.predict`` on one output:
    ``self.classes_.take(np.argmax(self.predict_proba(X), axis=1), axis=0)`` (random forests and
    extra trees; the same code for many releases). The method itself must be that one, not an
    override; anything else computes its labels with ``predict``."""
    try:
        from sklearn.ensemble import _forest
    except ImportError:  # no scikit-learn: nothing is derived
        return False
    forest = getattr(_forest, "ForestClassifier", None)
    return (
        forest is not None
        and getattr(type(final), "predict", None) is forest.predict
        and getattr(final, "n_outputs_", None) == 1
    )


def record(pipeline: Any, frame: Any, *, target: Any = None, cap: int = CAP) -> tuple[Recorded, int | None]:
    """Sample ``frame`` (held-out rows), run the pipeline on it, keep inputs and outputs, and
    ``target`` (a Series aligned with ``frame`` by position: the rows' true values) when given."""
    chosen = _chosen(len(frame), cap=cap, seed=SAMPLE_SEED)
    rows, seed = (frame, None) if chosen is None else (frame.iloc[chosen], SAMPLE_SEED)
    kept = None
    if target is not None:
        picked = target if chosen is None else target.iloc[chosen]
        kept = tuple(jsonable(v) for v in picked.astype(object).tolist())
    recorded = Recorded(
        columns=tuple(str(c) for c in rows.columns),
        dtypes=tuple(str(t) for t in rows.dtypes),
        # Column by column, then rows: itertuples is far slower on a wide frame, and a numeric
        # column converts in one call.
        rows=_json_rows(rows),
        outputs=outputs_of(pipeline, rows, derive_labels=True),
        target=kept,
    )
    return recorded, seed


def encode(recorded: Recorded) -> bytes:
    """The file's bytes: compact strict JSON, gzip with no timestamp (same outputs, same bytes)."""
    doc = {
        "format": FORMAT,
        "columns": list(recorded.columns),
        "dtypes": list(recorded.dtypes),
        "rows": [list(r) for r in recorded.rows],
        "outputs": recorded.outputs,
    }
    if recorded.target is not None:  # only then: a file without a target keeps its exact bytes
        doc["target"] = list(recorded.target)
    import gzip

    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=4, mtime=0) as f:
        f.write(text.encode("utf-8"))
    return buffer.getvalue()


def decode(data: bytes, info: ReferenceSet, *, where: str) -> Recorded:
    """Parse a reference file whose sha256 the caller already checked against the card.

    Raises: IntegrityError naming the file and what is wrong.
    """
    import gzip

    from toolkit import _json

    if len(data) > MAX_FILE_BYTES:
        raise IntegrityError(f"{where}: over {MAX_FILE_BYTES} bytes, not a reference set")
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as f:
            text = f.read(MAX_JSON_BYTES + 1)
    except (OSError, EOFError) as e:
        raise IntegrityError(f"{where}: not a gzip file ({e})") from e
    if len(text) > MAX_JSON_BYTES:
        raise IntegrityError(f"{where}: decompresses to over {MAX_JSON_BYTES} bytes, not a reference set")
    try:
        raw = _json.loads(text)
    except _json.JsonError as e:
        raise IntegrityError(f"{where}: not a strict JSON reference set ({e})") from e
    keys = {"format", "columns", "dtypes", "rows", "outputs"}
    if not isinstance(raw, dict) or set(raw) not in (keys, keys | {"target"}):
        raise IntegrityError(f"{where}: not a reference set (its keys are wrong)")
    if raw["format"] != FORMAT:
        raise IntegrityError(f"{where}: unknown reference format {raw['format']!r}")
    columns, dtypes, rows, outputs = raw["columns"], raw["dtypes"], raw["rows"], raw["outputs"]
    if not (_strings(columns) and _strings(dtypes) and len(columns) == len(dtypes)):
        raise IntegrityError(f"{where}: columns and dtypes must be two lists of strings of one length")
    if not isinstance(rows, list) or len(rows) != info.rows:
        raise IntegrityError(f"{where}: holds {_len(rows)} rows, the card says {info.rows}")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns) or not all(_scalar(v) for v in row):
            raise IntegrityError(f"{where}: rows[{i}] must be {len(columns)} scalars or nulls")
    if not isinstance(outputs, dict) or sorted(outputs) != sorted(info.outputs):
        raise IntegrityError(f"{where}: its outputs are not the card's {', '.join(info.outputs)}")
    for name, values in outputs.items():
        if not isinstance(values, list) or len(values) != len(rows):
            raise IntegrityError(f"{where}: outputs.{name} must have one entry per row")
        if not all(_scalar(v) or (isinstance(v, list) and all(_number(x) for x in v)) for v in values):
            raise IntegrityError(f"{where}: outputs.{name} holds something that is not a scalar or a list of numbers")
    target = raw.get("target")
    if target is not None and (not isinstance(target, list) or len(target) != len(rows)):
        raise IntegrityError(f"{where}: target must have one entry per row")
    if target is not None and not all(_scalar(v) and v is not None for v in target):
        raise IntegrityError(f"{where}: target holds something that is not a scalar")
    return Recorded(
        columns=tuple(columns),
        dtypes=tuple(dtypes),
        rows=tuple(tuple(r) for r in rows),
        outputs=outputs,
        target=None if target is None else tuple(target),
    )


def frame(recorded: Recorded) -> Any:
    """The reference inputs as a DataFrame with their recorded dtypes (as the probe's)."""
    from toolkit.probe import frame_of

    return frame_of(recorded.columns, recorded.dtypes, recorded.rows)


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputCheck:
    """How one output compares: rows differing out of rows checked, and by how much."""

    output: str  # "labels", "probabilities", "decision_values" or "values"
    rows: int
    differing: int
    max_abs_diff: float  # 0.0 for labels (they differ or not: see ``differing``)
    max_rel_diff: float  # |actual - expected| / |expected| (0/0 is 0, x/0 is inf)
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "rows": self.rows,
            "differing": self.differing,
            "max_abs_diff": _finite(self.max_abs_diff),
            "max_rel_diff": _finite(self.max_rel_diff),
            "tolerance": self.tolerance,
        }

    def __str__(self) -> str:
        if self.output == "labels":
            return f"labels: {self.differing} of {self.rows} rows flip"
        name = self.output.replace("_", " ")
        return (
            f"{name}: {self.differing} of {self.rows} rows differ, max |diff| {self.max_abs_diff:.3g}, "
            f"max relative {self.max_rel_diff:.3g} (tolerance {self.tolerance:g})"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ReferenceResult:
    """A loaded pipeline's outputs on the reference set against the recorded ones.

    Shaped like ``toolkit.probe.ProbeResult`` where the two meet (``ok``, ``rows``,
    ``label_mismatches``, ``max_abs_diff``, ``tolerance``, ``error``), so the gate and
    ``upgrade-check`` report either; ``outputs`` says, per output, how much moved.
    """

    ok: bool
    rows: int
    outputs: tuple[OutputCheck, ...]
    tolerance: float
    batch_size: int
    thread_limit: int
    error: str | None = None

    @property
    def label_mismatches(self) -> int:
        return sum(o.differing for o in self.outputs if o.output == "labels")

    @property
    def differing_rows(self) -> int:
        return max((o.differing for o in self.outputs), default=0)

    @property
    def max_abs_diff(self) -> float:
        return max((o.max_abs_diff for o in self.outputs), default=math.inf if self.error else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "reference",
            "ok": self.ok,
            "rows": self.rows,
            "label_mismatches": self.label_mismatches,
            "max_abs_diff": _finite(self.max_abs_diff),
            "tolerance": self.tolerance,
            "batch_size": self.batch_size,
            "thread_limit": self.thread_limit,
            "outputs": [o.to_dict() for o in self.outputs],
            "error": self.error,
        }

    def __str__(self) -> str:
        if self.error:
            return f"reference set could not run: {self.error}"
        verdict = "agree" if self.ok else "DIFFER"
        return (
            f"reference outputs {verdict} on {self.rows} rows "
            f"(batches of {self.batch_size}, {self.thread_limit} thread(s)): " + "; ".join(str(o) for o in self.outputs)
        )


def check(info: ReferenceSet, recorded: Recorded, pipeline: Any) -> ReferenceResult:
    """Re-run the reference inputs through ``pipeline`` as at save (same batches, same thread
    limit) and compare every recorded output."""

    def failed(error: str) -> ReferenceResult:
        return ReferenceResult(
            ok=False,
            rows=info.rows,
            outputs=(),
            tolerance=info.tolerance,
            batch_size=info.batch_size,
            thread_limit=info.thread_limit,
            error=error,
        )

    try:
        actual = outputs_of(pipeline, frame(recorded), batch_size=info.batch_size, thread_limit=info.thread_limit)
    except Exception as e:  # the pipeline cannot even predict in this runtime: that is the verdict
        return failed(f"{type(e).__name__}: {e}")
    checks = []
    for name in info.outputs:
        if name not in actual:
            return failed(f"the pipeline no longer has {name.replace('_', ' ')}")
        checks.append(_compare(name, recorded.outputs[name], actual[name], info.tolerance))
    ok = all(c.differing == 0 for c in checks)
    return ReferenceResult(
        ok=ok,
        rows=info.rows,
        outputs=tuple(checks),
        tolerance=info.tolerance,
        batch_size=info.batch_size,
        thread_limit=info.thread_limit,
    )


def _compare(name: str, expected: Sequence[Any], actual: Sequence[Any], tolerance: float) -> OutputCheck:
    differing = 0
    worst_abs = worst_rel = 0.0
    for e, a in zip(expected, actual, strict=False):  # a length difference is counted below
        if name == "labels":
            differing += e != a
            continue
        es, as_ = (e, a) if isinstance(e, list) and isinstance(a, list) else ([e], [a])
        row_differs = len(es) != len(as_)
        for x, y in zip(es, as_, strict=False):
            if not (_number(x) and _number(y)):
                row_differs |= x != y
                continue
            diff = abs(float(x) - float(y))
            rel = diff / abs(float(x)) if x else (0.0 if diff == 0 else math.inf)
            worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, rel)
            # Absolute up to 1, relative beyond: a price in the millions is held to the same ~1e-6.
            row_differs |= diff > tolerance * max(1.0, abs(float(x)))
        differing += row_differs
    differing += abs(len(expected) - len(actual))
    return OutputCheck(
        output=name,
        rows=len(expected),
        differing=int(differing),
        max_abs_diff=worst_abs,
        max_rel_diff=worst_rel,
        tolerance=tolerance,
    )


def describe(
    recorded: Recorded, *, file: str, sha256: str, size: int, source_rows: int, seed: int | None
) -> ReferenceSet:
    """The card's ``reference`` for a file just written."""
    return ReferenceSet(
        file=file,
        sha256=sha256,
        size=size,
        rows=len(recorded.rows),
        source_rows=source_rows,
        seed=seed,
        batch_size=BATCH_SIZE,
        thread_limit=THREAD_LIMIT,
        outputs=tuple(recorded.outputs),
        tolerance=DEFAULT_TOLERANCE,
    )


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _json_rows(frame: Any) -> tuple[tuple[Any, ...], ...]:
    if not len(frame.columns):
        return tuple(() for _ in range(len(frame)))
    columns = [_json_values(frame.iloc[:, i]) for i in range(len(frame.columns))]
    return tuple(zip(*columns, strict=True))


def _json_values(values: Any) -> list[Any]:
    """``jsonable(list(values))`` for an array or a column, in one call where numpy can.

    A numeric or boolean array's ``tolist`` already gives Python ints, floats and bools, which
    is what ``jsonable`` gives for them one by one (seconds on 2,000 rows of probabilities);
    a float array with a NaN or an infinity, an object array, strings and pandas' own dtypes
    take the general path, so the values written are exactly the same as before.
    """
    import numpy as np

    array = values.to_numpy() if hasattr(values, "to_numpy") and isinstance(values.dtype, np.dtype) else values
    numeric = isinstance(array, np.ndarray) and array.dtype.kind in "biuf"
    if numeric and (array.dtype.kind != "f" or bool(np.isfinite(array).all())):
        listed: list[Any] = array.tolist()
        return listed
    if hasattr(values, "astype") and hasattr(values, "dtype") and not isinstance(values, np.ndarray):
        values = values.astype(object)  # a pandas column: its own scalars to Python objects, as before
    result: list[Any] = jsonable(_as_list(values))
    return result


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _len(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else "no list of"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
