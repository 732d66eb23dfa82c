"""What the reference set costs, against the 16-row probe it replaces as the evidence.

Run: .venv/bin/python benchmarks/bench_reference.py [--repeat 3] [--trees 48]
     .venv/bin/python benchmarks/bench_reference.py --against REV [--rounds 3]
For each builtin dataset and model kind (and a large forest: ``--trees 40`` pickles to ~85 MB, 48 to ~100 MB):
``toolkit.save`` with ``reference=X_test`` (up to 2,000 held-out rows, every output, in
batches of 512 under one thread) against ``save`` with ``probe=X_test.head(16)``; and
``toolkit check-env --verify-predictions`` (a subprocess: what a deploy pays, start-up and
the load included) on the two. Medians over alternating runs. Also the reference file's
bytes per 1,000 rows. Targets: save <= 1.2x, check <= 1.5x.

``--against REV`` measures the save alone, for the toolkit at git revision REV and for this
tree, in alternating subprocesses of one run (the same machine load for both), and prints
them side by side: what a change to the save path bought.
"""

from __future__ import annotations

import argparse
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
from typing import Any

KINDS = [
    ("builtin:credit", "gradient_boosting"),
    ("builtin:credit", "random_forest"),
    ("builtin:credit", "hist_gradient_boosting"),
    ("builtin:credit", "logistic_regression"),
    ("builtin:wine", "random_forest"),
    ("builtin:diabetes", "ridge"),
    ("builtin:diabetes", "gradient_boosting"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trees", type=int, default=48, help="the big forest (48: ~100 MB; 0: skip it)")
    parser.add_argument("--no-builtin", action="store_true", help="only the big forest")
    parser.add_argument("--against", metavar="REV", help="save only: this tree against the toolkit at REV")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: alternating runs of each")
    parser.add_argument("--save-only", action="store_true", help=argparse.SUPPRESS)  # --against's worker
    args = parser.parse_args()
    if args.against:
        _against(args.against, args.rounds, args.repeat)
        return
    if args.save_only:
        print(json.dumps({f"{d} {k}": _save_times(*_fit(d, k), args.repeat) for d, k in KINDS}))
        return
    rows = []
    for dataset, kind in [] if args.no_builtin else KINDS:
        pipeline, X_test = _fit(dataset, kind)
        rows.append(_measure(f"{dataset.removeprefix('builtin:')} {kind}", pipeline, X_test, args.repeat))
    if args.trees:
        pipeline, X_test = _forest(args.trees)
        rows.append(_measure(f"forest {args.trees} trees", pipeline, X_test, args.repeat))
    print(f"{'model':<34} {'ref rows':>8} {'save x':>7} {'check x':>8} {'bytes/1k rows':>14} {'MB':>7}")
    worst_save = worst_check = 0.0
    for r in rows:
        print(
            f"{r['name']:<34} {r['rows']:>8} {r['save']:>7.2f} {r['check']:>8.2f} "
            f"{r['bytes_per_1k']:>14,.0f} {r['model_mb']:>7.1f}"
        )
        worst_save, worst_check = max(worst_save, r["save"]), max(worst_check, r["check"])
    print(f"worst: save {worst_save:.2f}x (target <= 1.2), check {worst_check:.2f}x (target <= 1.5)")


def _fit(dataset: str, kind: str) -> tuple[Any, Any]:
    from toolkit.training.datasets import load_dataset, split
    from toolkit.training.train import build_model, build_pipeline

    data = load_dataset(dataset)
    X_train, X_test, y_train, _ = split(data, test_size=0.2, seed=42)
    model = build_model(kind, {}, seed=42, task=data.task)
    return build_pipeline(X_train, model).fit(X_train, y_train), X_test


def _forest(trees: int) -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(100_000, 20)), columns=[f"f{i}" for i in range(20)])
    y = rng.integers(0, 2, size=len(X))  # noisy labels: fully grown trees, a large pickle
    model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=-1).fit(X.iloc[:80_000], y[:80_000])
    return model, X.iloc[80_000:]


