"""The team registry (PostgreSQL index + OCI store) as versions pile up, and against the local one.

`registry list`, `registry promote VERSION` and `registry promote --best-by roc_auc` with 10 and
with 2,000 versions of one name, on a real PostgreSQL server and a real loopback OCI registry
(both started here, on free loopback ports, and stopped afterwards). Target: 2,000 under 1.5x
the 10 figure. The same commands on a local SQLite directory registry in the same run give
each command's PostgreSQL/SQLite latency ratio.

The real commands are timed as subprocesses (what a user pays, interpreter start included) and
in-process through the API (the registry's own share). The bulk of each registry is written
through the index seam directly (same rows `add` writes), so setup takes seconds; the versions
that get promoted are registered through `Registry.add`, files and all, so promote pulls and
checks real artifacts.

Run: .venv/bin/python benchmarks/bench_registry_pg.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from _oci_support import LoopbackRegistry  # noqa: E402  (test helpers: a real registry on loopback)
from _postgres import pg_server  # noqa: E402

from toolkit.registry import Registry  # noqa: E402
from toolkit.registry.index import HistoryRow, VersionRow  # noqa: E402

SIZES = (10, 2000)
CLI_RUNS = 5
API_RUNS = 15
TARGET_RATIO = 1.5
_API_ADDED = 3  # the newest versions, registered for real (these are the ones promoted)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-registry-pg-"))
    oci = LoopbackRegistry(work / "oci")
    try:
        with pg_server() as server:
            import psycopg

            base = _make_base_artifact(work / "base")
            targets: dict[tuple[str, int], tuple[str, str | None]] = {}
            for n in SIZES:
                db = f"bench_{n}_{uuid.uuid4().hex[:6]}"
                with psycopg.connect(server.url, autocommit=True) as admin:
                    admin.execute(f"CREATE DATABASE {db}")  # type: ignore[arg-type]
                team = (server.database_url(db), f"oci://{oci.host}/bench/n{n}")
                targets[("postgresql", n)] = team
                targets[("sqlite", n)] = (str(work / f"dir-{n}"), None)
                for backend in ("postgresql", "sqlite"):
                    _populate(*targets[(backend, n)], base, work / f"src-{backend}-{n}", n)
            results = _measure(targets)
        _report(results)
    finally:
        oci.stop()
        shutil.rmtree(work, ignore_errors=True)


Case = Callable[[str, str | None, int, int], float]  # (registry, store, n, run) -> seconds


def _cases() -> list[tuple[str, Case, int]]:
    def cli(*args: str) -> Case:
        return lambda reg, store, n, i: _run_cli(reg, store, *args)

    def cli_promote(reg: str, store: str | None, n: int, i: int) -> float:
        # Alternate two versions so that every run really switches production (archive + promote).
        return _run_cli(reg, store, "promote", "iris", _version(n - 1 - i % 2), "--reason", "bench")

    opened: dict[str, Registry] = {}

    def api(call: Callable[[Registry, int, int], object]) -> Case:
        def measure(reg: str, store: str | None, n: int, i: int) -> float:
            if reg not in opened:  # connect outside the timing
                opened[reg] = Registry(reg, store=store)
                opened[reg].list_names()
            return _timed(lambda: call(opened[reg], n, i))

        return measure

    return [
        ("CLI  registry list", cli("list"), CLI_RUNS),
        ("CLI  registry list iris (newest 20)", cli("list", "iris"), CLI_RUNS),
        ("CLI  registry promote iris VERSION", cli_promote, CLI_RUNS),
        ("CLI  registry promote iris --best-by roc_auc", cli("promote", "iris", "--best-by", "roc_auc"), CLI_RUNS),
        ("API  list_names()", api(lambda r, n, i: r.list_names()), API_RUNS),
        ("API  list_versions(limit=10)", api(lambda r, n, i: r.list_versions("iris", limit=10)), API_RUNS),
        ("API  promote(VERSION)", api(lambda r, n, i: r.promote("iris", _version(n - 1 - i % 2))), API_RUNS),
        ("API  promote(best_by=roc_auc)", api(lambda r, n, i: r.promote("iris", best_by="roc_auc")), API_RUNS),
    ]


def _measure(targets: dict[tuple[str, int], tuple[str, str | None]]) -> list[tuple[str, dict[tuple[str, int], float]]]:
    rows = []
    for label, fn, runs in _cases():
        samples: dict[tuple[str, int], list[float]] = {k: [] for k in targets}
        for key, (reg, store) in targets.items():
            fn(reg, store, key[1], -1)  # warm up: page cache, .pyc files, connections
        for i in range(runs):  # interleaved, so drift in machine load hits every cell alike
            for key, (reg, store) in targets.items():
                samples[key].append(fn(reg, store, key[1], i))
        rows.append((label, {k: statistics.median(v) for k, v in samples.items()}))
    return rows


def _report(rows: list[tuple[str, dict[tuple[str, int], float]]]) -> None:
    small, large = SIZES
    print(
        f"team registry benchmark: one name with {small} vs {large} versions; medians of {CLI_RUNS} CLI runs "
        f"(interpreter start included) / {API_RUNS} API calls"
    )
    print(
        f"{'operation':40} {'pg ' + str(small):>10} {'pg ' + str(large):>10} {'ratio':>6}  target <{TARGET_RATIO:g}x"
        f" {'sqlite ' + str(large):>12} {'pg/sqlite':>9}"
    )
    for label, m in rows:
        ratio = m[("postgresql", large)] / m[("postgresql", small)]
        verdict = "ok    " if ratio < TARGET_RATIO else "MISSED"
        vs = m[("postgresql", large)] / m[("sqlite", large)]
        print(
            f"{label:40} {_ms(m[('postgresql', small)])} {_ms(m[('postgresql', large)])} {ratio:6.2f}  {verdict}      "
            f"{_ms(m[('sqlite', large)]):>12} {vs:9.2f}"
        )


def _populate(registry: str, store: str | None, base: Path, src: Path, n: int) -> None:
    """N versions of iris: the bulk as rows through the index seam, the newest few through Registry.add."""
    from _registry_support import clone_artifact

    with Registry(registry, store=store) as reg:
        first = reg.add(clone_artifact(base, src, version=_version(0), metrics=_metrics(0, n)))
        template = reg._rules.get("iris", first.version)
        bulk = [
            replace(
                template,
                version=_version(i),
                major=1,
                minor=i // 100,
                patch=i % 100,
                metrics=_metrics(i, n),
                registered_by="bench",
            )
            for i in range(1, n - _API_ADDED)
        ]
        with reg._rules.index.write("iris") as w:
            for row in bulk:
                w.insert_version(row)
                w.log(_register_event(row))
        for i in range(max(1, n - _API_ADDED), n):
            reg.add(clone_artifact(base, src, version=_version(i), metrics=_metrics(i, n)))
        assert reg.count("iris") == n


def _register_event(row: VersionRow) -> HistoryRow:
    return HistoryRow(
        id=None,
        at=row.registered_at,
        user="bench",
        name=row.name,
        version=row.version,
        event="register",
        from_status=None,
        to_status="staging",
        reason="bench",
        detail=None,
    )


def _metrics(i: int, n: int) -> dict[str, dict[str, float]]:
    # The newest version scores best, so --best-by always lands on one registered for real.
    return {"test": {"roc_auc": 0.5 + 0.4 * (i + 1) / n, "accuracy": 0.8}}


def _run_cli(registry: str, store: str | None, *args: str) -> float:
    env = {**os.environ, "COLUMNS": "120", "TOOLKIT_REGISTRY": registry}
    env.pop("TOOLKIT_STORE", None)
    if store is not None:
        env["TOOLKIT_STORE"] = store
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "toolkit", "registry", *args], check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}ms"


def _version(i: int) -> str:
    return f"1.{i // 100}.{i % 100}"


def _make_base_artifact(directory: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from toolkit.artifact import save

    X, y = load_iris(return_X_y=True, as_frame=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    path = directory / "iris-1.0.0.joblib"
    save(pipeline, path, name="iris", version="1.0.0", probe=X.head(8), metrics={"test": {"roc_auc": 0.9}})
    return path


if __name__ == "__main__":
    main()
