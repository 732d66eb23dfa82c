"""The training config: a TOML file with the same options as ``toolkit train``'s flags.

Flags override the file. Relative paths in a file (``dataset``, ``out``, ``registry``) are
resolved against the file's folder, so a config means the same thing from any directory;
relative paths given as flags are relative to the current directory.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from toolkit import identifiers
from toolkit.errors import ConfigError
from toolkit.identifiers import VERSION_RE

__all__ = [
    "MODEL_KINDS",
    "SCALERS",
    "VERSION_PATTERN",
    "TrainConfig",
    "derive_name",
    "load_config",
    "resolve_config",
    "validate_name",
    "validate_version",
]

MODEL_KINDS = ("gradient_boosting", "random_forest", "logistic_regression")
SCALERS = ("standard", "power")
VERSION_PATTERN = VERSION_RE  # the one rule, in toolkit.identifiers
# Config files are small; anything bigger is not one.
_MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """Everything one training run needs; each field is a TOML key and (mostly) a flag."""

    dataset: str = "builtin:credit"
    target: str | None = None
    model: str = "gradient_boosting"
    params: dict[str, Any] = field(default_factory=dict)  # hyperparameters for the model kind
    name: str | None = None  # None: derived from the dataset
    version: str = "1.0.0"
    seed: int = 42
    test_size: float = 0.2
    cv_folds: int = 5
    scaler: str = "standard"  # numeric columns: "standard" (StandardScaler) or "power" (Yeo-Johnson)
    out: Path = Path("out")
    registry: Path | None = None
    register: bool = True
    author: str | None = None
    intended_use: str = ""
    limitations: str = ""

    @property
    def model_name(self) -> str:
        """The artifact name: ``name``, or one derived from the dataset."""
        return self.name if self.name is not None else derive_name(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (paths as strings)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["out"] = str(self.out)
        d["registry"] = None if self.registry is None else str(self.registry)
        d["params"] = dict(self.params)
        return d


# key -> (accepted python types, description for messages)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "dataset": ((str,), "a string"),
    "target": ((str,), "a string"),
    "model": ((str,), "a string"),
    "params": ((dict,), "a table"),
    "name": ((str,), "a string"),
    "version": ((str,), "a string"),
    "seed": ((int,), "an integer"),
    "test_size": ((float, int), "a number"),
    "cv_folds": ((int,), "an integer"),
    "scaler": ((str,), "a string"),
    "out": ((str,), "a string"),
    "registry": ((str,), "a string"),
    "register": ((bool,), "true or false"),
    "author": ((str,), "a string"),
    "intended_use": ((str,), "a string"),
    "limitations": ((str,), "a string"),
}
_PARAM_TYPES = (str, int, float, bool)
_PATH_KEYS = ("out", "registry")


def load_config(path: Path) -> dict[str, Any]:
    """Read and type-check a TOML config; returns only the keys it sets (paths resolved).

    Raises:
        ConfigError: unreadable or invalid TOML, an unknown key, a value of the wrong type.
    """
    tomllib = _tomllib()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from e
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config is larger than {_MAX_CONFIG_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: config is not UTF-8 text") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    values = _check_types(data, where=str(path))
    base = path.parent
    if "dataset" in values and not values["dataset"].startswith("builtin:"):
        values["dataset"] = str(_relative_to(base, values["dataset"]))
    for key in _PATH_KEYS:
        if key in values:
            values[key] = _relative_to(base, values[key])
    return values


def resolve_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """The config file (if any) with the non-None ``overrides`` (flags) on top, validated.

    Raises:
        ConfigError: as ``load_config``, or a value out of range (unknown model kind,
            bad name or version, test_size outside (0, 1), ...).
    """
    values = load_config(path) if path is not None else {}
    unknown = sorted(k for k in overrides if k not in _TYPES)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}")
    for key, value in overrides.items():
        if value is None:
            continue
        values[key] = Path(value) if key in _PATH_KEYS else value
    config = replace(TrainConfig(), **values)
    _check_values(config)
    return config


def validate_name(name: str, *, key: str = "name") -> str:
    """Return ``name`` if it is a valid model name. Raises: InvalidName (exit 4, as everywhere)."""
    return identifiers.validate_name(name, what=key)


def validate_version(version: str, *, key: str = "version") -> str:
    """Return ``version`` if it is a semantic version X.Y.Z. Raises: InvalidVersion (exit 4, as everywhere)."""
    return identifiers.validate_version(version)


def derive_name(dataset: str) -> str:
    """A registry-safe name from a dataset spec.

    ``builtin:credit`` -> ``credit``; ``Data/My File.csv`` -> ``my-file``.
    """
    stem = dataset.split(":", 1)[1] if dataset.startswith("builtin:") else Path(dataset).stem
    name = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")[:64]
    return name or "model"


# --- helpers -------------------------------------------------------------------------------


def _tomllib() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:  # Python 3.10: the same parser, published as tomli.
        import tomli
    except ImportError as e:
        raise ConfigError("reading a TOML config needs Python 3.11+ or the 'tomli' package") from e
    return tomli


def _check_types(data: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TYPES:
            known = ", ".join(_TYPES)
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        types, described = _TYPES[key]
        # bool is an int in Python; TOML's true is never a valid seed or fold count.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ConfigError(f"{where}: key {key!r} must be {described}, got {_toml_type(value)}")
        values[key] = value
    if "params" in values:
        for pkey, pvalue in values["params"].items():
            if not isinstance(pvalue, _PARAM_TYPES):
                raise ConfigError(
                    f"{where}: key 'params.{pkey}' must be a string, number or boolean, got {_toml_type(pvalue)}"
                )
        values["params"] = dict(values["params"])
    if "test_size" in values:
        values["test_size"] = float(values["test_size"])
    return values


def _check_values(config: TrainConfig) -> None:
    if config.model not in MODEL_KINDS:
        raise ConfigError(f"model: unknown kind {config.model!r} (choose {', '.join(MODEL_KINDS)})")
    if config.scaler not in SCALERS:
        raise ConfigError(f"scaler: unknown scaler {config.scaler!r} (choose {', '.join(SCALERS)})")
    validate_name(config.model_name)
    validate_version(config.version)
    if not 0.0 < config.test_size < 1.0:
        raise ConfigError(f"test_size: must be between 0 and 1, got {config.test_size}")
    if not 2 <= config.cv_folds <= 20:
        raise ConfigError(f"cv_folds: must be between 2 and 20, got {config.cv_folds}")
    if not 0 <= config.seed < 2**32:
        raise ConfigError(f"seed: must be between 0 and 2**32 - 1, got {config.seed}")
    if not config.dataset:
        raise ConfigError("dataset: must not be empty")
    if "random_state" in config.params:
        raise ConfigError("params.random_state: set the top-level 'seed' instead; it seeds everything")


def _relative_to(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
