"""toolkit.docker without an engine: validation, base resolution, the build context, errors."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker
import pytest
import requests
from _docker_support import swap_pin
from typer.testing import CliRunner

import toolkit
from toolkit import docker as tdocker
from toolkit.cli import app
from toolkit.docker import client as dclient
from toolkit.docker import context as dcontext
from toolkit.docker import images as dimages
from toolkit.docker import jobs as djobs
from toolkit.docker.selfwheel import build_self_wheel
from toolkit.errors import DockerError, IntegrityError, RegistryError, ToolkitError, UsageError

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
    with pytest.raises(UsageError, match=r"no wheel for numpy==2\.4\.6 from"):
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
    toolkit_wheel = build_self_wheel(tmp_path / "dist")
    deb = tmp_path / "libgomp1_12.2.0-14+deb12u1_amd64.deb"
    deb.write_bytes(b"deb bytes")
    buffer = io.BytesIO()
    dcontext.write_context(
        buffer, lock=lock, wheels=[link], toolkit_wheel=toolkit_wheel, debs=[deb], system_manifest=b"[1]\n"
    )
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar:
        names = tar.getnames()
        assert tar.extractfile("requirements.lock").read() == lock.read_bytes()  # type: ignore[union-attr]
        # A symlinked wheel goes in as the wheel's bytes.
        assert tar.extractfile(f"wheelhouse/{wheel.name}").read() == b"wheel bytes"  # type: ignore[union-attr]
        assert tar.extractfile("system/system-packages.json").read() == b"[1]\n"  # type: ignore[union-attr]
        # The Dockerfile is the package's own, wherever the command runs.
        assert tar.extractfile("Dockerfile").read() == (REPO / "toolkit/docker/Dockerfile").read_bytes()  # type: ignore[union-attr]
    assert set(names) == {
        "Dockerfile",
        "requirements.lock",
        f"wheelhouse/{wheel.name}",
        f"dist/{toolkit_wheel.name}",
        f"system/{deb.name}",
        "system/system-packages.json",
    }


def test_self_wheel_holds_the_package_and_its_data_and_is_reproducible(tmp_path: Path) -> None:
    import zipfile

    first = build_self_wheel(tmp_path / "a")
    second = build_self_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()  # same toolkit, same bytes: the build cache holds
    with zipfile.ZipFile(first) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"toolkit-{toolkit.__version__}.dist-info/entry_points.txt").decode()
    assert {"toolkit/__init__.py", "toolkit/py.typed", "toolkit/docker/Dockerfile", "toolkit/docker/base.sh"} <= names
    assert "toolkit = toolkit.cli:main" in entry_points
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


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
    assert text.index("COPY wheelhouse/") < text.index("COPY dist/")


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


def test_swap_pin_replaces_exactly_one_block(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    wheel.write_bytes(b"x")
    lock = (
        "a==1 \\\n    --hash=sha256:" + "1" * 64 + "\nb==2 \\\n    --hash=sha256:" + "2" * 64 + " \\\n"
        "    --hash=sha256:" + "3" * 64 + "\n    # via x\nc==3 \\\n    --hash=sha256:" + "4" * 64 + "\n"
    )
    swapped = swap_pin(lock, "b", "9", wheel)
    assert swapped == lock.replace(
        "b==2 \\\n    --hash=sha256:" + "2" * 64 + " \\\n    --hash=sha256:" + "3" * 64 + "\n",
        "b==9 \\\n    --hash=sha256:" + hashlib.sha256(b"x").hexdigest() + "\n",
    )
    with pytest.raises(AssertionError, match="not found once"):
        swap_pin(lock, "zzz", "1", wheel)


# --- the SDK seam, faked: exit codes and error paths without an engine ----------------------


class FakeContainer:
    def __init__(self, owner: FakeClient, *, status: dict[str, Any], output: list[tuple[bytes | None, bytes | None]]):
        self.owner, self.status, self.output = owner, status, output
        self.removed = False

    def attach(self, **_: Any) -> Iterator[tuple[bytes | None, bytes | None]]:
        for chunk in self.output:
            if isinstance(chunk, BaseException):
                raise chunk
            yield chunk

    def start(self) -> None:
        self.owner.calls.append("start")

    def wait(self) -> dict[str, Any]:
        return self.status

    def remove(self, force: bool = False) -> None:
        self.removed = force


class FakeClient:
    """Just the calls toolkit.docker.client makes, with scripted answers."""

    def __init__(
        self,
        *,
        images: dict[str, dict[str, Any]] | None = None,
        build_log: list[dict[str, Any]] | None = None,
        status: dict[str, Any] | None = None,
        output: list[Any] | None = None,
        create_error: Exception | None = None,
        registry_digest: str | None = None,
    ) -> None:
        self.known = images if images is not None else {"toolkit:fake": {}}
        self.build_log = build_log or []
        self.status = status if status is not None else {"StatusCode": 0}
        self.output = output or []
        self.create_error = create_error
        self.registry_digest = registry_digest
        self.calls: list[Any] = []
        self.containers_made: list[FakeContainer] = []
        self.api = SimpleNamespace(build=self._build)
        self.images = SimpleNamespace(get=self._get_image, get_registry_data=self._registry_data)
        self.containers = SimpleNamespace(create=self._create)
        self.closed = False

    def ping(self) -> bool:
        raise requests.exceptions.ConnectionError("Connection aborted.")

    def close(self) -> None:
        self.closed = True

    def _build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        self.calls.append(("build", kwargs))
        yield from self.build_log

    def _get_image(self, name: str) -> Any:
        if name not in self.known:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return SimpleNamespace(id="sha256:" + "c" * 64, attrs=self.known[name])

    def _registry_data(self, name: str) -> Any:
        if self.registry_digest is None:
            raise docker.errors.APIError("manifest unknown")
        return SimpleNamespace(id=self.registry_digest)

    def _create(self, image: str, **kwargs: Any) -> FakeContainer:
        self.calls.append(("create", image, kwargs))
        if self.create_error is not None:
            raise self.create_error
        container = FakeContainer(self, status=self.status, output=self.output)
        self.containers_made.append(container)
        return container


@pytest.fixture
def use_client(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeClient], FakeClient]:
    """Every connect() in the library hands out the given fake."""

    def use(fake: FakeClient) -> FakeClient:
        for module in (dclient, djobs):
            monkeypatch.setattr(module, "connect", lambda: fake)
        return fake

    return use


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_connect_closes_the_client_when_the_engine_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient()
    monkeypatch.setattr(docker, "from_env", lambda **_: fake)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")  # no unix-socket probe: the SDK is asked
    with pytest.raises(DockerError, match=r"^no Docker engine answers at tcp://127\.0\.0\.1:1 .*Connection aborted"):
        tdocker.connect()
    assert fake.closed


def test_engine_down_is_exit_5_for_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wheelhouse: tuple[Path, Path]
) -> None:
    lock, wheels = wheelhouse
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/gone.sock")
    result = CliRunner().invoke(
        app,
        [
            "image",
            "build",
            "--base-image",
            PINNED,
            "--context",
            str(REPO),
            "--lock",
            str(lock),
            "--wheelhouse",
            str(wheels),
            "-q",
        ],
    )
    assert result.exit_code == 5
    assert _one_error_line(result.output).startswith(f"error: no Docker engine answers at unix://{tmp_path}/gone.sock")


@pytest.fixture
def wheelhouse(tmp_path: Path) -> tuple[Path, Path]:
    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    (wheels / "typing_extensions-4.16.0-py3-none-any.whl").write_bytes(b"w")
    return _lock(tmp_path, {"typing-extensions": "4.16.0"}), wheels


def test_build_failure_is_exit_5_with_the_log_tail(
    use_client: Callable[[FakeClient], FakeClient], wheelhouse: tuple[Path, Path]
) -> None:
    lock, wheels = wheelhouse
    fake = use_client(
        FakeClient(
            build_log=[
                {"stream": "Step 9/20 : RUN pip install ...\n"},
                {"stream": " ---> Running in 0123456789ab\n"},
                {"stream": "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"},
                {"stream": "    numpy==2.4.6 from file:///tmp/build/wheelhouse/numpy.whl\n"},
                {"error": "The command '/bin/sh -c pip install' returned a non-zero code: 1",
                 "errorDetail": {"message": "The command '/bin/sh -c pip install' returned a non-zero code: 1"}},
            ]
        )
    )  # fmt: skip
    args = ["image", "build", "--base-image", PINNED, "--context", str(REPO), "--lock", str(lock)]
    result = CliRunner().invoke(app, [*args, "--wheelhouse", str(wheels), "--tag", "toolkit:fake", "-q"])
    assert result.exit_code == 5, result.output
    line = _one_error_line(result.output)
    assert line.startswith(
        "error: image build failed: The command '/bin/sh -c pip install' returned a non-zero code: 1"
    )
    assert "DO NOT MATCH THE HASHES" in line and "numpy==2.4.6" in line
    assert "Running in" not in line and "Step 9/20" not in line  # the builder's chatter is left out
    (_, kwargs) = fake.calls[0]
    assert kwargs["network_mode"] == "none" and kwargs["pull"] is False and kwargs["tag"] == "toolkit:fake"
    assert kwargs["buildargs"]["BASE_IMAGE"] == PINNED and kwargs["buildargs"]["BASE_DIGEST"] == DIGEST
    assert kwargs["buildargs"]["LOCK_SHA256"] == hashlib.sha256(lock.read_bytes()).hexdigest()


def test_build_reports_the_dockerfiles_own_refusal(
    use_client: Callable[[FakeClient], FakeClient], wheelhouse: tuple[Path, Path]
) -> None:
    lock, wheels = wheelhouse
    use_client(
        FakeClient(
            build_log=[
                {"stream": "error: LOCK_SHA256 must be the sha256 of requirements.lock (ab), got 'cd'\n"},
                {"error": "The command returned a non-zero code: 1"},
            ]
        )
    )
    with pytest.raises(DockerError) as caught:
        tdocker.build_image(base_image=PINNED, context=REPO, lock=lock, wheelhouse=wheels)
    assert str(caught.value) == "image build failed: LOCK_SHA256 must be the sha256 of requirements.lock (ab), got 'cd'"


def test_build_returns_the_image_id(
    use_client: Callable[[FakeClient], FakeClient], wheelhouse: tuple[Path, Path]
) -> None:
    lock, wheels = wheelhouse
    use_client(FakeClient(build_log=[{"stream": "Step 1/2\n"}, {"aux": {"ID": "sha256:" + "d" * 64}}]))
    result = tdocker.build_image(base_image=PINNED, tag="toolkit:fake", context=REPO, lock=lock, wheelhouse=wheels)
    assert result.image_id == "sha256:" + "d" * 64 and result.base_image == PINNED and result.tag == "toolkit:fake"


def _artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(mode=0o755)
    artifact = folder / "m-1.0.0.joblib"
    artifact.write_bytes(b"x")
    (folder / "m-1.0.0.card.json").write_text("{}")
    for path in folder.iterdir():
        path.chmod(0o644)
    return artifact


@pytest.mark.parametrize("code", [0, 1, 3])
def test_check_keeps_the_gates_exit_code_and_output(
    use_client: Callable[[FakeClient], FakeClient], tmp_path: Path, code: int
) -> None:
    fake = use_client(FakeClient(status={"StatusCode": code}, output=[(b"gate says hi\n", None), (None, b"warn\n")]))
    artifact = _artifact(tmp_path)
    result = CliRunner().invoke(app, ["image", "check", str(artifact), "--image", "toolkit:fake", "--json"])
    assert result.exit_code == code
    assert "gate says hi" in result.stdout
    (_, image, kwargs) = fake.calls[0]
    assert image == "toolkit:fake"
    assert kwargs["command"] == ["check-env", "/artifact/m-1.0.0.joblib", "--policy", "strict", "--json"]
    assert kwargs["network_mode"] == "none" and kwargs["read_only"] is True
    assert kwargs["volumes"] == {str(artifact.parent): {"bind": "/artifact", "mode": "ro"}}
    assert [c.removed for c in fake.containers_made] == [True]


def test_check_takes_a_registry_reference_and_mounts_the_registered_copy(
    use_client: Callable[[FakeClient], FakeClient], tmp_path: Path, base_artifact: Path
) -> None:
    from toolkit.registry import Registry

    with Registry(tmp_path / "reg") as reg:
        entry = reg.add(base_artifact)
        reg.promote("iris", "1.0.0")
    fake = use_client(FakeClient(status={"StatusCode": 0}, output=[(b"MATCH\n", None)]))
    result = CliRunner().invoke(
        app, ["image", "check", "iris@production", "--image", "toolkit:fake", "--registry", str(tmp_path / "reg")]
    )
    assert result.exit_code == 0, result.output
    (_, _, kwargs) = fake.calls[0]
    assert kwargs["command"][:2] == ["check-env", "/artifact/iris-1.0.0.joblib"]
    assert kwargs["volumes"] == {str(entry.path.parent): {"bind": "/artifact", "mode": "ro"}}


def test_check_killed_container_is_exit_5(use_client: Callable[[FakeClient], FakeClient], tmp_path: Path) -> None:
    fake = use_client(FakeClient(status={"StatusCode": 137}))
    result = CliRunner().invoke(app, ["image", "check", str(_artifact(tmp_path)), "--image", "toolkit:fake"])
    assert result.exit_code == 5
    assert (
        _one_error_line(result.output)
        == "error: check-env in toolkit:fake ended with exit code 137 (killed or crashed)"
    )
    assert [c.removed for c in fake.containers_made] == [True]


def test_unknown_image_is_exit_5_before_any_container(
    use_client: Callable[[FakeClient], FakeClient], tmp_path: Path
) -> None:
    fake = use_client(FakeClient(images={}))
    result = CliRunner().invoke(app, ["image", "check", str(_artifact(tmp_path)), "--image", "toolkit:nope"])
    assert result.exit_code == 5
    assert _one_error_line(result.output) == (
        "error: image toolkit:nope not found: build it first (`make image` or `toolkit image build`)"
    )
    assert fake.calls == []


def test_engine_error_on_create_is_exit_5(use_client: Callable[[FakeClient], FakeClient], tmp_path: Path) -> None:
    use_client(
        FakeClient(create_error=docker.errors.APIError("500 Server Error", explanation="no space left on device"))
    )
    result = CliRunner().invoke(app, ["image", "check", str(_artifact(tmp_path)), "--image", "toolkit:fake"])
    assert result.exit_code == 5
    assert _one_error_line(result.output) == "error: run toolkit:fake: no space left on device"


def test_engine_gone_mid_run_is_exit_5_and_the_container_is_removed(
    use_client: Callable[[FakeClient], FakeClient], tmp_path: Path
) -> None:
    broken = requests.exceptions.ConnectionError("Connection aborted.")
    fake = use_client(FakeClient(output=[(b"partial\n", None), broken]))
    result = CliRunner().invoke(app, ["image", "check", str(_artifact(tmp_path)), "--image", "toolkit:fake"])
    assert result.exit_code == 5
    assert result.output.splitlines()[-1] == (
        "error: run toolkit:fake: the Docker engine stopped answering (Connection aborted.)"
    )
    assert [c.removed for c in fake.containers_made] == [True]


def test_engine_reported_container_error_is_exit_5(
    use_client: Callable[[FakeClient], FakeClient], tmp_path: Path
) -> None:
    use_client(FakeClient(status={"StatusCode": 0, "Error": {"Message": "oom"}}))
    with pytest.raises(DockerError, match=r"^container of toolkit:fake failed: "):
        tdocker.check_in_container("toolkit:fake", _artifact(tmp_path))


@pytest.mark.parametrize(
    ("code", "error"), [(2, UsageError), (3, IntegrityError), (4, RegistryError), (137, DockerError)]
)
def test_train_keeps_a_toolkit_exit_code_and_maps_the_rest_to_docker(
    use_client: Callable[[FakeClient], FakeClient], tmp_path: Path, code: int, error: type[ToolkitError]
) -> None:
    fake = use_client(FakeClient(status={"StatusCode": code}))
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(error, match=f"failed with exit code {code}") as caught:
        tdocker.train_in_container("toolkit:fake", ["--model", "x"], staging=staging, workdir=tmp_path)
    assert type(caught.value) is error and caught.value.exit_code == (5 if code == 137 else code)
    (_, _, kwargs) = fake.calls[0]
    assert kwargs["command"] == ["train", "--out", "/out", "--no-register", "--model", "x"]


def test_train_command_is_built_in_the_library(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    command = tdocker.train_command(config=config, dataset="data/x.csv", model="random_forest", extra=["--seed", "1"])
    assert command.args == (
        "--config",
        str(config),
        "--dataset",
        "data/x.csv",
        "--model",
        "random_forest",
        "--seed",
        "1",
    )
    assert command.inputs == (config, Path("data/x.csv"))
    assert tdocker.train_command(dataset="builtin:credit").inputs == ()


def test_pin_reference_with_a_fake_engine(use_client: Callable[[FakeClient], FakeClient]) -> None:
    local = {"RepoDigests": [f"127.0.0.1:5000/python-base@{DIGEST}", f"other/name@sha256:{'ef' * 32}"]}
    use_client(FakeClient(images={"127.0.0.1:5000/python-base:bookworm": local}))
    assert tdocker.pin_reference("127.0.0.1:5000/python-base:bookworm") == PINNED
    use_client(FakeClient(images={}, registry_digest=DIGEST))
    assert tdocker.pin_reference("python:3.11-slim") == f"python@{DIGEST}"
    use_client(FakeClient(images={}))
    with pytest.raises(DockerError, match=r"^python:3\.11-slim: no such image here, and its registry does not know"):
        tdocker.pin_reference("python:3.11-slim")
    use_client(FakeClient(images={"python:3.11-slim": {"RepoDigests": []}}))
    with pytest.raises(DockerError, match="has no repository digest"):
        tdocker.pin_reference("python:3.11-slim")


# --- the base image's Debian mirror comes from the machine's apt sources ------------------------


def _debian_mirror(root: Path, suite: str = "bookworm") -> subprocess.CompletedProcess[str]:
    script = REPO / "toolkit" / "docker" / "debian_mirror.py"
    return subprocess.run(
        [sys.executable, str(script), suite, "--root", str(root)], capture_output=True, text=True, check=False
    )


def test_debian_mirror_reads_deb822_sources_in_apt_order(tmp_path: Path) -> None:
    listd = tmp_path / "etc" / "apt" / "sources.list.d"
    listd.mkdir(parents=True)
    (listd / "a-off.sources").write_text(
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n"
    )
    (listd / "b.sources").write_text(
        "Types: deb\n# a comment line\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb-src deb\nURIs:\n http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    (listd / "c.list.disabled").write_text("deb http://ignored.example/debian bookworm main\n")
    done = _debian_mirror(tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "http://mirror.example/debian\n", "")


def test_debian_mirror_reads_one_line_sources_and_says_when_there_is_none(tmp_path: Path) -> None:
    apt = tmp_path / "etc" / "apt"
    apt.mkdir(parents=True)
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian bookworm main non-free\n"
    )
    done = _debian_mirror(tmp_path)
    assert (done.returncode, done.stdout) == (0, "https://mirror.example/debian\n")
    done = _debian_mirror(tmp_path, "trixie")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"no `deb` source for trixie main in {apt}; set DEBIAN_MIRROR\n"


def test_base_script_names_no_mirror_host() -> None:
    # `make base` must work behind any mirror: the host comes from apt or DEBIAN_MIRROR only.
    text = (REPO / "toolkit" / "docker" / "base.sh").read_text()
    assert "debian.org" not in text and "MIRROR=${DEBIAN_MIRROR:-}" in text


def test_every_container_is_told_its_image_tag_and_id() -> None:
    # Card schema 3 records environment.image from these two: the host sets them on every run.
    fake = FakeClient()
    dclient.run(fake, "toolkit:fake", ["check-env", "/artifact/m.joblib"], environment={"X": "1"})
    (_, image, kwargs) = next(c for c in fake.calls if c[0] == "create")
    assert image == "toolkit:fake"
    assert kwargs["environment"] == {
        "TOOLKIT_IMAGE": "toolkit:fake",
        "TOOLKIT_IMAGE_ID": "sha256:" + "c" * 64,
        "X": "1",
    }


def test_system_packages_manifest_and_apt_candidate() -> None:
    from toolkit.docker import system

    packages = [system.SystemPackage(name="zlib1g", version="1:1.2.13"), system.SystemPackage(name="a0", version="1")]
    assert json.loads(system.manifest(packages)) == [
        {"name": "a0", "version": "1"},
        {"name": "zlib1g", "version": "1:1.2.13"},
    ]
    policy = "libgomp1:\n  Installed: (none)\n  Candidate: 12.2.0-14+deb12u1\n  Version table:\n"
    assert system._candidate(policy) == "12.2.0-14+deb12u1"
    assert system._candidate("x:\n  Installed: (none)\n  Candidate: (none)\n") is None
    assert system._candidate("") is None  # apt-cache policy prints nothing for an unknown name
    assert system.release_of('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n') == "bookworm"
    text = (REPO / "toolkit" / "docker" / "Dockerfile").read_text()
    assert "/opt/toolkit/system-packages.json" in text and "dpkg -i" in text
    assert text.index("dpkg -i") < text.index("USER toolkit")


# --- registry compare in the models' image (the job; the decision is tests/test_compare_in_image.py)


def test_compare_in_container_reads_the_registry_read_only_with_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    answer = {"name": "iris", "versions": ["1.0.0", "1.1.0"]}
    fake = FakeClient(output=[(json.dumps(answer).encode(), b"a warning\n")])
    said: list[bytes] = []
    got = djobs.compare_in_container(
        "toolkit:fake", Path("models"), ["iris", "1.0.0", "1.1.0"], on_output=lambda _, c: said.append(c), client=fake
    )
    assert got == answer and said == [b"a warning\n"]  # stdout is the answer, never passed on
    (_, image, kwargs) = next(c for c in fake.calls if c[0] == "create")
    assert image == "toolkit:fake"
    assert kwargs["command"] == ["registry", "compare", "iris", "1.0.0", "1.1.0", "--registry", "/registry", "--json"]
    assert kwargs["volumes"] == {
        str(tmp_path / "models"): {"bind": "/registry", "mode": "ro"},
        str(tmp_path): {"bind": "/work", "mode": "ro"},
    }
    assert (kwargs["network_mode"], kwargs["read_only"], kwargs["cap_drop"]) == ("none", True, ["ALL"])
    assert kwargs["security_opt"] == ["no-new-privileges"] and kwargs["working_dir"] == "/work"


@pytest.mark.parametrize(
    ("status", "stdout", "raised", "message"),
    [
        (
            4,
            {"ok": False, "exit_code": 4, "error": "no model named 'x' in the registry /registry"},
            RegistryError,
            "no model named 'x' in the registry models",
        ),
        (1, {"ok": False, "exit_code": 1, "error": "environment mismatch"}, ToolkitError, "environment mismatch"),
        (137, None, DockerError, "compare in toolkit:fake ended with exit code 137 and no JSON answer"),
        (137, {"error": "x"}, DockerError, "compare in toolkit:fake ended with exit code 137 (killed or crashed)"),
        (0, ["not", "an", "object"], DockerError, "compare in toolkit:fake ended with exit code 0 and no JSON answer"),
    ],
)
def test_compare_in_container_raises_the_containers_error_as_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int, stdout: Any, raised: type[Exception], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    printed = b"" if stdout is None else json.dumps(stdout).encode()
    fake = FakeClient(status={"StatusCode": status}, output=[(printed, None)])
    with pytest.raises(raised) as caught:
        djobs.compare_in_container("toolkit:fake", Path("models"), ["x", "1", "2"], client=fake)
    assert type(caught.value) is raised and str(caught.value) == message


def test_stdout_into_keeps_the_answer_bounded_and_passes_the_rest_on() -> None:
    from toolkit.docker import stdout_into

    answer, others = bytearray(), []
    route = stdout_into(answer, lambda stream, chunk: others.append((stream, chunk)), limit=5)
    for stream, chunk in (("stdout", b"abc"), ("stderr", b"warn"), ("stdout", b"defgh"), ("stdout", b"ij")):
        route(stream, chunk)
    assert bytes(answer) == b"abcde"  # at most the limit, the rest dropped
    assert others == [("stderr", b"warn")]
    unbounded = bytearray()
    quiet = stdout_into(unbounded)
    quiet("stdout", b"x" * 10)
    quiet("stderr", b"dropped")  # no one to pass it to
    assert bytes(unbounded) == b"x" * 10
