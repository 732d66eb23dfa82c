"""``toolkit image serve``: ``toolkit serve`` inside the image the model was trained in.

The artifact's folder is mounted read-only at /artifact (trusted public keys, when given, as
single read-only files under /keys: the signature is checked inside, by the serving process),
the container's port 8080 is published on the host's loopback only, its root file system is
read-only, every capability dropped. The container needs a network for the published port
(Docker's default bridge); nothing in it connects anywhere. SIGTERM or Ctrl-C on the host stop
the container the same way (SIGTERM, then ``drain_timeout`` to finish in-flight requests).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from toolkit import env
from toolkit.errors import DockerError, IntegrityError, UsageError

__all__ = ["CONTAINER_PORT", "serve_in_image"]

CONTAINER_PORT = 8080


def serve_in_image(
    image: str,
    artifact: Path,
    *,
    serve_args: Sequence[str],
    port: int,
    trusted_keys: Sequence[Path] = (),
    certifications: Path | None = None,
    drain_timeout: int = 30,
    on_output: Callable[[bytes], None],
    on_published: Callable[[str], None],
    client: Any | None = None,
) -> int:
    """Run the server in ``image`` until it exits or this process is told to stop; its exit code.

    Raises: DockerError (no engine, unknown image, the engine failed), IntegrityError (no artifact).
    """
    from toolkit.docker.client import connect
    from toolkit.docker.jobs import require_readable_by_image_user

    docker = _sdk()
    given, artifact = artifact, artifact.resolve()
    if not artifact.is_file():
        raise IntegrityError(f"{given}: no such artifact file")
    uid = os.getuid()
    if uid == 0:
        require_readable_by_image_user(artifact)
    volumes = {str(artifact.parent): {"bind": "/artifact", "mode": "ro"}}
    key_args: list[str] = []
    for i, key in enumerate(trusted_keys):
        target = f"/keys/key{i}.pub"
        volumes[str(Path(key).resolve())] = {"bind": target, "mode": "ro"}
        key_args += ["--trusted-key", target]
    environment = {env.HOME: "/tmp"}
    if certifications is not None:  # read-only, and named to the server as a deployment would name it
        if not certifications.is_dir():
            raise UsageError(f"--certifications {certifications}: no such folder")
        volumes[str(certifications.resolve())] = {"bind": "/certifications", "mode": "ro"}
        environment[env.CERTIFICATIONS] = "/certifications"
    command = [
        "serve",
        f"/artifact/{artifact.name}",
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
