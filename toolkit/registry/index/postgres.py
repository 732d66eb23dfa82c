"""The registry's index on a PostgreSQL server: the team backend of ``_registry_index.Index``.

Everything lives in the schema ``toolkit`` of the database the connection string names, so a
team can share a database with other tools. The database enforces the registry's invariants
itself, as the SQLite index does: a partial unique index allows one production version per
name, a trigger refuses any change to a registered version other than its status and its
rolled-back mark and refuses deleting it, and triggers refuse UPDATE, DELETE and TRUNCATE on
the history.

Concurrency: a write transaction takes a transaction-scoped advisory lock on its model name
first (READ COMMITTED). Writers of one name queue behind each other exactly like SQLite's
``BEGIN IMMEDIATE`` (so a read-then-write such as "is this version free?" or "what is
production?" stays true until commit, with no serialization failures to retry), and writers
of different names never wait for each other. The lock dies with the transaction, so a
killed client (its socket closes, the server rolls back) never leaves a name locked. The
constraints stay the last line of defence either way.

Connection strings are libpq's (``postgresql://user@host:port/db``; ``PGPASSWORD``,
``~/.pgpass``, ``PGSSLMODE`` ... all honoured by libpq). A server that is down or refuses the
login raises RemoteError (exit 6) within ``CONNECT_TIMEOUT_S`` and names the host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from toolkit.errors import ReadOnlyRegistry, RegistryError, RemoteError, UsageError
from toolkit.registry.index import (
    EVENTS,
    DuplicateVersion,
    EmptyReader,
    HistoryRow,
    IndexReader,
    NameRow,
    VersionRow,
    is_postgres_url,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "LOCK_TIMEOUT_S",
    "SCHEMA",
    "SCHEMA_VERSION",
    "PgIndex",
    "describe",
    "is_postgres_url",
]

SCHEMA = "toolkit"
SCHEMA_VERSION = 1
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 120
# The client's own bound on every round trip after connecting (a statement, a fetch, a commit):
# statement_timeout is the server's to enforce, and a server that stalls or drips its answer
# (or a half-open connection) would otherwise be waited on forever. Longer than the server's
# own timeouts, so a legitimate slow statement ends with the server's message first.
ROUND_TRIP_DEADLINE_S = STATEMENT_TIMEOUT_S + 30
# Writers hold a name's lock for milliseconds (files are stored before it is taken),
# so a long wait means something is wrong rather than busy.
LOCK_TIMEOUT_S = 60
# One constant key for "creating the schema": every first-use process queues on it.
_SCHEMA_LOCK_KEY = 0x746F6F6C6B6974  # "toolkit"

_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};

CREATE TABLE {SCHEMA}.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE {SCHEMA}.versions (
    name          text    NOT NULL,
    version       text    NOT NULL,
    major         integer NOT NULL CHECK (major >= 0),
    minor         integer NOT NULL CHECK (minor >= 0),
    patch         integer NOT NULL CHECK (patch >= 0),
    status        text    NOT NULL CHECK (status IN ('staging', 'production', 'archived')),
    rolled_back   boolean NOT NULL DEFAULT false,
    model_file    text    NOT NULL,
    sha256        text    NOT NULL CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
    size          bigint  NOT NULL CHECK (size >= 0),
    metrics       jsonb   NOT NULL,
    data_sha256   text,
    registered_at text    NOT NULL,
    registered_by text    NOT NULL,
    store_ref     text    CHECK (store_ref ~ '^sha256:[0-9a-f]{{64}}$'),
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX versions_semver ON {SCHEMA}.versions (name, major DESC, minor DESC, patch DESC);
CREATE UNIQUE INDEX versions_one_production ON {SCHEMA}.versions (name) WHERE status = 'production';

-- One row per name, kept by a trigger, so listing names never scans versions.
CREATE TABLE {SCHEMA}.names (
    name     text PRIMARY KEY,
    versions integer NOT NULL
);

CREATE TABLE {SCHEMA}.history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          text NOT NULL,
    "user"      text NOT NULL,
    name        text NOT NULL,
    version     text NOT NULL,
    event       text NOT NULL
                CONSTRAINT history_event_check
                CHECK (event IN ('register', 'promote', 'archive', 'rollback', 'rolled_back', 'recovered', 'served')),
    from_status text,
    to_status   text NOT NULL,
    reason      text,
    detail      text
);
CREATE INDEX history_by_name ON {SCHEMA}.history (name, id);

CREATE FUNCTION {SCHEMA}.count_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {SCHEMA}.names AS n (name, versions) VALUES (NEW.name, 1)
    ON CONFLICT (name) DO UPDATE SET versions = n.versions + 1;
    RETURN NULL;
END $$;
CREATE TRIGGER names_count AFTER INSERT ON {SCHEMA}.versions
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.count_version();

-- The message is the trigger's argument; 23001 (restrict_violation) marks it as a rule.
CREATE FUNCTION {SCHEMA}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER history_no_change BEFORE UPDATE OR DELETE ON {SCHEMA}.history
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.refuse('history is append-only');
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON {SCHEMA}.history
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.refuse('history is append-only');
CREATE TRIGGER versions_no_delete BEFORE DELETE ON {SCHEMA}.versions
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.refuse('a registered version is never removed');
CREATE TRIGGER versions_no_truncate BEFORE TRUNCATE ON {SCHEMA}.versions
    FOR EACH STATEMENT EXECUTE FUNCTION {SCHEMA}.refuse('a registered version is never removed');

-- Only the status and the rolled-back mark of a registered version may change.
CREATE FUNCTION {SCHEMA}.versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.name, NEW.version, NEW.major, NEW.minor, NEW.patch, NEW.model_file, NEW.sha256, NEW.size,
        NEW.metrics, NEW.data_sha256, NEW.registered_at, NEW.registered_by, NEW.store_ref)
       IS DISTINCT FROM
       (OLD.name, OLD.version, OLD.major, OLD.minor, OLD.patch, OLD.model_file, OLD.sha256, OLD.size,
        OLD.metrics, OLD.data_sha256, OLD.registered_at, OLD.registered_by, OLD.store_ref) THEN
        RAISE EXCEPTION 'a registered version is never overwritten' USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER versions_no_rewrite BEFORE UPDATE ON {SCHEMA}.versions
    FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.versions_immutable();
"""

