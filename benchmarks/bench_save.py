"""What saving costs: ``toolkit.save`` vs a plain ``joblib.dump`` plus one sha256 pass.

Run: .venv/bin/python benchmarks/bench_save.py [--trees 40] [--repeat 5]
A random forest of >= 100 MB (fully grown trees on noisy labels). ``save`` pickles it
once, straight into its temp file, hashing and recording the pickle's globals as it goes;
then it writes the card (probe predictions, environment, distributions) and fsyncs. The
alternative is what a careful script would do without the toolkit: ``joblib.dump`` to a
file, then one sha256 pass over it. Medians over alternating runs, page cache warm for both.
Target: save / (joblib.dump + sha256) <= 1.5.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trees", type=int, default=40, help="forest size (40 gives ~110 MB)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import joblib

    import toolkit

    pipeline, probe = _forest(args.rows, args.trees)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counter = iter(range(1_000_000))

        def plain() -> None:
            path = root / f"plain-{next(counter)}.joblib"
            joblib.dump(pipeline, path)
            _sha256(path)
            path.unlink()

        def save() -> None:
            directory = root / f"save-{next(counter)}"
            toolkit.save(pipeline, directory / "forest-1.0.0.joblib", name="forest", version="1.0.0", probe=probe)
            shutil.rmtree(directory)

        t_plain, t_save = _interleaved(plain, save, args.repeat)
        # How much of that is durability rather than work: the same save with fsync a no-op
        # (the plain side never fsyncs). On a disk other processes keep busy, fsync dominates.
        real_fsync = os.fsync
        os.fsync = lambda fd: None
        try:
            t_plain_nosync, t_save_nosync = _interleaved(plain, save, args.repeat)
        finally:
            os.fsync = real_fsync
        size = _size(pipeline, root)
    print(f"random forest: {args.trees} trees, {size / 1e6:.0f} MB pickled")
    print(f"joblib.dump + one sha256 pass      {t_plain * 1000:8.1f} ms")
    print(f"toolkit.save (one dump, card)      {t_save * 1000:8.1f} ms")
    print(f"ratio save / (dump + sha256)       {t_save / t_plain:8.2f}   (target <= 1.50)")
    print(f"same, fsync disabled in save       {t_save_nosync / t_plain_nosync:8.2f}   (the toolkit's own work)")
    if size < 100e6:
        print("warning: under 100 MB; raise --trees for the target's footing")


def _forest(rows: int, trees: int) -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(rows, 8)), columns=[f"f{i}" for i in range(8)])
    # Noisy labels keep the trees fully grown: that is what makes a forest big.
    y = ((X["f0"] + rng.normal(size=rows)) > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=2)
    return make_pipeline(StandardScaler(), forest).fit(X, y), X.head(16)


def _size(pipeline: Any, root: Path) -> int:
    import joblib

    path = root / "size.joblib"
    joblib.dump(pipeline, path)
    return path.stat().st_size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _interleaved(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b``, run alternately so that a busy machine weighs on both alike."""
    a(), b()  # warm the page cache and imports
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeat):
        for fn, spent in zip((a, b), times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


if __name__ == "__main__":
    main()
