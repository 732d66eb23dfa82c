"""The directory store: each version's three files in ``<root>/<name>/<version>/``, read-only.

Crash ordering: the files are copied and fsynced into ``<root>/.tmp``; under the index's write
lock for the name the directory is renamed into place, and only then is the row committed. A
kill before the commit leaves a directory no row points at (ignored, and replaced the next time
that version is added); a row therefore never points at missing or partial files.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

from toolkit import _files
from toolkit._registry_index import IndexReader, VersionRow
from toolkit._registry_store import Incoming, TagState

try:
    import fcntl
except ImportError:  # not POSIX: leftovers are then only swept by age
    fcntl = None  # type: ignore[assignment]

__all__ = ["TMP_DIR", "DirStore"]

TMP_DIR = ".tmp"
_LOCK_SUFFIX = ".lock"
_STALE_TMP_S = 24 * 3600
_VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")


class DirStore:
    """Versions as directories under a root (the local registry's, or a shared mount)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        tmp_root = self.root / TMP_DIR
        tmp_root.mkdir(parents=True, exist_ok=True)
        _sweep_stale(tmp_root)
        with _staging_dir(tmp_root) as tmp:
            yield tmp

    def put(self, incoming: Incoming) -> str | None:
        return None  # the copy in .tmp is already complete and fsynced; place() publishes it

    def place(self, incoming: Incoming, index: IndexReader) -> None:
        parent = self.root / incoming.name
        final = parent / incoming.version
        parent.mkdir(exist_ok=True)
        self._discard_orphans(incoming.name, parent, index)
        if os.path.lexists(final):
            _discard(final, self.root / TMP_DIR)
        os.rename(incoming.directory, final)  # files in place first, the row after
        _files.fsync_dir(parent)
        _files.fsync_dir(self.root)

    def unplace(self, incoming: Incoming) -> None:
        final = self.root / incoming.name / incoming.version
        if os.path.lexists(final):
            _discard(final, self.root / TMP_DIR)

    def committed(self, incoming: Incoming) -> None:
        return None

    def path(self, row: VersionRow) -> Path:
        return self.root / row.name / row.version / row.model_file

    def describe(self, row: VersionRow) -> str:
        return str(self.path(row))

    def local(self, row: VersionRow) -> nullcontext[Path]:
        return nullcontext(self.path(row))

    def stage_changed(self, name: str, production: VersionRow | None) -> None:
        return None

    def disagreements(self, row: VersionRow, *, production: VersionRow | None) -> list[TagState]:
        return []

    def _discard_orphans(self, name: str, parent: Path, index: IndexReader) -> None:
        # Called under the name's write lock, when nobody else can be renaming a version into place.
        on_disk = [e.name for e in os.scandir(parent) if _VERSION_RE.fullmatch(e.name)]
        if len(on_disk) <= index.count(name):
            return  # every row has its directory, so nothing is extra (the common case: no listing of rows)
        known = {r.version for r in index.versions(name)}
        for version in on_disk:
            if version not in known:
                _discard(parent / version, self.root / TMP_DIR)


def _discard(path: Path, tmp_root: Path) -> None:
    # Rename first (atomic: the version path is gone at once), delete at leisure.
    tmp_root.mkdir(exist_ok=True)
    trash = tmp_root / f"trash-{uuid.uuid4().hex}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _staging_dir(tmp_root: Path) -> Iterator[Path]:
    """A private directory for one add, guarded by a held flock on ``<dir>.lock`` beside it.

    The kernel drops the lock when its process dies (even by SIGKILL), so the next add
    can tell a copy in flight from a dead one's leftovers without guessing from ages or pids.
    """
    fd, lock_path = tempfile.mkstemp(prefix="add-", suffix=_LOCK_SUFFIX, dir=tmp_root)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a brand-new file: never contended
        tmp = Path(lock_path[: -len(_LOCK_SUFFIX)])
        tmp.mkdir(mode=0o755)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place
    finally:
        with suppress(FileNotFoundError):
            os.unlink(lock_path)  # unlink before close: a sweeper never locks a file still in use
        os.close(fd)


def _sweep_stale(tmp_root: Path) -> None:
    """Remove what killed processes left in ``.tmp``: unlocked copies, trash, and old strays."""
    cutoff = time.time() - _STALE_TMP_S
    for p in tmp_root.iterdir():
        with suppress(OSError):
            if p.name.endswith(_LOCK_SUFFIX):
                _remove_if_abandoned(p)
            elif p.name.startswith("trash-"):
                shutil.rmtree(p, ignore_errors=True)
            elif not os.path.lexists(f"{p}{_LOCK_SUFFIX}") and p.lstat().st_mtime < cutoff:
                # No lock file to ask (its owner died between creating the two): only age tells.
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink()


def _remove_if_abandoned(lock_path: Path) -> None:
    if fcntl is None:
        if lock_path.lstat().st_mtime < time.time() - _STALE_TMP_S:
            shutil.rmtree(str(lock_path)[: -len(_LOCK_SUFFIX)], ignore_errors=True)
            lock_path.unlink()
        return
    fd = os.open(lock_path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its owner is alive and copying
        shutil.rmtree(str(lock_path)[: -len(_LOCK_SUFFIX)], ignore_errors=True)
        lock_path.unlink()
    finally:
        os.close(fd)
