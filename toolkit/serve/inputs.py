"""Request bodies -> the feature frame the card describes, or a ``BadRequest`` with one line.

Every body is hostile: JSON is parsed strictly (no NaN/Infinity literals, no duplicate keys,
bounded nesting), shapes and counts are checked against each other before anything is built,
and the frame goes through ``toolkit.training.datasets.coerce_features``, the same column rules as
``toolkit predict`` (so the server and the command answer the same rows the same way).
A JSON ``null`` is a missing value (NaN), as an empty CSV field is; an infinity is refused.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from toolkit.errors import DataError

__all__ = [
    "OIP_DATATYPES",
    "BadRequest",
    "TooLarge",
    "frame_from_csv",
    "frame_from_oip",
    "frame_from_records",
    "oip_datatype",
    "parse_json",
]

# Open Inference Protocol tensor datatypes the server reads and writes.
OIP_DATATYPES = (
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
_NUMERIC = frozenset(OIP_DATATYPES) - {"BOOL", "BYTES"}


class BadRequest(Exception):
    """A request the server refuses; ``status`` is the HTTP status (4xx)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


class TooLarge(BadRequest):
    """A body or a row count over the server's limits (413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=413)


def oip_datatype(dtype: str) -> str:
    """The OIP datatype of a card's feature dtype (pandas' name at training time)."""
    if dtype.startswith(("int", "Int")):
        return "INT64"
    if dtype.startswith(("uint", "UInt")):
        return "UINT64"
    if dtype.startswith(("float", "Float")):
        return "FP64"
    if dtype in ("bool", "boolean"):
        return "BOOL"
    return "BYTES"


def parse_json(body: bytes) -> Any:
    """``body`` as strict JSON. Raises: BadRequest."""
    if not body.strip():
        raise BadRequest("empty body: send a JSON object")

    from toolkit import _json

    try:
        return _json.loads(body)
    except _json.JsonError as e:
        hint = " (send null for a missing value)" if "is not JSON" in str(e) else ""
        raise BadRequest(f"malformed JSON: {str(e)[:200]}{hint}") from None


def frame_from_records(data: Any, features: tuple[tuple[str, str], ...], *, max_rows: int) -> Any:
    """``{"records": [...]}``, ``{"dataframe_records": [...]}`` or a bare list of row objects."""
    if isinstance(data, dict):
        keys = [k for k in ("records", "dataframe_records", "instances") if k in data]
        if len(keys) != 1:
            raise BadRequest('send a list of row objects, or {"records": [...]}')
        data = data[keys[0]]
    if not isinstance(data, list):
        raise BadRequest("records must be a JSON list of row objects")
    if not data:
        raise BadRequest("no rows: send at least one record", status=422)
    if len(data) > max_rows:
        raise TooLarge(f"{len(data)} rows is over this server's limit of {max_rows} (--max-rows)")
    names = [n for n, _ in features]
    columns: dict[str, list[Any]] = {n: [] for n in names}
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise BadRequest(f"record {i}: not a JSON object")
        missing = [n for n in names if n not in row]
        if missing:
            raise BadRequest(f"record {i}: missing column(s) {', '.join(map(_short, missing[:5]))}", status=422)
        for n in names:
            columns[n].append(_cell(row[n], n, i))
    return _frame(columns, features, "records")


def frame_from_oip(data: Any, features: tuple[tuple[str, str], ...], *, max_rows: int) -> Any:
    """An OIP v2 inference request: one tensor per feature column (named as the card's features),
    or one 2-D tensor of shape ``[rows, features]`` in the card's column order (KServe's sklearn
    servers' layout: each row a record)."""
    if not isinstance(data, dict):
        raise BadRequest('an inference request is a JSON object with "inputs"')
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('"inputs" must be a non-empty list of tensors')
    names = [n for n, _ in features]
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    if len(tensors) == 1 and len(tensors[0]["shape"]) == 2 and tensors[0]["name"] not in names:
        t = tensors[0]
        rows, width = t["shape"]
        if width != len(names):
            raise BadRequest(f"input {_short(t['name'])}: {width} columns, the model takes {len(names)}", status=422)
        _check_rows(rows, max_rows)
        flat = t["data"]
        columns = {n: [_cell(flat[r * width + c], n, r) for r in range(rows)] for c, n in enumerate(names)}
        return _frame(columns, features, "inputs")
    by_name: dict[str, dict[str, Any]] = {}
    for t in tensors:
        if t["name"] in by_name:
            raise BadRequest(f"input {_short(t['name'])} appears twice")
        by_name[t["name"]] = t
    missing = [n for n in names if n not in by_name]
    if missing:
        raise BadRequest(f"missing input tensor(s) {', '.join(map(_short, missing[:5]))}", status=422)
    rows = None
    columns = {}
    for n, dtype in features:
        t = by_name[n]
        shape = t["shape"]
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise BadRequest(f"input {_short(n)}: shape {shape}; a column is [rows] or [rows, 1]", status=422)
        if rows is None:
            rows = shape[0]
            _check_rows(rows, max_rows)
        elif shape[0] != rows:
            raise BadRequest(f"input {_short(n)}: {shape[0]} rows, the others have {rows}", status=422)
        numeric = oip_datatype(dtype) != "BYTES"
        if numeric and t["datatype"] not in _NUMERIC:
            raise BadRequest(f"input {_short(n)}: datatype {t['datatype']}, the model takes a number", status=422)
        columns[n] = [_cell(v, n, r) for r, v in enumerate(t["data"])]
    return _frame(columns, features, "inputs")


def frame_from_csv(body: bytes, features: tuple[tuple[str, str], ...], *, max_rows: int) -> Any:
    """A CSV body with a header row (text/csv): empty fields are missing values."""
    if not body.strip():
        raise BadRequest("empty body: send a CSV with a header row")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadRequest(f"CSV is not UTF-8 (byte {e.start})") from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header = next(reader)
        names = [n for n, _ in features]
        index = {h: i for i, h in enumerate(header)}
        missing = [n for n in names if n not in index]
        if missing:
            raise BadRequest(f"CSV: missing column(s) {', '.join(map(_short, missing[:5]))}", status=422)
        columns: dict[str, list[Any]] = {n: [] for n in names}
        for r, row in enumerate(reader):
            if not row:
                continue
            if r >= max_rows:
                raise TooLarge(f"more than {max_rows} rows is over this server's limit (--max-rows)")
            if len(row) != len(header):
                raise BadRequest(f"CSV row {r + 1}: {len(row)} fields, the header has {len(header)}")
            for n in names:
                value = row[index[n]]
                columns[n].append(None if value == "" else value)
    except csv.Error as e:
        raise BadRequest(f"CSV: {e}") from None
    if not columns[names[0]]:
        raise BadRequest("no rows: the CSV has a header only", status=422)
    return _frame(columns, features, "CSV")


# --- helpers -------------------------------------------------------------------------------


def _tensor(t: Any, i: int) -> dict[str, Any]:
    if not isinstance(t, dict):
        raise BadRequest(f"inputs[{i}]: not a tensor object")
    name, shape, datatype, data = t.get("name"), t.get("shape"), t.get("datatype"), t.get("data")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"inputs[{i}]: a tensor needs a name")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise BadRequest(f"input {_short(name)}: shape must be a list of non-negative integers")
    if datatype not in OIP_DATATYPES:
        raise BadRequest(f"input {_short(name)}: unknown datatype {_short(datatype)}")
    if not isinstance(data, list):
        raise BadRequest(f"input {_short(name)}: data must be a list")
    if data and isinstance(data[0], list):  # nested rows, as some clients send: flatten one level
        if not all(isinstance(row, list) for row in data):
            raise BadRequest(f"input {_short(name)}: data mixes rows and values")
        data = [v for row in data for v in row]
    size = math.prod(shape)
    if len(data) != size:
        raise BadRequest(f"input {_short(name)}: shape {shape} holds {size} values, data has {len(data)}")
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _check_rows(rows: int, max_rows: int) -> None:
    if rows == 0:
        raise BadRequest("no rows: send at least one", status=422)
    if rows > max_rows:
        raise TooLarge(f"{rows} rows is over this server's limit of {max_rows} (--max-rows)")


def _cell(value: Any, column: str, row: int) -> Any:
    if value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool)):
        return value
    raise BadRequest(f"column {_short(column)} row {row}: {type(value).__name__} is not a value", status=422)


def _frame(columns: dict[str, list[Any]], features: tuple[tuple[str, str], ...], source: str) -> Any:
    import pandas as pd

    from toolkit.training.datasets import coerce_features

    frame = pd.DataFrame({n: pd.Series(v, dtype=object) for n, v in columns.items()})
    try:
        return coerce_features(frame, features, source)
    except DataError as e:
        raise BadRequest(str(e), status=422) from None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
