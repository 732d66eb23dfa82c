"""What a pickle may import: recorded during the one ``joblib.dump``, enforced on load.

``dump`` subclasses joblib's own pickler and records every ``(module, name)`` pair that
its GLOBAL/STACK_GLOBAL opcodes write, as they are written: no second pickling pass.
``load`` subclasses joblib's unpickler and lets ``find_class`` resolve only what
``toolkit.trust.Policy`` trusts (by what an object is; the card's record only refuses),
with Python 2 name mapping off and BUILD never aimed at a class, function or module.
Nested object-array streams (which joblib writes and reads with a separate pickler) go
through the same hooks.

The callables that only an attack needs are listed once, in ``toolkit.forbidden``: a second
belt, no longer the guard. ``save`` refuses a pipeline that references them, and the card parser
refuses a card that lists them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import pickle
import sys
from collections.abc import Callable, Collection, Iterable, Mapping
from importlib.machinery import PathFinder
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, MappingProxyType, ModuleType
from typing import IO, TYPE_CHECKING, Any

from toolkit.card.records import LocalModule
from toolkit.errors import IntegrityError, UsageError
from toolkit.fingerprint import _name_and_version, canonical_name
from toolkit.forbidden import DENIED_GLOBALS, DENIED_MODULES, denied
from toolkit.trust import (
    RECONSTRUCTORS,
    STDLIB,
    Policy,
    Refused,
    from_metadata,
    never_imported,
    plain_pair,
    provided_names,
    refused_error,
)

if TYPE_CHECKING:
    from importlib import metadata

__all__ = [
    "DENIED_GLOBALS",
    "DENIED_MODULES",
    "LocalModule",
    "denied",
    "distributions_for",
    "dump",
    "load",
    "local_module_sha256",
    "local_modules",
]


# --- dump --------------------------------------------------------------------------------


def dump(obj: Any, file: IO[bytes]) -> tuple[tuple[str, str], ...]:
    """``joblib.dump(obj, file)``, returning the sorted ``(module, name)`` pairs it wrote.

    Raises: UsageError (``__main__`` or a denied callable referenced; anything that cannot
    be pickled, such as a lambda), OSError from ``file`` unchanged (the caller names the path).
    """
    pickler_cls = _auditing_pickler()
    pickler = pickler_cls(file)
    try:
        pickler.dump(obj)
    except (UsageError, OSError):
        raise
    except RecursionError as e:
        raise UsageError("cannot pickle the pipeline: it is nested too deeply") from e
    except Exception as e:
        raise UsageError(f"cannot pickle the pipeline: {type(e).__name__}: {e}") from e
    return tuple(sorted(pickler.audit_globals))


def _record(found: set[tuple[str, str]], obj: Any, name: str | None) -> str | None:
    # The same module and name pickle's save_global computes (and STACK_GLOBAL writes).
    if name is None:
        name = getattr(obj, "__qualname__", None)
    if name is None:
        name = obj.__name__
    module = pickle.whichmodule(obj, name)  # type: ignore[attr-defined]
    if module == "__main__":
        raise UsageError(
            f"the pipeline references __main__.{name}, which exists only in the script that saves it and "
            "cannot be loaded anywhere else: move it into a module and import it from there"
        )
    if denied(module, name):
        raise UsageError(
            f"refusing to save: loading the pipeline would import {module}.{name}, which only an attack needs"
        )
    found.add((module, name))
    return name


_PICKLER: Any = None


def _auditing_pickler() -> Any:
    global _PICKLER
    if _PICKLER is not None:
        return _PICKLER
    from joblib import numpy_pickle

    base: Any = numpy_pickle.NumpyPickler
    plain: Any = pickle._Pickler  # the pure-Python pickler joblib builds on

    class _Nested(plain):  # type: ignore[misc]
        """Pickles an object array's elements into the same file, recording its globals too."""

        dispatch = plain.dispatch.copy()

        def __init__(self, file: IO[bytes], protocol: int, found: set[tuple[str, str]]) -> None:
            super().__init__(file, protocol=protocol)
            self.audit_globals = found

        def save_global(self, obj: Any, name: str | None = None) -> None:
            super().save_global(obj, _record(self.audit_globals, obj, name))

        # The dispatch table holds the base class's save_global for functions: point it here.
        dispatch[FunctionType] = save_global

    class AuditingPickler(base):  # type: ignore[misc]
        dispatch = base.dispatch.copy()

        def __init__(self, file: IO[bytes]) -> None:
            super().__init__(file)
            self.audit_globals: set[tuple[str, str]] = set()

        def save_global(self, obj: Any, name: str | None = None) -> None:
            super().save_global(obj, _record(self.audit_globals, obj, name))

        dispatch[FunctionType] = save_global

        def save(self, obj: Any, save_persistent_id: bool = True) -> None:
            np = self.np
            if np is not None and type(obj) is np.ndarray and obj.dtype.hasobject:
                # joblib writes these with a separate plain pickle.dump that no hook sees;
                # this writes the same layout (wrapper, frame flush, nested stream) through ours.
                wrapper = self._create_array_wrapper(obj)
                plain.save(self, wrapper)
                if self.proto >= 4:
                    self.framer.commit_frame(force=True)
                _Nested(self.file_handle, self.proto, self.audit_globals).dump(obj)
                return
            base.save(self, obj)

    _PICKLER = AuditingPickler
    return AuditingPickler


