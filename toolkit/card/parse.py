"""The card's strict parser: JSON bytes to a ``ModelCard``, refusing anything else.

A card is read and checked without unpickling anything. Parsing is strict on purpose:
an unknown ``schema_version``, a missing or unknown field, a duplicate key, NaN or a
wrong type is refused with a message that names the field (``data.features[2].dtype``).
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from toolkit import _json
from toolkit.card.records import (
    MAX_CARD_BYTES,
    MAX_DEPTH,
    NAME_RE,
    SCHEMAS,
    SEMVER_RE,
    ArtifactInfo,
    DataInfo,
    Feature,
    Lineage,
    LocalModule,
    ModelCard,
    Probe,
    References,
    ReferenceSet,
    Split,
    Training,
    jsonable,
)
from toolkit.errors import CardError, UsageError
from toolkit.fingerprint import BASE_IMAGE_RE, IMAGE_ID_RE, Fingerprint, ImageInfo, SystemPackage, Threads
from toolkit.forbidden import denied
from toolkit.names import REFERENCE_SUFFIX

__all__ = [
    "OUTPUTS",
    "REFERENCE_SUFFIX",
    "card_from_dict",
    "lineage_from",
    "parse_card",
    "split_from",
    "training_from",
]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_PARENT_RE = re.compile(r"^(?P<name>[^@]+)@(?P<version>[^@]+)\Z")


def card_from_dict(raw: Any) -> ModelCard:
    """Validate a card's JSON value and build the record. Raises: CardError naming the offending field."""
    top = _Obj(raw, "card")
    schema = top.req("schema_version", int)
    if schema not in SCHEMAS:
        raise CardError(
            f"card: unsupported schema_version {schema!r} (this toolkit reads {', '.join(map(str, SCHEMAS))})"
        )
    card = ModelCard(
        schema_version=schema,
        name=top.req("name", str, check=_match(NAME_RE, "a registry name")),
        version=top.req("version", str, check=_match(SEMVER_RE, "a semantic version X.Y.Z")),
        algorithm=top.req("algorithm", str),
        created_at=top.req("created_at", str),
        author=top.req("author", str),
        intended_use=top.req("intended_use", str),
        limitations=top.req("limitations", str),
        artifact=_artifact(top.obj("artifact")),
        data=_data(top.obj("data")),
        metrics=_metrics(top.obj("metrics")),
        params=top.obj("params").raw,
        preprocessing=tuple(top.list("preprocessing", str)),
        environment=_environment(top.obj("environment"), schema),
        references=_references(top.obj("references"), schema),
        probe=_probe(top.obj("probe")),
        training=_nullable(top, "training", _training) if schema >= 2 else None,
        lineage=_nullable(top, "lineage", _lineage) if schema >= 2 else None,
        reference=_nullable(top, "reference", _reference) if schema >= 3 else None,
    )
    top.done()
    return card


def training_from(value: Training | Mapping[str, Any] | None) -> Training | None:
    """A recipe given to ``save`` as a Training or its JSON form. Raises: UsageError naming the field."""
    if value is None or isinstance(value, Training):
        return value
    try:
        return _training(_Obj(jsonable(dict(value)), "training"))
    except CardError as e:
        raise UsageError(f"training: {e}") from e


def lineage_from(value: Lineage | Mapping[str, Any] | None) -> Lineage | None:
    """A lineage given to ``save`` as a Lineage or its JSON form. Raises: UsageError naming the field."""
    if value is None or isinstance(value, Lineage):
        return value
    try:
        return _lineage(_Obj(dict(value), "lineage"))
    except CardError as e:
        raise UsageError(f"lineage: {e}") from e


def split_from(value: Split | Mapping[str, Any] | None) -> Split | None:
    """A split given to ``save`` (in ``DataInfo.split``) as a Split or its JSON form.

    Raises: UsageError naming the field.
    """
    if value is None or isinstance(value, Split):
        return value
    if not isinstance(value, Mapping):
        raise UsageError(f"data.split must be a Split or {{'test_size': ..., 'seed': ...}}, got {type(value).__name__}")
    try:
        return _split(_Obj(jsonable(dict(value)), "data.split"))
    except CardError as e:
        raise UsageError(f"data: {e}") from e


def parse_card(data: bytes, *, where: str = "card") -> ModelCard:
    """Parse card bytes strictly. Raises: CardError."""
    if len(data) > MAX_CARD_BYTES:
        raise CardError(f"{where}: {len(data)} bytes is over the {MAX_CARD_BYTES}-byte card limit")
    try:
        raw = _json.loads(data, max_depth=MAX_DEPTH)
    except _json.JsonError as e:
        raise CardError(f"{where}: {e}") from e
    try:
        return card_from_dict(raw)
    except CardError as e:
        raise CardError(f"{where}: {e}") from e