_VERSION_COLUMNS = (
    "name, version, major, minor, patch, status, rolled_back, model_file, sha256, size,"
    " metrics, data_sha256, registered_at, registered_by, store_ref"
)
_ORDER_NEWEST = "major DESC, minor DESC, patch DESC"


def describe(url: str) -> str:
    """``postgresql://user@host:port/db`` for messages: never the password, whatever the URL held.

    Raises:
        UsageError: not a connection string libpq can parse.
    """
    params = _parse(url)
    host = params.get("host") or "localhost"
    if "," in host:  # libpq allows several hosts; name them all
        host = f"[{host}]"
    port = params.get("port") or "5432"
    user = params.get("user")
    db = params.get("dbname") or user or ""
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


class _BoundedConnection(psycopg.Connection[dict[str, Any]]):
    """A connection whose every wait for the server has a deadline (psycopg's has none)."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        return super().wait(gen, interval, ROUND_TRIP_DEADLINE_S if timeout is None else timeout)


class PgIndex:
    """The team index on one PostgreSQL database; connects on first use, one connection."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._where = describe(url)  # also validates the URL before anything connects
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        self._ready = False  # the schema is known to exist
        self._writable = False  # this connection's user was found able to write the index

    @property
    def location(self) -> str:
        return self._where

    def exists(self) -> bool:
        return self._connect(create=False) is not None

    @contextmanager
    def read(self) -> Iterator[IndexReader]:
        """A REPEATABLE READ snapshot: several queries see one state of the registry."""
        conn = self._connect(create=False)
        with self._translate():
            if conn is None:
                yield EmptyReader()
                return
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield _PgReader(cur)

    def require_writable(self) -> None:
        """Refuse a user who can read the index but not write it, before anything is pushed.

        Asked of the server, with no write: the privileges every write needs (the version,
        name-count and history tables; the database's CREATE when there is no schema yet), and
        whether this session's transactions are read-only (``default_transaction_read_only`` for
        the role, or a hot standby). Checked once per connection.
        """
        if self._writable:
            return
        conn = self._connect(create=False)
        assert self._conn is not None
        with self._translate():
            missing = _missing_write_rights(self._conn, schema=conn is not None)
        if missing:
            raise ReadOnlyRegistry(
                f"the registry {self._where} is read-only here ({missing}); reading works, writing does not"
            )
        self._writable = True

    @contextmanager
    def write(self, name: str) -> Iterator[_PgWriter]:
        """One transaction holding NAME's advisory lock; rolled back on any exception."""
        self.require_writable()
        conn = self._connect(create=True)
        assert conn is not None
        with self._translate(), conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"toolkit.registry/{name}",))
            yield _PgWriter(cur)

    @contextmanager
    def claim(self, name: str, version: str) -> Iterator[None]:
        """A session-level advisory lock on NAME VERSION: it dies with the connection if the process does."""
        conn = self._connect(create=True)
        assert conn is not None
        self.require_writable()
        key = f"toolkit.registry.store/{name}/{version}"
        with self._translate():
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        try:
            yield
        finally:
            if self._conn is conn:  # a lost connection already released it
                with self._translate():
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._ready = False
            self._writable = False

    # -- internals ----------------------------------------------------------------------------

    def _connect(self, *, create: bool) -> psycopg.Connection[dict[str, Any]] | None:
        if self._conn is None:
            params: dict[str, Any] = {"application_name": "toolkit-registry"}
            if "connect_timeout" not in _parse(self._url):
                params["connect_timeout"] = CONNECT_TIMEOUT_S
            try:
                # connect_timeout bounds the whole connection (psycopg waits on it as one deadline,
                # however the server drips its answers); after that, _BoundedConnection's deadline.
                self._conn = _BoundedConnection.connect(self._url, autocommit=True, row_factory=dict_row, **params)
            except psycopg.OperationalError as e:
                raise RemoteError(f"PostgreSQL at {self._where} {_why_unreachable(e)}") from e
            except psycopg.Error as e:
                raise RemoteError(f"PostgreSQL at {self._where}: {_first_line(e)}") from e
            with self._translate():
                self._conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_S}s'")
                # No statement runs forever either (a server that stalls mid-query).
                self._conn.execute(f"SET statement_timeout = '{STATEMENT_TIMEOUT_S}s'")
        if not self._ready:
            with self._translate():
                self._ready = self._ensure_schema(self._conn, create=create)
            if not self._ready:
                return None
        return self._conn

    def _ensure_schema(self, conn: psycopg.Connection[dict[str, Any]], *, create: bool) -> bool:
        found = _schema_version(conn)
        if found is None and create:
            with conn.transaction():
                # DDL is transactional here: the schema appears whole or not at all, and the
                # lock makes twenty first-use processes create it once.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                found = _schema_version(conn)
                if found is None:
                    conn.execute(_DDL)
                    conn.execute(
                        f"INSERT INTO {SCHEMA}.meta (key, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
                    )
                    found = SCHEMA_VERSION
        if found is None:
            return False
        if found > SCHEMA_VERSION:
            raise RegistryError(
                f"the registry index at {self._where} has schema version {found}; "
                f"this toolkit knows {SCHEMA_VERSION}: upgrade the toolkit"
            )
        if found < SCHEMA_VERSION:  # pragma: no cover - there is no older schema yet
            raise RegistryError(f"the registry index at {self._where} has an old schema version {found}")
        return True

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """psycopg's errors, translated once at the boundary into the toolkit's."""
        try:
            yield
        except pgerrors.LockNotAvailable as e:
            raise RegistryError(
                f"the registry at {self._where} is busy (another writer held it for {LOCK_TIMEOUT_S}s)"
            ) from e
        except (pgerrors.UndefinedColumn, pgerrors.UndefinedTable, pgerrors.DatatypeMismatch) as e:
            # A schema of that name this toolkit did not create (or someone altered it).
            raise RegistryError(
                f"the registry index at {self._where} has a '{SCHEMA}' schema this toolkit did not create "
                f"({_first_line(e)}); refused"
            ) from e
        except pgerrors._WaitTimeout as e:
            self._drop()  # mid-answer: the connection's state is unknown
            raise RemoteError(
                f"PostgreSQL at {self._where}: no complete answer within {ROUND_TRIP_DEADLINE_S}s"
                " (the overall deadline)"
            ) from e
        except pgerrors.QueryCanceled as e:
            raise RemoteError(f"PostgreSQL at {self._where}: a statement ran over {STATEMENT_TIMEOUT_S}s") from e
        except pgerrors.RestrictViolation as e:
            raise RegistryError(f"the registry index at {self._where} refused: {_first_line(e)}") from e
        except pgerrors.ReadOnlySqlTransaction as e:
            # Checked before any write; this is a server turned read-only since (a promoted standby back).
            raise ReadOnlyRegistry(
                f"the registry {self._where} is read-only here ({_first_line(e)}); reading works, writing does not"
            ) from e
        except pgerrors.InsufficientPrivilege as e:
            raise RemoteError(f"PostgreSQL at {self._where} refused: {_first_line(e)}") from e
        except psycopg.OperationalError as e:
            self._drop()
            raise RemoteError(f"PostgreSQL at {self._where} {_why_unreachable(e)}") from e
        except psycopg.IntegrityError as e:
            raise RegistryError(f"the registry index at {self._where} refused: {_first_line(e)}") from e
        except psycopg.InterfaceError as e:
            self._drop()
            raise RemoteError(f"PostgreSQL at {self._where}: connection lost ({_first_line(e)})") from e

    def _drop(self) -> None:
        conn, self._conn, self._ready, self._writable = self._conn, None, False, False
        if conn is not None:
            with suppress(psycopg.Error):
                conn.close()


