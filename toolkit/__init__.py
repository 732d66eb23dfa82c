"""toolkit: train, save, gate and register scikit-learn pipelines reproducibly.

The public API is ``save``, ``load``, ``check_env`` and ``predict``, plus the errors they raise
and ``EnvironmentMismatchWarning``.
Heavy modules (joblib, scikit-learn) are imported on first use, so that
``toolkit check-env`` stays fast and never imports scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.errors import (
    CardError,
    ConfigError,
    DataError,
    DockerError,
    EnvironmentMismatch,
    EnvironmentMismatchWarning,
    IntegrityError,
    InvalidName,
    InvalidVersion,
    ProbeMismatch,
    RegistryError,
    RemoteError,
    SignatureError,
    ToolkitError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "CardError",
    "ConfigError",
    "DataError",
    "DockerError",
    "EnvironmentMismatch",
    "EnvironmentMismatchWarning",
    "IntegrityError",
    "InvalidName",
    "InvalidVersion",
    "ProbeMismatch",
    "RegistryError",
    "RemoteError",
    "SignatureError",
    "ToolkitError",
    "UsageError",
    "__version__",
    "check_env",
    "load",
    "predict",
    "save",
]

if TYPE_CHECKING:
    from toolkit.artifact import load, save
    from toolkit.gate import check_env
    from toolkit.prediction import predict


def __getattr__(name: str) -> Any:
    # Lazy re-exports: importing the package must not pull in joblib or pandas.
    if name in ("save", "load"):
        from toolkit import artifact

        return getattr(artifact, name)
    if name == "check_env":
        from toolkit import gate

        return gate.check_env
    if name == "predict":
        from toolkit import prediction

        return prediction.predict
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