# --- load --------------------------------------------------------------------------------


def load(buffer: Any, policy: Policy, *, where: str) -> Any:
    """Unpickle a joblib file from memory, resolving only what ``policy`` trusts.

    Raises: IntegrityError (a global refused, before it is imported or used; a compressed
    or foreign file; a BUILD aimed at a class, function or module); any other unpickling
    error unchanged for the caller.
    """
    from toolkit._files import MemoryReader

    reader = MemoryReader(buffer)
    if reader.read(1) != pickle.PROTO:
        raise IntegrityError(f"{where}: not an uncompressed joblib pickle (toolkit.save writes no other kind); refused")
    reader.seek(0)
    size = memoryview(buffer).nbytes
    unpickler = _restricted_unpickler()(reader, policy, _Budget(size))
    try:
        return unpickler.load()
    except Refused as e:
        raise refused_error(e, where) from None
    except _BadBuild as e:
        raise IntegrityError(f"{where}: the pickle sets state on {e}, which only an attack does; refused") from None
    except _BadCall as e:
        raise IntegrityError(
            f"{where}: the pickle calls {e} while loading, which only an attack does; refused"
        ) from None
    except _TooLarge as e:
        raise IntegrityError(
            f"{where}: the pickle asks for {e.claimed:,} bytes ({e.what}), more than its {size:,}-byte file "
            "can hold; refused before allocating"
        ) from None


# --- allocation bounds -------------------------------------------------------------------
# A checksum-valid pickle can still ask for memory its file does not hold: bytearray(10**12),
# an ndarray of a huge shape, a joblib array header whose shape is larger than the bytes that
# follow it. A fitted model's data is in its file, so the loader refuses, before the call that
# would allocate, anything that claims more than the file's size plus this slack in total.
ALLOCATION_SLACK = 64 * 1024 * 1024
# What one element of a lazy sequence (a range, a RangeIndex) costs at the least once something
# materializes it: a pointer in a list, an int64 in an array.
_ELEMENT_BYTES = 8


class _BadCall(Exception):
    pass


class _TooLarge(Exception):
    def __init__(self, claimed: int, what: str) -> None:
        super().__init__(what)
        self.claimed = claimed
        self.what = what


class _Budget:
    """The bytes one load may still claim; shared by the outer and nested streams."""

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.left = file_size + ALLOCATION_SLACK

    def claim(self, claimed: int, what: str) -> None:
        if claimed > self.left:
            raise _TooLarge(claimed, what)
        self.left -= claimed


