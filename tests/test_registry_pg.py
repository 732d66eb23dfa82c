"""The PostgreSQL index against a real server: the database itself enforces the registry's rules."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from toolkit.errors import RegistryError, RemoteError, UsageError
from toolkit.registry.index import DuplicateVersion, HistoryRow, VersionRow
from toolkit.registry.index.postgres import SCHEMA, SCHEMA_VERSION, PgIndex, describe, is_postgres_url


def _row(version: str = "1.0.0", *, name: str = "iris", status: str = "staging", **metrics: float) -> VersionRow:
    major, minor, patch = (int(x) for x in version.split("."))
    return VersionRow(
        name=name,
        version=version,
        major=major,
        minor=minor,
        patch=patch,
        status=status,
        rolled_back=False,
        model_file=f"{name}-{version}.joblib",
        sha256="ab" * 32,
        size=123,
        metrics={"test": dict(metrics)},
        data_sha256=None,
        registered_at="2026-01-01T00:00:00.000Z",
        registered_by="tester",
    )


def _exists(url: str) -> bool:
    """One PgIndex, asked and closed (an open connection left behind is a ResourceWarning)."""
    ix = PgIndex(url)
    try:
        return ix.exists()
    finally:
        ix.close()


def _event(version: str = "1.0.0", event: str = "register", *, to: str = "staging") -> HistoryRow:
    return HistoryRow(
        id=None,
        at="2026-01-01T00:00:00.000Z",
        user="tester",
        name="iris",
        version=version,
        event=event,
        from_status=None,
        to_status=to,
        reason=None,
        detail=None,
    )


@pytest.fixture
def index(pg_url: str) -> Any:
    ix = PgIndex(pg_url)
    yield ix
    ix.close()


@pytest.fixture
def filled(index: PgIndex, pg_url: str) -> psycopg.Connection[Any]:
    """Two registered versions (1.0.0 production) and a raw connection, as a person with psql has."""
    with index.write("iris") as w:
        w.insert_version(_row("1.0.0", status="production", roc_auc=0.8))
        w.log(_event("1.0.0"))
        w.insert_version(_row("1.1.0", roc_auc=0.9))
        w.log(_event("1.1.0"))
    conn = psycopg.connect(pg_url, autocommit=True)
    yield conn
    conn.close()


# -- the schema -----------------------------------------------------------------------------


def test_schema_is_created_on_first_write_never_on_read(index: PgIndex, pg_url: str) -> None:
    assert not index.exists()
    with index.read() as r:
        assert r.names() == [] and r.row("iris", "1.0.0") is None
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regnamespace(%s)", (SCHEMA,)).fetchone() == (None,)
    with index.write("iris") as w:
        w.insert_version(_row())
    assert index.exists()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute(f"SELECT value FROM {SCHEMA}.meta").fetchall() == [(str(SCHEMA_VERSION),)]


def test_a_newer_schema_is_refused_with_exit_4(index: PgIndex, pg_url: str) -> None:
    with index.write("iris") as w:
        w.insert_version(_row())
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.meta SET value = %s", (str(SCHEMA_VERSION + 1),))
    fresh = PgIndex(pg_url)
    with pytest.raises(RegistryError, match=rf"schema version {SCHEMA_VERSION + 1}; this toolkit knows") as e:
        fresh.exists()
    fresh.close()
    assert e.value.exit_code == 4


def test_twenty_first_uses_at_once_create_the_schema_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def first_use(i: int) -> None:
        ix = PgIndex(pg_url)
        try:
            with ix.write(f"m{i}") as w:
                w.insert_version(_row(name=f"m{i}"))
        except BaseException as e:  # collected, asserted below
            errors.append(e)
        finally:
            ix.close()

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ix = PgIndex(pg_url)
    with ix.read() as r:
        assert [n.name for n in r.names()] == sorted(f"m{i}" for i in range(20))
    ix.close()


# -- rules the server enforces, whoever connects --------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        f"UPDATE {SCHEMA}.history SET reason = 'rewritten'",
        f"DELETE FROM {SCHEMA}.history",
        f"TRUNCATE {SCHEMA}.history",
    ],
)
def test_history_is_append_only_in_the_server(filled: psycopg.Connection[Any], sql: str) -> None:
    with pytest.raises(pgerrors.RestrictViolation, match="history is append-only"):
        filled.execute(sql)
    assert filled.execute(f"SELECT count(*), count(reason) FROM {SCHEMA}.history").fetchone() == (2, 0)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        (f"DELETE FROM {SCHEMA}.versions WHERE version = '1.1.0'", "never removed"),
        (f"TRUNCATE {SCHEMA}.versions CASCADE", "never removed"),
        (f"UPDATE {SCHEMA}.versions SET sha256 = repeat('cd', 32) WHERE version = '1.1.0'", "never overwritten"),
        (f"UPDATE {SCHEMA}.versions SET metrics = '{{}}' WHERE version = '1.1.0'", "never overwritten"),
        (f"UPDATE {SCHEMA}.versions SET version = '9.9.9', major = 9 WHERE version = '1.1.0'", "never overwritten"),
    ],
)
def test_registered_versions_are_immutable_in_the_server(
    filled: psycopg.Connection[Any], sql: str, message: str
) -> None:
    before = filled.execute(f"SELECT * FROM {SCHEMA}.versions ORDER BY version").fetchall()
    with pytest.raises(pgerrors.RestrictViolation, match=message):
        filled.execute(sql)
    assert filled.execute(f"SELECT * FROM {SCHEMA}.versions ORDER BY version").fetchall() == before


def test_status_and_rolled_back_may_change(filled: psycopg.Connection[Any]) -> None:
    filled.execute(f"UPDATE {SCHEMA}.versions SET status = 'archived', rolled_back = true WHERE version = '1.0.0'")
    assert filled.execute(f"SELECT status, rolled_back FROM {SCHEMA}.versions WHERE version = '1.0.0'").fetchone() == (
        "archived",
        True,
    )


def test_two_productions_are_refused_by_the_server(filled: psycopg.Connection[Any], index: PgIndex) -> None:
    with pytest.raises(pgerrors.UniqueViolation, match="versions_one_production"):
        filled.execute(f"UPDATE {SCHEMA}.versions SET status = 'production' WHERE version = '1.1.0'")
    # Through the index too: the rules above cannot get it wrong by mistake.
    with pytest.raises(RegistryError, match="versions_one_production") as e, index.write("iris") as w:
        w.set_status("iris", "1.1.0", "production", rolled_back=False)
    assert e.value.exit_code == 4
    with index.read() as r:
        assert r.production("iris") == "1.0.0"


def test_an_unknown_status_or_event_is_refused(filled: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgerrors.CheckViolation):
        filled.execute(f"UPDATE {SCHEMA}.versions SET status = 'deleted' WHERE version = '1.1.0'")
    with pytest.raises(pgerrors.CheckViolation):
        filled.execute(
            f'INSERT INTO {SCHEMA}.history (at, "user", name, version, event, to_status)'
            " VALUES ('x', 'y', 'iris', '1.0.0', 'erase', 'staging')"
        )


def test_a_duplicate_version_is_refused_and_the_transaction_stays_whole(index: PgIndex) -> None:
    with index.write("iris") as w:
        w.insert_version(_row())
        w.log(_event())
    with pytest.raises(DuplicateVersion), index.write("iris") as w:
        w.log(_event("1.0.0", "promote", to="production"))
        w.insert_version(_row())
    with index.read() as r:
        assert [e.event for e in r.history("iris")] == ["register"]  # the promote line rolled back with it
        assert r.count("iris") == 1


# -- queries --------------------------------------------------------------------------------


def test_queries_see_what_was_written(index: PgIndex) -> None:
    with index.write("iris") as w:
        for v, score in (("1.0.0", 0.7), ("1.10.0", 0.9), ("1.9.0", 0.9), ("2.0.0", 0.95)):
            w.insert_version(_row(v, roc_auc=score))
        w.set_status("iris", "1.9.0", "production", rolled_back=False)
        w.set_status("iris", "2.0.0", "archived", rolled_back=True)
    with index.read() as r:
        assert [v.version for v in r.versions("iris")] == ["2.0.0", "1.10.0", "1.9.0", "1.0.0"]  # by semver
        assert [v.version for v in r.versions("iris", limit=2)] == ["2.0.0", "1.10.0"]
        assert r.production("iris") == "1.9.0"
        assert r.production_or_latest("iris") == r.row("iris", "1.9.0")
        assert r.count("iris") == 4 and r.count("nope") == 0
        assert [(n.name, n.versions, n.production, n.latest) for n in r.names()] == [("iris", 4, "1.9.0", "2.0.0")]
        # Rolled-back 2.0.0 is out; the tie at 0.9 goes to the higher version.
        assert r.best_by("iris", "test", "roc_auc") == ("1.10.0", 0.9)
        assert r.best_by("iris", "test", "roc_auc", higher_is_better=False) == ("1.0.0", 0.7)
        assert r.best_by("iris", "test", "missing") is None
        assert r.best_by("iris", "cv", "roc_auc") is None


def test_writers_of_one_name_queue_and_other_names_do_not_wait(pg_url: str) -> None:
    holder, other_name, same_name = PgIndex(pg_url), PgIndex(pg_url), PgIndex(pg_url)
    with holder.write("warmup"):
        pass  # create the schema first
    timings: dict[str, float] = {}

    def write(ix: PgIndex, name: str, version: str) -> None:
        start = time.monotonic()
        with ix.write(name) as w:
            w.insert_version(_row(version, name=name))
        timings[name] = time.monotonic() - start

    with holder.write("iris") as w:
        w.insert_version(_row("1.0.0"))
        t1 = threading.Thread(target=write, args=(other_name, "wine", "1.0.0"))
        t2 = threading.Thread(target=write, args=(same_name, "iris", "2.0.0"))
        t1.start()
        t2.start()
        t1.join(timeout=10)
        time.sleep(0.5)
        assert "wine" in timings and "iris" not in timings  # iris waits for our lock
    t2.join(timeout=10)
    assert timings["iris"] >= 0.5
    for ix in (holder, other_name, same_name):
        ix.close()


# -- connecting -----------------------------------------------------------------------------


def test_a_server_that_is_down_exits_6_within_seconds_naming_the_host() -> None:
    from _postgres import free_port

    port = free_port()
    ix = PgIndex(f"postgresql://toolkit@127.0.0.1:{port}/postgres")
    start = time.monotonic()
    with pytest.raises(RemoteError) as e:
        ix.exists()
    ix.close()
    assert time.monotonic() - start < 10
    assert e.value.exit_code == 6
    assert f"PostgreSQL at postgresql://toolkit@127.0.0.1:{port}/postgres cannot be reached" in str(e.value)
    assert "\n" not in str(e.value)


def test_an_unknown_role_or_database_exits_6(pg_server: Any) -> None:
    for url, what in (
        (f"postgresql://nobody@127.0.0.1:{pg_server.port}/postgres", 'role "nobody" does not exist'),
        (f"postgresql://toolkit@127.0.0.1:{pg_server.port}/no_such_db", 'database "no_such_db" does not exist'),
    ):
        with pytest.raises(RemoteError, match=what) as e:
            _exists(url)
        assert e.value.exit_code == 6 and "127.0.0.1" in str(e.value)


def test_passwords_come_from_pgpassword_and_a_wrong_one_exits_6(
    pg_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with psycopg.connect(pg_server.url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS pwuser")
        admin.execute("CREATE ROLE pwuser LOGIN PASSWORD 's3cret'")
        hba = Path(admin.execute("SHOW hba_file").fetchone()[0])  # type: ignore[index]
        original = hba.read_text()
        # This role (only) must prove its password; everyone else stays on trust.
        hba.write_text(f"host all pwuser 127.0.0.1/32 scram-sha-256\n{original}")
        admin.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.3)
        url = f"postgresql://pwuser@127.0.0.1:{pg_server.port}/postgres"
        monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
        monkeypatch.setenv("PGPASSWORD", "wrong")
        with pytest.raises(RemoteError, match=r"refused the login: .*password authentication failed") as e:
            _exists(url)
        assert e.value.exit_code == 6 and "s3cret" not in str(e.value) and "wrong" not in str(e.value)
        monkeypatch.setenv("PGPASSWORD", "s3cret")
        assert _exists(url) is False  # logged in; no registry there yet
        monkeypatch.delenv("PGPASSWORD")
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{pg_server.port}:postgres:pwuser:s3cret\n")
        os.chmod(passfile, 0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
        assert _exists(url) is False
    finally:
        hba.write_text(original)
        with psycopg.connect(pg_server.url, autocommit=True) as admin:
            admin.execute("SELECT pg_reload_conf()")


def test_a_password_in_the_url_never_reaches_a_message() -> None:
    assert describe("postgresql://u:hunter2@db.example:6000/reg") == "postgresql://u@db.example:6000/reg"
    assert describe("postgresql://127.0.0.1/x") == "postgresql://127.0.0.1:5432/x"


@pytest.mark.parametrize("url", ["postgresql://host:notaport/db", "postgresql://[::1/x", "mysql://x/y"])
def test_a_malformed_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError) as e:
        PgIndex(url)
    assert e.value.exit_code == 2


def test_is_postgres_url() -> None:
    assert is_postgres_url("postgresql://a@b:1/c") and is_postgres_url("postgres://b/c")
    assert not is_postgres_url("models") and not is_postgres_url("./postgresql:/x") and not is_postgres_url(None)
