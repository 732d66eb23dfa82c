"""What the loader trusts: decided by what an object is, never by what a card says.

A pickle names globals as ``(module, name)`` and the unpickler resolves each one. Whoever
can write the model store writes the pickle and the card together, so the card's record of
those globals (``references.globals``) is only the first check: it can refuse, never grant.
``Policy.resolve`` is the whole rule, in this order:

1. The pair is plain: ``name`` is one identifier (no dots, so no attribute walk such as
   ``posixpath`` / ``os.system``) and ``module`` dotted identifiers. The unpickler maps no
   Python 2 names (``__builtin__``): fix_imports is off.
2. The card records the pair (schema 2; schema 1: its module).
3. The module may be imported at all, decided BEFORE importing it: a module of a
   distribution the card lists and this runtime has (never its test helpers), one of the
   user's local modules the card records and hashes, or one of a few reviewed standard
   library modules. Nothing else is imported, so no other module's import-time code runs.
4. The object, after import and before it is returned, is of a trusted kind
   (``trusted_kind``): an estimator class, a data type a fitted pipeline holds, a numpy
   ufunc, or one of a fixed set of reconstruction callables whose arguments can only be
   other objects that passed this same check. Any other callable (a FunctionTransformer's
   own function, a scorer of the user's) is trusted only when the loading side says so
   (``trusted``: ``--trust MODULE.NAME``, ``toolkit.load(..., trusted=[...])``) or a
   trusted key signed the card (then its record is the signer's word).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import TYPE_CHECKING, Any

from toolkit.errors import IntegrityError, UsageError

if TYPE_CHECKING:
    from importlib import metadata

__all__ = [
    "Policy",
    "Refused",
    "from_metadata",
    "never_imported",
    "parse_trusted",
    "plain_pair",
    "policy_for",
    "provided_names",
    "trusted_kind",
]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IDENTIFIER_RE = re.compile(rf"{_IDENT}\Z")
MODULE_RE = re.compile(rf"{_IDENT}(\.{_IDENT})*\Z")

# The standard library the loader may import, and exactly the names it may take from it:
# containers and scalars, and copyreg's reconstructors (they only call ``cls.__new__`` of a
# class that itself passed this check). builtins.type is served by a one-argument stand-in
# (``type(None)`` pickles so); getattr, eval, open, __import__ and the like never are.
STDLIB: dict[str, frozenset[str]] = {
    "builtins": frozenset(
        {
            "bool",
            "bytearray",
            "bytes",
            "complex",
            "dict",
            "float",
            "frozenset",
            "int",
            "list",
            "object",
            "range",
            "set",
            "slice",
            "str",
            "tuple",
            "type",
            "Ellipsis",
            "NotImplemented",
        }
    ),
    "copyreg": frozenset({"_reconstructor", "__newobj__", "__newobj_ex__"}),
    "collections": frozenset({"OrderedDict", "defaultdict", "Counter", "deque"}),
    "datetime": frozenset({"date", "datetime", "time", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "functools": frozenset({"partial"}),  # holds a callable that passed this check; calls nothing
}

# The import names of the distributions whose data types the loader knows (no metadata
# lookup needed for these).
KNOWN_DISTRIBUTIONS = {
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "sklearn": "scikit-learn",
    "joblib": "joblib",
    "pyarrow": "pyarrow",
}

# Packaging tools: their modules install, download and run code. Never imported by the
# loader, even from a card that lists them as distributions.
_NEVER_TOPS = frozenset({"pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel", "virtualenv", "toolkit"})

# Module path parts never imported by the loader, whatever the card lists: test helpers
# (numpy.testing._private.utils.runstring runs code) are nothing a fitted model holds.
_NEVER_PARTS = frozenset({"tests", "testing", "_testing", "conftest", "__main__", "externals"})

# scikit-learn's modules whose non-estimator classes fitted estimators hold (trees, losses,
# kernels, neighbour trees, distance metrics, optimizer state, CV splitters, scorers): data
# holders whose construction and __setstate__ compute nothing beyond the state given.
SKLEARN_HELPER_MODULES = (
    "sklearn._loss",
    "sklearn.calibration",
    "sklearn.cluster._birch",
    "sklearn.cluster._bisect_k_means",
    "sklearn.compose._column_transformer",
    "sklearn.ensemble._hist_gradient_boosting",
    "sklearn.gaussian_process.kernels",
    "sklearn.linear_model._sgd_fast",
    "sklearn.metrics._dist_metrics",
    "sklearn.metrics._scorer",
    "sklearn.model_selection._split",
    "sklearn.neighbors",
    "sklearn.neural_network._stochastic_optimizers",
    "sklearn.tree._tree",
    "sklearn.utils._bunch",
    "sklearn.utils._metadata_requests",
)
# The fitted state of the scikit-learn-API estimators of gradient-boosting libraries: an
# LGBMClassifier holds a lightgbm Booster, an XGBClassifier an xgboost Booster. Trusted as the
# data those estimators hold, and only when the card lists the library's distribution (so only
# where one of its estimators is trusted too); the libraries' other classes are not.
ESTIMATOR_STATE_CLASSES = frozenset({("lightgbm.basic", "Booster"), ("xgboost.core", "Booster")})
# scikit-learn functions a default estimator holds (SelectKBest's f_classif, BisectingKMeans'
# inner k-means, a scorer's metric): pure numeric functions of their arguments.
SKLEARN_FUNCTION_MODULES = (
    "sklearn.metrics._classification",
    "sklearn.metrics._regression",
    "sklearn.metrics._ranking",
    "sklearn.metrics.pairwise",
    "sklearn.metrics.cluster",
    "sklearn.feature_selection._univariate_selection",
    "sklearn.feature_selection._mutual_info",
)
SKLEARN_FUNCTIONS = frozenset(
    {("sklearn.cluster._kmeans", "_kmeans_single_lloyd"), ("sklearn.cluster._kmeans", "_kmeans_single_elkan")}
)
# numpy's reductions and array functions that parameters hold (``np.mean`` as a threshold or
# aggregation): pure computations. numpy's file functions (load, fromfile, memmap, ...) are not here.
NUMPY_FUNCTIONS = frozenset(
    {
        "all",
        "amax",
        "amin",
        "any",
        "argmax",
        "argmin",
        "asarray",
        "average",
        "clip",
        "cumsum",
        "max",
        "mean",
        "median",
        "min",
        "nanmax",
        "nanmean",
        "nanmedian",
        "nanmin",
        "nanpercentile",
        "nanquantile",
        "nanstd",
        "nansum",
        "nanvar",
        "percentile",
        "prod",
        "ptp",
        "quantile",
        "round",
        "std",
        "sum",
        "var",
    }
)
# Reconstruction callables, named where they live; each is checked by identity after import.
# Their arguments are objects that passed this check already (a class, a shape, bytes).
RECONSTRUCTORS = frozenset(
    {
        ("copyreg", "_reconstructor"),
        ("copyreg", "__newobj__"),
        ("copyreg", "__newobj_ex__"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy.ma.core", "_mareconstruct"),
        # numpy 1's ufunc pickles; the unpickler serves its own stand-in, which resolves the
        # (module, name) through this same policy and returns only a ufunc.
        ("numpy.core", "_ufunc_reconstruct"),
        ("numpy._core", "_ufunc_reconstruct"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"),
        ("pandas._libs.tslibs.timedeltas", "_timedelta_unpickle"),
        ("pandas._libs.tslibs.nattype", "_nat_unpickle"),
        ("pandas._libs.tslibs.nattype", "__nat_unpickle"),
        # pandas 3 keeps text as pyarrow arrays: rebuilt from a type alias and byte buffers.
        ("pyarrow.lib", "_restore_array"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "type_for_alias"),
        ("scipy._lib.array_api_compat.numpy._aliases", "asarray"),
        ("sklearn.metrics._dist_metrics", "newObj"),
        ("sklearn.neighbors._kd_tree", "newObj"),
        ("sklearn.neighbors._ball_tree", "newObj"),
    }
)
# Cython writes ``__pyx_unpickle_<Class>(type, checksum, state)`` for its extension types: it
# only calls ``<Class>.__new__(type)`` and sets the state. Trusted in these packages.
_CYTHON_PACKAGES = frozenset({"numpy", "scipy", "pandas", "sklearn"})
_CALLABLE_TYPES = (BuiltinFunctionType, FunctionType)
_CYTHON_TYPES = frozenset({"cython_function_or_method", "fused_cython_function", "builtin_function_or_method"})


class Refused(Exception):
    """A global the loader does not resolve; ``why`` finishes the sentence "X.Y is refused: ..."."""

    def __init__(self, module: str, name: str, why: str, *, listed: bool = True) -> None:
        super().__init__(f"{module}.{name}: {why}")
        self.module = module
        self.name = name
        self.why = why
        self.listed = listed


def plain_pair(module: str, name: str) -> bool:
    """``name`` is one identifier and ``module`` dotted identifiers (ASCII)."""
    return bool(IDENTIFIER_RE.match(name)) and bool(MODULE_RE.match(module))


def parse_trusted(values: Iterable[str]) -> frozenset[tuple[str, str]]:
    """``MODULE.NAME`` strings (``--trust``, ``trusted=``) as pairs.

    Raises: UsageError for anything that is not a dotted module and a plain name.
    """
    pairs = set()
    for value in values:
        if not isinstance(value, str):
            raise UsageError(f"trusted: {value!r} is not a MODULE.NAME string")
        module, _, name = value.rpartition(".")
        if not module or not plain_pair(module, name):
            raise UsageError(
                f"--trust {value!r}: give a callable as MODULE.NAME (for example mypkg.features.log_ratio)"
            )
        pairs.add((module, name))
    return frozenset(pairs)


@dataclass(frozen=True, kw_only=True, slots=True)
class Policy:
    """What one load may resolve: the card's record, its distributions and local modules,
    and what the loading side trusts."""

    record: frozenset[tuple[str, str]] | None  # schema 2's globals; None for schema 1
    record_modules: frozenset[str]
    distributions: frozenset[str]  # canonical names the card lists
    local_modules: frozenset[str]  # recorded and hashed in the card (the gate checks the hash)
    trusted: frozenset[tuple[str, str]] = frozenset()
    signed: bool = False  # a trusted key signed the card: its record is trusted as a whole

    def recorded(self, module: str, name: str) -> bool:
        if self.record is not None:
            return (module, name) in self.record
        return module in self.record_modules

    def resolve(self, module: str, name: str, importer: Callable[[str, str], Any]) -> Any:
        """The object ``module.name`` names, or Refused; ``importer`` imports and looks up."""
        if not plain_pair(module, name):
            raise Refused(module, name, "not a plain module and name (an attribute path walks to anything)")
        if not self.recorded(module, name):
            raise Refused(module, name, "its card does not list it", listed=False)
        explicit = (module, name) in self.trusted or self.signed
        if not explicit and not self.importable(module):
            raise Refused(
                module, name, "its module is not from a distribution the card lists or a recorded local module"
            )
        if never_imported(module):
            raise Refused(module, name, "test and internal helper modules are never imported")
        obj = importer(module, name)
        if explicit or trusted_kind(obj, module, name, self):
            return obj
        raise Refused(module, name, f"a {_kind_of(obj)} the loader does not trust by default")

    def importable(self, module: str) -> bool:
        """May ``module`` be imported? Decided from names only, before any import."""
        top = module.split(".", 1)[0]
        if top in STDLIB:
            return module == top
        if module in self.local_modules:
            return True
        if top in sys.stdlib_module_names or top in sys.builtin_module_names:
            return False
        known = KNOWN_DISTRIBUTIONS.get(top)
        if known is not None:
            return known in self.distributions
        return _provided_by(top, self.distributions)


def never_imported(module: str) -> bool:
    """Test helpers and the like: never imported by the loader, whatever a card or a user says."""
    parts = module.split(".")
    return parts[0] in _NEVER_TOPS or any(part in _NEVER_PARTS or part.startswith("test_") for part in parts)


_PROVIDED: dict[tuple[str, frozenset[str]], bool] = {}


def _provided_by(top: str, distributions: frozenset[str]) -> bool:
    """Is ``top`` an import name of one of ``distributions`` installed here? (metadata only)"""
    key = (top, distributions)
    if key not in _PROVIDED:
        from importlib import metadata

        from toolkit.fingerprint import canonical_name

        found = False
        for dist in metadata.distributions():
            name = canonical_name(dist.metadata["Name"] or "")
            if name in distributions and provided_names(dist, {top}):
                found = True
                break
        _PROVIDED[key] = found
    return _PROVIDED[key]


def policy_for(references: Any, *, trusted: Iterable[str] = (), signed: bool = False) -> Policy:
    """The policy for a card's ``references`` (schema 1 or 2) and the loading side's trust."""
    from toolkit.fingerprint import canonical_name

    return Policy(
        record=frozenset(references.globals) if references.globals is not None else None,
        record_modules=frozenset(references.modules),
        distributions=frozenset(canonical_name(d) for d in references.distributions),
        local_modules=frozenset(m.module for m in references.local_modules or ()),
        trusted=parse_trusted(trusted),
        signed=signed,
    )


# --- kinds ---------------------------------------------------------------------------------


def trusted_kind(obj: Any, module: str, name: str, policy: Policy) -> bool:
    """Is ``obj`` (just looked up as ``module.name``) of a kind the loader trusts by default?"""
    top = module.split(".", 1)[0]
    if top in STDLIB:
        return name in STDLIB[top] and _stdlib_object(obj, top, name)
    if (module, name) in RECONSTRUCTORS:
        return _is_reconstructor(obj, module, name)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ufunc):
        return True  # a ufunc computes on arrays and nothing else
    if isinstance(obj, type):
        return _trusted_class(obj, policy, module)
    own = getattr(obj, "__module__", None) or ""
    if (
        name.startswith("__pyx_unpickle_")
        and own.split(".", 1)[0] in _CYTHON_PACKAGES
        and type(obj).__name__ in _CYTHON_TYPES
    ):
        return True
    if np is not None and top == "numpy" and name in NUMPY_FUNCTIONS:
        return obj is getattr(np, name, None)
    if isinstance(obj, FunctionType) and not isinstance(obj, type):
        if (own, obj.__name__) in SKLEARN_FUNCTIONS:
            return True
        return obj.__name__ == name and any(own == m or own.startswith(m + ".") for m in SKLEARN_FUNCTION_MODULES)
    return False


def _stdlib_object(obj: Any, top: str, name: str) -> bool:
    # The name is reviewed; the object must still be the one the standard library defines.
    expected = getattr(sys.modules.get(top), name, None)
    return obj is expected


def _is_reconstructor(obj: Any, module: str, name: str) -> bool:
    # Identity with the object its defining module holds now (numpy.core is numpy 2's alias
    # of numpy._core: both names reach the same function).
    if not callable(obj) or isinstance(obj, type):
        return False
    own = getattr(obj, "__module__", "") or ""
    return own.split(".", 1)[0] == module.split(".", 1)[0] and (
        isinstance(obj, _CALLABLE_TYPES) or type(obj).__name__ in _CYTHON_TYPES
    )


def _trusted_class(cls: type, policy: Policy, module: str) -> bool:
    own = getattr(cls, "__module__", "") or ""
    if "." not in own and module.rsplit(".", 1)[-1] == own:
        # A Cython extension type may name only its own file as its module (scikit-learn 1.8's
        # sklearn._loss._loss.CyHalfBinomialLoss says "_loss"): it is the object the loader just
        # looked up in ``module``, so that is its module.
        own = module
    top = own.split(".", 1)[0]
    if never_imported(own):
        return False
    np = sys.modules.get("numpy")
    if np is not None and top == "numpy":
        # ndarray itself and its masked form; never memmap (its constructor opens files).
        if cls is np.ndarray or cls is np.ma.MaskedArray:
            return True
        if issubclass(cls, (np.dtype, np.generic)):
            return True
        random = np.random
        return issubclass(cls, (random.RandomState, random.Generator, random.BitGenerator, random.SeedSequence))
    if top == "joblib":
        from joblib.numpy_pickle import NumpyArrayWrapper

        return cls is NumpyArrayWrapper
    if top == "scipy":
        sparse = sys.modules.get("scipy.sparse")
        if sparse is not None and issubclass(cls, (sparse.spmatrix, sparse.sparray)):
            return True
        interpolate = sys.modules.get("scipy.interpolate")
        return interpolate is not None and cls is getattr(interpolate, "BSpline", None)
    if top == "pandas":
        return _pandas_class(cls)
    if top == "pyarrow":
        return False
    if _estimator_class(cls) and (own in policy.local_modules or _from_listed(top, policy)):
        return True
    if top == "sklearn":
        return any(own == m or own.startswith(m + ".") for m in SKLEARN_HELPER_MODULES)
    return (own, cls.__name__) in ESTIMATOR_STATE_CLASSES and _from_listed(top, policy)


def _from_listed(top: str, policy: Policy) -> bool:
    if top in sys.stdlib_module_names:
        return False
    known = KNOWN_DISTRIBUTIONS.get(top)
    return known in policy.distributions if known is not None else _provided_by(top, policy.distributions)


_ESTIMATOR_METHODS = ("predict", "transform", "fit_transform", "fit_predict", "predict_proba", "score_samples")


def _estimator_class(cls: type) -> bool:
    base = sys.modules.get("sklearn.base")
    if base is not None and issubclass(cls, base.BaseEstimator):
        return True
    # The scikit-learn API shape without its base class: fit, and something to apply.
    return callable(getattr(cls, "fit", None)) and any(callable(getattr(cls, m, None)) for m in _ESTIMATOR_METHODS)


def _pandas_class(cls: type) -> bool:
    import pandas as pd
    from pandas.api.extensions import ExtensionArray, ExtensionDtype

    kinds: tuple[type, ...] = (pd.Index, pd.Series, pd.DataFrame, ExtensionDtype, ExtensionArray)
    kinds += (pd.Timestamp, pd.Timedelta, pd.Period, pd.Interval)
    managers = sys.modules.get("pandas.core.internals.managers")
    if managers is not None:
        kinds += (managers.BaseBlockManager,)
    blocks = sys.modules.get("pandas.core.internals.blocks")
    if blocks is not None:
        kinds += (blocks.Block,)
    return issubclass(cls, kinds)


def _kind_of(obj: Any) -> str:
    if isinstance(obj, type):
        return "class"
    if isinstance(obj, ModuleType):
        return "module"
    if callable(obj):
        return "callable"
    return type(obj).__name__


def refused_error(e: Refused, where: str) -> IntegrityError:
    """The one line for a refusal, saying what the user can do about it."""
    if not e.listed:
        return IntegrityError(
            f"{where}: the pickle imports {e.module}.{e.name}, which its card does not allow; "
            "refused before importing it"
        )
    hint = ""
    if "by default" in e.why:
        hint = f"; if you trust it, pass --trust {e.module}.{e.name} (toolkit.load(..., trusted=[...]))"
    return IntegrityError(f"{where}: the pickle imports {e.module}.{e.name}, refused: {e.why}{hint}")


def provided_names(dist: metadata.Distribution, tops: set[str]) -> set[str]:
    """Which of ``tops`` (top-level import names) distribution ``dist`` provides (metadata only)."""
    return tops & _import_names(dist)


# (what, fingerprint.metadata_state) -> what was read from that folder. Every save asks each
# installed distribution for its import names and requirements; reading each RECORD and
# parsing each Requires-Dist again was most of a save's time (28 of its 60 ms here).
_FROM_METADATA: dict[tuple[str, str, int], Any] = {}


def from_metadata(dist: metadata.Distribution, what: str, read: Callable[[metadata.Distribution], Any]) -> Any:
    """``read(dist)``, computed once per state of ``dist``'s metadata folder (every call when
    it has none on disk)."""
    from toolkit.fingerprint import metadata_state

    folder = getattr(dist, "_path", None)  # PathDistribution's folder
    state = metadata_state(str(folder)) if folder is not None else None
    if state is None:
        return read(dist)
    key = (what, *state)
    if key not in _FROM_METADATA:
        _FROM_METADATA[key] = read(dist)
    return _FROM_METADATA[key]


def _import_names(dist: metadata.Distribution) -> frozenset[str]:
    names: frozenset[str] = from_metadata(dist, "import names", _read_import_names)
    return names


def _read_import_names(dist: metadata.Distribution) -> frozenset[str]:
    # What packages_distributions() answers: top_level.txt when there is one, else the first
    # path segment of each RECORD line (a package folder, or a module: x.py, x.cpython-*.so,
    # x.abi3.so, x.so), without CSV parsing or PackagePath objects.
    declared = dist.read_text("top_level.txt")
    if declared:
        return frozenset(declared.split())
    record = dist.read_text("RECORD")
    if record is None:  # egg-info and the like: the slow, general way
        return frozenset(str(f).split("/", 1)[0].removesuffix(".py") for f in dist.files or ())
    names = set()
    for line in record.splitlines():
        path = line.split(",", 1)[0]
        first, slash, _ = path.partition("/")
        tagged = next((tag for tag in (".cpython-", ".abi3.") if tag in first), None)
        if slash:
            names.add(first)
        elif tagged is not None:
            names.add(first.split(tagged, 1)[0])
        elif first.endswith((".py", ".so")):
            names.add(first[:-3])
    return frozenset(names)
