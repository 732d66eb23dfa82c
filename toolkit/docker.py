"""Docker, through the docker SDK: build the pinned image, pin a base, train and gate in it.

Every docker SDK or connection error leaves this module as a one-line ``DockerError``
(exit 5). Builds and runs have the network switched off (``network_mode="none"``): the
wheelhouse makes the build hermetic, and nothing a container does needs the network.
The core never prints: progress and container output go to the callbacks the caller passes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from toolkit.errors import DockerError, IntegrityError, RegistryError, ToolkitError, UsageError
from toolkit.fingerprint import BASE_IMAGE_RE

__all__ = [
    "DEFAULT_BASE_FILE",
    "DEFAULT_IMAGE",
    "ENV_BASE_IMAGE",
    "ENV_IMAGE",
    "IMAGE_UID",
    "BuildResult",
    "Mount",
    "RunResult",
    "build_image",
    "check_in_container",
    "connect",
    "lock_sha256",
    "pin_reference",
    "resolve_base_image",
    "resolve_image",
    "run_in_container",
    "train_in_container",
    "validate_base_image",
    "write_pin",
]

DEFAULT_IMAGE = "toolkit:latest"
ENV_IMAGE = "TOOLKIT_IMAGE"  # the image `image train|check` use when --image is not given
ENV_BASE_IMAGE = "BASE_IMAGE"  # the base `image build` uses when --base-image is not given
DEFAULT_BASE_FILE = Path(".cache/base-image")  # written by `make base` and `toolkit image pin`
IMAGE_UID = 10001  # the image's non-root user `toolkit` (see the Dockerfile)

OutputCallback = Callable[[str, bytes], None]  # ("stdout" | "stderr", chunk)

_PIN_HINT = "name@sha256:<64 hex> (run `make base`, or `toolkit image pin REF` for an image you have)"
# Lines our Dockerfile prints when it refuses a build argument.
_DOCKERFILE_ERROR = re.compile(r"^error: .+")
_INNER_ERRORS: dict[int, type[ToolkitError]] = {
    ToolkitError.exit_code: ToolkitError,
    UsageError.exit_code: UsageError,
    IntegrityError.exit_code: IntegrityError,
    RegistryError.exit_code: RegistryError,
}
_LOCK_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildResult:
    """A built image and what it was built from."""

    tag: str
    image_id: str
    base_image: str
    lock_sha256: str
    revision: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "image_id": self.image_id,
            "base_image": self.base_image,
            "lock_sha256": self.lock_sha256,
            "revision": self.revision,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Mount:
    """A host path bound into a container."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResult:
    """How a container run ended."""

    exit_code: int
    seconds: float


def connect() -> Any:
    """A docker client for the engine the environment points at (DOCKER_HOST, else the local socket).

    Raises: DockerError when the SDK is missing or no engine answers.
    """
    docker = _sdk()
    try:
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
    except Exception as e:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise DockerError(
            f"no Docker engine answers at {where} (start one: scripts/engine.sh start): {_one_line(e)}"
        ) from e
    return client


def validate_base_image(ref: str) -> str:
    """Return ``ref`` if it is pinned by digest (``name@sha256:<64 hex>``). Raises: UsageError."""
    if not BASE_IMAGE_RE.match(ref or ""):
        raise UsageError(f"BASE_IMAGE must be pinned by digest as {_PIN_HINT}; got {ref!r}")
    return ref


def resolve_base_image(cli_value: str | None, *, base_file: Path = DEFAULT_BASE_FILE) -> str:
    """The base: ``--base-image``, else ``$BASE_IMAGE``, else the file ``make base`` wrote; validated.

    Raises: UsageError when none is given or it is not pinned by digest.
    """
    if cli_value:
        return validate_base_image(cli_value.strip())
    env = os.environ.get(ENV_BASE_IMAGE, "").strip()
    if env:
        return validate_base_image(env)
    try:
        pinned = base_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(
            f"no base image: pass --base-image {_PIN_HINT.split(' (')[0]}, set BASE_IMAGE, "
            f"or run `make base` (it writes {base_file})"
        ) from None
    except OSError as e:
        raise UsageError(f"{base_file}: cannot read the pinned base image ({e.strerror or e})") from e
    return validate_base_image(pinned)


