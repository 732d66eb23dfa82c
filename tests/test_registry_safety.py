"""The registry under real concurrent processes and SIGKILL: nothing lost, nothing half-written."""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from _registry_support import clone_artifact, registry_rows, tamper

from toolkit.artifact import verify
from toolkit.registry import Registry
from toolkit.registry.index.sqlite_db import connect_readonly, has_schema

# The kill loop draws its kill times from this seed; a failure prints it, and
# TOOLKIT_KILL_SEED=<seed> replays the same kill times (worker i runs with seed + i).
KILL_SEED_ENV = "TOOLKIT_KILL_SEED"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fsync semantics are POSIX")


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", "registry", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    outputs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outputs, strict=True)]


def _audit(root: Path) -> list[dict]:
    """What must hold after anything: a readable index, every row's files verify, <= 1 production.

    Read through the registry's own read-only open (never a raw ``sqlite3.connect``, which
    would create an empty file where there is none and read whatever half-state it finds).
    """
    conn = connect_readonly(root)
    assert conn is not None, f"no index in {root}"
    try:
        assert has_schema(conn), f"{root / 'registry.db'} exists without its schema"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        registered = Counter(
            r[0] for r in conn.execute("SELECT name || ' ' || version FROM history WHERE event = 'register'")
        )
    finally:
        conn.close()
    rows = registry_rows(root)
    for r in rows:
        card = verify(root / r["name"] / r["version"] / r["model_file"])
        assert card.artifact.sha256 == r["sha256"]
        assert registered[f"{r['name']} {r['version']}"] == 1  # registered exactly once, and logged
    assert sum(registered.values()) == len(rows)  # no event without its row
    productions = Counter(r["name"] for r in rows if r["status"] == "production")
    assert all(n == 1 for n in productions.values())
    with Registry(root) as reg:  # and the API reads it
        reg.list_names()
    return rows


def test_twenty_concurrent_adds_all_land_with_distinct_versions(base_artifact: Path, tmp_path: Path) -> None:
    sources = [clone_artifact(base_artifact, tmp_path / "src", version=f"1.{i}.0") for i in range(20)]
    root = tmp_path / "models"  # fresh: creating the index races as well
    started = time.perf_counter()
    procs = [_cli("add", str(s), "--registry", str(root), "--reason", f"proc {i}") for i, s in enumerate(sources)]
    results = _finish(procs)
    elapsed = time.perf_counter() - started
    assert [rc for rc, _, _ in results] == [0] * 20, [err for _, _, err in results if err]
    rows = _audit(root)
    assert sorted(r["version"] for r in rows) == sorted(f"1.{i}.0" for i in range(20))
    assert {r["status"] for r in rows} == {"staging"}
    with Registry(root) as reg:
        assert sorted(e.reason for e in reg.history("iris")) == sorted(f"proc {i}" for i in range(20))
    assert not list((root / ".tmp").iterdir())
    print(f"20 concurrent `registry add` processes: {elapsed:.2f}s wall")


def test_concurrent_adds_of_one_version_register_it_once(base_artifact: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    results = _finish([_cli("add", str(base_artifact), "--registry", str(root)) for _ in range(8)])
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0] + [4] * 7, results
    assert all("already registered" in err for rc, _, err in results if rc == 4)
    assert len(_audit(root)) == 1


def test_concurrent_promotes_leave_exactly_one_production(base_artifact: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    versions = [f"2.{i}.0" for i in range(10)]
    with Registry(root) as reg:
        for v in versions:
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v))
    started = time.perf_counter()
    results = _finish([_cli("promote", "iris", v, "--registry", str(root), "--reason", f"race {v}") for v in versions])
    elapsed = time.perf_counter() - started
    assert [rc for rc, _, _ in results] == [0] * 10, [err for _, _, err in results if err]
    rows = _audit(root)
    production = [r["version"] for r in rows if r["status"] == "production"]
    assert len(production) == 1
    with Registry(root) as reg:
        events = reg.history("iris")
    promotes = [e for e in events if e.event == "promote"]
    archives = [e for e in events if e.event == "archive"]
    assert sorted(e.version for e in promotes) == versions  # every promote happened, in some order
    assert len(archives) == 9
    assert promotes[-1].version == production[0]  # the last one to commit won
    # The history replays to the final state: each promote archives the one before it.
    for before, after in itertools.pairwise(promotes):
        assert any(a.version == before.version and a.detail == f"replaced by {after.version}" for a in archives)
    print(f"10 concurrent `registry promote` processes: {elapsed:.2f}s wall")


def test_concurrent_promote_of_a_tampered_version_leaves_production(base_artifact: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    with Registry(root) as reg:
        for v in ("3.0.0", "3.1.0", "3.2.0"):
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v))
        reg.promote("iris", "3.0.0")
        reg.promote("iris", "3.1.0")
        tamper(reg.get("iris", "3.2.0").path)
        tamper(reg.get("iris", "3.0.0").path)
    results = _finish(
        [_cli("promote", "iris", "3.2.0", "--registry", str(root)), _cli("rollback", "iris", "--registry", str(root))]
    )
    assert [rc for rc, _, _ in results] == [3, 3]
    assert all("does not match" in err for _, _, err in results)
    with Registry(root) as reg:
        assert reg.get("iris").version == "3.1.0"


