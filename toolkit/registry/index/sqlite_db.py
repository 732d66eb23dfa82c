"""The registry's index: one SQLite file with the versions table and the append-only history.

SQLite gives the registry what it must not hand-roll: atomic multi-row transactions,
a write lock shared by every process on the host (``BEGIN IMMEDIATE`` + busy timeout),
crash recovery of half-done writes, and readers that never block writers (WAL).
Invariants live in the schema itself, so no code path can break them:
at most one production version per name (a partial unique index), a registered
version is never deleted or rewritten, and history rows are never updated or deleted
(triggers that abort the statement).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from toolkit import _files
from toolkit.errors import ReadOnlyRegistry, RegistryError

__all__ = [
    "BUSY_TIMEOUT_S",
    "DB_FILE",
    "SCHEMA_VERSION",
    "ReadOnlyRegistry",
    "connect",
    "connect_readonly",
    "has_schema",
    "is_readonly",
    "widen_history_events",
    "write_transaction",
]

DB_FILE = "registry.db"
SCHEMA_VERSION = 1
# Writers hold the lock for milliseconds (the slow copying happens before it is taken),
# so a long wait means something is wrong rather than busy.
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    major         INTEGER NOT NULL,
    minor         INTEGER NOT NULL,
    patch         INTEGER NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('staging', 'production', 'archived')),
    rolled_back   INTEGER NOT NULL DEFAULT 0 CHECK (rolled_back IN (0, 1)),
    model_file    TEXT    NOT NULL,
    sha256        TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    metrics       TEXT    NOT NULL,
    data_sha256   TEXT,
    registered_at TEXT    NOT NULL,
    registered_by TEXT    NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_semver ON versions (name, major, minor, patch);
CREATE UNIQUE INDEX IF NOT EXISTS versions_one_production ON versions (name) WHERE status = 'production';

-- One row per name, kept by a trigger, so listing names never scans versions.
CREATE TABLE IF NOT EXISTS names (
    name     TEXT PRIMARY KEY,
    versions INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS names_count AFTER INSERT ON versions
BEGIN
    INSERT INTO names (name, versions) VALUES (NEW.name, 1)
    ON CONFLICT (name) DO UPDATE SET versions = versions + 1;
END;

CREATE TABLE IF NOT EXISTS history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    user        TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    event       TEXT NOT NULL
                CHECK (event IN ('register', 'promote', 'archive', 'rollback', 'rolled_back', 'recovered', 'served')),
    from_status TEXT,
    to_status   TEXT NOT NULL,
    reason      TEXT,
    detail      TEXT
);
CREATE INDEX IF NOT EXISTS history_by_name ON history (name, id);

CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history
BEGIN SELECT RAISE(ABORT, 'history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
BEGIN SELECT RAISE(ABORT, 'a registered version is never removed'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_rewrite
BEFORE UPDATE OF name, version, major, minor, patch, model_file, sha256, size, metrics, data_sha256,
                 registered_at, registered_by ON versions
BEGIN SELECT RAISE(ABORT, 'a registered version is never overwritten'); END;
"""


def connect(root: Path, *, create: bool) -> sqlite3.Connection | None:
    """Open ``<root>/registry.db`` for writing (creating it if asked); None if absent and not asked.

    A new index is built under a temporary name and linked into place complete, so a
    process killed while creating it never leaves a ``registry.db`` without its schema.

    Raises:
        ReadOnlyRegistry: the root or the index cannot be written.
        RegistryError: the index is unreadable or from a newer toolkit.
    """
    path = root / DB_FILE
    if not path.exists():
        if not create:
            return None
        try:
            _create_atomically(root, path)
        except sqlite3.Error as e:
            raise _write_error(path, e) from e
        except OSError as e:
            raise _write_error(path, e) from e
    if not (os.access(path, os.W_OK) and os.access(root, os.W_OK)):
        # SQLite would open it read-only without a word, leave its -wal and -shm files in a folder
        # it may write, and refuse only at the first write: say so now, having written nothing.
        raise ReadOnlyRegistry(
            f"the registry {root} is read-only here (no write access); reading works, writing does not"
        )
    try:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so the module never opens
        # a deferred transaction behind our back (deferred writers deadlock-upgrade under load).
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except (sqlite3.Error, OSError) as e:
        raise _write_error(path, e) from e
    try:
        _configure(conn)
        _ensure_schema(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        if is_readonly(e):
            raise _write_error(path, e) from e
        raise RegistryError(f"the registry index {path} is unreadable: {e}") from e
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(root: Path) -> sqlite3.Connection | None:
    """Open ``<root>/registry.db`` for reading only; None if absent. Writes nothing anywhere.

    ``mode=ro`` first (sees a live writer's WAL); where SQLite cannot even create its
    shared-memory file (a read-only mount or directory), ``immutable=1``, which is right
    there because nothing can change the file under us.

    Raises:
        RegistryError: the index is unreadable or from a newer toolkit.
    """
    path = root / DB_FILE
    if not path.exists():
        return None
    last: sqlite3.Error | None = None
    for flags in ("mode=ro", "mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(
                f"file:{quote(str(path.absolute()))}?{flags}", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
            )
        except sqlite3.Error as e:
            last = e
            continue
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"the registry index {path} has schema version {version}; this toolkit knows {SCHEMA_VERSION}: "
                    "upgrade"
                )
            return conn
        except sqlite3.DatabaseError as e:
            conn.close()
            last = e
        except BaseException:
            conn.close()
            raise
    raise RegistryError(f"the registry index {path} is unreadable: {last}")


