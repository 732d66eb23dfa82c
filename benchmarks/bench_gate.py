"""How much the guard costs: check-env vs `pip freeze`, guarded load vs plain joblib.load.

Run: .venv/bin/python benchmarks/bench_gate.py [--mb 100]
check-env is timed on both of its paths, a match (one line) and a mismatch (the differences
table), interleaved with `pip freeze` run for run so that a busy machine slows all three alike.
Every figure is a median over repeated runs in this one process tree, with the page cache warm
for both sides. Targets: check-env / pip freeze <= 0.40 on both paths;
toolkit.load / (joblib.load + one sha256 pass) <= 1.1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.card import card_from_dict

BIN = Path(sys.executable).parent


TARGET_RATIO = 0.40


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=100, help="size of the large pipeline, in MB (>= 100 for the target)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import compileall

    import toolkit

    # Same footing as pip: its modules were byte-compiled at install, so compile ours too
    # (PYTHONDONTWRITEBYTECODE would otherwise make every run recompile the toolkit).
    compileall.compile_dir(Path(toolkit.__file__).parent, quiet=1)

    with tempfile.TemporaryDirectory() as tmp:
        small = _save_small(Path(tmp) / "small")
        mismatch = _with_changed_package(_save_small(Path(tmp) / "mismatch"))
        gate, gate_mismatch, freeze = _median_walls(
            [
                ([str(BIN / "toolkit"), "check-env", str(small)], 0),
                ([str(BIN / "toolkit"), "check-env", str(mismatch)], 1),
                ([str(BIN / "pip"), "freeze", "--disable-pip-version-check"], 0),
            ],
            args.repeat,
        )
        print(f"check-env, match (whole process)    {gate * 1000:8.1f} ms")
        print(f"check-env, mismatch (with table)    {gate_mismatch * 1000:8.1f} ms")
        print(f"pip freeze (whole process)          {freeze * 1000:8.1f} ms")
        print(f"ratio check-env / pip freeze, match     {gate / freeze:8.2f}   (target <= {TARGET_RATIO:.2f})")
        print(f"ratio check-env / pip freeze, mismatch  {gate_mismatch / freeze:8.2f}   (target <= {TARGET_RATIO:.2f})")
        ok = max(gate, gate_mismatch) / freeze <= TARGET_RATIO

        large = _save_large(Path(tmp) / "large", args.mb)
        size_mb = large.stat().st_size / 1e6
        import joblib

        t_joblib = _median(lambda: joblib.load(large), args.repeat)
        t_sha = _median(lambda: _sha256(large), args.repeat)
        t_toolkit = _median(lambda: toolkit.load(large), args.repeat)
        t_gate = _median(lambda: toolkit.check_env(large), args.repeat)
        print(f"\nlarge pipeline: {size_mb:.0f} MB on disk")
        print(f"joblib.load (plain, unchecked)     {t_joblib * 1000:8.1f} ms")
        print(f"sha256 pass over the file          {t_sha * 1000:8.1f} ms")
        print(f"toolkit.load (checksum+env+load)   {t_toolkit * 1000:8.1f} ms")
        print(f"toolkit.check_env (no unpickling)  {t_gate * 1000:8.1f} ms")
        print(f"ratio toolkit.load / joblib.load   {t_toolkit / t_joblib:8.2f}")
        print(f"ratio toolkit.load / (joblib.load + sha256)  {t_toolkit / (t_joblib + t_sha):8.2f}   (target <= 1.10)")
    return 0 if ok else 1


def _save_small(directory: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import toolkit

    X, y = load_iris(return_X_y=True, as_frame=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    path = directory / "iris-1.0.0.joblib"
    toolkit.save(pipeline, path, name="iris", version="1.0.0", probe=X.head(8))
    return path


def _save_large(directory: Path, mb: int) -> Path:
    # A nearest-neighbours model keeps its training set: a realistic way to get a big pickle.
    import numpy as np
    import pandas as pd
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import toolkit

    n_features = 10
    rows = mb * 1_000_000 // (8 * n_features) + 1
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(rows, n_features)), columns=[f"f{i}" for i in range(n_features)])
    y = (X["f0"] + X["f1"] > 0).astype(int)
    pipeline = make_pipeline(StandardScaler(), KNeighborsClassifier(algorithm="brute")).fit(X, y)
    path = directory / "knn-1.0.0.joblib"
    toolkit.save(pipeline, path, name="knn", version="1.0.0", probe=X.head(8))
    return path


def _with_changed_package(artifact: Path) -> Path:
    """The artifact with one package version in its card changed: check-env's mismatch path."""
    card = artifact.with_name(artifact.name.removesuffix(".joblib") + ".card.json")
    data = json.loads(card.read_text(encoding="utf-8"))
    data["environment"]["packages"]["numpy"] = "1.0.0"
    card.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    # The .card.md must stay the card's rendering, or the gate refuses the artifact (exit 3).
    artifact.with_name(artifact.name.removesuffix(".joblib") + ".card.md").write_text(
        card_from_dict(data).to_markdown(), encoding="utf-8"
    )
    return artifact


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _median(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm the page cache and imports
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _median_walls(commands: list[tuple[list[str], int]], repeat: int) -> list[float]:
    """Median wall time of each command, run round-robin; each must exit with its expected code."""
    times: list[list[float]] = [[] for _ in commands]
    for round_ in range(repeat + 1):  # round 0 warms the page cache and is not counted
        for index, (argv, expected) in enumerate(commands):
            start = time.perf_counter()
            done = subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            elapsed = time.perf_counter() - start
            if done.returncode != expected:
                raise SystemExit(f"{' '.join(argv)}: exit {done.returncode}, expected {expected}")
            if round_:
                times[index].append(elapsed)
    return [statistics.median(t) for t in times]


if __name__ == "__main__":
    sys.exit(main())