class _PgReader:
    def __init__(self, cur: psycopg.Cursor[dict[str, Any]]) -> None:
        self._cur = cur

    def row(self, name: str, version: str) -> VersionRow | None:
        r = self._one(
            f"SELECT {_VERSION_COLUMNS} FROM {SCHEMA}.versions WHERE name = %s AND version = %s", name, version
        )
        return None if r is None else _version_row(r)

    def production_or_latest(self, name: str) -> VersionRow | None:
        # Two index lookups (production, else highest version), never a sort of every version.
        r = self._one(
            f"SELECT {_VERSION_COLUMNS} FROM {SCHEMA}.versions WHERE name = %s AND status = 'production'", name
        ) or self._one(
            f"SELECT {_VERSION_COLUMNS} FROM {SCHEMA}.versions WHERE name = %s ORDER BY {_ORDER_NEWEST} LIMIT 1", name
        )
        return None if r is None else _version_row(r)

    def production(self, name: str) -> str | None:
        r = self._one(f"SELECT version FROM {SCHEMA}.versions WHERE name = %s AND status = 'production'", name)
        return None if r is None else str(r["version"])

    def name_exists(self, name: str) -> bool:
        return self._one(f"SELECT 1 AS x FROM {SCHEMA}.names WHERE name = %s", name) is not None

    def count(self, name: str) -> int:
        r = self._one(f"SELECT versions FROM {SCHEMA}.names WHERE name = %s", name)
        return 0 if r is None else int(r["versions"])

    def names(self) -> list[NameRow]:
        # Per name: a counter row and two index lookups, whatever the number of versions.
        self._cur.execute(
            f"SELECT n.name, n.versions,"
            f" (SELECT p.version FROM {SCHEMA}.versions p WHERE p.name = n.name AND p.status = 'production')"
            f"   AS production,"
            f" (SELECT l.version FROM {SCHEMA}.versions l WHERE l.name = n.name"
            f"   ORDER BY l.major DESC, l.minor DESC, l.patch DESC LIMIT 1) AS latest"
            f" FROM {SCHEMA}.names n ORDER BY n.name"
        )
        return [
            NameRow(name=r["name"], versions=int(r["versions"]), production=r["production"], latest=r["latest"])
            for r in self._cur.fetchall()
        ]

    def versions(self, name: str, *, limit: int | None = None) -> list[VersionRow]:
        self._cur.execute(
            f"SELECT {_VERSION_COLUMNS} FROM {SCHEMA}.versions WHERE name = %s ORDER BY {_ORDER_NEWEST} LIMIT %s",
            (name, None if limit is None else max(limit, 0)),
        )
        return [_version_row(r) for r in self._cur.fetchall()]

    def history(self, name: str) -> list[HistoryRow]:
        self._cur.execute(
            f'SELECT id, at, "user", name, version, event, from_status, to_status, reason, detail'
            f" FROM {SCHEMA}.history WHERE name = %s ORDER BY id",
            (name,),
        )
        return [HistoryRow(**r) for r in self._cur.fetchall()]

    def production_events(self, name: str) -> list[tuple[str, str]]:
        self._cur.execute(
            f"SELECT event, version FROM {SCHEMA}.history"
            f" WHERE name = %s AND event IN ('promote', 'rollback') ORDER BY id",
            (name,),
        )
        return [(r["event"], r["version"]) for r in self._cur.fetchall()]

    def best_by(self, name: str, section: str, key: str, *, higher_is_better: bool = True) -> tuple[str, float] | None:
        # In the server: one pass over NAME's rows, nothing shipped to the client but the winner.
        # jsonb holds no NaN or infinity, so every number is finite.
        order = "DESC" if higher_is_better else "ASC"
        r = self._one(
            f"SELECT version, (metrics -> %s ->> %s)::float8 AS value FROM {SCHEMA}.versions"
            f" WHERE name = %s AND NOT rolled_back AND jsonb_typeof(metrics -> %s -> %s) = 'number'"
            f" ORDER BY value {order}, {_ORDER_NEWEST} LIMIT 1",
            section,
            key,
            name,
            section,
            key,
        )
        return None if r is None else (str(r["version"]), float(r["value"]))

    def tied(self, name: str, section: str, key: str, value: float) -> list[str]:
        self._cur.execute(
            f"SELECT version FROM {SCHEMA}.versions WHERE name = %s AND NOT rolled_back"
            f" AND jsonb_typeof(metrics -> %s -> %s) = 'number' AND (metrics -> %s ->> %s)::float8 = %s"
            " ORDER BY major, minor, patch",
            (name, section, key, section, key, value),
        )
        return [str(r["version"]) for r in self._cur.fetchall()]

    def _one(self, sql: str, *params: Any) -> dict[str, Any] | None:
        self._cur.execute(sql, params)
        return self._cur.fetchone()


