"""toolkit.docker without an engine: validation, base resolution, the build context, errors."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit import docker as tdocker
from toolkit.docker import context as dcontext
from toolkit.docker import images as dimages
from toolkit.docker import jobs as djobs
from toolkit.cli import app
from toolkit.errors import DockerError, UsageError

DIGEST = "sha256:" + "ab" * 32
PINNED = f"127.0.0.1:5000/python-base@{DIGEST}"
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("ref", "valid"),
    [
        (PINNED, True),
        (f"python@{DIGEST}", True),
        (f"docker.io/library/python@{DIGEST}", True),
        ("python:3.11-slim-bookworm", False),
        ("127.0.0.1:5000/python-base:bookworm", False),
        (f"python@sha256:{'ab' * 31}", False),  # 62 hex digits
        (f"python@sha256:{'AB' * 32}", False),  # digests are lower-case
        (f"python:3.11@{DIGEST} ", False),
        ("", False),
    ],
)
def test_validate_base_image(ref: str, valid: bool) -> None:
    if valid:
        assert tdocker.validate_base_image(ref) == ref
    else:
        with pytest.raises(UsageError, match="must be pinned by digest"):
            tdocker.validate_base_image(ref)


def test_resolve_base_image_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base_file = tmp_path / "base-image"
    monkeypatch.delenv("BASE_IMAGE", raising=False)
    with pytest.raises(UsageError, match="no base image"):
        tdocker.resolve_base_image(None, base_file=base_file)
    base_file.write_text(f"from-file@{DIGEST}\n")
    assert tdocker.resolve_base_image(None, base_file=base_file) == f"from-file@{DIGEST}"
    monkeypatch.setenv("BASE_IMAGE", f"from-env@{DIGEST}")
    assert tdocker.resolve_base_image(None, base_file=base_file) == f"from-env@{DIGEST}"
    assert tdocker.resolve_base_image(f"from-flag@{DIGEST}", base_file=base_file) == f"from-flag@{DIGEST}"
    monkeypatch.setenv("BASE_IMAGE", "debian:bookworm")
    with pytest.raises(UsageError, match="got 'debian:bookworm'"):
        tdocker.resolve_base_image(None, base_file=base_file)


@pytest.mark.parametrize(
    ("ref", "name", "repository"),
    [
        ("127.0.0.1:5000/python-base:bookworm", "127.0.0.1:5000/python-base", "127.0.0.1:5000/python-base"),
        ("127.0.0.1:5000/python-base", "127.0.0.1:5000/python-base", "127.0.0.1:5000/python-base"),
        ("python:3.11-slim", "python", "python"),
        ("docker.io/library/python:3.11", "docker.io/library/python", "python"),
        (f"python@{DIGEST}", "python", "python"),
    ],
)
def test_reference_names(ref: str, name: str, repository: str) -> None:
    assert dimages.name_of(ref) == name
    assert dimages.repository_of(ref) == repository


def test_pin_reference_keeps_a_pinned_ref_without_asking_docker() -> None:
    assert tdocker.pin_reference(f" {PINNED} ") == PINNED


def test_write_pin_is_validated_and_atomic(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "base-image"
    tdocker.write_pin(PINNED, target)
    assert target.read_text() == PINNED + "\n"
    assert [p.name for p in target.parent.iterdir()] == ["base-image"]
    with pytest.raises(UsageError):
        tdocker.write_pin("python:3.11", target)
    assert target.read_text() == PINNED + "\n"


def _lock(tmp_path: Path, pins: dict[str, str]) -> Path:
    lines = []
    for name, version in pins.items():
        lines += [f"{name}=={version} \\", f"    --hash=sha256:{'0' * 64}", "    # via -r requirements.in"]
    path = tmp_path / "requirements.lock"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_locked_wheels_takes_exactly_the_pinned_files(tmp_path: Path) -> None:
    lock = _lock(tmp_path, {"scikit-learn": "1.9.1", "typing-extensions": "4.16.0"})
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for name in (
        "scikit_learn-1.9.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        "scikit_learn-1.8.0-cp311-cp311-manylinux_2_28_x86_64.whl",  # another version: left out
        "typing_extensions-4.16.0-py3-none-any.whl",
        "not-a-wheel.whl",
    ):
        (wheelhouse / name).write_bytes(b"x")
    chosen = sorted(p.name for p in dcontext.locked_wheels(lock, wheelhouse))
    assert chosen == [
        "scikit_learn-1.9.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        "typing_extensions-4.16.0-py3-none-any.whl",
    ]


def test_locked_wheels_names_what_is_missing(tmp_path: Path) -> None:
    lock = _lock(tmp_path, {"numpy": "2.4.6"})
    (tmp_path / "wheelhouse").mkdir()
    with pytest.raises(UsageError, match=r"no wheel for numpy==2\.4\.6 .*make wheelhouse"):
        dcontext.locked_wheels(lock, tmp_path / "wheelhouse")
    with pytest.raises(UsageError, match="no wheelhouse"):
        dcontext.locked_wheels(lock, tmp_path / "absent")


def test_build_context_holds_only_what_the_dockerfile_copies(tmp_path: Path) -> None:
    wheel = tmp_path / "typing_extensions-4.16.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel bytes")
    link = tmp_path / "link" / wheel.name
    link.parent.mkdir()
    link.symlink_to(wheel)
    lock = tmp_path / "elsewhere.lock"
    lock.write_text("typing-extensions==4.16.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    buffer = io.BytesIO()
    dcontext.write_context(buffer, context=REPO, lock=lock, wheels=[link])
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        names = tar.getnames()
        assert tar.extractfile("requirements.lock").read() == lock.read_bytes()  # type: ignore[union-attr]
        # A symlinked wheel goes in as the wheel's bytes.
        assert tar.extractfile(f"wheelhouse/{wheel.name}").read() == b"wheel bytes"  # type: ignore[union-attr]
    assert {"Dockerfile", "pyproject.toml", "toolkit/__init__.py", "toolkit/docker/__init__.py", "toolkit/docker/client.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.startswith((".venv", "tests", ".git", "models"))]


def test_map_inputs_rewrites_paths_and_mounts_outside_ones(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "configs").mkdir(parents=True)
    inside = work / "configs" / "a.toml"
    inside.write_text("")
    outside = tmp_path / "data" / "b.csv"
    outside.parent.mkdir()
    outside.write_text("")
    args = ["--config", str(inside), "--dataset", str(outside), "--model", "random_forest"]
    mapped, mounts = djobs.map_inputs(args, [inside, outside], work)
    assert mapped == ["--config", "/work/configs/a.toml", "--dataset", "/in/1/b.csv", "--model", "random_forest"]
    assert mounts == [tdocker.Mount(source=outside.parent, target="/in/1", read_only=True)]
    with pytest.raises(UsageError, match="no such file"):
        djobs.map_inputs(["--config", "nope.toml"], [Path("nope.toml")], work)


def test_lock_sha256_matches_sha256sum(tmp_path: Path) -> None:
    path = tmp_path / "requirements.lock"
    path.write_bytes(b"a==1\n")
    assert tdocker.lock_sha256(path) == hashlib.sha256(b"a==1\n").hexdigest()


def test_dockerfile_pins_and_bakes_the_contract() -> None:
    text = (REPO / "Dockerfile").read_text()
    for needle in (
        "ARG BASE_IMAGE",
        "--require-hashes",
        "--no-index",
        "sha256sum",
        "TOOLKIT_BASE_IMAGE=${BASE_IMAGE}",
        "TOOLKIT_LOCK_SHA256=${LOCK_SHA256}",
        "TOOLKIT_IN_CONTAINER=1",
        "PYTHONHASHSEED=0",
        "org.opencontainers.image.base.name",
        "org.opencontainers.image.base.digest",
        "org.opencontainers.image.revision",
        "USER toolkit",
    ):
        assert needle in text, needle
    # Code after the wheels: a code change must not reinstall the locked packages.
    assert text.index("COPY wheelhouse/") < text.index("COPY toolkit/")


def test_cli_refuses_an_unpinned_base_before_docker(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["image", "build", "--base-image", "python:3.11-slim", "--context", str(REPO)])
    assert result.exit_code == 2
    assert "must be pinned by digest" in result.output
    assert "python:3.11-slim" in result.output


def test_no_engine_is_exit_5_and_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    with pytest.raises(DockerError, match="no Docker engine answers"):
        tdocker.connect()
    result = CliRunner().invoke(app, ["image", "pin", "python:3.11-slim", "--no-write"])
    assert result.exit_code == 5
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no Docker engine answers at unix://"), result.output


@pytest.mark.skipif(os.getuid() != 0, reason="only root runs the gate as the image's user")
def test_check_as_root_names_an_artifact_the_image_user_cannot_read(tmp_path: Path) -> None:
    artifact = tmp_path / "m-1.0.0.joblib"
    artifact.write_bytes(b"x")
    (tmp_path / "m-1.0.0.card.json").write_text("{}")
    tmp_path.chmod(0o755)
    artifact.chmod(0o600)
    with pytest.raises(UsageError, match=r"m-1\.0\.0\.joblib: not readable by the image's user \(uid 10001\)"):
        djobs.require_readable_by_image_user(artifact)
    artifact.chmod(0o644)
    djobs.require_readable_by_image_user(artifact)
    tmp_path.chmod(0o700)
    with pytest.raises(UsageError, match=r"chmod o\+rx"):
        djobs.require_readable_by_image_user(artifact)