def resolve_image(cli_value: str | None) -> str:
    """The image to run: ``--image``, else ``$TOOLKIT_IMAGE``, else ``toolkit:latest``."""
    return cli_value or os.environ.get(ENV_IMAGE) or DEFAULT_IMAGE


def lock_sha256(path: Path) -> str:
    """The sha256 of a lock file, as the image records it. Raises: UsageError."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the lock file ({e.strerror or e})") from e


def pin_reference(ref: str, *, client: Any | None = None) -> str:
    """Resolve an image reference (a tag) to ``name@sha256:<digest>``.

    A local image's repository digest wins (it is what a build would use); otherwise the
    registry the name points at is asked, without pulling.
    Raises: UsageError (malformed), DockerError (unknown, no digest, engine unreachable).
    """
    ref = ref.strip()
    if "@" in ref:
        return validate_base_image(ref)
    if not ref or any(c.isspace() for c in ref):
        raise UsageError(f"not an image reference: {ref!r}")
    docker = _sdk()
    client = client or connect()
    repository = _repository(ref)
    with _translated(f"pin {ref}"):
        try:
            image = client.images.get(ref)
        except docker.errors.ImageNotFound:
            image = None
        if image is not None:
            for digest_ref in image.attrs.get("RepoDigests") or []:
                name, _, digest = digest_ref.partition("@")
                if _repository(name) == repository and digest:
                    return validate_base_image(f"{_name_of(ref)}@{digest}")
        try:
            data = client.images.get_registry_data(ref)
        except docker.errors.APIError as e:
            if image is not None:
                raise DockerError(
                    f"{ref} has no repository digest and its registry does not answer: push it to a "
                    f"registry first (`make base` does), or pass name@sha256:<digest>"
                ) from e
            raise DockerError(f"{ref}: no such image here, and its registry does not know it ({_one_line(e)})") from e
    return validate_base_image(f"{_name_of(ref)}@{data.id}")


def write_pin(ref: str, path: Path = DEFAULT_BASE_FILE) -> Path:
    """Write a pinned reference where the build reads it (atomically). Raises: UsageError."""
    validate_base_image(ref)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(ref + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise UsageError(f"{path}: cannot write the pinned base image ({e.strerror or e})") from e
    return path


def build_image(
    *,
    base_image: str,
    tag: str = DEFAULT_IMAGE,
    context: Path = Path(),
    lock: Path | None = None,
    wheelhouse: Path | None = None,
    revision: str | None = None,
    no_cache: bool = False,
    on_progress: Callable[[str], None] | None = None,
    client: Any | None = None,
) -> BuildResult:
    """Build the image from ``context`` (the repository root) with the network off.

    The build context is assembled here, not read from the directory: the Dockerfile,
    the lock (``lock`` may live anywhere), only the wheels the lock pins, and the package.
    Raises: UsageError (unpinned base, missing lock, Dockerfile or wheels), DockerError.
    """
    validate_base_image(base_image)
    lock = lock or context / "requirements.lock"
    wheelhouse = wheelhouse or context / "wheelhouse"
    lock_hash = lock_sha256(lock)
    revision = revision or _git_revision(context)
    wheels = _locked_wheels(lock, wheelhouse)
    client = client or connect()
    started = time.monotonic()
    with tempfile.TemporaryFile(prefix="toolkit-context-") as fileobj:
        _write_context(fileobj, context=context, lock=lock, wheels=wheels)
        fileobj.seek(0)
        image_id = _stream_build(
            client,
            fileobj,
            tag=tag,
            buildargs={
                "BASE_IMAGE": base_image,
                "BASE_DIGEST": base_image.rpartition("@")[2],
                "LOCK_SHA256": lock_hash,
                "REVISION": revision,
            },
            no_cache=no_cache,
            on_progress=on_progress,
        )
    return BuildResult(
        tag=tag,
        image_id=image_id,
        base_image=base_image,
        lock_sha256=lock_hash,
        revision=revision,
        seconds=time.monotonic() - started,
    )


def run_in_container(
    image: str,
    command: Sequence[str],
    *,
    mounts: Sequence[Mount] = (),
    user: str | None = None,
    environment: Mapping[str, str] | None = None,
    working_dir: str | None = None,
    on_output: OutputCallback | None = None,
    client: Any | None = None,
    entrypoint: Sequence[str] | None = None,
) -> RunResult:
    """Run ``image`` with ``command`` (its entry point is ``toolkit`` unless ``entrypoint`` says
    otherwise), network off, root fs read-only.

    Output is streamed to ``on_output`` as it comes; the container is removed afterwards,
    also when the caller is interrupted. Raises: DockerError (unknown image, engine error).
    """
    docker = _sdk()
    client = client or connect()
    started = time.monotonic()
    with _translated(f"run {image}"):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise DockerError(
                f"image {image} not found: build it first (`make image` or `toolkit image build`)"
            ) from None
        container = client.containers.create(
            image,
            command=list(command),
            entrypoint=None if entrypoint is None else list(entrypoint),
            user=user,
            environment=dict(environment or {}),
            working_dir=working_dir,
            volumes={str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts},
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=1g"},
            hostname="toolkit",  # a random hostname must never reach a card or a pickle
            labels={"org.toolkit.role": (entrypoint or command or [""])[0]},
        )
        try:
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            container.start()
            for out_chunk, err_chunk in stream:
                if on_output is not None:
                    if out_chunk:
                        on_output("stdout", out_chunk)
                    if err_chunk:
                        on_output("stderr", err_chunk)
            status = container.wait()
        finally:
            try:
                container.remove(force=True)
            except docker.errors.DockerException:
                pass  # already gone; the run's own outcome is what matters
    code = status.get("StatusCode", -1)
    if status.get("Error"):
        raise DockerError(f"container of {image} failed: {_one_line(status['Error'])}")
    return RunResult(exit_code=int(code), seconds=time.monotonic() - started)


def train_in_container(
    image: str,
    train_args: Sequence[str],
    *,
    staging: Path,
    workdir: Path = Path(),
    inputs: Sequence[Path] = (),
    on_output: OutputCallback | None = None,
    client: Any | None = None,
) -> Path:
    """Run ``toolkit train --out /out --no-register TRAIN_ARGS`` in ``image``; return the staged .joblib.

    ``staging`` (an empty host directory) is mounted at /out; ``workdir`` read-only at /work, so
    relative paths in the arguments and configs mean what they mean on the host; each path in
    ``inputs`` outside ``workdir`` is mounted read-only and rewritten in ``train_args``. The
    artifact files end up owned by the invoking user: a non-root invoker runs the container as
    itself; root runs it as the image's non-root user and gets the files handed back.
    Raises: DockerError (training failed in the container, engine error), UsageError.
    """
    workdir = workdir.resolve()
    staging = staging.resolve()
    args, mounts = _map_inputs(list(train_args), inputs, workdir)
    mounts = [Mount(source=workdir, target="/work"), Mount(source=staging, target="/out", read_only=False), *mounts]
    uid, gid = os.getuid(), os.getgid()
    environment = _run_environment()
    if uid == 0:
        user = f"{IMAGE_UID}:{IMAGE_UID}"
        os.chown(staging, IMAGE_UID, IMAGE_UID)
    else:
        user = f"{uid}:{gid}"
        environment["HOME"] = "/tmp"  # the image's home belongs to its own user
    try:
        result = run_in_container(
            image,
            ["train", "--out", "/out", "--no-register", *args],
            mounts=mounts,
            user=user,
            environment=environment,
            working_dir="/work",
            on_output=on_output,
            client=client,
        )
    finally:
        if uid == 0:
            _chown_tree(staging, 0, 0)
    if result.exit_code != 0:
        # A toolkit error inside keeps its meaning (a bad flag is still exit 2); anything else
        # (killed, out of memory, no entry point) is a failed Docker step.
        error = _INNER_ERRORS.get(result.exit_code, DockerError)
        raise error(f"training in {image} failed with exit code {result.exit_code} (the container's message is above)")
    found = sorted(staging.glob("*.joblib"))
    if len(found) != 1:
        raise DockerError(f"training in {image} left {len(found)} .joblib files in its output, expected 1")
    return found[0]


def check_in_container(
    image: str,
    artifact: Path,
    *,
    policy: str = "strict",
    as_json: bool = False,
    verify_predictions: bool = False,
    on_output: OutputCallback | None = None,
    client: Any | None = None,
) -> int:
    """Run ``toolkit check-env`` on ``artifact`` inside ``image``; return the gate's exit code.

    The artifact's directory is mounted read-only. Raises: DockerError when the container
    ends in a way the gate never does (killed, out of memory), UsageError for a missing artifact.
    """
    artifact = artifact.resolve()
    if not artifact.is_file():
        raise UsageError(f"{artifact}: no such artifact file")
    command = ["check-env", f"/artifact/{artifact.name}", "--policy", policy]
    if as_json:
        command.append("--json")
    if verify_predictions:
        command.append("--verify-predictions")
    uid = os.getuid()
    if uid == 0:
        _require_readable_by_image_user(artifact)
    result = run_in_container(
        image,
        command,
        mounts=[Mount(source=artifact.parent, target="/artifact")],
        user=None if uid == 0 else f"{uid}:{os.getgid()}",
        environment={"HOME": "/tmp"} if uid != 0 else {},
        on_output=on_output,
        client=client,
    )
    if not 0 <= result.exit_code <= 5:
        raise DockerError(f"check-env in {image} ended with exit code {result.exit_code} (killed or crashed)")
    return result.exit_code


# --- helpers -------------------------------------------------------------------------------


def _sdk() -> Any:
    try:
        import docker
    except ImportError as e:
        raise DockerError("the docker SDK for Python is not installed: pip install 'toolkit[docker]'") from e
    return docker


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn the SDK's and the transport's errors into one-line DockerErrors."""
    docker = _sdk()
    import requests

    try:
        yield
    except (DockerError, UsageError):
        raise
    except docker.errors.ImageNotFound as e:
        raise DockerError(f"{action}: image not found ({_one_line(e)})") from e
    except docker.errors.APIError as e:
        raise DockerError(f"{action}: {_one_line(e.explanation or e)}") from e
    except (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError) as e:
        raise DockerError(f"{action}: the Docker engine stopped answering ({_one_line(e)})") from e