def _describe_call(func: Any, args: tuple[Any, ...]) -> str:
    name = getattr(func, "__qualname__", None) or type(func).__name__
    shown = ", ".join(_short(a) for a in args[:3]) + (", ..." if len(args) > 3 else "")
    return f"{name}({shown})"


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, str, bytes, tuple, range)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _product(shape: Any) -> int | None:
    """The element count of a shape (an int or a tuple of ints), or None when it is not one."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        return max(shape, 0)
    if isinstance(shape, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        total = 1
        for d in shape:
            total *= max(d, 0)
        return total
    return None


def _itemsize(np: Any, dtype: Any) -> int:
    if dtype is None:
        return 8  # numpy's default, float64
    try:
        return int(np.dtype(dtype).itemsize)
    except (TypeError, ValueError):
        return 8  # numpy will refuse it itself, after our check


_PLAIN = frozenset({int, float, complex, str, bytes, bool, type(None), type})


def _lazy_bytes(values: Iterable[Any], depth: int = 2) -> int:
    """What the lazy sequences among ``values`` (and inside their tuples, lists and dicts) would
    take once materialized: a range or a RangeIndex is small in the file at any length."""
    total = 0
    for value in values:
        kind = type(value)
        if kind in _PLAIN:
            continue  # most arguments: no sequence inside, nothing lazy
        if kind is range or (kind.__name__ == "RangeIndex" and kind.__module__.startswith("pandas.")):
            total += len(value) * _ELEMENT_BYTES
        elif depth and isinstance(value, (tuple, list)):
            if value:
                total += _lazy_bytes(value, depth - 1)
        elif depth and isinstance(value, dict) and value:
            total += _lazy_bytes(value.values(), depth - 1)
    return total


# What constructing a class allocates up front depends only on what the class is: decided once
# per class (a load calls a few classes thousands of times).
_KINDS: dict[type, str] = {}


def _construct_kind(np: Any, cls: type) -> str:
    kind = _KINDS.get(cls)
    if kind is not None:
        return kind
    sparse = sys.modules.get("scipy.sparse")
    if issubclass(cls, (bytes, bytearray)):
        kind = "bytes"
    elif np is None:
        kind = ""
    elif issubclass(cls, np.ndarray):
        kind = "ndarray"
    elif issubclass(cls, np.void):
        kind = "void"
    elif issubclass(cls, np.random.SeedSequence):
        kind = "seed"
    elif sparse is not None and issubclass(cls, (sparse.spmatrix, sparse.sparray)):
        kind = "sparse"
    else:
        kind = ""
    _KINDS[cls] = kind
    return kind


def _positive_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _construct_bytes(np: Any, cls: type, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """What constructing ``cls`` from ``args`` allocates before any state from the file is set."""
    kind = _construct_kind(np, cls)
    if not kind:
        return 0
    if kind == "bytes":
        return _positive_int(args[0] if args else kwargs.get("source"))
    if kind == "ndarray":
        shape = args[0] if args else kwargs.get("shape", 0)
        dtype = args[1] if len(args) > 1 else kwargs.get("dtype")
        count = _product(shape)
        return count * _itemsize(np, dtype) if count else 0
    if kind == "void":
        return _positive_int(args[0] if args else None)
    if kind == "seed":
        return 4 * _positive_int(args[2] if len(args) > 2 else kwargs.get("pool_size", 4))
    # sparse: an empty (M, N) matrix allocates its row pointers (csr, bsr) or M row lists (lil).
    shapes = [a for a in (*args, kwargs.get("shape")) if isinstance(a, tuple) and _product(a) is not None]
    return sum(sum(max(d, 0) for d in s) * _ELEMENT_BYTES for s in shapes)


def _call_bytes(np: Any, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    """What calling ``func`` (a class or a reviewed reconstructor) with ``args`` allocates up front."""
    claimed = _lazy_bytes(args) + _lazy_bytes(kwargs.values())
    if isinstance(func, type):
        return claimed + _construct_bytes(np, func, args, kwargs)
    name = getattr(func, "__name__", "")
    if name == "_reconstructor" and len(args) == 3 and isinstance(args[1], type) and args[2] is not None:
        return claimed + _construct_bytes(np, args[1], (args[2],), {})  # base.__new__(cls, state)
    if name == "__newobj__" and args and isinstance(args[0], type):
        return claimed + _construct_bytes(np, args[0], args[1:], {})
    if name == "__newobj_ex__" and len(args) == 3 and isinstance(args[0], type):
        inner = tuple(args[1]) if isinstance(args[1], (tuple, list)) else ()
        return claimed + _construct_bytes(np, args[0], inner, args[2] if isinstance(args[2], dict) else {})
    if np is not None and name == "_reconstruct" and len(args) >= 3:
        count = _product(args[1])  # (0,) for every array numpy pickles: its data comes by BUILD
        return claimed + (count * _itemsize(np, args[2]) if count else 0)
    if np is not None and name == "_mareconstruct" and len(args) >= 4:
        count = _product(args[2])
        return claimed + (count * _itemsize(np, args[3]) if count else 0)
    if np is not None and name == "scalar" and args:
        return claimed + _itemsize(np, args[0])
    return claimed


class _BadBuild(Exception):
    pass


def _type_of(*args: Any) -> type:
    """builtins.type as the loader serves it: the one-argument form only (``type(None)``);
    the three-argument form would build a class."""
    if len(args) != 1:
        raise Refused("builtins", "type", "only type(obj) is served; type(name, bases, dict) builds a class")
    return type(args[0])


def _guard_build(stack: list[Any]) -> None:
    # BUILD sets attributes on the object below it. On a class, function or module that
    # would change code every later caller runs (a method, a function's defaults): refused.
    target = stack[-2] if len(stack) >= 2 else None
    if isinstance(target, (type, FunctionType, BuiltinFunctionType, ModuleType)):
        raise _BadBuild(getattr(target, "__qualname__", None) or type(target).__name__)


def _load_reduce(self: Any) -> None:
    stack = self.stack
    args = stack[-1]
    func = stack[-2]
    # The fast path (the sizer find_class chose for this very global, see _sizer_for) needs
    # plain arguments; anything else (a partial, a callable built while loading, a list of
    # arguments) takes the whole check.
    sizer = self.sizers.get(id(func))
    if sizer is None or type(args) is not tuple:
        self.check_call(func, args, None)
    else:
        claimed = sizer(args, _NO_KWARGS)
        if claimed:
            self.budget.claim(claimed, _describe_call(func, args))
    stack.pop()
    stack[-1] = func(*args)


def _load_newobj(self: Any) -> None:
    stack = self.stack
    args = stack[-1]
    cls = stack[-2]
    sizer = self.sizers.get(id(cls))
    if sizer is None or type(args) is not tuple:
        self.check_call(cls, args, None)
    else:
        claimed = sizer(args, _NO_KWARGS)
        if claimed:
            self.budget.claim(claimed, _describe_call(cls, args))
    del stack[-2:]
    self.append(cls.__new__(cls, *args))


def _load_newobj_ex(self: Any) -> None:
    stack = self.stack
    self.check_call(stack[-3], stack[-2], stack[-1])
    kwargs = stack.pop()
    args = stack.pop()
    cls = stack.pop()
    self.append(cls.__new__(cls, *args, **kwargs))


_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


def _sizer_for(np: Any, obj: Any) -> Callable[[tuple[Any, ...], Mapping[str, Any]], int]:
    """What a call of ``obj`` (a global find_class resolved and the pickle may call) claims, as
    ``_call_bytes`` computes it, with the decisions that depend only on ``obj`` taken once here:
    most calls are of a class that allocates nothing up front (only lazy arguments can claim
    memory) or numpy's ``_reconstruct`` of an empty array."""
    if isinstance(obj, type):
        if not _construct_kind(np, obj):

            def plain_class(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
                if not args and not kwargs:
                    return 0
                return _lazy_bytes(args) + (_lazy_bytes(kwargs.values()) if kwargs else 0)

            return plain_class
    elif np is not None and getattr(obj, "__name__", "") == "_reconstruct":

        def reconstruct(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
            # _reconstruct(subtype, shape, dtype) as numpy pickles it: a class, a tuple of
            # ints and a bytes dtype code carry nothing lazy, so the claim is the shape's.
            if len(args) == 3 and not kwargs:
                subtype, shape, dtype = args
                if type(shape) is tuple and type(dtype) is bytes and type(subtype) is type:
                    count = 1
                    for d in shape:
                        if type(d) is not int:
                            break
                        count *= d if d > 0 else 0
                    else:
                        return count * _itemsize(np, dtype) if count else 0
            return _call_bytes(np, obj, args, kwargs)

        return reconstruct
    return functools.partial(_call_bytes, np, obj)


_UNPICKLER: Any = None
# (policy, module, name) -> the object Policy.resolve trusted for them (see _resolve).
_VERDICTS: dict[tuple[Policy, str, str], Any] = {}
_VERDICTS_MAX = 4096


def _restricted_unpickler() -> Any:
    global _UNPICKLER
    if _UNPICKLER is not None:
        return _UNPICKLER
    from joblib import numpy_pickle

    base: Any = numpy_pickle.NumpyUnpickler
    plain: Any = pickle._Unpickler
    wrapper_cls: Any = numpy_pickle.NumpyArrayWrapper
    new_init = "ensure_native_byte_order" in inspect.signature(base.__init__).parameters
    new_read = "ensure_native_byte_order" in inspect.signature(wrapper_cls.read).parameters

    def _resolve(self: Any, module: str, name: str) -> Any:
        cache = self.resolved
        key = (module, name)
        if key in cache:
            return cache[key]
        if self.policy.recorded(module, name) and denied(module, name):  # never, even if trusted
            raise Refused(module, name, "a callable only an attack needs")
        policy = self.policy
        # The policy's verdict is a function of the policy, the names and the object they
        # reach: a later load under an equal policy only checks that the names still reach
        # the very object the full check trusted.
        verdict = (policy, module, name)
        known = _VERDICTS.get(verdict)
        if known is not None and self.import_global(module, name) is known:
            obj = known
        else:
            obj = policy.resolve(module, name, self.import_global)
            if len(_VERDICTS) >= _VERDICTS_MAX:
                _VERDICTS.clear()
            _VERDICTS[verdict] = obj
        if obj is type:
            obj = _type_of
        elif getattr(obj, "__name__", None) == "_ufunc_reconstruct" and _is_numpy(obj):
            obj = self.ufunc_by_name  # numpy 1's ufunc pickles: its own would import anything
        if (
            key in RECONSTRUCTORS
            or module in STDLIB
            or name.startswith("__pyx_unpickle_")
            or key in policy.trusted
            or policy.signed
        ):
            # Callable while loading: classes always are; of the functions, only the reviewed
            # reconstructors and what the loading side trusts. A ufunc, np.mean or a metric is
            # trusted as a value a pipeline holds, never called by the pickle.
            self.may_call[id(obj)] = obj
        if isinstance(obj, type) or id(obj) in self.may_call:
            # The call rule for this global, decided once (the object stays alive in the cache,
            # so its id names it alone).
            self.sizers[id(obj)] = _sizer_for(self.np, obj)
        cache[key] = obj
        return obj

    def _check_call(self: Any, func: Any, args: Any, kwargs: Any) -> None:
        """Before REDUCE, NEWOBJ or NEWOBJ_EX runs ``func(*args, **kwargs)``: is ``func`` one the
        pickle may call, and does the call fit in what the file can hold?"""
        if not isinstance(args, tuple):
            args = tuple(args) if isinstance(args, list) else ()
        if not isinstance(kwargs, dict):
            kwargs = {}
        target, all_args, all_kwargs = func, args, kwargs
        while isinstance(target, functools.partial):  # a partial calls what it holds, with its own arguments first
            all_args = (*target.args, *all_args)
            all_kwargs = {**target.keywords, **all_kwargs}
            target = target.func
        if not isinstance(target, type) and id(target) not in self.may_call:
            raise _BadCall(_describe_call(target, all_args))
        claimed = _call_bytes(self.np, target, all_args, all_kwargs)
        if claimed:
            self.budget.claim(claimed, _describe_call(target, all_args))

    def _import_global(self: Any, module: str, name: str) -> Any:
        # plain's find_class with fix_imports off: no Python 2 name mapping, and names are
        # plain identifiers by now, so no attribute walk.
        __import__(module, level=0)
        return getattr(sys.modules[module], name)

    def _ufunc_by_name(self: Any, module: str, name: str) -> Any:
        np = sys.modules["numpy"]
        if not (isinstance(module, str) and isinstance(name, str)) or not plain_pair(module, name):
            raise Refused(str(module), str(name), "not a plain module and name")
        if module.split(".", 1)[0] not in ("numpy", "scipy") or never_imported(module):
            raise Refused(module, name, "not a numpy or scipy ufunc")
        obj = _import_global(self, module, name)
        if not isinstance(obj, np.ufunc):
            raise Refused(module, name, "not a ufunc")
        return obj

    class _Nested(plain):  # type: ignore[misc]
        """An object array's nested stream: the same find_class and BUILD guard."""

        dispatch = plain.dispatch.copy()

        def __init__(self, file: Any, outer: Any) -> None:
            super().__init__(file, fix_imports=False)
            self.outer = outer
            # One budget and one call rule for both streams, bound here once.
            self.check_call = outer.check_call
            self.sizers = outer.sizers
            self.budget = outer.budget
            self.find_class = outer.find_class

        def load_build(self) -> None:
            _guard_build(self.stack)
            plain.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build
        dispatch[pickle.REDUCE[0]] = _load_reduce
        dispatch[pickle.NEWOBJ[0]] = _load_newobj
        dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex

    class RestrictedUnpickler(base):  # type: ignore[misc]
        dispatch = base.dispatch.copy()

        def __init__(self, file: Any, policy: Policy, budget: _Budget | None = None) -> None:
            if budget is None:  # the whole file, from a seekable file object
                here = file.tell()
                budget = _Budget(file.seek(0, os.SEEK_END))
                file.seek(here)
            if new_init:
                super().__init__("", file, True)
            else:
                super().__init__("", file)
            self.fix_imports = False  # __builtin__.eval is a name like any other: refused
            self.policy = policy
            self.budget = budget
            self.resolved: dict[tuple[str, str], Any] = {}
            self.may_call: dict[int, Any] = {}  # id -> the object (kept alive, so ids stay unique)
            self.sizers: dict[int, Any] = {}  # id of a callable global -> its sizer (_sizer_for)

        nested = _Nested  # the class of an object array's stream (benchmarks swap its opcodes)
        find_class = _resolve
        import_global = _import_global
        ufunc_by_name = _ufunc_by_name
        check_call = _check_call
        dispatch[pickle.REDUCE[0]] = _load_reduce
        dispatch[pickle.NEWOBJ[0]] = _load_newobj
        dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex

        def load_build(self) -> None:
            # joblib's load_build, except that an object array's nested stream is read
            # through this find_class too (older joblib reads it with a plain pickle.load).
            _guard_build(self.stack)
            plain.load_build(self)
            top = self.stack[-1]
            if not isinstance(top, wrapper_cls):
                return  # joblib <= 0.9's NDArrayWrapper is never allowed: find_class refused it
            self.stack.pop()
            shape, dtype = getattr(top, "shape", None), getattr(top, "dtype", None)
            count = _product(shape) if isinstance(shape, tuple) else None
            if count is None or not isinstance(dtype, self.np.dtype):
                raise _BadBuild(f"a joblib array header (shape {_short(shape)}, dtype {_short(dtype)})")
            if not dtype.hasobject:
                # joblib allocates the whole array (np.empty) before reading it: its bytes must
                # be in what is left of the file.
                needed = count * int(dtype.itemsize)
                left = self.budget.file_size - self.file_handle.tell()
                if needed > left:
                    raise _TooLarge(needed, f"a {dtype} array of shape {_short(shape)}, with {left:,} bytes left")
            if top.dtype.hasobject:
                array = _Nested(self.file_handle, self).load()
                if top.subclass is not self.np.ndarray:
                    array = array.view(top.subclass)
            else:
                array = top.read(self, True) if new_read else top.read(self)
            self.stack.append(array)

        dispatch[pickle.BUILD[0]] = load_build

    _UNPICKLER = RestrictedUnpickler
    return RestrictedUnpickler


def _is_numpy(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".", 1)[0] == "numpy"


# --- local modules -----------------------------------------------------------------------


def local_modules(
    modules: Iterable[str], provided: Collection[str], *, where: Mapping[str, Any] | None = None
) -> tuple[LocalModule, ...]:
    """The ``modules`` (already imported by pickling) that neither the standard library nor an
    installed distribution provides (``provided``: top-level import names), each with the
    sha256 of its source file.

    Raises: UsageError when such a module has no source file to record.
    """
    loaded = sys.modules if where is None else where
    found = []
    for module in sorted(set(modules)):
        top = module.split(".", 1)[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names or top in provided:
            continue
        file = getattr(loaded.get(module), "__file__", None)
        if not file:
            raise UsageError(f"the pipeline needs module {module!r}, which has no source file to record")
        found.append(LocalModule(module=module, sha256=_sha256_path(file)))
    return tuple(found)


def local_module_sha256(module: str, path: list[str] | None = None) -> str | None:
    """The sha256 of the file ``import module`` would load here, or None if none is found.

    Found with PathFinder, package by package, so nothing is imported or executed (the
    gate never runs user code); ``path`` defaults to sys.path.
    """
    search: list[str] | None = list(sys.path if path is None else path)
    spec = None
    parts = module.split(".")
    for i in range(len(parts)):
        try:
            spec = PathFinder.find_spec(".".join(parts[: i + 1]), search)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
        if i < len(parts) - 1 and not search:
            return None  # a plain module where a package was needed
    if spec is None or not spec.origin or not spec.has_location:
        return None
    try:
        return _sha256_path(spec.origin)
    except OSError:
        return None


def _sha256_path(file: str) -> str:
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- distributions ---------------------------------------------------------------------


def distributions_for(modules: Iterable[str], installed: dict[str, str]) -> tuple[tuple[str, ...], frozenset[str]]:
    """The installed distributions that provide ``modules``, closed over their requirements,
    and the top-level import names among ``modules`` that some installed distribution provides."""
    # Imported here: the gate imports this module for local_module_sha256 only.
    from importlib import metadata

    tops = {m.split(".", 1)[0] for m in modules} - set(sys.stdlib_module_names)
    dists: dict[str, metadata.Distribution] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for item in names:
            if not item.endswith((".dist-info", ".egg-info")):
                continue
            # The directory's name carries the distribution's name (escaped, PEP 427), which
            # spares reading every METADATA file; the header is the fallback.
            path_dist = metadata.PathDistribution(Path(entry or ".", item))
            name = canonical_name(item.split("-", 1)[0])
            if name not in installed:
                name = canonical_name(_name_and_version(path_dist)[0] or "")
            if name in installed:
                dists.setdefault(name, path_dist)  # first on sys.path wins, as on import
    provided: set[str] = set()
    roots = set()
    for name, found in dists.items():
        hits = provided_names(found, tops)
        if hits:
            roots.add(name)
            provided |= hits
    closure: set[str] = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in closure or name not in dists:
            continue
        closure.add(name)
        todo.extend(from_metadata(dists[name], "requirements", _unconditional_requirements))
    return tuple(sorted(closure)), frozenset(provided)


def _unconditional_requirements(dist: metadata.Distribution) -> frozenset[str]:
    """The canonical names ``dist`` requires whatever extras are asked for: the import closure."""
    from packaging.requirements import InvalidRequirement, Requirement

    # Requires-Dist lines of the metadata header; dist.requires would run the whole file
    # (long description included) through the email parser.
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    found = set()
    for line in text.splitlines():
        if not line:
            break
        if not line.startswith("Requires-Dist:"):
            continue
        try:
            req = Requirement(line[len("Requires-Dist:") :].strip())
        except InvalidRequirement:
            continue
        # Only what is installed unconditionally: extras are not part of the import closure.
        # (evaluate() fills in this interpreter's environment around "extra".)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            found.add(canonical_name(req.name))
    return frozenset(found)
