"""Runtime images built from a base digest and a lock, cached: an artifact's own (``image rebuild``)
and a candidate lock's (``upgrade-check``).

An image is named by what decides its contents: the base image's digest, the lock's sha256 and
the toolkit's own source (the checker it carries). The same three give the same tag
(``toolkit-runtime:<key>``), and a tag that exists is reused, not rebuilt: a second rebuild of
an unchanged card is the same image. The toolkit installed in it is always the *current* one:
it is the checker, not the payload (its own version is not compared under ``strict``).
The lock's wheels are downloaded on the host into the wheelhouse (hash-checked by pip), and the
build runs with the network off, as for the project's own image.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import DockerError, IntegrityError, UsageError

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.signing import TrustedKeys

__all__ = [
    "RUNTIME_REPOSITORY",
    "RebuildResult",
    "RuntimeImage",
    "cache_key",
    "ensure_runtime_image",
    "ensure_wheels",
    "rebuild",
    "rebuild_source",
]

RUNTIME_REPOSITORY = "toolkit-runtime"  # tags: toolkit-runtime:<first 16 hex of the cache key>
_KEY_CHARS = 16
_DOWNLOAD_TIMEOUT = 1800  # seconds: a cold wheelhouse for a full lock is a few hundred MB


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeImage:
    """An image of ``base_image`` + the lock + the current toolkit, built or found in the cache."""

    tag: str
    image_id: str
    key: str
    base_image: str
    lock_sha256: str
    cached: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "image_id": self.image_id,
            "key": self.key,
            "base_image": self.base_image,
            "lock_sha256": self.lock_sha256,
            "cached": self.cached,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class RebuildResult:
    """An artifact's runtime rebuilt from its card, and what the gate said inside it."""

    image: RuntimeImage
    exit_code: int  # the strict gate's, inside the rebuilt image