_WORKER = """
import random, sys
from pathlib import Path
from toolkit.errors import ToolkitError
from toolkit.registry import Registry
import toolkit.artifact, toolkit.gate  # imported before "ready": the kill should land in the work
root, seed, sources = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rng = random.Random(seed)
reg = Registry(root)
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


def test_kill_9_at_random_moments_never_breaks_the_registry(base_artifact: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    sources = [str(clone_artifact(base_artifact, tmp_path / "src", version=f"4.{i}.0")) for i in range(61)]
    # The last one is kept out of the workers' reach: adding it at the end always runs the
    # sweep, even when the killed workers happened to register all the others.
    last = sources.pop()
    worker = tmp_path / "worker.py"
    worker.write_text(_WORKER)
    seed = int(os.environ.get(KILL_SEED_ENV) or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    kills: list[float] = []
    print(f"kill -9 loop: seed {seed} (replay with {KILL_SEED_ENV}={seed})")
    seen_orphans = seen_stray = 0
    for i in range(20):
        proc = subprocess.Popen(
            [sys.executable, str(worker), str(root), str(seed + i), *sources],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        kills.append(round(rng.uniform(0.0, 0.25), 4))
        print(f"kill {i}: worker seed {seed + i}, SIGKILL after {kills[-1]:.4f}s", flush=True)
        time.sleep(kills[-1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        if not (root / "registry.db").exists():
            continue
        rows = _audit(root)
        on_disk = {p.name for p in (root / "iris").iterdir()} if (root / "iris").exists() else set()
        seen_orphans += len(on_disk - {r["version"] for r in rows})
        seen_stray += len(list((root / ".tmp").iterdir()))
    # Afterwards everything still works: every version can still be registered exactly once.
    with Registry(root) as reg:
        for s in sources:
            version = Path(s).name.removeprefix("iris-").removesuffix(".joblib")
            if not reg.has("iris", version):
                reg.add(s)
        reg.add(last)
        assert reg.count("iris") == 61
    rows = _audit(root)
    assert len(rows) == 61
    assert {p.name for p in (root / "iris").iterdir()} == {r["version"] for r in rows}  # orphans replaced
    assert not list((root / ".tmp").iterdir())  # dead processes' copies swept by the next add
    print(f"kill -9 loop: 20 kills, {seen_orphans} orphan dirs and {seen_stray} stray temp dirs seen and ignored")


_KILL_AT = """
import os, signal, sys
from pathlib import Path
import toolkit._files, toolkit.registry.index.sqlite
import toolkit.registry as R
point, root, arg = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
reg = R.Registry(root)
if point == "add-before-rename":
    toolkit._files.fsync_dir = die  # the first fsync is of the staged copy, just before the rename
    reg.add(arg)
elif point == "add-before-commit":
    toolkit.registry.index.sqlite._SqliteWriter.log = die  # files renamed into place, row inserted, not committed
    reg.add(arg)
elif point == "promote-mid-transaction":
    # old production already set to archived, new one not yet production
    toolkit.registry.index.sqlite._SqliteWriter.log = die
    reg.promote("iris", arg)
elif point == "rollback-mid-transaction":
    toolkit.registry.index.sqlite._SqliteWriter.log = die
    reg.rollback("iris")
"""


@pytest.mark.parametrize(
    "point", ["add-before-rename", "add-before-commit", "promote-mid-transaction", "rollback-mid-transaction"]
)
def test_a_kill_at_each_critical_point_leaves_the_old_state(base_artifact: Path, tmp_path: Path, point: str) -> None:
    root = tmp_path / "models"
    src = {v: clone_artifact(base_artifact, tmp_path / "src", version=v) for v in ("5.0.0", "5.1.0", "5.2.0")}
    with Registry(root) as reg:
        for v in ("5.0.0", "5.1.0"):
            reg.add(src[v])
            reg.promote("iris", v)
        before = [(e.version, e.status) for e in reg.list_versions("iris")]
        events_before = len(reg.history("iris"))
    arg = str(src["5.2.0"]) if point.startswith("add") else "5.0.0"
    proc = subprocess.run([sys.executable, "-c", _KILL_AT, point, str(root), arg], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _audit(root)
    # The kill really landed where it says: files in place without a row, or a staged copy left behind.
    assert (root / "iris" / "5.2.0").is_dir() == (point == "add-before-commit")
    assert any(p.is_dir() for p in (root / ".tmp").glob("add-*")) == (point == "add-before-rename")
    with Registry(root) as reg:
        assert [(e.version, e.status) for e in reg.list_versions("iris")] == before  # the old state, exactly
        assert len(reg.history("iris")) == events_before
        # ... and the interrupted operation can simply be run again.
        if point.startswith("add"):
            assert reg.add(src["5.2.0"]).version == "5.2.0"
        elif point.startswith("promote"):
            assert reg.promote("iris", "5.0.0").changed
        else:
            assert reg.rollback("iris").version == "5.0.0"
    _audit(root)
    assert not list((root / ".tmp").iterdir()) or not point.startswith("add")


_KILL_IN_CREATE = """
import os, signal, sys
from pathlib import Path
import toolkit.registry.index.sqlite_db as D
from toolkit.registry import Registry
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
D._ensure_schema = die  # the new index exists under its temporary name, without its tables
Registry(Path(sys.argv[1])).add(sys.argv[2])
"""


def test_a_kill_while_creating_the_index_never_leaves_a_half_created_one(base_artifact: Path, tmp_path: Path) -> None:
    # Issue 9's flake: a kill between creating registry.db and writing its schema. The index is
    # now built under a temporary name and linked into place complete, so the name never
    # exists without its tables.
    root = tmp_path / "models"
    proc = subprocess.run([sys.executable, "-c", _KILL_IN_CREATE, str(root), str(base_artifact)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (root / "registry.db").exists()
    with Registry(root) as reg:
        assert reg.list_names() == []
        assert reg.add(base_artifact).version == "1.0.0"
    assert [r["version"] for r in _audit(root)] == ["1.0.0"]
