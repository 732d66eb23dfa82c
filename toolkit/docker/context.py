"""The build context: the lock's pins, the wheels that match them, and the tar sent to the engine.

The context is assembled here, not read from a directory: the packaged Dockerfile, the lock
(which may live anywhere), only the wheels the lock pins, a wheel of the toolkit itself, and a
project's Debian packages. Nothing here talks to Docker.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO

from packaging.version import Version

from toolkit.errors import UsageError

__all__ = [
    "ContextStream",
    "git_revision",
    "lock_pins",
    "lock_sha256",
    "locked_wheels",
    "packaged_dockerfile",
    "write_context",
]


def lock_sha256(path: Path) -> str:
    """The sha256 of a lock file, as the image records it. Raises: UsageError."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise UsageError(f"{path}: cannot read the lock file ({e.strerror or e})") from e


def lock_pins(lock: Path) -> dict[str, Version]:
    """``{canonical name: version}`` for every pin in ``lock``, which must be data only
    (``toolkit.lockfile``: no pip option, URL or path). Raises: UsageError."""
    from toolkit.lockfile import parse_lock

    try:
        text = lock.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{lock}: cannot read the lock file ({getattr(e, 'strerror', None) or e})") from e
    return {pin.name: Version(pin.version) for pin in parse_lock(text, where=str(lock))}


def locked_wheels(lock: Path, wheelhouse: Path) -> list[Path]:
    """The wheelhouse's files for exactly the lock's pins. Raises: UsageError naming what is missing."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename
    from packaging.version import InvalidVersion

    pins = lock_pins(lock)
    if not wheelhouse.is_dir():
        raise UsageError(f"{wheelhouse}: no wheelhouse; the build downloads them (or run `make wheelhouse`)")
    chosen: dict[str, list[Path]] = {}
    for path in sorted(wheelhouse.glob("*.whl")):
        try:
            name, version, _, _ = parse_wheel_filename(path.name)
        except (InvalidWheelFilename, InvalidVersion):
            continue  # not a wheel of ours; the lock decides what goes in
        if pins.get(name) == version:
            chosen.setdefault(name, []).append(path)
    missing = sorted(f"{n}=={v}" for n, v in pins.items() if n not in chosen)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UsageError(f"{wheelhouse}: no wheel for {shown} from {lock}")
    return [p for paths in chosen.values() for p in paths]


def packaged_dockerfile() -> Path:
    """The Dockerfile that ships inside the package (toolkit/docker/Dockerfile)."""
    return Path(__file__).resolve().parent / "Dockerfile"


def write_context(
    fileobj: IO[bytes],
    *,
    lock: Path,
    wheels: Sequence[Path],
    toolkit_wheel: Path,
    debs: Sequence[Path] = (),
    system_manifest: bytes = b"[]\n",
    dockerfile: Path | None = None,
) -> None:
    """Write the build context as a tar to ``fileobj``: the Dockerfile, the lock, its wheels, the
    toolkit's wheel, the project's .debs and their manifest. Raises: UsageError (an unreadable file)."""
    dockerfile = dockerfile or packaged_dockerfile()
    # Copied in 1 MiB pieces, not tarfile's 16 KiB: the context is mostly wheels of tens of MB.
    with tarfile.TarFile(fileobj=fileobj, mode="w", copybufsize=1 << 20) as tar:
        _add_file(tar, dockerfile, "Dockerfile")
        _add_file(tar, lock, "requirements.lock")
        for wheel in wheels:
            _add_file(tar, wheel, f"wheelhouse/{wheel.name}")
        _add_file(tar, toolkit_wheel, f"dist/{toolkit_wheel.name}")
        for deb in debs:
            _add_file(tar, deb, f"system/{deb.name}")
        _add_bytes(tar, system_manifest, "system/system-packages.json")


def git_revision(context: Path) -> str:
    """The commit ``context`` is checked out at, or ``unknown`` (no git, not a repository)."""
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


def _add_bytes(tar: tarfile.TarFile, data: bytes, arcname: str) -> None:
    import io

    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


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


class ContextStream:
    """A build context as chunks of bytes, written by a thread while the engine reads them.

    The engine reads the context once; writing it to a temporary file first copied every wheel
    (hundreds of MB) once more than ``docker build`` does. Iterate it once (the Docker SDK sends
    an iterable body as it comes); an error of ``write`` (an unreadable wheel: UsageError) is
    raised from the iteration and kept in :attr:`error`. Leaving the iteration early (the
    engine refused) stops the writer.
    """

    _CHUNK = 1 << 20
    _DEPTH = 8  # chunks in flight: 8 MiB at most in memory

    def __init__(self, write: Callable[[IO[bytes]], None]) -> None:
        import queue
        import threading

        self.error: BaseException | None = None
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self._DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="toolkit-context", daemon=True)

    def __iter__(self) -> Iterator[bytes]:
        self._thread.start()
        try:
            while (chunk := self._queue.get()) is not None:
                yield chunk
        finally:
            self._stop.set()
            self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        writer = _ChunkWriter(self)
        try:
            self._write(writer)  # type: ignore[arg-type]  # write() and tell() are all tarfile uses
            writer.flush()
        except _Stopped:
            pass
        except BaseException as e:
            self.error = e
        finally:
            with suppress(_Stopped):
                self._put(None)

    def _put(self, item: bytes | None) -> None:
        import queue

        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


class _Stopped(Exception):
    """The reader went away: the writer stops."""


class _ChunkWriter:
    def __init__(self, stream: ContextStream) -> None:
        self._stream, self._buffer, self._written = stream, bytearray(), 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        self._written += len(data)
        if len(self._buffer) >= ContextStream._CHUNK:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        if self._buffer:
            self._stream._put(bytes(self._buffer))
            self._buffer.clear()
