"""File primitives: refuse anything but a regular file, hash in one pass, publish atomically."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from toolkit.errors import IntegrityError, UsageError

__all__ = [
    "HashingWriter",
    "MemoryReader",
    "create_temp",
    "fsync_dir",
    "make_temp_dir",
    "open_regular",
    "publish",
    "read_and_hash",
    "read_regular",
    "save",
    "scratch",
    "scratch_dir",
    "sha256_file",
    "sweep_stale_temps",
    "temp_name",
    "temp_path",
    "write_all",
    "write_failed",
    "write_temp",
    "writing",
]

_CHUNK = 1 << 20


def open_regular(path: Path, what: str) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only, refusing symlinks, FIFOs, devices and directories.

    O_NOFOLLOW refuses a symlink at the last component; O_NONBLOCK keeps a FIFO from
    blocking the open, so it can be refused by fstat instead of hanging the gate.
    Raises: IntegrityError.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise IntegrityError(f"{what} not found: {path}") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IntegrityError(f"{what} is a symlink, refused: {path}") from e
        raise IntegrityError(f"{what} unreadable: {path}: {e.strerror}") from e
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = (
            "a directory"
            if stat.S_ISDIR(st.st_mode)
            else "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "not a regular file"
        )
        raise IntegrityError(f"{what} is {kind}, refused: {path}")
    # Back to blocking reads now that we know it is a regular file.
    os.set_blocking(fd, True)
    return fd, st


def read_regular(path: Path, what: str, *, limit: int) -> bytes:
    """All bytes of a regular file no larger than ``limit``. Raises: IntegrityError."""
    fd, st = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise IntegrityError(f"{what} is {st.st_size} bytes, over the {limit}-byte limit: {path}")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise IntegrityError(f"{what} unreadable: {path}: {e.strerror}") from e
    if len(data) > limit:  # it grew while we read it
        raise IntegrityError(f"{what} is over the {limit}-byte limit: {path}")
    return data


def sha256_file(path: Path, what: str) -> tuple[str, int]:
    """(sha256 hex, size) of a regular file, streamed in one pass. Raises: IntegrityError."""
    fd, _ = open_regular(path, what)
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with os.fdopen(fd, "rb", buffering=0) as f:
        try:
            while n := f.readinto(buf):
                digest.update(view[:n])
                size += n
        except OSError as e:
            raise IntegrityError(f"{what} unreadable: {path}: {e.strerror}") from e
    return digest.hexdigest(), size


def read_and_hash(path: Path, what: str, size: int) -> tuple[Any, str]:
    """Read exactly ``size`` bytes of a regular file into private memory, hashing as it goes.

    Returns (buffer, sha256 hex). Reading chunk k+1 overlaps hashing chunk k (hashlib
    releases the GIL), so the guard costs about one hashing pass. The buffer is a numpy
    array when numpy is there: numpy asks for huge pages, which makes filling 100 MB
    about 3x cheaper than a bytearray here.
    Raises: IntegrityError when the file is not ``size`` bytes long.
    """
    from concurrent.futures import ThreadPoolExecutor  # only loads need it, not the gate

    fd, st = open_regular(path, what)
    with os.fdopen(fd, "rb", buffering=0) as f:
        if st.st_size != size:
            raise IntegrityError(f"{path}: size {st.st_size} does not match the card's {size}; refused")
        buffer = _allocate(size)
        view = memoryview(buffer).cast("B")
        digest = hashlib.sha256()
        offset = 0
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = None
                while offset < size:
                    n = f.readinto(view[offset : min(offset + _CHUNK * 4, size)])
                    if not n:
                        break
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(digest.update, view[offset : offset + n])
                    offset += n
                if pending is not None:
                    pending.result()
            grew = f.read(1)
        except OSError as e:
            raise IntegrityError(f"{what} unreadable: {path}: {e.strerror}") from e
    if offset != size or grew:
        raise IntegrityError(f"{path}: changed size while being read; refused")
    return buffer, digest.hexdigest()


class MemoryReader(io.RawIOBase):
    """A read-only, seekable file over a buffer, without copying it first (BytesIO would)."""

    def __init__(self, buffer: Any) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        data = self._view[self._pos : end].tobytes()
        self._pos = max(self._pos, end)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else min(len(self._view), self._pos + size)
        chunk = self._view[self._pos : end]
        newline = bytes(chunk).find(b"\n") if len(chunk) < 4096 else _find_newline(chunk)
        return self.read(len(chunk) if newline < 0 else newline + 1)


# Temp files are ".<final name, cut to 64>.<host>-<pid>-<random>.tmp": short enough for a
# 255-byte NAME_MAX whatever the final name, and they say who wrote them, so that the temp
# of a process that died (SIGKILL, SIGTERM, power loss) can be swept by the next writer on
# the same host. A temp of another host (or container: its own hostname) is never touched.
# The same scheme names temp folders (a pull's staging) and an SQLite temp's -wal/-shm files.
_TEMP_RE = re.compile(
    r"^\..*\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[0-9a-f]{16}\.tmp(?:-wal|-shm|-journal)?\Z", re.DOTALL
)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name[:64]}.{_host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:16]}.tmp")


def temp_path(final: Path) -> Path:
    """A fresh temp name beside ``final`` in the one scheme the sweeper knows (nothing is created)."""
    return _temp_path(final)


def temp_name(name: str) -> str:
    """The same, as a bare name, for writers that work through a folder's descriptor."""
    return _temp_path(Path(name)).name


