"""The index seam: one suite, run against both implementations (SQLite file, real PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from toolkit.errors import RegistryError
from toolkit.registry.index import DuplicateVersion, HistoryRow, Index, VersionRow
from toolkit.registry.index.postgres import SCHEMA, PgIndex
from toolkit.registry.index.sqlite import SqliteIndex


def _row(version: str, *, name: str = "iris", status: str = "staging", **metrics: float) -> VersionRow:
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


def _event(version: str, event: str = "register", to: str = "staging") -> HistoryRow:
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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.team)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """(index, raw SQL runner): the same rules checked on both databases."""
    if request.param == "sqlite":
        index: Index = SqliteIndex(tmp_path / "models", lambda state: None)

        def raw(sql: str) -> None:
            conn = sqlite3.connect(tmp_path / "models" / "registry.db")
            try:
                conn.execute(sql)
                conn.commit()
            finally:
                conn.close()

        prefix = ""
    else:
        url = request.getfixturevalue("pg_url")
        index = PgIndex(url)

        def raw(sql: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql)  # type: ignore[arg-type]

        prefix = f"{SCHEMA}."
    yield index, raw, prefix
    index.close()


def test_reading_an_absent_index_sees_nothing_and_creates_nothing(backend: Any) -> None:
    index, _, _ = backend
    with index.read() as r:
        assert r.names() == [] and r.production_or_latest("iris") is None and r.history("iris") == []
    assert not index.exists()


def test_queries(backend: Any) -> None:
    index, _, _ = backend
    with index.write("iris") as w:
        for v, score in (("1.0.0", 0.7), ("1.10.0", 0.9), ("1.9.0", 0.9), ("2.0.0", 0.95)):
            w.insert_version(_row(v, roc_auc=score))
            w.log(_event(v))
        w.set_status("iris", "1.9.0", "production", rolled_back=False)
        w.set_status("iris", "2.0.0", "archived", rolled_back=True)
        w.log(_event("1.9.0", "promote", "production"))
    with index.read() as r:
        assert [v.version for v in r.versions("iris")] == ["2.0.0", "1.10.0", "1.9.0", "1.0.0"]
        assert [v.version for v in r.versions("iris", limit=1)] == ["2.0.0"]
        assert r.production("iris") == "1.9.0" and r.production_or_latest("iris") == r.row("iris", "1.9.0")
        assert r.count("iris") == 4 and r.count("wine") == 0 and r.name_exists("iris") and not r.name_exists("wine")
        assert [(n.name, n.versions, n.production, n.latest) for n in r.names()] == [("iris", 4, "1.9.0", "2.0.0")]
        assert r.best_by("iris", "test", "roc_auc") == ("1.10.0", 0.9)
        assert r.best_by("iris", "test", "roc_auc", higher_is_better=False) == ("1.0.0", 0.7)
        assert r.best_by("iris", "test", "nope") is None
        assert r.production_events("iris") == [("promote", "1.9.0")]
        assert [e.event for e in r.history("iris")] == ["register"] * 4 + ["promote"]
        row = r.row("iris", "2.0.0")
        assert row is not None and row.rolled_back and row.metrics == {"test": {"roc_auc": 0.95}}


def test_a_duplicate_is_refused(backend: Any) -> None:
    index, _, _ = backend
    with index.write("iris") as w:
        w.insert_version(_row("1.0.0"))
    with pytest.raises(DuplicateVersion), index.write("iris") as w:
        w.insert_version(_row("1.0.0"))
    with index.read() as r:
        assert r.count("iris") == 1


def test_a_second_production_is_refused(backend: Any) -> None:
    index, raw, p = backend
    with index.write("iris") as w:
        w.insert_version(_row("1.0.0", status="production"))
        w.insert_version(_row("1.1.0"))
    with pytest.raises(RegistryError), index.write("iris") as w:
        w.set_status("iris", "1.1.0", "production", rolled_back=False)
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        raw(f"UPDATE {p}versions SET status = 'production' WHERE version = '1.1.0'")
    with index.read() as r:
        assert r.production("iris") == "1.0.0"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE {p}history SET reason = 'x'",
        "DELETE FROM {p}history",
        "DELETE FROM {p}versions",
        "UPDATE {p}versions SET sha256 = 'cd' || substr(sha256, 3)",
    ],
)
def test_the_database_refuses_rewriting_history_and_versions(backend: Any, sql: str) -> None:
    index, raw, p = backend
    with index.write("iris") as w:
        w.insert_version(_row("1.0.0"))
        w.log(_event("1.0.0"))
    with pytest.raises((sqlite3.IntegrityError, psycopg.Error), match=r"append-only|never"):
        raw(sql.format(p=p))
    with index.read() as r:
        assert r.count("iris") == 1 and len(r.history("iris")) == 1
        row = r.row("iris", "1.0.0")
        assert row is not None and row.sha256 == "ab" * 32


def test_a_failed_write_leaves_nothing(backend: Any) -> None:
    index, _, _ = backend
    with pytest.raises(RuntimeError), index.write("iris") as w:
        w.insert_version(_row("1.0.0"))
        w.log(_event("1.0.0"))
        raise RuntimeError("killed halfway")
    with index.read() as r:
        assert r.count("iris") == 0 and r.history("iris") == [] and r.row("iris", "1.0.0") is None
