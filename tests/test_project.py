"""toolkit.toml, `toolkit init`, `toolkit lock`'s checks and a project's bad inputs (no Docker, no network)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit import project
from toolkit.cli import app
from toolkit.errors import ProjectError, UsageError
from toolkit.lock import check_lock_is_data, compile_lock, lock_changes, toolkit_requirements

PINNED = "127.0.0.1:5000/python-base@sha256:" + "a" * 64


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOOLKIT_IMAGE", "BASE_IMAGE", "TOOLKIT_REGISTRY"):
        monkeypatch.delenv(name, raising=False)


def test_init_writes_both_files_and_never_overwrites(in_tmp: Path, runner: CliRunner) -> None:
    done = runner.invoke(app, ["init", "proj"])
    assert done.exit_code == 0, done.output
    toml = (in_tmp / "proj" / "toolkit.toml").read_text()
    reqs = (in_tmp / "proj" / "requirements.in").read_text()
    assert 'image = "proj:latest"' in toml and "system_packages = []" in toml
    assert [line for line in reqs.splitlines() if not line.startswith("#")] == ["scikit-learn"]
    settings = project.load(in_tmp / "proj" / "toolkit.toml")
    assert settings.registry == str(in_tmp / "proj" / "models")
    assert settings.lock == in_tmp / "proj" / "requirements.lock"

    # Only requirements.in exists in a second folder: nothing is written, the existing file is named.
    other = in_tmp / "other"
    other.mkdir()
    (other / "requirements.in").write_text("mine\n")
    done = runner.invoke(app, ["init", str(other)])
    assert done.exit_code == 2
    assert done.output.strip().splitlines() == [
        f"error: {other / 'requirements.in'}: already exists; not overwriting it"
    ]
    assert not (other / "toolkit.toml").exists() and (other / "requirements.in").read_text() == "mine\n"
    done = runner.invoke(app, ["init", "proj"])
    assert done.exit_code == 2 and "proj/toolkit.toml: already exists" in done.output


def test_settings_are_found_by_walking_up_and_flags_and_environment_win(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.docker.images import resolve_base_image, resolve_image
    from toolkit.registry import resolve_root

    (in_tmp / "toolkit.toml").write_text(f'image = "team:1"\nbase_image = "{PINNED}"\nregistry = "reg"\n')
    deep = in_tmp / "a" / "b"
    deep.mkdir(parents=True)
    os.chdir(deep)
    assert project.find() == in_tmp / "toolkit.toml"
    assert resolve_image(None) == "team:1"
    assert resolve_image(None, recorded="trained:2") == "trained:2"  # the card's image first
    assert resolve_image("flag:3") == "flag:3"
    assert resolve_base_image(None) == PINNED
    assert resolve_root(None) == in_tmp / "reg"  # relative to toolkit.toml, not to the cwd
    assert resolve_root("elsewhere") == Path("elsewhere")
    monkeypatch.setenv("TOOLKIT_IMAGE", "env:4")
    assert resolve_image(None) == "env:4"


def test_without_toolkit_toml_every_key_has_its_default(in_tmp: Path) -> None:
    from toolkit.docker.images import resolve_image
    from toolkit.registry import resolve_root

    settings = project.current()
    assert settings.path is None
    assert settings.requirements == in_tmp / "requirements.in" and settings.lock == in_tmp / "requirements.lock"
    assert settings.system_packages == () and settings.base_image is None
    assert resolve_image(None) == "toolkit:latest"
    assert resolve_root(None) == Path("models")


def test_lock_without_requirements_in_says_what_is_missing(in_tmp: Path, runner: CliRunner) -> None:
    done = runner.invoke(app, ["lock"])
    assert done.exit_code == 2
    assert done.output.strip().splitlines()[-1] == (
        f"error: {in_tmp / 'requirements.in'}: no such file; `toolkit init` writes one"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('imagee = "x"\n', "unknown key 'imagee'"),
        ("image = 3\n", "image must be a non-empty string"),
        ('system_packages = "libgomp1"\n', "system_packages must be a list of strings"),
        ('system_packages = ["LibGomp"]\n', "'LibGomp' is not a Debian package name"),
        ('system_packages = ["a1", "a1"]\n', "listed twice"),
        ('base_image = "python:3.11"\n', "base_image must be pinned by digest"),
        ("image = \n", "invalid TOML"),
    ],
)
def test_a_bad_toolkit_toml_is_one_line_naming_the_key(
    in_tmp: Path, runner: CliRunner, text: str, message: str
) -> None:
    (in_tmp / "toolkit.toml").write_text(text)
    with pytest.raises(ProjectError, match=message):
        project.current()
    done = runner.invoke(app, ["image", "build"])
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and message.split("'")[0] in lines[0] and "toolkit.toml" in lines[0]


def test_record_changes_one_key_and_keeps_the_rest(in_tmp: Path) -> None:
    project.init(in_tmp)
    path = in_tmp / "toolkit.toml"
    before = path.read_text()
    project.record(path, "base_image", PINNED)
    after = path.read_text()
    assert f'base_image = "{PINNED}"' in after and "# base_image" not in after
    assert [line for line in before.splitlines() if "base_image" not in line] == [
        line for line in after.splitlines() if "base_image" not in line
    ]
    other = PINNED.replace("a" * 64, "b" * 64)
    project.record(path, "base_image", other)
    assert project.load(path).base_image == other and path.read_text().count("base_image =") == 1
    with_table = in_tmp / "t.toml"
    with_table.write_text('image = "x:1"\n\n[extra]\nbase_image = "not ours"\n')
    with pytest.raises(ProjectError, match="unknown key 'extra'"):
        project.record(with_table, "base_image", PINNED)  # never writes what would not read back
    assert with_table.read_text() == 'image = "x:1"\n\n[extra]\nbase_image = "not ours"\n'


def test_a_project_pin_the_toolkit_cannot_run_with_is_exit_2_naming_both(in_tmp: Path, runner: CliRunner) -> None:
    (in_tmp / "requirements.in").write_text("scikit-learn\ntyper==0.25.0\n")
    done = runner.invoke(app, ["lock"])
    assert done.exit_code == 2
    last = done.output.strip().splitlines()[-1]
    assert "requirements.in:2: typer==0.25.0 conflicts with the toolkit's own requirement typer<0.25,>=0.9" in last
    assert not (in_tmp / "requirements.lock").exists()
    (in_tmp / "requirements.in").write_text("scikit-learn\n")
    with pytest.raises(UsageError, match="use NAME or NAME==VERSION"):
        compile_lock(in_tmp / "requirements.in", in_tmp / "x.lock", upgrade_packages=["not a name!"])


def test_an_unknown_debian_package_is_exit_2_before_any_download_or_build(in_tmp: Path, runner: CliRunner) -> None:
    (in_tmp / "toolkit.toml").write_text(f'base_image = "{PINNED}"\nsystem_packages = ["no-such-package-x1"]\n')
    (in_tmp / "requirements.lock").write_text("numpy==2.4.6 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    # No wheel is there to download and no engine is asked: the package name fails first.
    done = runner.invoke(app, ["image", "build", "--wheelhouse", str(in_tmp / "empty")])
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and "unknown Debian package 'no-such-package-x1' for" in lines[0]
    assert not (in_tmp / "empty").exists()


def test_the_toolkits_runtime_is_its_requirements_and_the_servers_without_host_extras() -> None:
    needs = toolkit_requirements()
    names = {n.split(">")[0].split("<")[0].split(";")[0].split("=")[0] for n in needs}
    assert {"scikit-learn", "click", "typer", "joblib"} <= names
    # `toolkit image serve` runs the server in the project's image: its packages are the image's.
    assert {"uvicorn", "starlette", "prometheus-client"} <= names
    assert not names & {"docker", "pip-tools", "matplotlib", "psycopg", "pyarrow"}
    assert not any("extra" in n for n in needs)


def test_a_lock_is_data_and_changes_are_named() -> None:
    good = "# header\na==1.0 \\\n    --hash=sha256:" + "1" * 64 + "\n    # via b\nb==2.0\n"
    check_lock_is_data(good, where="x.lock")
    for bad in ("--index-url https://evil.example/simple\n", "-e .\n", "a @ https://x/a.whl\n", "a>=1\n"):
        with pytest.raises(UsageError, match="a lock is data"):
            check_lock_is_data(good + bad, where="x.lock")
    changes = lock_changes(good, "a==1.1\nc==3\n")
    assert changes.added == (("c", "3"),) and changes.removed == (("b", "2.0"),)
    assert changes.moved == (("a", "1.0", "1.1"),)


def test_image_pin_records_base_image_in_toolkit_toml(in_tmp: Path, runner: CliRunner) -> None:
    project.init(in_tmp)
    (in_tmp / "sub").mkdir()
    os.chdir(in_tmp / "sub")  # found by walking up
    done = runner.invoke(app, ["image", "pin", PINNED])
    assert done.exit_code == 0, done.output
    assert project.load(in_tmp / "toolkit.toml").base_image == PINNED
    assert not (in_tmp / "sub" / ".cache").exists()  # the project's file, not a stray pin file
    assert "recorded base_image in" in done.output