# --- parsing helpers ------------------------------------------------------------------


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "an object",
    }
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(names.get(x, x.__name__) for x in ts)


def _is(value: Any, t: type | tuple[type, ...]) -> bool:
    ts = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool):  # bool is an int in Python, never in a card
        return bool in ts
    if float in ts and isinstance(value, int):
        return True
    return isinstance(value, ts)


def _match(pattern: re.Pattern[str], what: str) -> Callable[[Any], str | None]:
    return lambda v: None if pattern.match(v) else f"is not {what}"


class _Obj:
    """A JSON object being read: typed getters that put the key path into errors."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict):
            raise CardError(f"'{path}' must be an object")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.seen: set[str] = set()

    def _where(self, key: str) -> str:
        return key if self.path == "card" else f"{self.path}.{key}"

    def req(
        self,
        key: str,
        t: type | tuple[type, ...],
        *,
        null: bool = False,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        self.seen.add(key)
        if key not in self.raw:
            raise CardError(f"missing field '{self._where(key)}'")
        value = self.raw[key]
        if value is None and null:
            return None
        if not _is(value, t):
            raise CardError(
                f"'{self._where(key)}' must be {_type_name(t)}{' or null' if null else ''}, got {type(value).__name__}"
            )
        if check is not None and (problem := check(value)):
            raise CardError(f"'{self._where(key)}' {problem}: {value!r}")
        return value

    def obj(self, key: str, *, null: bool = False) -> _Obj:
        value = self.req(key, dict, null=null)
        return _Obj(value, self._where(key)) if value is not None else _Obj({}, self._where(key))

    def list(self, key: str, item: type | tuple[type, ...], *, item_null: bool = False) -> builtins.list[Any]:
        value = self.list_or_null(key, item, item_null=item_null, null=False)
        assert value is not None  # null=False: req refused a null
        return value

    def list_or_null(
        self, key: str, item: type | tuple[type, ...], *, null: bool = True, item_null: bool = False
    ) -> builtins.list[Any] | None:
        value = self.req(key, list, null=null)
        if value is None:
            return None
        for i, v in enumerate(value):
            if not (_is(v, item) or (item_null and v is None)):
                raise CardError(f"'{self._where(key)}[{i}]' must be {_type_name(item)}, got {type(v).__name__}")
        return list(value)

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise CardError(f"unknown field '{self._where(unknown[0])}'")


_SCALAR = (str, int, float, bool)


def _sha256(v: str) -> str | None:
    return None if _SHA256_RE.match(v) else "is not a lowercase hex sha256"


def _non_negative(v: int) -> str | None:
    return None if v >= 0 else "must not be negative"


def _artifact(o: _Obj) -> ArtifactInfo:
    info = ArtifactInfo(
        file=o.req(
            "file",
            str,
            check=lambda v: None if v.endswith(".joblib") and "/" not in v else "is not a .joblib file name",
        ),
        sha256=o.req("sha256", str, check=_sha256),
        size=o.req("size", int, check=_non_negative),
    )
    o.done()
    return info


def _data(o: _Obj) -> DataInfo:
    features = []
    for i, raw in enumerate(o.list("features", dict)):
        f = _Obj(raw, f"{o.path}.features[{i}]")
        features.append(Feature(name=f.req("name", str), dtype=f.req("dtype", str)))
        f.done()
    classes = o.list_or_null("classes", _SCALAR)
    split = _nullable_in(o, "split", _split)
    info = DataInfo(
        source=o.req("source", str, null=True),
        sha256=o.req("sha256", str, null=True, check=_sha256),
        n_train=o.req("n_train", int, null=True, check=_non_negative),
        n_test=o.req("n_test", int, null=True, check=_non_negative),
        features=tuple(features),
        target=o.req("target", str, null=True),
        classes=None if classes is None else tuple(classes),
        split=split,
    )
    o.done()
    return info


def _metrics(o: _Obj) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for section in o.raw:
        s = o.obj(section)
        out[section] = {name: float(s.req(name, float)) for name in s.raw}
    return out


def _environment(o: _Obj, schema: int) -> Fingerprint:
    packages = o.obj("packages")
    blas = o.list_or_null("blas", dict)
    env = Fingerprint(
        python_implementation=o.req("python_implementation", str),
        python_version=o.req("python_version", str),
        os=o.req("os", str),
        os_release=o.req("os_release", str),
        machine=o.req("machine", str),
        libc=o.req("libc", str),
        packages={name: packages.req(name, str) for name in packages.raw},
        blas=None if blas is None else tuple(blas),
        in_container=o.req("in_container", bool),
        base_image=o.req("base_image", str, null=True, check=_match(BASE_IMAGE_RE, "name@sha256:<64 hex>")),
        lock_sha256=o.req("lock_sha256", str, null=True, check=_sha256),
        lock=o.req("lock", str, null=True) if schema >= 2 else None,
        image=_nullable_in(o, "image", _image) if schema >= 3 else None,
        system_packages=_system_packages(o) if schema >= 3 else None,
        threads=_nullable_in(o, "threads", _threads) if schema >= 3 else None,
    )
    if env.lock is not None and hashlib.sha256(env.lock.encode("utf-8")).hexdigest() != env.lock_sha256:
        raise CardError(f"'{o.path}.lock' does not match '{o.path}.lock_sha256'")
    o.done()
    return env


def _references(o: _Obj, schema: int) -> References:
    modules = tuple(o.list("modules", str))
    distributions = tuple(o.list("distributions", str))
    for i, module in enumerate(modules):
        if denied(module, ""):  # a whole denied module (os, subprocess, ...) can never be allowed
            raise CardError(f"'{o.path}.modules[{i}]' lists {module!r}, which only an attack needs; refused")
    if schema < 2:
        o.done()
        return References(modules=modules, distributions=distributions)
    pairs = []
    for i, pair in enumerate(o.list("globals", list)):
        where = f"{o.path}.globals[{i}]"
        if len(pair) != 2 or not all(isinstance(v, str) for v in pair):
            raise CardError(f"'{where}' must be a [module, name] pair of strings")
        module, name = pair
        if not _MODULE_RE.match(module) or not name:
            raise CardError(f"'{where}' is not a module and a name: {pair!r}")
        if denied(module, name):
            raise CardError(f"'{where}' lists {module}.{name}, which only an attack needs; refused")
        pairs.append((module, name))
    if pairs != sorted(set(pairs)):
        raise CardError(f"'{o.path}.globals' must be sorted and without duplicates")
    if tuple(sorted({m for m, _ in pairs})) != modules:
        raise CardError(f"'{o.path}.modules' must be exactly the modules of '{o.path}.globals'")
    local = []
    for i, raw in enumerate(o.list("local_modules", dict)):
        lm = _Obj(raw, f"{o.path}.local_modules[{i}]")
        module = lm.req("module", str, check=lambda v: None if v in modules else f"is not in '{o.path}.modules'")
        local.append(LocalModule(module=module, sha256=lm.req("sha256", str, check=_sha256)))
        lm.done()
    refs = References(modules=modules, distributions=distributions, globals=tuple(pairs), local_modules=tuple(local))
    o.done()
    return refs


def _nullable(top: _Obj, key: str, build: Callable[[_Obj], Any]) -> Any:
    raw = top.req(key, dict, null=True)
    return None if raw is None else build(_Obj(raw, key))


def _nullable_in(o: _Obj, key: str, build: Callable[[_Obj], Any]) -> Any:
    raw = o.req(key, dict, null=True)
    return None if raw is None else build(_Obj(raw, o._where(key)))


def _split(o: _Obj) -> Split:
    split = Split(
        test_size=float(o.req("test_size", float, check=lambda v: None if 0 < v < 1 else "must be between 0 and 1")),
        seed=o.req("seed", int, check=_non_negative),
    )
    o.done()
    return split


def _image(o: _Obj) -> ImageInfo:
    image = ImageInfo(
        ref=o.req("ref", str, null=True, check=lambda v: None if v and v.isprintable() else "is not an image name"),
        id=o.req("id", str, check=_match(IMAGE_ID_RE, "sha256:<64 hex>")),
    )
    o.done()
    return image


def _not_empty(v: str) -> str | None:
    return None if v else "must not be empty"


def _system_packages(o: _Obj) -> tuple[SystemPackage, ...]:
    packages = []
    for i, raw in enumerate(o.list("system_packages", dict)):
        p = _Obj(raw, f"{o.path}.system_packages[{i}]")
        packages.append(SystemPackage(name=p.req("name", str, check=_not_empty), version=p.req("version", str)))
        p.done()
    names = [p.name for p in packages]
    if names != sorted(set(names)):
        raise CardError(f"'{o.path}.system_packages' must be sorted by name and list each package once")
    return tuple(packages)


def _positive(v: int) -> str | None:
    return None if v >= 1 else "must be at least 1"


def _threads(o: _Obj) -> Threads:
    variables = o.obj("variables")
    threads = Threads(
        variables={k: variables.req(k, str, null=True) for k in variables.raw},
        blas=o.req("blas", int, null=True, check=_positive),
        openmp=o.req("openmp", int, null=True, check=_positive),
        cpus=o.req("cpus", int, null=True, check=_positive),
        limit=o.req("limit", int, check=_positive),
    )
    o.done()
    return threads


OUTPUTS = ("labels", "probabilities", "decision_values", "values")


def _reference(o: _Obj) -> ReferenceSet:
    file = o.req("file", str, check=_reference_file)
    outputs = tuple(o.list("outputs", str))
    for i, name in enumerate(outputs):
        if name not in OUTPUTS:
            raise CardError(f"'{o.path}.outputs[{i}]' is not one of {', '.join(OUTPUTS)}: {name!r}")
    if len(set(outputs)) != len(outputs) or not outputs:
        raise CardError(f"'{o.path}.outputs' must name each output once, and at least one")
    ref = ReferenceSet(
        file=file,
        sha256=o.req("sha256", str, check=_sha256),
        size=o.req("size", int, check=_non_negative),
        rows=o.req("rows", int, check=_positive),
        source_rows=o.req("source_rows", int, check=_positive),
        seed=o.req("seed", int, null=True, check=_non_negative),
        batch_size=o.req("batch_size", int, check=_positive),
        thread_limit=o.req("thread_limit", int, check=_positive),
        outputs=outputs,
        tolerance=float(o.req("tolerance", float, check=lambda v: None if v >= 0 else "must not be negative")),
    )
    if ref.rows > ref.source_rows:
        raise CardError(f"'{o.path}.rows' is more than '{o.path}.source_rows'")
    o.done()
    return ref


def _reference_file(v: str) -> str | None:
    stem = v[: -len(REFERENCE_SUFFIX)]
    ok = v.endswith(REFERENCE_SUFFIX) and stem and "/" not in v and "\\" not in v and not v.startswith(".")
    return None if ok else f"is not a <stem>{REFERENCE_SUFFIX} file name"


def _training(o: _Obj) -> Training:
    dataset = o.obj("dataset")
    params = o.obj("params")
    preprocessing = o.obj("preprocessing")
    training = Training(
        dataset_source=dataset.req("source", str, check=lambda v: None if v else "must not be empty"),
        dataset_sha256=dataset.req("sha256", str, check=_sha256),
        target=o.req("target", str, null=True),
        model=o.req("model", str, check=lambda v: None if v else "must not be empty"),
        params=params.raw,
        preprocessing={k: preprocessing.req(k, _SCALAR, null=True) for k in preprocessing.raw},
        test_size=float(o.req("test_size", float, check=lambda v: None if 0 < v < 1 else "must be between 0 and 1")),
        seed=o.req("seed", int, check=_non_negative),
        cv_folds=o.req("cv_folds", int, check=lambda v: None if v >= 2 else "must be at least 2"),
        task=o.req("task", str, check=_task) if "task" in o.raw else None,
        allow_modules=tuple(o.list("allow_modules", str)) if "allow_modules" in o.raw else (),
    )
    dataset.done()
    o.done()
    return training


def _task(v: str) -> str | None:
    return None if v in ("classification", "regression") else "is not classification or regression"


def _lineage(o: _Obj) -> Lineage:
    lineage = Lineage(parent=o.req("parent", str, check=_parent), reason=o.req("reason", str))
    o.done()
    return lineage


def _parent(v: str) -> str | None:
    m = _PARENT_RE.match(v)
    if m is None or not NAME_RE.match(m["name"]) or not SEMVER_RE.match(m["version"]):
        return "is not NAME@VERSION"
    return None


def _probe(o: _Obj) -> Probe:
    columns = o.list("columns", str)
    dtypes = o.list("dtypes", str)
    if len(dtypes) != len(columns):
        raise CardError(f"'{o.path}.dtypes' has {len(dtypes)} entries for {len(columns)} columns")
    rows = []
    for i, row in enumerate(o.list("rows", list)):
        if len(row) != len(columns) or not all(v is None or _is(v, _SCALAR) for v in row):
            raise CardError(f"'{o.path}.rows[{i}]' must be {len(columns)} scalars or nulls")
        rows.append(tuple(row))
    predictions = o.list("predictions", _SCALAR, item_null=True)
    probabilities = o.list_or_null("probabilities", list)
    if probabilities is not None:
        for i, p in enumerate(probabilities):
            if not all(_is(v, float) for v in p):
                raise CardError(f"'{o.path}.probabilities[{i}]' must be a list of numbers")
    for what, n in (("predictions", len(predictions)), ("probabilities", len(probabilities or rows))):
        if n != len(rows):
            raise CardError(f"'{o.path}.{what}' has {n} entries for {len(rows)} rows")
    probe = Probe(
        columns=tuple(columns),
        dtypes=tuple(dtypes),
        rows=tuple(rows),
        predictions=tuple(predictions),
        probabilities=None if probabilities is None else tuple(tuple(float(v) for v in p) for p in probabilities),
        tolerance=float(o.req("tolerance", float, check=lambda v: None if v >= 0 else "must not be negative")),
    )
    o.done()
    return probe
