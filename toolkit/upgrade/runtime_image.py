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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import _files, env
from toolkit.errors import DockerError, IntegrityError, UsageError

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.docker.system import SystemPackage
    from toolkit.signing import TrustedKeys

__all__ = [
    "RUNTIME_REPOSITORY",
    "RebuildResult",
    "RuntimeImage",
    "cache_key",
    "default_wheelhouse",
    "ensure_runtime_image",
    "ensure_wheels",
    "rebuild",
    "rebuild_source",
    "recorded_system_packages",
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


def cache_key(
    *, base_image: str, lock_sha256: str, context: Path = Path(), system_packages: Sequence[SystemPackage] = ()
) -> str:
    """sha256 over the base digest, the lock's sha256, the Debian packages and the toolkit as the
    build sends it (the packaged Dockerfile and every file of the installed package)."""
    from toolkit.docker.context import packaged_dockerfile
    from toolkit.docker.selfwheel import package_files

    del context  # the toolkit comes from its installed package now, wherever the command runs
    digest = hashlib.sha256()
    digest.update(f"base {base_image.rpartition('@')[2]}\nlock {lock_sha256}\n".encode())
    for package in sorted(system_packages, key=lambda p: p.name):
        digest.update(f"deb {package.name}={package.version}\n".encode())
    for name, path in [("Dockerfile", packaged_dockerfile()), *package_files()]:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise UsageError(f"{path}: cannot read it for the image ({e.strerror or e})") from e
        digest.update(f"{name} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def default_wheelhouse(context: Path = Path()) -> Path:
    """``CONTEXT/wheelhouse`` when there is one (this repository's), else the user's wheel cache,
    shared by every project (a wheel is the same file whoever downloads it; pip checks its hash)."""
    from toolkit.docker.jobs import default_cache

    local = context / "wheelhouse"
    return local if local.is_dir() else default_cache() / "wheels"


def recorded_system_packages(card: ModelCard) -> list[SystemPackage]:
    """The Debian packages a card records its image added (card schema 3). A card older than that
    records none: then the current project's ``system_packages`` (toolkit.toml), at today's versions."""
    from toolkit.docker.system import SystemPackage

    recorded = getattr(card.environment, "system_packages", None)
    if recorded is None:
        from toolkit.docker.system import resolve
        from toolkit.project import current

        return resolve(current().system_packages, release=None)
    found = []
    for item in recorded:
        name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
        version = item.get("version") if isinstance(item, dict) else getattr(item, "version", None)
        if isinstance(name, str) and isinstance(version, str):
            found.append(SystemPackage(name=name, version=version))
    return found


def ensure_wheels(lock: Path, wheelhouse: Path, *, on_progress: Callable[[str], None] | None = None) -> None:
    """Every wheel ``lock`` pins, in ``wheelhouse``: what is missing is downloaded (pip checks the
    lock's hashes). ``on_progress`` gets one ``downloading ...`` line, then a ``wheel n/N NAME``
    line as pip takes each pin (the CLI redraws those on a terminal and drops them in a log).
    Raises: UsageError (no pins), DockerError (the download failed)."""
    from toolkit.docker.context import lock_pins, locked_wheels

    pins = lock_pins(lock)  # data only, before pip ever sees it (its own error, not "something missing")
    try:
        locked_wheels(lock, wheelhouse)
        return
    except UsageError:
        pass  # something is missing: download it (lock_pins' own errors come back below)
    emit = on_progress or (lambda text: None)
    emit(f"downloading the {len(pins)} wheels of {lock} into {wheelhouse}\n")
    wheelhouse.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, env.PIP_CONFIG_FILE: os.devnull, env.PIP_DISABLE_PIP_VERSION_CHECK: "1"}
    environment.pop(env.PIP_FIND_LINKS, None)
    command = [sys.executable, "-m", "pip", "download", "--progress-bar", "off", "--only-binary=:all:", "--no-deps"]
    command += ["--require-hashes", "-r", str(lock), "-d", str(wheelhouse)]
    lines = _pip_lines(command, environment, lambda n, what: emit(f"wheel {n}/{len(pins)} {what}\n"))
    if lines.returncode != 0:
        last = [line.strip() for line in lines.tail if line.strip() and not line.startswith(" ")] or lines.tail
        raise DockerError(
            f"cannot download the wheels of {lock}: {last[-1] if last else f'pip exited {lines.returncode}'}"
        )
    locked_wheels(lock, wheelhouse)  # what pip fetched must be exactly what the lock pins


@dataclass(frozen=True, kw_only=True, slots=True)
class _PipRun:
    returncode: int
    tail: list[str]


def _pip_lines(command: list[str], environment: dict[str, str], on_pin: Callable[[int, str], None]) -> _PipRun:
    """Run pip, calling ``on_pin(n, "NAME==VERSION")`` at each ``Collecting`` line it prints."""
    import collections

    tail: collections.deque[str] = collections.deque(maxlen=40)
    taken = 0
    try:
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=environment,
        ) as proc:
            assert proc.stdout is not None
            # A hung download ends at the deadline: the read below then sees the pipe close.
            watchdog = threading.Timer(_DOWNLOAD_TIMEOUT, proc.kill)
            watchdog.daemon = True
            watchdog.start()
            try:
                for raw in proc.stdout:
                    line = raw.rstrip()
                    tail.append(line)
                    if line.startswith("Collecting "):
                        taken += 1
                        on_pin(taken, line.removeprefix("Collecting ").split(" ", 1)[0])
            finally:
                watchdog.cancel()
            code = proc.wait()
    except (OSError, subprocess.SubprocessError) as e:
        raise DockerError(f"cannot download wheels: {e}") from e
    return _PipRun(returncode=code, tail=list(tail))


