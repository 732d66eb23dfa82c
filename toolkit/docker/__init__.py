"""Docker, through the docker SDK: build the pinned image, pin a base, train and gate in it.

One job per module: :mod:`~toolkit.docker.images` (references, defaults, the environment's
names), :mod:`~toolkit.docker.context` (lock parsing, the build context's tar),
:mod:`~toolkit.docker.client` (every SDK call, errors translated to ``DockerError``, exit 5) and
:mod:`~toolkit.docker.jobs` (build, train and gate in the image; the containers' command lines).
This module re-exports the public names, so ``from toolkit import docker`` keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.docker.client import (
    Mount,
    OutputCallback,
    RunResult,
    connect,
    inspect_image_id,
    pin_reference,
    stdout_into,
)
from toolkit.docker.client import run as _run
from toolkit.docker.context import lock_sha256
from toolkit.docker.images import (
    DEFAULT_BASE_FILE,
    DEFAULT_IMAGE,
    ENV_BUILD_BASE,
    ENV_IMAGE,
    IMAGE_UID,
    resolve_base_image,
    resolve_image,
    validate_base_image,
    write_pin,
)
from toolkit.docker.jobs import (
    BuildResult,
    PredictResult,
    TrainCommand,
    build_image,
    check_command,
    check_in_container,
    predict_in_container,
    train_command,
    train_in_container,
)

__all__ = [
    "DEFAULT_BASE_FILE",
    "DEFAULT_IMAGE",
    "ENV_BUILD_BASE",
    "ENV_IMAGE",
    "IMAGE_UID",
    "BuildResult",
    "Mount",
    "OutputCallback",
    "PredictResult",
    "RunResult",
    "TrainCommand",
    "build_image",
    "check_command",
    "check_in_container",
    "connect",
    "inspect_image_id",
    "lock_sha256",
    "pin_reference",
    "predict_in_container",
    "resolve_base_image",
    "resolve_image",
    "run_in_container",
    "stdout_into",
    "train_command",
    "train_in_container",
    "validate_base_image",
    "write_pin",
]


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
    """Run ``image`` with ``command``, network off (see :func:`toolkit.docker.client.run`)."""
    return _run(
        client or connect(),
        image,
        command,
        mounts=mounts,
        user=user,
        environment=environment,
        working_dir=working_dir,
        on_output=on_output,
        entrypoint=entrypoint,
    )