def make_temp_dir(parent: Path, label: str) -> Path:
    """A fresh hidden folder in ``parent`` (mode 0700), named so ``sweep_stale_temps`` removes it
    once the process that made it is dead. Raises: OSError."""
    path = _temp_path(parent / label)
    path.mkdir(mode=0o700)
    return path


def scratch_dir(label: str) -> Path:
    """A fresh private folder in the system's temp folder (``$TMPDIR``, else /tmp), in the one
    scheme, after sweeping what dead processes of this host left there under it: a killed job's
    staging (a pulled model, a container's output) does not stay behind for ever.
    The caller removes it when done. Raises: OSError."""
    import tempfile  # only the jobs that stage need it

    parent = Path(tempfile.gettempdir())
    sweep_stale_temps(parent)
    return make_temp_dir(parent, label)


@contextlib.contextmanager
def scratch(label: str) -> Iterator[Path]:
    """``scratch_dir`` for a block: removed when it ends, however it ends."""
    path = scratch_dir(label)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_failed(final: Path, e: OSError) -> UsageError:
    """The one line for a write that failed (a full disk, a quota, a read-only folder): it names
    the file the user asked for, and the caller has left nothing of it behind."""
    return UsageError(f"cannot save {final}: {e.strerror or e}")


def write_all(f: IO[bytes], data: Any) -> None:
    """The one seam every byte written to a temp file goes through (tests make it fail)."""
    f.write(data)


def create_temp(final: Path, *, mode: int | None = None) -> tuple[Path, IO[bytes]]:
    """A fresh hidden temp file beside ``final``, open for writing: 0644 less the umask, or
    exactly ``mode`` when one is given (0600 for a private key is born so: never readable by
    others, not even for an instant)."""
    tmp = _temp_path(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644 if mode is None else mode)
    if mode is not None:
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
    return tmp, os.fdopen(fd, "wb")


