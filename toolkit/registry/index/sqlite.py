"""The registry's index in a SQLite file inside the registry directory (``_registry_db``).

SQLite has one write lock for the whole file (``BEGIN IMMEDIATE``), so ``write(name)`` locks
every name at once; readers see a snapshot and never block a writer (WAL).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolkit import _json
from toolkit.errors import RegistryError
from toolkit.registry.index import DuplicateVersion, EmptyReader, HistoryRow, IndexReader, NameRow, VersionRow
from toolkit.registry.index import sqlite_db as db

__all__ = ["SqliteIndex"]

_ORDER_NEWEST = "major DESC, minor DESC, patch DESC"


class SqliteIndex:
    """``<root>/registry.db``; opened on first use, one connection."""

    def __init__(self, root: Path, on_lost: Callable[[str], None]) -> None:
        self.root = root
        # Called with "missing" or "empty" when the index has no versions: the store raises if
        # registered files exist without it (an index lost, not a registry never used).
        self._on_lost = on_lost
        self._conn: sqlite3.Connection | None = None
        self._writable = False

    @property
    def location(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return self._connect(write=False) is not None

    @contextmanager
    def read(self) -> Iterator[IndexReader]:
        conn = self._connect(write=False)
        if conn is None:
            yield EmptyReader()
            return
        conn.execute("BEGIN DEFERRED")  # one snapshot across several SELECTs (WAL)
        try:
            yield _SqliteReader(conn)
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def write(self, name: str) -> Iterator[_SqliteWriter]:
        conn = self._connect(write=True, create=True)
        assert conn is not None
        with db.write_transaction(conn, path=self.root / db.DB_FILE):
            yield _SqliteWriter(conn)

    def require_writable(self) -> None:
        # The directory store stages in the registry directory itself before anything else, and
        # publishes by a rename under the write lock: a read-only directory or index refuses
        # there (ReadOnlyRegistry) and leaves nothing behind, so there is nothing to ask first.
        return None

    @contextmanager
    def claim(self, name: str, version: str) -> Iterator[None]:
        # The directory store publishes under the write lock itself (a rename): nothing to hold.
        yield

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._writable = False

    def _connect(self, *, write: bool, create: bool = False) -> sqlite3.Connection | None:
        """Read-only for reads (no write access needed), read-write for writes.

        Whatever the mode, an index that is missing or empty while registered version
        directories exist is refused (``on_lost``) before anything is read or written.
        """
        if self._conn is not None and (self._writable or not write):
            return self._conn
        self.close()
        if not (self.root / db.DB_FILE).exists():
            self._on_lost("missing")
        if write:
            conn = db.connect(self.root, create=create)
        else:
            conn = db.connect_readonly(self.root)
            if conn is not None and not db.has_schema(conn):
                conn.close()  # an index killed while being created by an older toolkit: no tables yet
                self._on_lost("empty")
                return None
        if conn is None:
            return None
        try:
            if conn.execute("SELECT 1 FROM versions LIMIT 1").fetchone() is None:
                self._on_lost("empty")
        except BaseException:
            conn.close()
            raise
        self._conn, self._writable = conn, write
        return conn


class _SqliteReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def row(self, name: str, version: str) -> VersionRow | None:
        r = self._one("SELECT * FROM versions WHERE name = ? AND version = ?", name, version)
        return None if r is None else _version_row(r)

    def production_or_latest(self, name: str) -> VersionRow | None:
        # Two index lookups (production, else highest version), never a sort of every version.
        r = self._one("SELECT * FROM versions WHERE name = ? AND status = 'production'", name) or self._one(
            f"SELECT * FROM versions WHERE name = ? ORDER BY {_ORDER_NEWEST} LIMIT 1", name
        )
        return None if r is None else _version_row(r)

    def production(self, name: str) -> str | None:
        r = self._one("SELECT version FROM versions WHERE name = ? AND status = 'production'", name)
        return None if r is None else str(r["version"])

    def name_exists(self, name: str) -> bool:
        return self._one("SELECT 1 FROM names WHERE name = ?", name) is not None

    def count(self, name: str) -> int:
        r = self._one("SELECT versions FROM names WHERE name = ?", name)
        return 0 if r is None else int(r["versions"])

    def names(self) -> list[NameRow]:
        # Per name: a counter row and two index lookups, whatever the number of versions.
        rows = self._conn.execute(
            "SELECT n.name, n.versions AS n,"
            " (SELECT p.version FROM versions p WHERE p.name = n.name AND p.status = 'production') AS production,"
            " (SELECT l.version FROM versions l WHERE l.name = n.name"
            "  ORDER BY l.major DESC, l.minor DESC, l.patch DESC LIMIT 1) AS latest"
            " FROM names n ORDER BY n.name"
        ).fetchall()
        return [NameRow(name=r["name"], versions=r["n"], production=r["production"], latest=r["latest"]) for r in rows]

    def versions(self, name: str, *, limit: int | None = None) -> list[VersionRow]:
        rows = self._conn.execute(
            f"SELECT * FROM versions WHERE name = ? ORDER BY {_ORDER_NEWEST} LIMIT ?",
            (name, -1 if limit is None else max(limit, 0)),
        ).fetchall()
        return [_version_row(r) for r in rows]

    def history(self, name: str) -> list[HistoryRow]:
        rows = self._conn.execute("SELECT * FROM history WHERE name = ? ORDER BY id", (name,)).fetchall()
        return [HistoryRow(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118 (a Row iterates values)

    def production_events(self, name: str) -> list[tuple[str, str]]:
        rows = self._conn.execute(
            "SELECT event, version FROM history WHERE name = ? AND event IN ('promote', 'rollback') ORDER BY id",
            (name,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def best_by(self, name: str, section: str, key: str, *, higher_is_better: bool = True) -> tuple[str, float] | None:
        # In SQL as on PostgreSQL: one pass over NAME's rows (json_extract), only the winner comes back.
        # The path is built from validated metric names ([a-z][a-z0-9_]*), never from free text.
        path = f'$."{section}"."{key}"'
        order = "DESC" if higher_is_better else "ASC"
        r = self._one(
            "SELECT version, json_extract(metrics, ?) AS value FROM versions"
            " WHERE name = ? AND rolled_back = 0 AND json_type(metrics, ?) IN ('real', 'integer')"
            f" ORDER BY value {order}, {_ORDER_NEWEST} LIMIT 1",
            path,
            name,
            path,
        )
        return None if r is None else (str(r["version"]), float(r["value"]))

    def tied(self, name: str, section: str, key: str, value: float) -> list[str]:
        path = f'$."{section}"."{key}"'
        rows = self._conn.execute(
            "SELECT version FROM versions WHERE name = ? AND rolled_back = 0"
            " AND json_type(metrics, ?) IN ('real', 'integer') AND json_extract(metrics, ?) = ?"
            " ORDER BY major, minor, patch",
            (name, path, path, value),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def _one(self, sql: str, *params: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
        return row


class _SqliteWriter(_SqliteReader):
    def insert_version(self, row: VersionRow) -> None:
        try:
            self._conn.execute(
                "INSERT INTO versions (name, version, major, minor, patch, status, rolled_back, model_file, sha256,"
                " size, metrics, data_sha256, registered_at, registered_by)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.name,
                    row.version,
                    row.major,
                    row.minor,
                    row.patch,
                    row.status,
                    int(row.rolled_back),
                    row.model_file,
                    row.sha256,
                    row.size,
                    json.dumps(row.metrics, sort_keys=True),
                    row.data_sha256,
                    row.registered_at,
                    row.registered_by,
                ),
            )
        except sqlite3.IntegrityError as e:
            # The primary key or the semver index: either way NAME VERSION is taken.
            if "UNIQUE constraint failed: versions.name, versions." in str(e):
                raise DuplicateVersion(f"{row.name} {row.version}") from e
            raise RegistryError(f"the registry index refused {row.name} {row.version}: {e}") from e

    def set_status(self, name: str, version: str, status: str, *, rolled_back: bool) -> None:
        try:
            cur = self._conn.execute(
                "UPDATE versions SET status = ?, rolled_back = ? WHERE name = ? AND version = ?",
                (status, int(rolled_back), name, version),
            )
        except sqlite3.IntegrityError as e:
            raise RegistryError(f"the registry index refused: {e}") from e
        if cur.rowcount != 1:
            raise RegistryError(f"{name} has no version {version}")

    def log(self, event: HistoryRow) -> None:
        if event.event == "served":
            db.widen_history_events(self._conn)
        self._conn.execute(
            "INSERT INTO history (at, user, name, version, event, from_status, to_status, reason, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            event.insert_values(),
        )


def _version_row(r: sqlite3.Row) -> VersionRow:
    return VersionRow(
        name=r["name"],
        version=r["version"],
        major=r["major"],
        minor=r["minor"],
        patch=r["patch"],
        status=r["status"],
        rolled_back=bool(r["rolled_back"]),
        model_file=r["model_file"],
        sha256=r["sha256"],
        size=r["size"],
        metrics=_json.loads(r["metrics"]),
        data_sha256=r["data_sha256"],
        registered_at=r["registered_at"],
        registered_by=r["registered_by"],
    )
