"""The team registry (real PostgreSQL + real loopback OCI registry) under real processes and SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _registry_support import clone_artifact

from toolkit.artifact import verify
from toolkit.registry import Registry
from toolkit.registry.index.postgres import SCHEMA


def _env(team: Any) -> dict[str, str]:
    return {**os.environ, "TOOLKIT_REGISTRY": team.url, "TOOLKIT_STORE": team.store}


def _cli(team: Any, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", "registry", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(team),
    )


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    outputs = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outputs, strict=True)]


def _rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regnamespace(%s)", (SCHEMA,)).fetchone() == (None,):
            return []
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return list(cur.execute(f"SELECT * FROM {SCHEMA}.versions"))


def audit(team: Any) -> list[dict[str, Any]]:
    """What must hold after anything: each row's artifact pulls by its digest and verifies,
    each row was registered (and logged) once, at most one production per name."""
    from toolkit.oci import pull

    rows = _rows(team.url)
    with psycopg.connect(team.url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.history",)).fetchone() == (None,):
            assert rows == []
            return rows  # killed before the first write: the schema (created whole or not at all) is absent
        registered = Counter(
            f"{n} {v}" for n, v in conn.execute(f"SELECT name, version FROM {SCHEMA}.history WHERE event = 'register'")
        )
    for r in rows:
        assert r["store_ref"] is not None
        with tempfile.TemporaryDirectory() as tmp:
            pulled = pull(f"{team.store}:{r['name']}-{r['version']}@{r['store_ref']}", Path(tmp) / "out")
            card = verify(pulled.files[0])
        assert card.artifact.sha256 == r["sha256"] and pulled.files[0].name == r["model_file"]
        assert registered[f"{r['name']} {r['version']}"] == 1
    assert sum(registered.values()) == len(rows)
    productions = Counter(r["name"] for r in rows if r["status"] == "production")
    assert all(n == 1 for n in productions.values())
    with Registry(team.url, store=team.store) as reg:
        reg.list_names()
    return rows


def test_twenty_concurrent_adds_all_land_with_distinct_versions(team: Any, base_artifact: Path, tmp_path: Path) -> None:
    sources = [clone_artifact(base_artifact, tmp_path / "src", version=f"1.{i}.0") for i in range(20)]
    started = time.perf_counter()
    results = _finish([_cli(team, "add", str(s), "--reason", f"proc {i}") for i, s in enumerate(sources)])
    elapsed = time.perf_counter() - started
    assert [rc for rc, _, _ in results] == [0] * 20, [err for _, _, err in results if err]
    rows = audit(team)
    assert sorted(r["version"] for r in rows) == sorted(f"1.{i}.0" for i in range(20))
    assert {r["status"] for r in rows} == {"staging"}
    with Registry(team.url, store=team.store) as reg:
        assert sorted(e.reason or "" for e in reg.history("iris")) == sorted(f"proc {i}" for i in range(20))
    print(f"team: 20 concurrent `registry add` processes: {elapsed:.2f}s wall")


def test_concurrent_adds_of_one_version_register_it_once(team: Any, base_artifact: Path) -> None:
    results = _finish([_cli(team, "add", str(base_artifact)) for _ in range(8)])
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0] + [4] * 7, results
    assert all("already registered" in err for rc, _, err in results if rc == 4)
    assert len(audit(team)) == 1


def test_concurrent_promotes_leave_exactly_one_production(team: Any, base_artifact: Path, tmp_path: Path) -> None:
    versions = [f"2.{i}.0" for i in range(10)]
    with Registry(team.url, store=team.store) as reg:
        for v in versions:
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v))
    started = time.perf_counter()
    results = _finish([_cli(team, "promote", "iris", v, "--reason", f"race {v}") for v in versions])
    elapsed = time.perf_counter() - started
    assert [rc for rc, _, _ in results] == [0] * 10, [err for _, _, err in results if err]
    rows = audit(team)
    production = [r["version"] for r in rows if r["status"] == "production"]
    assert len(production) == 1
    with Registry(team.url, store=team.store) as reg:
        events = reg.history("iris")
        promotes = [e for e in events if e.event == "promote"]
        assert sorted(e.version for e in promotes) == versions
        assert len([e for e in events if e.event == "archive"]) == 9
        assert promotes[-1].version == production[0]  # the last one to commit won
        # The moving production tag follows the index (or `show` says it does not).
        entry = reg.get("iris")
        assert entry.version == production[0]
    print(f"team: 10 concurrent `registry promote` processes: {elapsed:.2f}s wall")


def test_a_tampered_blob_is_refused_by_promote_and_rollback(own_team: Any, base_artifact: Path, tmp_path: Path) -> None:
    team = own_team
    with Registry(team.url, store=team.store) as reg:
        for v, metric in (("3.0.0", 0.8), ("3.1.0", 0.9)):
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v, metrics={"test": {"roc_auc": metric}}))
        reg.promote("iris", "3.0.0")
        reg.promote("iris", "3.1.0")
    # Same pickle bytes in every clone: one blob on the registry's disk backs all versions.
    blob = team.oci.blob_data("sha256:" + verify(base_artifact).artifact.sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    results = _finish([_cli(team, "promote", "iris", "3.0.0"), _cli(team, "rollback", "iris")])
    assert [rc for rc, _, _ in results] == [3, 3], results
    assert all(err.count("\n") == 1 for _, _, err in results)
    with Registry(team.url, store=team.store) as reg:
        assert reg.get("iris").version == "3.1.0"
        assert [e.event for e in reg.history("iris")][-1] == "promote"


_WORKER = """
import random, sys
from toolkit.errors import ToolkitError
from toolkit.registry import Registry
import toolkit.artifact, toolkit.gate, toolkit.oci  # imported before "ready": the kill should land in the work
url, store, seed, sources = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
rng = random.Random(seed)
reg = Registry(url, store=store)
print("ready", flush=True)
while True:
    op = rng.random()
    try:
        if op < 0.6:
            reg.add(rng.choice(sources), reason="kill loop")
        elif op < 0.9:
            names = [e.version for e in reg.list_versions("iris")] if reg.count("iris") else []
            if names:
                reg.promote("iris", rng.choice(names), reason="kill loop")
        else:
            reg.rollback("iris", reason="kill loop")
    except ToolkitError:
        pass