def has_schema(conn: sqlite3.Connection) -> bool:
    """Whether the index has its tables (an index from before atomic creation may lack them)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0]) >= 1


def _configure(conn: sqlite3.Connection) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    _set_wal(conn)
    # FULL: a command that said "registered" stays registered after a power cut, not just a kill.
    conn.execute("PRAGMA synchronous = FULL")


def _create_atomically(root: Path, path: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    # The one temp scheme: an index creation killed midway left a file the sweep removes.
    _files.sweep_stale_temps(root)
    tmp = _files.temp_path(root / DB_FILE)
    try:
        conn = sqlite3.connect(tmp, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            _configure(conn)
            _ensure_schema(conn, tmp)
        finally:
            conn.close()  # the last connection checkpoints and removes the temp's -wal and -shm
        with suppress(FileExistsError):  # another process created it first: theirs is as good
            os.link(tmp, path)  # never replaces: link fails where rename would clobber
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with suppress(FileNotFoundError):
                leftover.unlink()


def is_readonly(e: BaseException) -> bool:
    """Whether ``e`` (an OSError or an SQLite error) says the registry cannot be written here."""
    if isinstance(e, OSError):
        return e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    text = str(e).lower()
    return "readonly" in text or "read-only" in text or "unable to open database file" in text


def _write_error(path: Path, e: BaseException) -> RegistryError:
    if is_readonly(e):
        return ReadOnlyRegistry(f"the registry {path.parent} is read-only here ({e}); reading works, writing does not")
    return RegistryError(f"cannot open the registry index {path}: {e}")


@contextmanager
def write_transaction(conn: sqlite3.Connection, *, path: Path) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock up front, roll back on any error.

    SQLite opens a file it may not write (a read-only mount, a file or folder without write
    permission, as inside a container whose user does not own the mount) read-only without a
    word and says so only at the first write: whether that is the BEGIN, a statement or the
    COMMIT, it is :class:`ReadOnlyRegistry` (exit 4) naming ``path``'s registry, never a bare
    ``sqlite3.OperationalError``.
    """
    where = path
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        if is_readonly(e):
            raise _write_error(where, e) from e
        raise RegistryError(f"the registry is busy (another writer held it for {BUSY_TIMEOUT_S:.0f}s): {e}") from e
    try:
        yield conn
    except sqlite3.OperationalError as e:
        _rollback(conn)
        if is_readonly(e):
            raise _write_error(where, e) from e
        raise RegistryError(f"the registry index {where} refused a write: {e}") from e
    except BaseException:
        _rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as e:
        _rollback(conn)
        if is_readonly(e):
            raise _write_error(where, e) from e
        raise RegistryError(f"the registry could not commit: {e}") from e


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite may already have rolled back (a failed COMMIT, a read-only refusal): then there is none.
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _set_wal(conn: sqlite3.Connection) -> None:
    # Switching to WAL needs a moment of exclusive access; 20 processes opening a fresh
    # registry at once can collide here even with a busy timeout, so retry briefly.
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    if str(mode).lower() != "wal":
        # e.g. a filesystem without shared memory: rollback journal is still crash safe, just slower.
        conn.execute("PRAGMA journal_mode = DELETE")


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise RegistryError(
            f"the registry index {path} has schema version {version}; this toolkit knows {SCHEMA_VERSION}: upgrade"
        )
    with write_transaction(conn, path=path):
        # Re-read under the lock: another process may have created it meanwhile.
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            for statement in _split_statements(_SCHEMA):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


_HISTORY_TABLE = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS history") : _SCHEMA.index("CREATE INDEX")]
_HISTORY_REST = _SCHEMA[
    _SCHEMA.index("CREATE INDEX IF NOT EXISTS history_by_name") : _SCHEMA.index(
        "CREATE TRIGGER IF NOT EXISTS versions_no_delete"
    )
]


def widen_history_events(conn: sqlite3.Connection) -> None:
    """Let an index made before the ``served`` event accept it; call inside a write transaction.

    SQLite cannot alter a CHECK constraint, so the history table is rebuilt as SQLite's
    ALTER TABLE documentation prescribes (new table, copy, drop, rename, then its index and
    triggers), all in the caller's transaction: another process sees the old table or the
    new one, never neither. Dropping a table fires no DELETE trigger; every row is copied with
    its id, and the AUTOINCREMENT counter follows the rename. The schema version stays 1: an
    older toolkit reads and writes the widened table unchanged.
    """
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'history'").fetchone()
    if row is None or "'served'" in row[0]:
        return
    table = _HISTORY_TABLE.replace("CREATE TABLE IF NOT EXISTS history", "CREATE TABLE history_widened", 1)
    conn.execute(table)
    conn.execute("INSERT INTO history_widened SELECT * FROM history")
    conn.execute("DROP TABLE history")
    conn.execute("ALTER TABLE history_widened RENAME TO history")
    for statement in _split_statements(_HISTORY_REST):
        conn.execute(statement)


def _split_statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction first; split on complete statements instead.
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    return [s for s in statements if s]