class _PgWriter(_PgReader):
    def insert_version(self, row: VersionRow) -> None:
        try:
            # A savepoint, so a duplicate leaves the transaction usable for the caller's next step.
            with self._cur.connection.transaction():
                self._cur.execute(
                    f"INSERT INTO {SCHEMA}.versions ({_VERSION_COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        row.name,
                        row.version,
                        row.major,
                        row.minor,
                        row.patch,
                        row.status,
                        row.rolled_back,
                        row.model_file,
                        row.sha256,
                        row.size,
                        json.dumps(row.metrics, sort_keys=True, allow_nan=False),
                        row.data_sha256,
                        row.registered_at,
                        row.registered_by,
                        row.store_ref,
                    ),
                )
        except pgerrors.UniqueViolation as e:
            if e.diag.constraint_name == "versions_one_production":
                raise
            raise DuplicateVersion(f"{row.name} {row.version}") from e

    def set_status(self, name: str, version: str, status: str, *, rolled_back: bool) -> None:
        self._cur.execute(
            f"UPDATE {SCHEMA}.versions SET status = %s, rolled_back = %s WHERE name = %s AND version = %s",
            (status, rolled_back, name, version),
        )
        if self._cur.rowcount != 1:
            raise RegistryError(f"{name} has no version {version}")

    def log(self, event: HistoryRow) -> None:
        if event.event == "served":
            self._widen_events()
        self._cur.execute(
            f'INSERT INTO {SCHEMA}.history (at, "user", name, version, event, from_status, to_status, reason, detail)'
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            event.insert_values(),
        )

    def _widen_events(self) -> None:
        """An index made before the ``served`` event: widen its check in place, in this
        transaction (the schema version stays 1; an older toolkit keeps reading and writing it)."""
        self._cur.execute(
            "SELECT pg_get_constraintdef(c.oid) AS def FROM pg_constraint c"
            " JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
            " WHERE n.nspname = %s AND t.relname = 'history' AND c.contype = 'c' AND c.conname = 'history_event_check'",
            (SCHEMA,),
        )
        found = self._cur.fetchone()
        if found is not None and "'served'" in found["def"]:
            return
        events = ", ".join(f"'{e}'" for e in EVENTS)
        self._cur.execute(
            f"ALTER TABLE {SCHEMA}.history DROP CONSTRAINT IF EXISTS history_event_check,"
            f" ADD CONSTRAINT history_event_check CHECK (event IN ({events}))"
        )


