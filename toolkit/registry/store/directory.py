"""The directory store: each version's three files in ``<root>/<name>/<version>/``, read-only.

Crash ordering: the files are copied and fsynced into ``<root>/.tmp`` with an ``.uncommitted``
marker beside them; under the index's write lock the directory is renamed into place, and only
then is the row committed; the marker is removed after the commit. A kill before the commit
leaves a marked directory no row points at (ignored, and replaced the next time that version is
added); a row therefore never points at missing or partial files.

The store never deletes or replaces a version directory unless it is its own leftover (marked,
no row). An unmarked directory without a row is a registered version whose row is gone: an
index that is missing or empty while such directories exist is refused until ``recover``
rebuilds it from the cards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

from toolkit import _files
from toolkit.errors import RegistryError
from toolkit.identifiers import VERSION_RE, is_name
from toolkit.registry.index import IndexReader, VersionRow
from toolkit.registry.index.sqlite_db import DB_FILE, connect_readonly, has_schema
from toolkit.registry.store import Incoming, TagState

try:
    import fcntl
except ImportError:  # not POSIX: leftovers are then only swept by age
    fcntl = None  # type: ignore[assignment]

__all__ = ["TMP_DIR", "UNCOMMITTED", "DirStore", "own_leftovers", "registered_dirs"]

TMP_DIR = ".tmp"
_LOCK_SUFFIX = ".lock"
_STALE_TMP_S = 24 * 3600
# Put in a staged copy by ``add`` and removed after its row is committed: a version directory
# that has it and no row is the registry's own leftover, the only kind it ever deletes.
UNCOMMITTED = ".uncommitted"


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
        # The copy in .tmp is complete and fsynced; the marker says "not registered until a row says so".
        (incoming.directory / UNCOMMITTED).write_bytes(b"")
        _files.fsync_dir(incoming.directory)
        return None

    def place(self, incoming: Incoming, index: IndexReader) -> None:
        parent = self.root / incoming.name
        final = parent / incoming.version
        parent.mkdir(exist_ok=True)
        self._discard_orphans(incoming.name, parent, index)
        if os.path.lexists(final):
            if not _is_own_leftover(final):
                raise RegistryError(
                    f"{final} holds files the index does not list (a registered version whose row is lost?); "
                    f"not replacing them: run `toolkit registry recover --registry {self.root}`"
                )
            _discard(final, self.root / TMP_DIR)
        os.rename(incoming.directory, final)  # files in place first, the row after
        _files.fsync_dir(parent)
        _files.fsync_dir(self.root)

    def unplace(self, incoming: Incoming) -> None:
        final = self.root / incoming.name / incoming.version
        if os.path.lexists(final):
            _discard(final, self.root / TMP_DIR)

    def committed(self, incoming: Incoming) -> None:
        # Only now is the directory no longer "ours to discard"; a kill before this unlink leaves
        # a marker beside a row, which the row outranks (only rowless marked directories go).
        final = self.root / incoming.name / incoming.version
        with suppress(OSError):
            (final / UNCOMMITTED).unlink()
            _files.fsync_dir(final)

    def refuse_lost_index(self, state: str) -> None:
        """Raise when registered version directories exist beside a missing or empty index."""
        found = registered_dirs(self.root)
        # A directory loses its marker only after its row is committed, so if the index has rows
        # now, a concurrent add created or filled it between our look at it and the scan: not lost.
        if found and not _index_has_rows(self.root):
            example = found[0].relative_to(self.root)
            raise RegistryError(
                f"the registry index {self.root / DB_FILE} is {state} but {self.root} holds {len(found)} registered "
                f"version director{'y' if len(found) == 1 else 'ies'} (e.g. {example}); refusing to use it: "
                f"run `toolkit registry recover --registry {self.root}` to rebuild the index from their cards"
            )

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
        on_disk = [e.name for e in os.scandir(parent) if VERSION_RE.match(e.name)]
        if len(on_disk) <= index.count(name):
            return  # every row has its directory, so nothing is extra (the common case: no listing of rows)
        known = {r.version for r in index.versions(name)}
        for version in on_disk:
            # Only what this registry staged and never committed; a directory without the
            # marker is a registered version whose row is missing, and is never touched.
            if version not in known and _is_own_leftover(parent / version):
                _discard(parent / version, self.root / TMP_DIR)


def own_leftovers(root: Path) -> list[Path]:
    """Marked version directories: copies whose add may or may not have committed before a kill."""
    found: list[Path] = []
    with suppress(OSError):
        for name_dir in sorted(root.iterdir()):
            if is_name(name_dir.name) and name_dir.is_dir() and not name_dir.is_symlink():
                found += [d for d in sorted(name_dir.iterdir()) if VERSION_RE.match(d.name) and _is_own_leftover(d)]
    return found


def registered_dirs(root: Path) -> list[Path]:
    """Version directories (``<name>/<X.Y.Z>/``) that ``add`` committed: no ``.uncommitted`` marker."""
    found: list[Path] = []
    try:
        names = sorted(e.name for e in os.scandir(root) if is_name(e.name) and e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return found
    except OSError as e:
        raise RegistryError(f"cannot read the registry {root}: {e.strerror or e}") from e
    for name in names:
        with suppress(OSError):
            for d in sorted(os.scandir(root / name), key=lambda d: d.name):
                if VERSION_RE.match(d.name) and d.is_dir(follow_symlinks=False) and not _is_own_leftover(Path(d.path)):
                    found.append(Path(d.path))
    return found


def _index_has_rows(root: Path) -> bool:
    conn = connect_readonly(root)
    if conn is None:
        return False
    try:
        return has_schema(conn) and conn.execute("SELECT 1 FROM versions LIMIT 1").fetchone() is not None
    finally:
        conn.close()


def _is_own_leftover(version_dir: Path) -> bool:
    return os.path.lexists(version_dir / UNCOMMITTED)


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
