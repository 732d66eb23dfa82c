"""Does the registry slow down as versions pile up? `registry list` and `registry promote`
with 10 and with 2,000 registered versions of one name. Target: 2,000 under 2x the 10 figure.

The real commands are timed as subprocesses (what a user or CI job pays, interpreter start
included), and the same operations in-process (the registry's own share, without the start-up
cost that would otherwise flatter the ratio). The 2,000-version registry is populated directly
(same files, same rows as `Registry.add` writes) so that setup takes seconds, not minutes.

Run: .venv/bin/python benchmarks/bench_registry.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from toolkit.registry import Registry
from toolkit.registry.index.sqlite_db import connect, write_transaction

SIZES = (10, 2000)
CLI_RUNS = 7
API_RUNS = 30
TARGET_RATIO = 2.0


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    try:
        base = _make_base_artifact(work / "base")
        roots = {n: _populate(work / f"reg-{n}", base, n) for n in SIZES}
        rows = []
        for label, fn, runs in _cases():
            fn(roots[SIZES[0]], SIZES[0], -1)  # warm the page cache and the .pyc files
            fn(roots[SIZES[1]], SIZES[1], -1)
            samples: dict[int, list[float]] = {n: [] for n in SIZES}
            for i in range(runs):  # interleaved, so drift in machine load hits both sizes alike
                for n in SIZES:
                    samples[n].append(fn(roots[n], n, i))
            small, large = (min(samples[n]) for n in SIZES)
            rows.append(
                (label, small, large, statistics.median(samples[SIZES[0]]), statistics.median(samples[SIZES[1]]))
            )
        print(
            f"registry benchmark: one name with {SIZES[0]} vs {SIZES[1]} versions; best of {CLI_RUNS} CLI runs "
            f"(interpreter start included) / {API_RUNS} API calls, medians in brackets"
        )
        print(f"{'operation':44} {SIZES[0]:>9} {SIZES[1]:>9}  ratio  (median ratio)  target <{TARGET_RATIO:g}x")
        for label, small, large, med_small, med_large in rows:
            ratio = large / small
            verdict = "ok" if ratio < TARGET_RATIO else "MISSED"
            if label.endswith("(all rows)"):
                verdict = "no target: prints every row"
            print(
                f"{label:44} {_ms(small)} {_ms(large)}  {ratio:5.2f}  ({med_large / med_small:5.2f})         {verdict}"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


Case = Callable[[Path, int, int], float]  # (root, n versions, run index) -> seconds


def _cases() -> list[tuple[str, Case, int]]:
    def cli(*args: str) -> Case:
        return lambda root, n, i: _run_cli(root, *args)

    def cli_promote(root: Path, n: int, i: int) -> float:
        # Alternate two versions so that every run really switches production (archive + promote).
        return _run_cli(root, "promote", "iris", _version(n - 1 - i % 2), "--reason", "bench")

    registries: dict[Path, Registry] = {}

    def api(call: Callable[[Registry, int, int], object]) -> Case:
        def measure(root: Path, n: int, i: int) -> float:
            if root not in registries:  # open the index outside the timing
                registries[root] = Registry(root)
                registries[root].list_names()
            return _timed(lambda: call(registries[root], n, i))

        return measure

    return [
        ("CLI  registry list", cli("list"), CLI_RUNS),
        ("CLI  registry list iris (newest 20)", cli("list", "iris"), CLI_RUNS),
        ("CLI  registry promote iris VERSION", cli_promote, CLI_RUNS),
        ("CLI  registry promote iris --best-by roc_auc", cli("promote", "iris", "--best-by", "roc_auc"), CLI_RUNS),
        ("CLI  registry list iris --json (all rows)", cli("list", "iris", "--json"), CLI_RUNS),
        ("API  Registry.list_names()", api(lambda reg, n, i: reg.list_names()), API_RUNS),
        # limit=10: the same number of rows from both registries, so only the scaling is measured.
        ("API  Registry.list_versions(limit=10)", api(lambda reg, n, i: reg.list_versions("iris", limit=10)), API_RUNS),
        ("API  Registry.get() (production)", api(lambda reg, n, i: reg.get("iris")), API_RUNS),
        (
            "API  Registry.promote(VERSION)",
            api(lambda reg, n, i: reg.promote("iris", _version(n - 1 - i % 2))),
            API_RUNS,
        ),
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}ms" if seconds >= 0.01 else f"{seconds * 1000:7.3f}ms"


def _run_cli(root: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "toolkit", "registry", *args, "--registry", str(root)],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120"},
    )
    return time.perf_counter() - started


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


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


def _populate(root: Path, base: Path, n: int) -> Path:
    """N versions of iris: the first three through Registry.add, the rest written the same way in bulk."""
    from toolkit.artifact import read_card
    from toolkit.card import card_from_dict

    template = read_card(base).to_dict()
    blob = base.read_bytes()
    with Registry(root) as reg:
        for i in range(min(3, n)):
            reg.add(_card_variant(template, blob, root.parent / "src", _version(i), i))
    conn = connect(root, create=True)
    assert conn is not None
    rows, events = [], []
    for i in range(3, n):
        version = _version(i)
        card = card_from_dict(_with_version(template, version, i))
        stem = f"iris-{version}"
        d = root / "iris" / version
        d.mkdir(parents=True)
        (d / f"{stem}.joblib").write_bytes(blob)
        (d / f"{stem}.card.json").write_bytes(card.to_json())
        (d / f"{stem}.card.md").write_text(card.to_markdown())
        major, minor, patch = (int(x) for x in version.split("."))
        rows.append(
            (
                "iris",
                version,
                major,
                minor,
                patch,
                f"{stem}.joblib",
                card.artifact.sha256,
                card.artifact.size,
                json.dumps(card.metrics, sort_keys=True),
                None,
                "2025-01-01T00:00:00.000Z",
                "bench",
            )
        )
        events.append(
            ("2025-01-01T00:00:00.000Z", "bench", "iris", version, "register", None, "staging", "bench", None)
        )
    with write_transaction(conn):
        conn.executemany(
            "INSERT INTO versions (name, version, major, minor, patch, status, model_file, sha256, size,"
            " metrics, data_sha256, registered_at, registered_by)"
            " VALUES (?, ?, ?, ?, ?, 'staging', ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO history (at, user, name, version, event, from_status, to_status, reason, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            events,
        )
    conn.close()
    with Registry(root) as reg:
        reg.promote("iris", _version(0))
        assert reg.count("iris") == n
    return root


def _with_version(template: dict, version: str, i: int) -> dict:
    card = json.loads(json.dumps(template))
    card["version"] = version
    card["artifact"]["file"] = f"iris-{version}.joblib"
    card["metrics"] = {"test": {"roc_auc": 0.5 + (i % 997) / 2000}}
    return card


def _card_variant(template: dict, blob: bytes, directory: Path, version: str, i: int) -> Path:
    from toolkit.card import card_from_dict

    card = card_from_dict(_with_version(template, version, i))
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"iris-{version}"
    Path(f"{stem}.joblib").write_bytes(blob)
    Path(f"{stem}.card.json").write_bytes(card.to_json())
    Path(f"{stem}.card.md").write_text(card.to_markdown())
    return Path(f"{stem}.joblib")


if __name__ == "__main__":
    main()