"""


def test_kill_9_at_random_moments_leaves_every_state_auditable(team: Any, base_artifact: Path, tmp_path: Path) -> None:
    sources = [str(clone_artifact(base_artifact, tmp_path / "src", version=f"4.{i}.0")) for i in range(30)]
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    rng = random.Random(20261123)
    kills = 0
    for i in range(20):
        proc = subprocess.Popen(
            [sys.executable, str(worker), team.url, team.store, str(i), *sources],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        audit(team)
    # Afterwards everything still works: every version can still be registered exactly once.
    with Registry(team.url, store=team.store) as reg:
        for s in sources:
            version = Path(s).name.removeprefix("iris-").removesuffix(".joblib")
            if not reg.has("iris", version):
                reg.add(s)
        assert reg.count("iris") == 30
        versions = [e.version for e in reg.list_versions("iris")]
        reg.promote("iris", versions[0])
    assert len(audit(team)) == 30
    print(f"team kill -9 loop: {kills} kills, every state audited clean")


def test_history_is_append_only_for_a_person_with_psql(team: Any, base_artifact: Path) -> None:
    with Registry(team.url, store=team.store) as reg:
        reg.add(base_artifact)
    with psycopg.connect(team.url, autocommit=True) as conn:
        for sql in (f"UPDATE {SCHEMA}.history SET reason = 'x'", f"DELETE FROM {SCHEMA}.history"):
            with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
                conn.execute(sql)  # type: ignore[arg-type]
