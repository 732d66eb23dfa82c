"""The docker SDK seam: connect, build from a tar, run a container, resolve a digest.

Every SDK or transport error leaves this module as a one-line ``DockerError`` (exit 5). Builds
and runs have the network switched off (``network_mode="none"``): the wheelhouse makes the build
hermetic, and nothing a container does needs the network. Each function takes the ``client``
it talks to, so unit tests pass a fake one.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from toolkit import env
from toolkit.docker.images import name_of, repository_of, validate_base_image
from toolkit.errors import DockerError, UsageError

__all__ = [
    "BUILD_LOG_LINES",
    "Mount",
    "OutputCallback",
    "RunResult",
    "build",
    "connect",
    "inspect_image_id",
    "pin_reference",
    "run",
    "stdout_into",
]

OutputCallback = Callable[[str, bytes], None]  # ("stdout" | "stderr", chunk)
BUILD_LOG_LINES = 5  # the last build-log lines a failed build's error carries

# Lines our Dockerfile prints when it refuses a build argument ("error: LOCK_SHA256 must be ...");
# pip's own "error: ..." lines are left to the log's tail.
_DOCKERFILE_ERROR = re.compile(r"^error: [A-Z][A-Z0-9_]* must .+")
# The classic builder's own bookkeeping lines say nothing about why a step failed.
_BUILDER_CHATTER = ("--->", "Removing intermediate container", "Step ")
_DEFAULT_HOST = "unix:///var/run/docker.sock"


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
    image_id: str = ""  # the ID of the image that ran (a tag can move; the ID names what was used)


def connect() -> Any:
    """A docker client for the engine the environment points at (DOCKER_HOST, else the local socket).

    Raises: DockerError when the SDK is missing or no engine answers (the client is closed then).
    """
    docker = _sdk()
    where = os.environ.get(env.DOCKER_HOST) or _DEFAULT_HOST
    client = None
    try:
        if where.startswith("unix://"):
            _probe_unix_socket(where.removeprefix("unix://"))
        client = docker.from_env(version="auto", timeout=120)
        client.ping()
    except Exception as e:
        if client is not None:
            # Its connection pool holds a socket: leaving it to the garbage collector leaks it.
            with suppress(Exception):
                client.close()
        raise DockerError(
            f"no Docker engine answers at {where} (start one: scripts/engine.sh start): {_one_line(e)}"
        ) from e
    return client


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
    repository = repository_of(ref)
    with _translated(f"pin {ref}"):
        try:
            image = client.images.get(ref)
        except docker.errors.ImageNotFound:
            image = None
        if image is not None:
            for digest_ref in image.attrs.get("RepoDigests") or []:
                name, _, digest = digest_ref.partition("@")
                if repository_of(name) == repository and digest:
                    return validate_base_image(f"{name_of(ref)}@{digest}")
        try:
            data = client.images.get_registry_data(ref)
        except docker.errors.APIError as e:
            if image is not None:
                raise DockerError(
                    f"{ref} has no repository digest and its registry does not answer: push it to a "
                    f"registry first (`make base` does), or pass name@sha256:<digest>"
                ) from e
            raise DockerError(f"{ref}: no such image here, and its registry does not know it ({_one_line(e)})") from e
    return validate_base_image(f"{name_of(ref)}@{data.id}")


def build(
    client: Any,
    fileobj: IO[bytes] | Iterable[bytes],
    *,
    tag: str,
    buildargs: Mapping[str, str],
    no_cache: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> str:
    """Build ``tag`` from the tar in ``fileobj`` (a file, or chunks as they are written) with the network
    off; return the image ID.

    Raises: DockerError with our Dockerfile's own refusal, else the engine's error and the
    log's last lines.
    """
    image_id = ""
    refusal = ""  # our Dockerfile's own "error: ..." line, the clearest thing to report
    tail: list[str] = []
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
                    if line.strip() and not line.strip().startswith(_BUILDER_CHATTER):
                        tail = [*tail[-(BUILD_LOG_LINES - 1) :], line.strip()]
                    if _DOCKERFILE_ERROR.match(line.strip()):
                        refusal = line.strip()
                if on_progress is not None and text:
                    on_progress(text)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                if refusal:
                    raise DockerError(f"image build failed: {refusal.removeprefix('error: ')}")
                detail = _one_line(chunk.get("errorDetail", {}).get("message") or chunk["error"])
                # One line: the engine's message, then the log's tail (what pip or a RUN said).
                log = " | ".join(tail)
                raise DockerError(f"image build failed: {detail}" + (f" (last build output: {log})" if log else ""))
    if not image_id:
        with _translated(f"inspect {tag}"):
            image_id = client.images.get(tag).id
    return str(image_id)


def stdout_into(buffer: bytearray, others: OutputCallback | None = None, *, limit: int | None = None) -> OutputCallback:
    """An ``on_output`` for a job whose stdout is its answer: stdout is kept in ``buffer`` (at most
    ``limit`` bytes, the rest dropped: a container cannot make the host hold more), every other
    stream goes to ``others`` (dropped without one)."""

    def route(stream: str, chunk: bytes) -> None:
        if stream == "stdout":
            buffer.extend(chunk if limit is None else chunk[: limit - len(buffer)])
        elif others is not None:
            others(stream, chunk)

    return route


def run(
    client: Any,
    image: str,
    command: Sequence[str],
    *,
    mounts: Sequence[Mount] = (),
    user: str | None = None,
    environment: Mapping[str, str] | None = None,
    working_dir: str | None = None,
    on_output: OutputCallback | None = None,
    tty: bool = False,
    entrypoint: Sequence[str] | None = None,
    drop_capabilities: bool = False,
) -> RunResult:
    """Run ``image`` with ``command`` (its entry point is ``toolkit`` unless ``entrypoint`` says
    otherwise: the user's own command), network off, root fs read-only; ``drop_capabilities``:
    every Linux capability dropped and no privilege gained (a job that only reads and computes).

    With ``tty`` the container gets a terminal (progress and colours; stdout and stderr then
    arrive together, as ``"stdout"``): only when the caller's own stdout is one.

    Output is streamed to ``on_output`` as it comes; the container is removed afterwards,
    also when the caller is interrupted. A non-zero exit is returned, not raised: its meaning
    is the caller's. Raises: DockerError (unknown image, engine error, the engine's own failure).
    """
    docker = _sdk()
    started = time.monotonic()
    with _translated(f"run {image}"):
        try:
            image_id = str(client.images.get(image).id)
        except docker.errors.ImageNotFound:
            raise DockerError(
                f"image {image} not found: build it first (`make image` or `toolkit image build`)"
            ) from None
        container = client.containers.create(
            image,
            command=list(command),
            entrypoint=None if entrypoint is None else list(entrypoint),
            user=user,
            # Which image this is, for the card (schema 3: environment.image): the ref as given and
            # the ID it resolved to, set by the host on every container it starts.
            environment={env.IMAGE: image, env.IMAGE_ID: image_id, **(environment or {})},
            working_dir=working_dir,
            volumes={str(m.source): {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts},
            network_mode="none",
            read_only=True,
            tty=tty,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=1g"},
            hostname="toolkit",  # a random hostname must never reach a card or a pickle
            labels={"org.toolkit.role": (entrypoint or command or [""])[0]},
            **({"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]} if drop_capabilities else {}),
        )
        stream: Any = None
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
            if stream is not None:
                _close_attached(stream)
            # Already gone is fine: the run's own outcome is what matters.
            with suppress(docker.errors.DockerException):
                container.remove(force=True)
    code = status.get("StatusCode", -1)
    if status.get("Error"):
        raise DockerError(f"container of {image} failed: {_one_line(status['Error'])}")
    return RunResult(exit_code=int(code), seconds=time.monotonic() - started, image_id=image_id)


def _close_attached(stream: Any) -> None:
    """Close an attach stream's socket ourselves. docker-py's ``close()`` skips a stream it read
    to the end, and its socket is then closed by whichever garbage collection runs next, with a
    ResourceWarning in whatever code runs then (a test, under ``filterwarnings = error``)."""
    docker = _sdk()
    with suppress(AttributeError, OSError, docker.errors.DockerException):
        stream.close()
    response: Any = getattr(stream, "_response", None)
    with suppress(AttributeError, OSError):
        response.raw._fp.fp.raw._sock.close()  # the path docker-py's own close() takes
    with suppress(AttributeError, OSError):
        response.close()


def inspect_image_id(client: Any, image: str) -> str:
    """The ID of the local image ``image``. Raises: DockerError (not built here, engine error)."""
    docker = _sdk()
    with _translated(f"inspect {image}"):
        try:
            return str(client.images.get(image).id)
        except docker.errors.ImageNotFound:
            raise DockerError(
                f"image {image} not found: build it first (`make image` or `toolkit image build`)"
            ) from None


def _probe_unix_socket(path: str) -> None:
    # The SDK's unix transport never closes a socket whose connect() failed (docker 7.x), so
    # an absent engine would leak one per attempt: ask the socket ourselves first.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)


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


def _one_line(value: object) -> str:
    text = str(value).strip()
    return " ".join(text.split()) or type(value).__name__