def write_temp(final: Path, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to a fresh hidden temp file beside ``final`` and fsync it."""
    tmp, f = create_temp(final, mode=mode)
    try:
        with f:
            write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


class HashingWriter:
    """A write-only file that hashes what passes through it: one pass, no copy in memory.

    Large chunks (joblib writes array data in chunks of up to 16 MiB) are hashed on
    ``pool``'s thread while the caller goes on pickling and writing (hashlib releases the
    GIL), one chunk in flight at a time, in order. ``tell`` is what joblib needs to align
    array data.
    """

    _BACKGROUND = 1 << 20

    def __init__(self, f: IO[bytes], pool: Any = None) -> None:
        self._f = f
        self._pool = pool
        self._pending: Any = None
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        if not isinstance(data, bytes):
            data = bytes(data)  # a frame's buffer view: small, and must not change under the hasher
        write_all(self._f, data)
        self._wait()
        if self._pool is not None and len(data) >= self._BACKGROUND:
            self._pending = self._pool.submit(self._digest.update, data)
        else:
            self._digest.update(data)
        self.size += len(data)
        return len(data)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def hexdigest(self) -> str:
        self._wait()
        return self._digest.hexdigest()


def sweep_stale_temps(directory: Path) -> list[Path]:
    """Remove the temp files and folders in ``directory`` left by dead processes of this host; return them."""
    removed: list[Path] = []
    host = _host_tag()
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_RE.match(name)
        if m is None or m["host"] != host or _alive(int(m["pid"])):
            continue
        path = directory / name
        try:
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                path.unlink()
                removed.append(path)
            elif stat.S_ISDIR(mode):  # a staging folder (never followed: lstat, and no symlinks)
                shutil.rmtree(path)
                removed.append(path)
        except OSError:
            pass  # gone already, or not ours to remove: the next sweep tries again
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process may be writing it right now (another thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists under another user (or a pid we cannot test): leave it alone
    return True


def publish(tmp: Path, final: Path, *, overwrite: bool, exists: str | None = None) -> None:
    """Move a finished temp file into place atomically; without ``overwrite`` never clobber.

    A hard link fails with EEXIST when ``final`` exists, which makes "create only if
    absent" atomic; os.replace is atomic for the overwrite case.
    Raises: UsageError when ``final`` exists and ``overwrite`` is false (``exists`` is its
    line, when the caller says it its own way).
    """
    try:
        if overwrite:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)
            except FileExistsError as e:
                raise UsageError(exists or f"{final} already exists; refusing to overwrite it") from e
            tmp.unlink()
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


@contextlib.contextmanager
def writing(
    final: Path, *, overwrite: bool = True, mode: int | None = None, exists: str | None = None
) -> Iterator[IO[bytes]]:
    """The one way to publish a file: yields a fresh temp beside ``final`` (in the scheme the
    sweeper knows, after sweeping what dead writers left there); on a clean exit it is fsynced,
    renamed into place and the folder fsynced. On any failure nothing is left, and an OSError
    (a full disk, a quota, a read-only folder) is ``write_failed``'s one line.

    Write through ``write_all`` (or hand the file to a writer that does its own writes).
    Raises: UsageError.
    """
    sweep_stale_temps(final.parent)
    try:
        tmp, f = create_temp(final, mode=mode)
    except OSError as e:
        raise write_failed(final, e) from e
    try:
        try:
            with f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            publish(tmp, final, overwrite=overwrite, exists=exists)
        except OSError as e:
            raise write_failed(final, e) from e
    finally:
        tmp.unlink(missing_ok=True)


def save(
    final: Path, data: bytes, *, overwrite: bool = True, mode: int | None = None, exists: str | None = None
) -> None:
    """Publish ``data`` as ``final`` through ``writing``. Raises: UsageError."""
    with writing(final, overwrite=overwrite, mode=mode, exists=exists) as f:
        write_all(f, data)


def _allocate(size: int) -> Any:
    try:
        import numpy

        return numpy.empty(size, dtype=numpy.uint8)
    except ImportError:
        return bytearray(size)


def _find_newline(view: memoryview) -> int:
    start = 0
    while start < len(view):
        found = bytes(view[start : start + 4096]).find(b"\n")
        if found >= 0:
            return start + found
        start += 4096
    return -1


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable: fsync the directory entry itself."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
