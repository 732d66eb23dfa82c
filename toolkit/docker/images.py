"""Image references and the names this package reads from the environment; no SDK, no I/O but a pin file.

Two different images are configured through the environment, so each gets its own name:
``BASE_IMAGE`` is the base the *build* starts from, ``TOOLKIT_IMAGE`` the built image that
``image train|check`` run. (Inside an image, ``TOOLKIT_BASE_IMAGE`` records the base it was built
from; that one is read by :mod:`toolkit.fingerprint`, which owns what a runtime is.)
"""

from __future__ import annotations

import os
from pathlib import Path

from toolkit import _files, env
from toolkit.errors import UsageError
from toolkit.fingerprint import BASE_IMAGE_RE

__all__ = [
    "DEFAULT_BASE_FILE",
    "DEFAULT_IMAGE",
    "ENV_BUILD_BASE",
    "ENV_IMAGE",
    "IMAGE_UID",
    "PIN_HINT",
    "name_of",
    "recorded_image",
    "repository_of",
    "resolve_base_image",
    "resolve_image",
    "validate_base_image",
    "write_pin",
]

DEFAULT_IMAGE = "toolkit:latest"
ENV_IMAGE = env.IMAGE  # the image `image train|check` run when --image is not given
ENV_BUILD_BASE = env.BUILD_BASE  # the base `image build` starts from when --base-image is not given
DEFAULT_BASE_FILE = Path(".cache/base-image")  # written by `make base` and `toolkit image pin`
IMAGE_UID = 10001  # the image's non-root user `toolkit` (see the Dockerfile)

PIN_HINT = "name@sha256:<64 hex>"
_HOW_TO_PIN = "run `toolkit base`, or `toolkit image pin REF` for an image you have"


def validate_base_image(ref: str) -> str:
    """Return ``ref`` if it is pinned by digest (``name@sha256:<64 hex>``). Raises: UsageError."""
    if not BASE_IMAGE_RE.match(ref or ""):
        raise UsageError(f"{ENV_BUILD_BASE} must be pinned by digest as {PIN_HINT} ({_HOW_TO_PIN}); got {ref!r}")
    return ref


def resolve_base_image(cli_value: str | None, *, base_file: Path = DEFAULT_BASE_FILE) -> str:
    """The base: ``--base-image``, else ``$BASE_IMAGE``, else the file ``make base`` wrote; validated.

    Raises: UsageError when none is given or it is not pinned by digest.
    """
    if cli_value:
        return validate_base_image(cli_value.strip())
    given = os.environ.get(ENV_BUILD_BASE, "").strip()
    if given:
        return validate_base_image(given)
    from toolkit import project

    settings = project.current()
    if settings.base_image:  # checked as pinned when toolkit.toml was read
        return settings.base_image
    try:
        pinned = base_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(
            f"no base image: run `toolkit base` (or `toolkit image pin REF`), which records it in toolkit.toml, "
            f"or pass --base-image {PIN_HINT}"
        ) from None
    except OSError as e:
        raise UsageError(f"{base_file}: cannot read the pinned base image ({e.strerror or e})") from e
    return validate_base_image(pinned)


def resolve_image(cli_value: str | None, *, recorded: str | None = None) -> str:
    """The image to run: ``--image``, else ``$TOOLKIT_IMAGE``, else ``recorded`` (the image a
    model's card says it was trained in), else toolkit.toml's ``image``, else ``toolkit:latest``."""
    if cli_value or os.environ.get(ENV_IMAGE):
        return cli_value or os.environ[ENV_IMAGE]
    if recorded:
        return recorded
    from toolkit import project

    return project.current().image or DEFAULT_IMAGE


def recorded_image(model: Path) -> str | None:
    """The image a model's card says it was trained in (card schema 3), else None.

    Only a default: the gate inside the image checks the card for real, so a card that cannot be
    read here is no error yet (the gate will say what is wrong with it).
    """
    from toolkit.artifact import read_card
    from toolkit.errors import ToolkitError

    try:
        recorded = getattr(read_card(model).environment, "image", None)
    except (ToolkitError, OSError, ValueError):
        return None
    if recorded is None:
        return None
    ref = recorded.get("ref") if isinstance(recorded, dict) else getattr(recorded, "ref", None)
    image_id = recorded.get("id") if isinstance(recorded, dict) else getattr(recorded, "id", None)
    for value in (ref, image_id):
        if isinstance(value, str) and value:
            return value
    return None


def write_pin(ref: str, path: Path = DEFAULT_BASE_FILE) -> Path:
    """Write a pinned reference where the build reads it (atomically). Raises: UsageError."""
    validate_base_image(ref)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _files.write_failed(path, e) from e
    _files.save(path, (ref + "\n").encode("utf-8"))  # nothing half-written left beside the pin
    return path


def name_of(ref: str) -> str:
    """``host:5000/repo:tag`` -> ``host:5000/repo`` (a port is not a tag)."""
    name = ref.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def repository_of(ref: str) -> str:
    """A name as the engine normalises it: ``python`` == ``docker.io/library/python``."""
    name = name_of(ref)
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        name = name.removeprefix(prefix)
    return name.removeprefix("library/")
