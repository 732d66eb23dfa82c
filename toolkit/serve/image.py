"""``toolkit image serve``: ``toolkit serve`` inside the image the model was trained in.

The artifact's folder is mounted read-only at /artifact (trusted public keys, when given, as
single read-only files under /keys: the signature is checked inside, by the serving process),
the container's port 8080 is published on the host's loopback only, its root file system is
read-only, every capability dropped. The container needs a network for the published port
(Docker's default bridge); without ``--follow`` nothing in it connects anywhere. SIGTERM or
Ctrl-C on the host stop the container the same way (SIGTERM, then ``drain_timeout`` to finish
in-flight requests).

With ``--follow`` the container watches the stage itself: a directory registry is mounted
read-only at /registry (the container never writes to it, so its ``served`` events are not
recorded there: the log says so), an ``oci://`` tag is reached over that network. A version
whose card needs another runtime than this image's is refused in the container by the same
rule as ``serve --follow`` (its log line says it needs its own image).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import env
from toolkit.errors import DockerError, IntegrityError, UsageError

__all__ = ["CONTAINER_PORT", "Followed", "serve_in_image"]

CONTAINER_PORT = 8080
REGISTRY_MOUNT = "/registry"


@dataclass(frozen=True, kw_only=True, slots=True)
class Followed:
    """What the container follows (``--follow``): MODEL as given (``NAME@stage`` or ``oci://...:TAG``)
    and, for a stage in a directory registry, that directory (mounted read-only)."""

    model: str
    registry: Path | None = None


def serve_in_image(
    image: str,
    artifact: Path | None,
    *,
    serve_args: Sequence[str],
    port: int,
    trusted_keys: Sequence[Path] = (),
    certifications: Path | None = None,
    drain_timeout: int = 30,
    on_output: Callable[[bytes], None],
    on_published: Callable[[str], None],
    client: Any | None = None,
    follow: Followed | None = None,
) -> int:
    """Run the server in ``image`` until it exits or this process is told to stop; its exit code.

    ``artifact`` is the file served (with ``follow``, the one the stage names now, whose card
    chose the image, or None for an OCI tag); with ``follow`` the container is given the stage
    instead and watches it.

    Raises: DockerError (no engine, unknown image, the engine failed), IntegrityError (no artifact),
    UsageError (a registry the image's user cannot read).
    """
    from toolkit.docker.client import connect
    from toolkit.docker.jobs import require_readable_by_image_user

    docker = _sdk()
    uid = os.getuid()
    if artifact is not None:
        given, artifact = artifact, artifact.resolve()
        if not artifact.is_file():
            raise IntegrityError(f"{given}: no such artifact file")
        if uid == 0:
            require_readable_by_image_user(artifact)
    volumes: dict[str, dict[str, str]] = {}
    if follow is None:
        if artifact is None:
            raise UsageError("image serve: no artifact to serve")
        volumes[str(artifact.parent)] = {"bind": "/artifact", "mode": "ro"}
        target = [f"/artifact/{artifact.name}"]
    elif follow.registry is not None:
        root = follow.registry.resolve()
        if uid == 0:
            _require_registry_readable(root)
        volumes[str(root)] = {"bind": REGISTRY_MOUNT, "mode": "ro"}
        target = [follow.model, "--registry", REGISTRY_MOUNT, "--follow"]
    else:
        target = [follow.model, "--follow"]
    key_args: list[str] = []
    for i, key in enumerate(trusted_keys):
        mounted = f"/keys/key{i}.pub"
        volumes[str(Path(key).resolve())] = {"bind": mounted, "mode": "ro"}
        key_args += ["--trusted-key", mounted]
    environment = {env.HOME: "/tmp"}
    if certifications is not None:  # read-only, and named to the server as a deployment would name it
        if not certifications.is_dir():
            raise UsageError(f"--certifications {certifications}: no such folder")
        volumes[str(certifications.resolve())] = {"bind": "/certifications", "mode": "ro"}
        environment[env.CERTIFICATIONS] = "/certifications"
    command = [
        "serve",
        *target,
        "--host",
        "0.0.0.0",
        "--port",
        str(CONTAINER_PORT),
        "--drain-timeout",
        str(drain_timeout),
        *serve_args,
        *key_args,
    ]
    c = client or connect()
    try:
        c.images.get(image)
    except docker.errors.ImageNotFound:
        raise DockerError(
            f"image {image} not found: build it first (`make image`, or `toolkit image rebuild MODEL`)"
        ) from None
    except docker.errors.DockerException as e:
        raise DockerError(f"docker: {_one_line(e)}") from e
    try:
        container = c.containers.create(
            image,
            command=command,
            user=None if uid == 0 else f"{uid}:{os.getgid()}",
            environment=environment,
            volumes=volumes,
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)},
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=256m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            hostname="toolkit",
            labels={"org.toolkit.role": "serve"},
            stop_signal="SIGTERM",
        )
    except docker.errors.DockerException as e:
        raise DockerError(f"cannot create the serving container from {image}: {_one_line(e)}") from e
    stopping = threading.Event()

    def stop(sig: int, frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=_stop, args=(container, drain_timeout + 5), daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stream = container.attach(stdout=True, stderr=True, stream=True, logs=True)
        container.start()
        container.reload()
        bound = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{CONTAINER_PORT}/tcp") or []
        if bound:
            on_published(f"http://127.0.0.1:{bound[0]['HostPort']}")
        for chunk in stream:
            on_output(chunk)
        status = container.wait()
    except docker.errors.DockerException as e:
        raise DockerError(f"serving container of {image}: {_one_line(e)}") from e
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        with suppress(docker.errors.DockerException):  # already gone
            container.remove(force=True)
    if status.get("Error"):
        raise DockerError(f"serving container of {image} failed: {_one_line(status['Error'])}")
    return int(status.get("StatusCode", 1))


def _require_registry_readable(root: Path) -> None:
    """Root on the host runs the container as the image's user: it must read the registry's
    directory and index (each version's files are checked as the artifact's are, when served)."""
    from toolkit.docker import IMAGE_UID
    from toolkit.registry.index.sqlite_db import DB_FILE

    for path, bits in ((root, 0o005), (root / DB_FILE, 0o004)):
        try:
            st = path.stat()
        except OSError as e:
            raise UsageError(f"{path}: {e.strerror}; --follow needs the registry directory and its index") from e
        if st.st_uid != IMAGE_UID and st.st_mode & bits != bits:
            raise UsageError(
                f"{path}: not readable by the image's user (uid {IMAGE_UID}); "
                f"make it world-readable (chmod o+r{'x' if path == root else ''}) to follow it from the image"
            )


def _stop(container: Any, timeout: int) -> None:
    import docker

    with suppress(docker.errors.DockerException):  # it ended meanwhile
        container.stop(timeout=timeout)


def _sdk() -> Any:
    try:
        import docker
    except ImportError as e:  # pragma: no cover - the dev lock has it
        raise DockerError("the docker SDK is not installed (pip install toolkit[docker])") from e
    return docker


def _one_line(value: object) -> str:
    return " ".join(str(value).split())[:300]