def cache_key(*, base_image: str, lock_sha256: str, context: Path) -> str:
    """sha256 over the base digest, the lock's sha256 and the toolkit's source as the build sends it."""
    digest = hashlib.sha256()
    digest.update(f"base {base_image.rpartition('@')[2]}\nlock {lock_sha256}\n".encode())
    files = [context / "Dockerfile", context / "pyproject.toml"]
    files += sorted(
        p
        for p in (context / "toolkit").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UsageError(
                f"{path}: cannot read it for the image ({e.strerror or e}); run from the repository root"
            ) from e
        digest.update(f"{path.relative_to(context).as_posix()} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def ensure_wheels(lock: Path, wheelhouse: Path, *, on_progress: Callable[[str], None] | None = None) -> None:
    """Every wheel ``lock`` pins, in ``wheelhouse``: what is missing is downloaded (pip checks the
    lock's hashes). Raises: UsageError (no pins), DockerError (the download failed)."""
    from toolkit.docker.context import lock_pins, locked_wheels

    lock_pins(lock)  # data only, before pip ever sees it (its own error, not "something missing")
    try:
        locked_wheels(lock, wheelhouse)
        return
    except UsageError:
        pass  # something is missing: download it (lock_pins' own errors come back below)
    if on_progress is not None:
        on_progress(f"downloading the wheels of {lock} into {wheelhouse}\n")
    wheelhouse.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PIP_FIND_LINKS", None)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--no-deps"]
    command += ["--require-hashes", "-r", str(lock), "-d", str(wheelhouse)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT, env=env, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise DockerError(f"cannot download the wheels of {lock}: {e}") from e
    if done.returncode != 0:
        last = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise DockerError(
            f"cannot download the wheels of {lock}: {last[-1] if last else f'pip exited {done.returncode}'}"
        )
    locked_wheels(lock, wheelhouse)  # what pip fetched must be exactly what the lock pins


def ensure_runtime_image(
    *,
    base_image: str,
    lock: Path,
    context: Path = Path(),
    wheelhouse: Path | None = None,
    tag: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    client: Any | None = None,
) -> RuntimeImage:
    """The image of ``base_image`` + ``lock`` + this toolkit: found by its cache tag, else built.

    ``tag``, when given, also names the image. Raises: UsageError, DockerError.
    """
    from toolkit import docker as tdocker

    started = time.monotonic()
    tdocker.validate_base_image(base_image)
    lock_hash = tdocker.lock_sha256(lock)
    key = cache_key(base_image=base_image, lock_sha256=lock_hash, context=context)
    cache_tag = f"{RUNTIME_REPOSITORY}:{key[:_KEY_CHARS]}"
    client = client or tdocker.connect()
    image_id = _cached(client, cache_tag, base_image=base_image, lock_hash=lock_hash)
    cached = image_id is not None
    if image_id is None:
        wheelhouse = wheelhouse or context / "wheelhouse"
        ensure_wheels(lock, wheelhouse, on_progress=on_progress)
        built = tdocker.build_image(
            base_image=base_image,
            tag=cache_tag,
            context=context,
            lock=lock,
            wheelhouse=wheelhouse,
            on_progress=on_progress,
            client=client,
        )
        image_id = built.image_id
    if tag and tag != cache_tag:
        _tag(client, image_id, tag)
    return RuntimeImage(
        tag=tag or cache_tag,
        image_id=image_id,
        key=key,
        base_image=base_image,
        lock_sha256=lock_hash,
        cached=cached,
        seconds=time.monotonic() - started,
    )


def rebuild_source(card: ModelCard) -> tuple[str, str]:
    """``(base image, lock text)`` to rebuild ``card``'s runtime from.

    Raises: UsageError (schema 1, or no base image or lock: the reason in one line),
    IntegrityError (the lock text is not the lock whose sha256 the card records).
    """
    where = f"{card.name} {card.version}"
    if card.schema_version < 2:
        raise UsageError(
            f"{where} has a schema {card.schema_version} card, which records no lock text: "
            "its runtime cannot be rebuilt from the card (train it again with this toolkit)"
        )
    env = card.environment
    if not env.base_image:
        raise UsageError(
            f"{where} was not trained in an image (its card records no base image): "
            "there is no runtime to rebuild; train it with `toolkit image train` to get one"
        )
    if not env.lock:
        raise UsageError(f"{where}: its card has no lock text (environment.lock is null): nothing to install from")
    digest = hashlib.sha256(env.lock.encode("utf-8")).hexdigest()
    if env.lock_sha256 and digest != env.lock_sha256:
        raise IntegrityError(
            f"{where}: the card's lock text hashes to {digest}, "
            f"not its environment.lock_sha256 {env.lock_sha256}; refused"
        )
    from toolkit.lockfile import parse_lock

    parse_lock(env.lock, where=f"{where}: the card's lock")  # data only: it goes to pip in the build
    return env.base_image, env.lock


def rebuild(
    artifact: Path,
    *,
    tag: str | None = None,
    context: Path = Path(),
    wheelhouse: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
    on_output: Callable[[str, bytes], None] | None = None,
    client: Any | None = None,
    trusted_keys: TrustedKeys = None,
) -> RebuildResult:
    """Build ``artifact``'s runtime from its card alone and run the strict gate on it inside.

    Raises: IntegrityError (the artifact or its lock text fails its checksum), UsageError
    (nothing to rebuild from), DockerError.
    """
    from toolkit import docker as tdocker
    from toolkit.artifact import verify

    card = verify(artifact, trusted_keys=trusted_keys)  # with trust, the signature too, here on the host
    base_image, lock_text = rebuild_source(card)
    client = client or tdocker.connect()
    with tempfile.TemporaryDirectory(prefix="toolkit-rebuild-") as tmp:
        lock = Path(tmp) / "requirements.lock"
        lock.write_text(lock_text, encoding="utf-8")
        image = ensure_runtime_image(
            base_image=base_image,
            lock=lock,
            context=context,
            wheelhouse=wheelhouse,
            tag=tag,
            on_progress=on_progress,
            client=client,
        )
    code = tdocker.check_in_container(image.tag, artifact, policy="strict", on_output=on_output, client=client)
    return RebuildResult(image=image, exit_code=code)


def _cached(client: Any, tag: str, *, base_image: str, lock_hash: str) -> str | None:
    """The image ID under ``tag`` when it is the image of this base and lock, else None."""
    import docker

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as e:
        raise DockerError(f"inspect {tag}: {e}") from e
    env = dict(item.split("=", 1) for item in (image.attrs.get("Config") or {}).get("Env") or () if "=" in item)
    # The tag is a hash of both; a tag someone moved by hand must not pass for a cache hit.
    if env.get("TOOLKIT_BASE_IMAGE") != base_image or env.get("TOOLKIT_LOCK_SHA256") != lock_hash:
        return None
    return str(image.id)


def _tag(client: Any, image_id: str, tag: str) -> None:
    import docker

    repository, _, name = tag.rpartition(":")
    if not repository or "/" in name:
        repository, name = tag, "latest"
    try:
        client.images.get(image_id).tag(repository, name)
    except docker.errors.DockerException as e:
        raise DockerError(f"tag {tag}: {e}") from e
