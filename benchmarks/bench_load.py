"""What the allow-list costs on load: ``toolkit.load`` with the type checks (toolkit.trust) vs
the same load with the old rule (the card's pairs minus a deny-list), and vs a plain
``joblib.load`` plus one sha256 pass.

Run: .venv/bin/python benchmarks/bench_load.py [--trees 40] [--repeat 5]
Models: every builtin kind ``toolkit train`` builds (trained on the builtin datasets), and a
random forest of >= 100 MB. The old rule is the previous ``find_class``, put back on the
same unpickler for the comparison, so both sides read, hash, gate and unpickle identically.
Medians over alternating runs, page cache warm for all.
Target: allow-list / old loader <= 1.05.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
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
    from toolkit import pickle_audit

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = _builtin_models(root)
        models.append(("random forest (big)", _big_forest(root, args.rows, args.trees)))
        unpickler = pickle_audit._restricted_unpickler()
        new_find = unpickler.find_class

        def old_find(self: Any, module: str, name: str) -> Any:
            # The previous rule: the card's pairs, minus the deny-list, nothing else checked.
            if pickle_audit.denied(module, name) or not self.policy.recorded(module, name):
                raise RuntimeError(f"{module}.{name}")
            __import__(module, level=0)
            return getattr(sys.modules[module], name)

        print(f"{'model':28} {'MB':>6} {'plain':>9} {'old':>9} {'allow':>9} {'allow/old':>9} {'allow/plain':>11}")
        worst = 0.0
        ratios: list[float] = []
        for label, path in models:

            def plain(path: Path = path) -> None:
                _sha256(path)
                joblib.load(path)

            def old(path: Path = path) -> None:
                unpickler.find_class = old_find
                try:
                    toolkit.load(path)
                finally:
                    unpickler.find_class = new_find

            def allow(path: Path = path) -> None:
                toolkit.load(path)

            t_plain, t_old, t_new = _interleaved((plain, old, allow), args.repeat)
            worst = max(worst, t_new / t_old)
            ratios.append(t_new / t_old)
            size = path.stat().st_size / 1e6
            print(
                f"{label:28} {size:6.1f} {t_plain * 1000:7.1f}ms {t_old * 1000:7.1f}ms {t_new * 1000:7.1f}ms "
                f"{t_new / t_old:9.3f} {t_new / t_plain:11.2f}"
            )
        print(f"allow-list / old loader: geometric mean {statistics.geometric_mean(ratios):.3f}, worst {worst:.3f}")
        print("(target <= 1.05; on a shared machine single small models swing +-20% from run to run)")


def _builtin_models(root: Path) -> list[tuple[str, Path]]:
    from toolkit.training.config import CLASSIFIER_KINDS, REGRESSOR_KINDS, TrainConfig
    from toolkit.training.train import train

    found = []
    for task, kinds, dataset in (
        ("classification", CLASSIFIER_KINDS, "builtin:credit"),
        ("regression", REGRESSOR_KINDS, "builtin:diabetes"),
    ):
        for kind in kinds:
            out = root / f"{task}-{kind}"
            config = TrainConfig(dataset=dataset, model=kind, cv_folds=2, out=out, register=False)
            found.append((f"{task[:5]} {kind}", train(config).path))
    return found


def _big_forest(root: Path, rows: int, trees: int) -> Path:
    import numpy as np
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import toolkit

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(rows, 8)), columns=[f"f{i}" for i in range(8)])
    y = ((X["f0"] + rng.normal(size=rows)) > 0).astype(int)  # noisy labels: fully grown trees
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=2))
    path = root / "forest" / "forest-1.0.0.joblib"
    toolkit.save(pipeline.fit(X, y), path, name="forest", version="1.0.0", probe=X.head(16))
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _interleaved(fns: tuple[Callable[[], Any], ...], repeat: int) -> tuple[float, ...]:
    """Medians of each of ``fns``, run alternately so a busy machine weighs on all alike."""
    for fn in fns:
        fn()  # warm the page cache and imports
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return tuple(statistics.median(t) for t in times)


if __name__ == "__main__":
    main()
