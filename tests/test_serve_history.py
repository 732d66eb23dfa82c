"""The `served` history event on both indexes, old indexes widened in place, and a team registry served."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests._serve_support import Served, kill_leftovers, started_count
from toolkit.errors import RegistryError
from toolkit.registry import Registry
from toolkit.registry.index import sqlite_db as db

_OLD_CHECK = "'recovered')"


@pytest.fixture(autouse=True)
def _no_server_left_running() -> Iterator[None]:
    before = started_count()  # module-scoped servers are set up before this and stay
    yield
    kill_leftovers(before)  # a failed test must not leave a server listening for the next ones


def _old_sqlite_index(root: Path) -> None:
    """An index exactly as a toolkit from before the `served` event created it."""
    root.mkdir()
    old = db._SCHEMA.replace("'recovered', 'served')", _OLD_CHECK)
    assert old != db._SCHEMA
    conn = sqlite3.connect(root / db.DB_FILE, isolation_level=None)
    for statement in db._split_statements(old):
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION}")
    conn.close()


def test_an_old_sqlite_index_takes_served_events_and_keeps_its_rules(base_artifact: Path, tmp_path: Path) -> None:
    root = tmp_path / "reg"
    _old_sqlite_index(root)
    with Registry(root) as reg:
        reg.add(base_artifact)
        reg.promote("iris", "1.0.0")
        before = [e.to_dict() for e in reg.history("iris")]
        event = reg.record_served("iris", "1.0.0", where="127.0.0.1:8080 (pid 1 on h)", reason="ready")
        after = reg.history("iris")
    assert [e.to_dict() for e in after[:-1]] == before  # every row kept, with its id
    assert after[-1].event == "served" and after[-1].id == before[-1]["id"] + 1
    assert (after[-1].from_status, after[-1].to_status, after[-1].detail) == (
        "production",
        "production",
        "127.0.0.1:8080 (pid 1 on h)",
    )
    assert event.version == "1.0.0"
    conn = sqlite3.connect(root / db.DB_FILE)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'history'").fetchone()
        assert "'served'" in sql
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # older toolkits still open it
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM history")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE history SET version = 'x'")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(
                "INSERT INTO history (at, user, name, version, event, to_status) VALUES ('t', 'u', 'iris', '1.0.0',"
                " 'bogus', 'production')"
            )
    finally:
        conn.close()
    with Registry(root) as reg:  # a rollback's replay of promotes ignores served events
        assert reg.get("iris").status == "production"


def test_served_names_a_registered_version(base_artifact: Path, tmp_path: Path) -> None:
    with Registry(tmp_path / "reg") as reg:
        reg.add(base_artifact)
        with pytest.raises(RegistryError, match=r"no version 9\.9\.9"):
            reg.record_served("iris", "9.9.9", where="x")
        with pytest.raises(RegistryError):
            reg.record_served("nobody", "1.0.0", where="x")


@pytest.mark.serve
def test_a_team_registry_reference_is_served_and_the_event_lands_in_postgresql(team: Any, base_artifact: Path) -> None:
    import psycopg

    with Registry(team.url, store=team.store) as reg:
        reg.add(base_artifact)
        reg.promote("iris", "1.0.0")
    # An index made before the served event: its check is narrowed back to the old list.
    with psycopg.connect(team.url, autocommit=True) as conn:
        conn.execute(
            "ALTER TABLE toolkit.history DROP CONSTRAINT history_event_check, ADD CONSTRAINT history_event_check"
            " CHECK (event IN ('register', 'promote', 'archive', 'rollback', 'rolled_back', 'recovered'))"
        )
    with Served("iris@production", "--registry", team.url, "--store", team.store) as s:
        assert s.started()["event"] == "ready"
        r = requests.post(
            s.url + "/predict",
            json=[
                {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}
            ],
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["model_version"] == "1.0.0"
    with Registry(team.url, store=team.store) as reg:
        served = [e for e in reg.history("iris") if e.event == "served"]
    assert len(served) == 1 and served[0].version == "1.0.0" and served[0].reason == "ready"


@pytest.mark.serve
def test_an_oci_reference_is_pulled_checked_and_served(team_oci: Any, base_artifact: Path) -> None:
    from toolkit.oci import push

    ref = f"oci://{team_oci.host}/serve/iris:1.0.0"
    push(base_artifact, ref)
    with Served(ref) as s:
        assert s.started()["version"] == "1.0.0"
        r = requests.get(s.url + "/v2/models/iris", timeout=10)
        assert r.status_code == 200 and r.json()["parameters"]["sha256"] == r.headers["X-Model-Sha256"]
    s = Served(f"oci://{team_oci.host}/serve/iris:9.9.9")
    event = s.wait_for("refused")
    assert s.exited() == 1 and event is not None and event["step"] == "resolve"
