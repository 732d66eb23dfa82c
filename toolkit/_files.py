"""File primitives: refuse anything but a regular file, hash in one pass, publish atomically."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import uuid
from pathlib import Path

from toolkit.errors import IntegrityError, UsageError

__all__ = ["open_regular", "publish", "read_regular", "sha256_file", "write_temp"]

_CHUNK = 1 << 20


def open_regular(path: Path, what: str) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only, refusing symlinks, FIFOs, devices and directories.

    O_NOFOLLOW refuses a symlink at the last component; O_NONBLOCK keeps a FIFO from
    blocking the open, so it can be refused by fstat instead of hanging the gate.
    Raises: IntegrityError.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
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
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
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


def write_temp(final: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh hidden temp file beside ``final`` and fsync it."""
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Move a finished temp file into place atomically; without ``overwrite`` never clobber.

    A hard link fails with EEXIST when ``final`` exists, which makes "create only if
    absent" atomic; os.replace is atomic for the overwrite case.
    Raises: UsageError when ``final`` exists and ``overwrite`` is false.
    """
    try:
        if overwrite:
            os.replace(tmp, final)
        else:
            try:
                os.link(tmp, final)
            except FileExistsError as e:
                raise UsageError(f"{final} already exists; refusing to overwrite it") from e
            tmp.unlink()
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(final.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