def _stream_build(
    client: Any,
    fileobj: IO[bytes],
    *,
    tag: str,
    buildargs: Mapping[str, str],
    no_cache: bool,
    on_progress: Callable[[str], None] | None,
) -> str:
    image_id = ""
    refusal = ""  # our Dockerfile's own "error: ..." line, the clearest thing to report
    with _translated(f"build {tag}"):
        chunks = client.api.build(
            fileobj=fileobj,
            custom_context=True,
            tag=tag,
            buildargs=dict(buildargs),
            network_mode="none",
            pull=False,
            nocache=no_cache,
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in chunks:
            if "stream" in chunk:
                text = chunk["stream"]
                for line in text.splitlines():
                    if _DOCKERFILE_ERROR.match(line.strip()):
                        refusal = line.strip()
                if on_progress is not None and text:
                    on_progress(text)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                detail = refusal or _one_line(chunk.get("errorDetail", {}).get("message") or chunk["error"])
                raise DockerError(f"image build failed: {detail.removeprefix('error: ')}")
    if not image_id:
        with _translated(f"inspect {tag}"):
            image_id = client.images.get(tag).id
    return image_id


def _write_context(fileobj: IO[bytes], *, context: Path, lock: Path, wheels: Sequence[Path]) -> None:
    dockerfile = context / "Dockerfile"
    package = context / "toolkit"
    pyproject = context / "pyproject.toml"
    for needed in (dockerfile, pyproject, package):
        if not needed.exists():
            raise UsageError(f"{needed}: missing; run from the repository root (or pass --context)")
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        _add_file(tar, dockerfile, "Dockerfile")
        _add_file(tar, lock, "requirements.lock")
        _add_file(tar, pyproject, "pyproject.toml")
        readme = context / "README.md"
        if readme.is_file():
            _add_file(tar, readme, "README.md")
        for wheel in wheels:
            _add_file(tar, wheel, f"wheelhouse/{wheel.name}")
        for path in sorted(package.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                _add_file(tar, path, path.relative_to(context).as_posix())


def _add_file(tar: tarfile.TarFile, source: Path, arcname: str) -> None:
    # Always the file's bytes (a symlinked wheel is sent as the wheel), owned by root.
    try:
        st = source.stat()
        info = tarfile.TarInfo(arcname)
        info.size = st.st_size
        info.mtime = int(st.st_mtime)
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
        with source.open("rb") as f:
            tar.addfile(info, f)
    except OSError as e:
        raise UsageError(f"{source}: cannot read it for the build context ({e.strerror or e})") from e


def _locked_wheels(lock: Path, wheelhouse: Path) -> list[Path]:
    """The wheelhouse's files for exactly the lock's pins; names what is missing."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import InvalidVersion, Version

    try:
        text = lock.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{lock}: cannot read the lock file ({e.strerror or e})") from e
    pins: dict[str, Version] = {}
    for name, version in _LOCK_PIN.findall(text):
        try:
            pins[canonicalize_name(name)] = Version(version)
        except InvalidVersion as e:
            raise UsageError(f"{lock}: {name}=={version} is not a valid version") from e
    if not pins:
        raise UsageError(f"{lock}: no pinned requirements (name==version) found")
    if not wheelhouse.is_dir():
        raise UsageError(f"{wheelhouse}: no wheelhouse; run `make wheelhouse` first")
    chosen: dict[str, list[Path]] = {}
    for path in sorted(wheelhouse.glob("*.whl")):
        try:
            name, version, _, _ = parse_wheel_filename(path.name)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if pins.get(name) == version:
            chosen.setdefault(name, []).append(path)
    missing = sorted(f"{n}=={v}" for n, v in pins.items() if n not in chosen)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UsageError(f"{wheelhouse}: no wheel for {shown} from {lock}; run `make wheelhouse`")
    return [p for paths in chosen.values() for p in paths]


def _map_inputs(args: list[str], inputs: Sequence[Path], workdir: Path) -> tuple[list[str], list[Mount]]:
    """Rewrite host paths in ``args`` to container paths; mount those outside ``workdir``."""
    mounts: list[Mount] = []
    for index, path in enumerate(inputs):
        host = path.expanduser().resolve()
        if not host.exists():
            raise UsageError(f"{path}: no such file")
        try:
            inside = "/work/" + host.relative_to(workdir).as_posix()
        except ValueError:
            # Mount the folder, so a config's paths relative to its own folder still resolve.
            target = f"/in/{index}"
            mounts.append(Mount(source=host.parent, target=target))
            inside = f"{target}/{host.name}"
        args = [inside if a == str(path) else a for a in args]
    return args, mounts


def _run_environment() -> dict[str, str]:
    # The card's author is the person who ran the job, not the container's user, and its
    # created_at honours the caller's SOURCE_DATE_EPOCH (reproducible cards).
    from toolkit.identifiers import current_user

    environment = {"TOOLKIT_AUTHOR": current_user()}
    if os.environ.get("SOURCE_DATE_EPOCH"):
        environment["SOURCE_DATE_EPOCH"] = os.environ["SOURCE_DATE_EPOCH"]
    return environment


def _require_readable_by_image_user(artifact: Path) -> None:
    """Root runs the gate as the image's user: say so plainly instead of a confusing exit 3."""
    folder = artifact.parent
    for path, bits in ((folder, 0o005), *((p, 0o004) for p in folder.glob(f"{_stem(artifact)}.*"))):
        st = path.stat()
        if st.st_uid != IMAGE_UID and st.st_mode & bits != bits:
            raise UsageError(
                f"{path}: not readable by the image's user (uid {IMAGE_UID}); "
                f"make it world-readable (chmod o+r{'x' if path == folder else ''}) to check it in the image"
            )


def _stem(artifact: Path) -> str:
    name = artifact.name
    for suffix in (".card.json", ".card.md", ".joblib"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return artifact.stem


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _git_revision(context: Path) -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        done = subprocess.run(
            [git, "rev-parse", "HEAD"], cwd=context, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def _name_of(ref: str) -> str:
    """``host:5000/repo:tag`` -> ``host:5000/repo`` (a port is not a tag)."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def _repository(ref: str) -> str:
    """A name as the engine normalises it: ``python`` == ``docker.io/library/python``."""
    name = _name_of(ref)
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(prefix)
    return name.removeprefix("library/")


def _one_line(value: object) -> str:
    text = str(value).strip()
    return " ".join(text.split()) or type(value).__name__