# What a write of any kind needs: add (versions, the names counter its trigger keeps, history),
# promote and rollback (versions' status, history). Each is asked on its own: has_table_privilege
# with a list answers "any of them".
_WRITE_RIGHTS = (
    ("versions", "SELECT"),
    ("versions", "INSERT"),
    ("versions", "UPDATE"),
    ("names", "SELECT"),
    ("names", "INSERT"),
    ("names", "UPDATE"),
    ("history", "SELECT"),
    ("history", "INSERT"),
)


def _missing_write_rights(conn: psycopg.Connection[dict[str, Any]], *, schema: bool) -> str:
    """Why this session's user cannot write the index ("" when it can), in one query."""
    if schema:
        rights = ", ".join(
            f"has_table_privilege(current_user, '{SCHEMA}.{table}', '{right}') AS {table}_{right.lower()}"
            for table, right in _WRITE_RIGHTS
        )
        usage = f"has_schema_privilege(current_user, '{SCHEMA}', 'USAGE') AS usage"
    else:
        rights = "has_database_privilege(current_user, current_database(), 'CREATE') AS create_schema"
        usage = "true AS usage"
    row = conn.execute(
        "SELECT current_user AS who, current_database() AS db, pg_is_in_recovery() AS standby,"
        f" current_setting('transaction_read_only') AS read_only, {usage}, {rights}"
    ).fetchone()
    assert row is not None
    who = row["who"]
    if row["standby"]:
        return "the server is a read-only standby"
    if row["read_only"] == "on":
        return f"user {who}'s transactions are read-only (default_transaction_read_only)"
    if not row["usage"]:
        return f"user {who} has no USAGE on the schema {SCHEMA}"
    if not schema:
        return "" if row["create_schema"] else f"user {who} may not create the schema {SCHEMA} in {row['db']}"
    lacking = [f"{right} on {SCHEMA}.{table}" for table, right in _WRITE_RIGHTS if not row[f"{table}_{right.lower()}"]]
    return f"user {who} lacks {', '.join(lacking)}" if lacking else ""


