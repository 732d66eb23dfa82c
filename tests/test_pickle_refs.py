"""What a pickle imports, read from its opcodes, and which distributions provide it."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from toolkit._pickle_refs import distributions_for, referenced_modules
from toolkit.fingerprint import canonical_name, installed_distributions


def test_referenced_modules_of_a_pipeline(tiny_pipeline: Any) -> None:
    modules = referenced_modules(tiny_pipeline)
    assert {"sklearn.pipeline", "sklearn.preprocessing._data", "sklearn.linear_model._logistic"} <= set(modules)
    assert any(m.startswith("numpy") for m in modules)


def test_memoized_module_names_are_still_found() -> None:
    # Two classes from one module: the second STACK_GLOBAL gets the module name via BINGET.
    from collections import OrderedDict, defaultdict

    assert referenced_modules([OrderedDict, defaultdict, OrderedDict()]) == ("collections",)


def test_distributions_agree_with_importlib_and_are_closed(tiny_pipeline: Any) -> None:
    modules = referenced_modules(tiny_pipeline)
    found = set(distributions_for(modules, installed_distributions()))
    providers = metadata.packages_distributions()
    direct = {canonical_name(d) for m in modules for d in providers.get(m.split(".")[0], ())}
    assert direct <= found
    # scikit-learn's own requirements come along: unpickling needs them too.
    assert {"scikit-learn", "scipy", "joblib", "threadpoolctl", "numpy"} <= found
    assert "pytest" not in found
