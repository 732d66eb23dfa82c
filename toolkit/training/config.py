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
from toolkit.training.datasets import TASKS

__all__ = [
    "CLASSIFIER_KINDS",
    "ESTIMATOR_PATH",
    "MODEL_KINDS",
    "REGRESSOR_KINDS",
    "SCALERS",
    "VERSION_PATTERN",
    "TrainConfig",
    "derive_name",
    "load_config",
    "parse_params",
    "resolve_config",
    "validate_name",
    "validate_version",
]

_DEFAULT_MODEL = "gradient_boosting"
# The named kinds, per task; ``model`` may instead be an estimator's import path (ESTIMATOR_PATH).
CLASSIFIER_KINDS = ("gradient_boosting", "random_forest", "logistic_regression", "hist_gradient_boosting")
REGRESSOR_KINDS = ("ridge", "random_forest", "gradient_boosting", "hist_gradient_boosting")
MODEL_KINDS = tuple(dict.fromkeys(CLASSIFIER_KINDS + REGRESSOR_KINDS))
# module.Class, e.g. sklearn.ensemble.HistGradientBoostingClassifier
ESTIMATOR_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
SCALERS = ("standard", "power")
VERSION_PATTERN = VERSION_RE  # the one rule, in toolkit.identifiers
# Config files are small; anything bigger is not one.
_MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """Everything one training run needs; each field is a TOML key and (mostly) a flag."""

    dataset: str = "builtin:credit"
    target: str | None = None
    model: str = _DEFAULT_MODEL  # a named kind (MODEL_KINDS) or an estimator's import path
    params: dict[str, Any] = field(default_factory=dict)  # hyperparameters for the model
    task: str | None = None  # "classification" or "regression"; None: from the model, else the target
    allow_modules: tuple[str, ...] = ()  # packages besides scikit-learn that `model` may come from
    script: Path | None = None  # the user's own training script, run instead of the built-in recipe
    script_args: tuple[str, ...] = ()  # its command-line arguments
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
    # How the flags changed the file's values, for the CLI to say (never part of the recipe).
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def model_name(self) -> str:
        """The artifact name: ``name``, or one derived from the dataset."""
        return self.name if self.name is not None else derive_name(self.dataset)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (paths as strings)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "notes"}
        d["out"] = str(self.out)
        d["registry"] = None if self.registry is None else str(self.registry)
        d["params"] = dict(self.params)
        d["allow_modules"] = list(self.allow_modules)
        d["script"] = None if self.script is None else str(self.script)
        d["script_args"] = list(self.script_args)
        return d


# key -> (accepted python types, description for messages)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "dataset": ((str,), "a string"),
    "target": ((str,), "a string"),
    "model": ((str,), "a string"),
    "params": ((dict,), "a table"),
    "task": ((str,), "a string"),
    "allow_modules": ((list,), "an array of module names"),
    "script": ((str,), "a string"),
    "script_args": ((list,), "an array of strings"),
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
_PATH_KEYS = ("out", "registry", "script")


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
    notes: list[str] = []
    flag_params = overrides.pop("params", None) or {}
    model = overrides.get("model")
    if model is not None and model != values.get("model", _DEFAULT_MODEL) and values.get("params"):
        # The file's hyperparameters belong to the file's model: a switched model must not inherit
        # them silently (gradient boosting's learning_rate would break a random forest).
        dropped, previous = ", ".join(sorted(values["params"])), values.get("model", _DEFAULT_MODEL)
        notes.append(
            f"--model {model}: dropped the config's params for {previous} ({dropped}); set others with --param"
        )
        values["params"] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        values[key] = Path(value) if key in _PATH_KEYS else value
    if flag_params:
        values["params"] = {**values.get("params", {}), **flag_params}
    config = replace(TrainConfig(), **values, notes=tuple(notes))
    _check_values(config)
    return config


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param KEY=VALUE`` flags as hyperparameters: VALUE read as a TOML value (``100``,
    ``0.1``, ``true``, ``"text"``), else as a plain string.

    Raises: ConfigError naming the flag that is not KEY=VALUE or whose key is not a name.
    """
    tomllib = _tomllib()
    params: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"--param {item!r}: use KEY=VALUE with KEY a hyperparameter name")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        if not isinstance(value, _PARAM_TYPES):
            raise ConfigError(f"--param {key}: must be a string, number or boolean")
        params[key] = value
    return params


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
    for key in ("allow_modules", "script_args"):
        if key in values:
            bad = [v for v in values[key] if not isinstance(v, str)]
            if bad:
                raise ConfigError(f"{where}: key {key!r} must be an array of strings, got {_toml_type(bad[0])} in it")
            values[key] = tuple(values[key])
    if "test_size" in values:
        values["test_size"] = float(values["test_size"])
    return values


def _check_values(config: TrainConfig) -> None:
    if config.task is not None and config.task not in TASKS:
        raise ConfigError(f"task: unknown task {config.task!r} (choose {', '.join(TASKS)})")
    if config.model not in MODEL_KINDS and not ESTIMATOR_PATH.match(config.model):
        raise ConfigError(
            f"model: unknown kind {config.model!r} (choose {', '.join(MODEL_KINDS)}, "
            "or an estimator's import path such as sklearn.ensemble.HistGradientBoostingClassifier)"
        )
    kinds = {"classification": CLASSIFIER_KINDS, "regression": REGRESSOR_KINDS}.get(config.task or "", MODEL_KINDS)
    if config.model in MODEL_KINDS and config.model not in kinds:
        raise ConfigError(f"model: {config.model} is not a {config.task} model (choose {', '.join(kinds)})")
    for module in config.allow_modules:
        if not _MODULE_NAME.match(module):
            raise ConfigError(f"allow_modules: {module!r} is not a module name")
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