def _measure(name: str, pipeline: Any, X_test: Any, repeat: int) -> dict[str, Any]:
    import toolkit
    from toolkit.artifact import artifact_paths, read_card

    root = Path(tempfile.mkdtemp(prefix="bench-reference-"))
    counter = iter(range(1_000_000))
    kept: dict[str, Path] = {}
    try:

        def save(kind: str) -> Callable[[], None]:
            def run() -> None:
                path = root / f"{kind}-{next(counter)}" / "m-1.0.0.joblib"
                extra = {"reference": X_test} if kind == "reference" else {"probe": X_test.head(16)}
                toolkit.save(pipeline, path, name="m", version="1.0.0", **extra)
                if kind in kept:
                    shutil.rmtree(path.parent)
                else:
                    kept[kind] = path

            return run

        t_probe, t_ref = _interleaved(save("probe"), save("reference"), repeat)

        def check(kind: str) -> Callable[[], None]:
            def run() -> None:
                done = subprocess.run(
                    [sys.executable, "-m", "toolkit", "check-env", str(kept[kind]), "--verify-predictions"],
                    capture_output=True,
                    check=False,
                )
                assert done.returncode == 0, done.stdout + done.stderr

            return run

        c_probe, c_ref = _interleaved(check("probe"), check("reference"), repeat)
        ref_file = artifact_paths(kept["reference"]).reference
        card = read_card(kept["reference"])
        assert card.reference is not None
        return {
            "name": name,
            "rows": card.reference.rows,
            "save": t_ref / t_probe,
            "check": c_ref / c_probe,
            "bytes_per_1k": ref_file.stat().st_size * 1000 / card.reference.rows,
            "model_mb": kept["reference"].stat().st_size / 2**20,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _save_times(pipeline: Any, X_test: Any, repeat: int) -> dict[str, float]:
    """Median seconds of a probe save and a reference save, alternating."""
    import toolkit

    root = Path(tempfile.mkdtemp(prefix="bench-reference-save-"))
    counter = iter(range(1_000_000))
    try:

        def save(kind: str) -> Callable[[], None]:
            def run() -> None:
                path = root / f"{kind}-{next(counter)}" / "m-1.0.0.joblib"
                extra = {"reference": X_test} if kind == "reference" else {"probe": X_test.head(16)}
                toolkit.save(pipeline, path, name="m", version="1.0.0", **extra)
                shutil.rmtree(path.parent)

            return run

        save("probe")()  # warm both paths once
        save("reference")()
        t_probe, t_ref = _interleaved(save("probe"), save("reference"), repeat)
        return {"probe": t_probe, "reference": t_ref}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _against(rev: str, rounds: int, repeat: int) -> None:
    """Save times of the toolkit at ``rev`` and of this tree, in alternating subprocesses."""
    repo = Path(__file__).resolve().parents[1]
    old = Path(tempfile.mkdtemp(prefix="bench-reference-rev-"))
    try:
        archive = subprocess.run(["git", "archive", rev, "toolkit"], cwd=repo, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
        for _ in range(rounds):
            for label, tree in (("before", old), ("after", repo)):
                done = subprocess.run(
                    [sys.executable, __file__, "--save-only", "--repeat", str(repeat)],
                    capture_output=True, text=True, check=True, cwd=tree,
                    env={**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"},
                )  # fmt: skip
                runs[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(old, ignore_errors=True)

    def median(label: str, model: str, kind: str) -> float:
        return statistics.median(r[model][kind] for r in runs[label])

    print(f"save with the reference set: {rev} (before) and this tree (after), medians of {rounds} rounds")
    print(f"{'model':<34} {'probe ms':>9} {'ref ms':>8} {'before x':>9} {'probe ms':>9} {'ref ms':>8} {'after x':>8}")
    for model in runs["after"][0]:
        cells = []
        for label in ("before", "after"):
            p, r = median(label, model, "probe"), median(label, model, "reference")
            cells += [f"{p * 1000:>9.0f}", f"{r * 1000:>8.0f}", f"{r / p:>8.2f}x"]
        print(f"{model.removeprefix('builtin:'):<34} " + " ".join(cells))


def _interleaved(a: Callable[[], None], b: Callable[[], None], repeat: int) -> tuple[float, float]:
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


if __name__ == "__main__":
    main()
