"""The TOML training config: keys, types, flags over the file, and the repo's default config."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.errors import ConfigError, InvalidName, InvalidVersion
from toolkit.training.config import TrainConfig, derive_name, load_config, parse_params, resolve_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def test_repo_default_config() -> None:
    cfg = resolve_config(REPO / "configs" / "train.toml")
    assert cfg.dataset == "builtin:credit"
    assert cfg.model == "gradient_boosting"
    assert cfg.model_name == "credit"
    assert cfg.version == "1.0.0"
    assert cfg.register is True
    assert cfg.params["n_estimators"] == 100


def test_defaults_without_a_file() -> None:
    cfg = resolve_config()
    assert cfg == TrainConfig()
    assert cfg.model_name == "credit"
    assert cfg.out == Path("out")


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'model = "random_forest"\nversion = "1.0.0"\nseed = 3\n')
    cfg = resolve_config(path, model="logistic_regression", version="2.0.1", name=None)
    assert (cfg.model, cfg.version, cfg.seed) == ("logistic_regression", "2.0.1", 3)


def test_paths_in_a_file_are_relative_to_it(tmp_path: Path) -> None:
    path = write(tmp_path, 'dataset = "data/x.csv"\ntarget = "y"\nout = "artifacts"\nregistry = "/abs/reg"\n')
    values = load_config(path)
    assert values["dataset"] == str(tmp_path / "data" / "x.csv")
    assert values["out"] == tmp_path / "artifacts"
    assert values["registry"] == Path("/abs/reg")
    # Flags stay relative to the current directory.
    assert resolve_config(path, out=Path("here")).out == Path("here")


def test_builtin_dataset_is_not_a_path(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, 'dataset = "builtin:wine"\n'))["dataset"] == "builtin:wine"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('modle = "random_forest"\n', "unknown key 'modle'"),
        ('seed = "42"\n', "key 'seed' must be an integer, got a string"),
        ("seed = true\n", "key 'seed' must be an integer, got a boolean"),
        ("test_size = [0.2]\n", "key 'test_size' must be a number, got an array"),
        ('register = "yes"\n', "key 'register' must be true or false"),
        ("params = 3\n", "key 'params' must be a table"),
        ("[params]\nmax_depth = [1, 2]\n", "key 'params.max_depth' must be a string, number or boolean"),
        ("seed = \n", "invalid TOML"),
    ],
)
def test_bad_file(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(write(tmp_path, text))
    assert needle in str(info.value)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"model": "xgboost"}, "model: unknown kind 'xgboost'"),
        ({"test_size": 1.5}, "test_size: must be between 0 and 1"),
        ({"cv_folds": 1}, "cv_folds: must be between 2 and 20"),
        ({"seed": -1}, "seed: must be between"),
        ({"scaler": "minmax"}, "scaler: unknown scaler 'minmax'"),
        ({"params": {"random_state": 1}}, "params.random_state"),
    ],
)
def test_bad_values(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_config(**overrides)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "error", "needle"),
    [
        ({"version": "1.0"}, InvalidVersion, "invalid version '1.0': must be a semantic version X.Y.Z"),
        ({"version": "01.0.0"}, InvalidVersion, "invalid version '01.0.0'"),
        ({"name": "Credit Model"}, InvalidName, "invalid name 'Credit Model': must match"),
    ],
)
def test_bad_identifiers_follow_the_one_rule(overrides: dict[str, object], error: type, needle: str) -> None:
    # toolkit.identifiers: the same class, message and exit code (4) as from the registry.
    with pytest.raises(error) as info:
        resolve_config(**overrides)
    assert needle in str(info.value)
    assert info.value.exit_code == 4


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config"):
        resolve_config(tmp_path / "nope.toml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        resolve_config(path)


@pytest.mark.parametrize(
    ("dataset", "name"),
    [
        ("builtin:credit", "credit"),
        ("data/My File.csv", "my-file"),
        ("/x/Sales_2024.parquet", "sales_2024"),
        ("/x/__.csv", "model"),
    ],
)
def test_derive_name(dataset: str, name: str) -> None:
    assert derive_name(dataset) == name


def test_cli_unknown_config_key_exits_2(tmp_path: Path, runner: CliRunner) -> None:
    path = write(tmp_path, "learning_rate = 0.1\n")
    result = runner.invoke(app, ["train", "--config", str(path), "--out", str(tmp_path / "out"), "--no-register"])
    assert result.exit_code == 2
    assert "unknown key 'learning_rate'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_model_switch_drops_the_files_params_and_says_which(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('model = "gradient_boosting"\n[params]\nlearning_rate = 0.1\nmax_depth = 3\n')
    cfg = resolve_config(path, model="random_forest", params={"n_estimators": 10})
    assert cfg.params == {"n_estimators": 10}
    assert cfg.notes == (
        "--model random_forest: dropped the config's params for gradient_boosting (learning_rate, max_depth); "
        "set others with --param",
    )
    assert "notes" not in cfg.to_dict()
    same = resolve_config(path, model="gradient_boosting", params={"max_depth": 5})
    assert same.params == {"learning_rate": 0.1, "max_depth": 5} and same.notes == ()


@pytest.mark.parametrize(
    ("item", "value"),
    [
        ("n=100", 100),
        ("lr=0.5", 0.5),
        ("warm_start=true", True),
        ('loss="log_loss"', "log_loss"),
        ("loss=log_loss", "log_loss"),
    ],
)
def test_param_flags_are_read_as_toml_values(item: str, value: object) -> None:
    key = item.split("=", 1)[0]
    assert parse_params([item]) == {key: value}


@pytest.mark.parametrize("item", ["noequals", "=1", "bad key=1", "x=[1, 2]"])
def test_a_bad_param_flag_is_a_config_error_naming_it(item: str) -> None:
    with pytest.raises(ConfigError, match="--param"):
        parse_params([item])


def test_every_config_key_has_a_train_flag() -> None:
    import dataclasses

    import typer.main

    group = typer.main.get_command(app)
    flags = {opt for p in group.commands["train"].params for opt in p.opts}  # type: ignore[attr-defined]
    for f in dataclasses.fields(TrainConfig):
        if f.name == "notes":
            continue
        singular = {"params": "--param", "allow_modules": "--allow-module", "script_args": "--script-arg"}
        flag = singular.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in flags, f"config key {f.name!r} has no flag {flag}"