def ensure_runtime_image(
    *,
    base_image: str,
    lock: Path,
    context: Path = Path(),
    wheelhouse: Path | None = None,
    tag: str | None = None,
    system_packages: Sequence[SystemPackage] = (),
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
    key = cache_key(base_image=base_image, lock_sha256=lock_hash, system_packages=system_packages)
    cache_tag = f"{RUNTIME_REPOSITORY}:{key[:_KEY_CHARS]}"
    client = client or tdocker.connect()
    image_id = _cached(client, cache_tag, base_image=base_image, lock_hash=lock_hash)
    cached = image_id is not None
    if image_id is None:
        wheelhouse = wheelhouse or default_wheelhouse(context)
        ensure_wheels(lock, wheelhouse, on_progress=on_progress)
        built = tdocker.build_image(
            base_image=base_image,
            tag=cache_tag,
            context=context,
            lock=lock,
            wheelhouse=wheelhouse,
            system_packages=system_packages,
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
    recorded = card.environment
    if not recorded.base_image:
        raise UsageError(
            f"{where} was not trained in an image (its card records no base image): "
            "there is no runtime to rebuild; train it with `toolkit image train` to get one"
        )
    if not recorded.lock:
        raise UsageError(f"{where}: its card has no lock text (environment.lock is null): nothing to install from")
    digest = hashlib.sha256(recorded.lock.encode("utf-8")).hexdigest()
    if recorded.lock_sha256 and digest != recorded.lock_sha256:
        raise IntegrityError(
            f"{where}: the card's lock text hashes to {digest}, "
            f"not its environment.lock_sha256 {recorded.lock_sha256}; refused"
        )
    from toolkit.lockfile import parse_lock

    parse_lock(recorded.lock, where=f"{where}: the card's lock")  # data only: it goes to pip in the build
    return recorded.base_image, recorded.lock


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
    with _files.scratch("toolkit-rebuild") as tmp:
        lock = Path(tmp) / "requirements.lock"
        lock.write_text(lock_text, encoding="utf-8")
        image = ensure_runtime_image(
            base_image=base_image,
            lock=lock,
            context=context,
            wheelhouse=wheelhouse,
            tag=tag,
            system_packages=recorded_system_packages(card),
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
    image_env = dict(item.split("=", 1) for item in (image.attrs.get("Config") or {}).get("Env") or () if "=" in item)
    # The tag is a hash of both; a tag someone moved by hand must not pass for a cache hit.
    if image_env.get(env.BASE_IMAGE) != base_image or image_env.get(env.LOCK_SHA256) != lock_hash:
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
