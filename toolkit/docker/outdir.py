"""What a container leaves behind reaches the host only as regular files, only where the user said.

A container never gets the user's ``--out``: it writes into a fresh folder the toolkit made
(``staging``), and afterwards only regular files are copied from there into ``--out``,
through directory descriptors opened with O_NOFOLLOW, so a symlink the container (or an
earlier run) left never redirects a write. ``--out`` itself must be a real directory: not a
symlink, not ``/`` or a system folder, not the project or a parent of it. Nothing outside
``staging`` is ever chowned.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from toolkit import _files
from toolkit.errors import UsageError

__all__ = ["Collected", "check_out_dir", "collect", "make_staging", "place", "seed"]

# Folders no run may write into or over (and everything below the first group).
_SYSTEM_TREES = ("bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "sys", "usr")
_SYSTEM_FOLDERS = ("home", "media", "mnt", "opt", "root", "run", "srv", "tmp", "var")


def check_out_dir(out: Path, *, project: Path | None, root: Path = Path("/")) -> Path:
    """``out`` as an absolute path after checking it may receive a container's files; created
    (with its missing parents) if missing.

    ``project`` is the folder mounted read-only beside it (None: none is).
    ``root`` is the filesystem root the system folders are under (``/``; a throwaway one in tests).
    Raises: UsageError naming the reason.
    """
    given = out
    out = Path(os.path.abspath(out))
    if os.path.islink(out):
        raise UsageError(f"{given}: --out is a symbolic link; give the real folder it points to")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{given}: --out is not a folder")
    real = Path(os.path.realpath(out))
    root_real = Path(os.path.realpath(root))
    if real == root_real:
        raise UsageError(f"{given}: --out is the filesystem root; give a folder of its own")
    try:
        relative = real.relative_to(root_real)
    except ValueError:
        relative = None
    if relative is not None and relative.parts:
        top = relative.parts[0]
        if top in _SYSTEM_TREES or (len(relative.parts) == 1 and top in _SYSTEM_FOLDERS):
            raise UsageError(f"{given}: --out is a system folder ({real}); give a folder of its own")
    project_real = Path(os.path.realpath(project)) if project is not None else None
    if project_real is not None and (real == project_real or project_real.is_relative_to(real)):
        raise UsageError(
            f"{given}: --out is the project folder or a parent of it (mounted read-only); give a folder inside it"
        )
    if not out.exists():
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise UsageError(f"{given}: cannot create the output folder ({e.strerror or e})") from e
    return out


def make_staging(prefix: str, *, owner: int | None = None) -> Path:
    """A fresh, private folder the toolkit owns, for a container to write into; chowned to
    ``owner`` (the image's user, when root runs the container) and nothing else is."""
    staging = _files.scratch_dir(prefix.rstrip("-"))
    if owner is not None:
        os.chown(staging, owner, owner)
    return staging


@dataclass(frozen=True, kw_only=True, slots=True)
class Collected:
    """What ``collect`` copied, and what it left behind (links, devices, fifos, sockets)."""

    files: tuple[str, ...]
    skipped: tuple[str, ...]


def seed(out: Path, staging: Path, *, owner: int | None = None) -> dict[str, tuple[int, int]]:
    """Copy ``out``'s regular files into ``staging`` (what the container sees at /out, as
    before: earlier outputs included), never following a link; the copies, which the toolkit
    made, are chowned to ``owner``. Returns each copy's (size, mtime_ns), so ``collect``
    brings back only what the container added or changed."""
    got = collect(out, staging)
    if owner is not None:
        for dirpath, dirnames, filenames in os.walk(staging):
            for name in (*dirnames, *filenames):
                os.chown(os.path.join(dirpath, name), owner, owner, follow_symlinks=False)
    seen = {}
    for rel in got.files:
        st = os.lstat(staging / rel)
        seen[rel] = (st.st_size, st.st_mtime_ns)
    return seen


def collect(staging: Path, out: Path, *, unchanged: dict[str, tuple[int, int]] | None = None) -> Collected:
    """Copy every regular file under ``staging`` into ``out`` (same relative path), owned by
    the caller; never follow a link on either side. An existing file in ``out`` is replaced
    atomically; a symlink there is replaced, never written through. Files in ``unchanged``
    (``seed``'s answer) whose size and mtime are still the same are left alone.

    Raises: UsageError (``out`` is not a real folder, or a path in it is not one where a
    folder is needed).
    """
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        out_fd = os.open(out, flags)
    except OSError as e:
        raise UsageError(f"{out}: not a real folder ({e.strerror or e}); nothing copied") from e
    _files.sweep_stale_temps(out)  # what an earlier, killed copy left (its scheme is _files')
    files: list[str] = []
    skipped: list[str] = []
    try:
        src_fd = os.open(staging, flags)
        try:
            _copy_tree(src_fd, out_fd, "", files, skipped, out, unchanged or {})
        finally:
            os.close(src_fd)
    finally:
        os.close(out_fd)
    return Collected(files=tuple(files), skipped=tuple(skipped))


def place(files: list[Path], out: Path) -> None:
    """Copy ``files`` (regular files in a staging folder) into ``out``, refusing to replace
    anything there and never following a link. Raises: UsageError."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        out_fd = os.open(out, flags)
    except OSError as e:
        raise UsageError(f"{out}: not a real folder ({e.strerror or e}); nothing copied") from e
    _files.sweep_stale_temps(out)
    try:
        for path in files:
            try:
                os.stat(path.name, dir_fd=out_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                raise UsageError(f"{out / path.name}: already exists; not overwriting it")
        for path in files:
            src_fd = os.open(path.parent, flags)
            try:
                if not stat.S_ISREG(os.stat(path.name, dir_fd=src_fd, follow_symlinks=False).st_mode):
                    raise UsageError(f"{path}: the container left something that is not a regular file; not copied")
                try:
                    _copy_file(src_fd, out_fd, path.name, 0o644)
                except OSError as e:  # a full disk: the one line, and the temp is gone
                    raise _files.write_failed(out / path.name, e) from e
            finally:
                os.close(src_fd)
    except OSError as e:
        raise UsageError(f"{out}: cannot write the artifact there ({e.strerror or e})") from e
    finally:
        os.close(out_fd)


def _copy_tree(
    src_fd: int,
    dst_fd: int,
    prefix: str,
    files: list[str],
    skipped: list[str],
    out: Path,
    unchanged: dict[str, tuple[int, int]],
) -> None:
    for entry in sorted(os.scandir(src_fd), key=lambda e: e.name):
        rel = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileExistsError):
                os.mkdir(entry.name, 0o755, dir_fd=dst_fd)
            try:
                child_dst = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst_fd)
            except OSError as e:
                raise UsageError(f"{out / rel}: not a real folder ({e.strerror or e}); not copying into it") from e
            child_src = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_fd)
            try:
                _copy_tree(child_src, child_dst, rel + "/", files, skipped, out, unchanged)
            finally:
                os.close(child_src)
                os.close(child_dst)
        elif stat.S_ISREG(st.st_mode):
            if unchanged.get(rel) == (st.st_size, st.st_mtime_ns):
                continue  # seeded from --out and not touched by the container
            try:
                _copy_file(src_fd, dst_fd, entry.name, st.st_mode)
            except OSError as e:  # a full disk: the one line, and the temp is gone
                raise _files.write_failed(out / rel, e) from e
            files.append(rel)
        else:
            skipped.append(rel)


def _copy_file(src_fd: int, dst_fd: int, name: str, mode: int) -> None:
    tmp = _files.temp_name(name)  # the one scheme: what a killed copy leaves is swept
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_fd)
    try:
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644 | (mode & 0o111), dir_fd=dst_fd)
        try:
            while chunk := os.read(src, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view) :]
            os.fsync(dst)
        finally:
            os.close(dst)
        os.replace(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dst_fd)
        raise
    finally:
        os.close(src)
