"""toolkit: train, save, gate and register scikit-learn pipelines reproducibly.

The public API: ``save``, ``load``, ``verify``, ``read_card``, ``check_env``, ``predict`` and
``sign``; the records they return (``ModelCard``, ``Report``, ``Predictions``, ``Difference``);
``Registry``; every error, ``EnvironmentMismatchWarning`` and ``CertifiedRuntimeWarning``. Heavy modules (joblib,
scikit-learn, pandas) and the registry are imported on first use, so that ``toolkit check-env``
stays fast and never imports scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.errors import (
    CardError,
    CertifiedRuntimeWarning,
    ConfigError,
    DataError,
    Difference,
    DockerError,
    EnvironmentMismatch,
    EnvironmentMismatchWarning,
    IntegrityError,
    InvalidName,
    InvalidVersion,
    ProbeMismatch,
    ReadOnlyRegistry,
    RegistryError,
    RemoteError,
    SignatureError,
    ToolkitError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "CardError",
    "CertifiedRuntimeWarning",
    "ConfigError",
    "DataError",
    "Difference",
    "DockerError",
    "EnvironmentMismatch",
    "EnvironmentMismatchWarning",
    "IntegrityError",
    "InvalidName",
    "InvalidVersion",
    "ModelCard",
    "Predictions",
    "ProbeMismatch",
    "ReadOnlyRegistry",
    "Registry",
    "RegistryError",
    "RemoteError",
    "Report",
    "SignatureError",
    "ToolkitError",
    "UsageError",
    "__version__",
    "check_env",
    "load",
    "predict",
    "read_card",
    "save",
    "sign",
    "verify",
]

if TYPE_CHECKING:
    from toolkit.artifact import load, read_card, save, sign, verify
    from toolkit.card import ModelCard
    from toolkit.gate import Report, check_env
    from toolkit.prediction import Predictions, predict
    from toolkit.registry.registry import Registry

# name -> the module that defines it; imported on first use (PEP 562).
_LAZY = {
    "save": "toolkit.artifact",
    "load": "toolkit.artifact",
    "verify": "toolkit.artifact",
    "read_card": "toolkit.artifact",
    "sign": "toolkit.artifact",
    "check_env": "toolkit.gate",
    "Report": "toolkit.gate",
    "predict": "toolkit.prediction",
    "Predictions": "toolkit.prediction",
    "ModelCard": "toolkit.card",
    "Registry": "toolkit.registry.registry",
}


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing the package must not pull in joblib or pandas.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return list(__all__)