def _version_row(r: dict[str, Any]) -> VersionRow:
    return VersionRow(**{**r, "size": int(r["size"]), "rolled_back": bool(r["rolled_back"])})


def _schema_version(conn: psycopg.Connection[dict[str, Any]]) -> int | None:
    # A plain catalog query, not to_regclass(): that reads the backend's catalog cache, which
    # may not yet see a schema another process committed while we waited for the lock.
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = 'meta') AS present",
        (SCHEMA,),
    ).fetchone()
    if row is None or not row["present"]:
        return None
    found = conn.execute(f"SELECT value FROM {SCHEMA}.meta WHERE key = 'schema_version'").fetchone()
    if found is None:
        return None
    try:
        return int(found["value"])
    except ValueError:
        return 1 << 30  # unreadable: treat as "newer than us", which refuses it


def _parse(url: str) -> dict[str, Any]:
    if not is_postgres_url(url):
        raise UsageError(f"not a PostgreSQL connection string: {url[:80]!r} (postgresql://USER@HOST:PORT/DB)")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as e:
        raise UsageError(f"invalid PostgreSQL connection string: {_first_line(e)}") from e
    port = str(params.get("port") or "5432")
    # libpq would only say so when connecting, as if the server were down; it is a typo.
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        raise UsageError(f"invalid port {port[:20]!r} in the PostgreSQL connection string")
    return params


def _why_unreachable(e: psycopg.Error) -> str:
    text = _first_line(e)
    lowered = text.lower()
    if "authentication" in lowered or "password" in lowered or "no pg_hba.conf entry" in lowered:
        return f"refused the login: {text}"
    if "does not exist" in lowered:
        return f"refused: {text}"
    return f"cannot be reached: {text}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    # libpq's messages start with 'connection to server at "127.0.0.1", port 1 failed: ...'
    # and run over several lines (one per address tried); the last line says why.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
