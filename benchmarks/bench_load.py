"""What the allow-list costs on load: ``toolkit.load`` with the type checks (toolkit.trust) vs
the same load with the old rule (the card's pairs minus a deny-list), and vs a plain
``joblib.load`` plus one sha256 pass.

Run: .venv/bin/python benchmarks/bench_load.py [--trees 40] [--min-repeat 15] [--seconds 3]
Models: every builtin kind ``toolkit train`` builds (trained on the builtin datasets), and a
random forest of >= 100 MB. The old loader is the previous ``find_class`` and the plain
REDUCE/NEWOBJ opcodes (no call or allocation checks), put back on the same unpickler for the
comparison, so both sides read, hash, gate and unpickle identically.

Made for a shared machine: each round runs every arm once in a fresh random order; rounds
repeat until every arm has at least ``--min-repeat`` runs and ``--seconds`` of run time. The
ratio is of minimums (the run least disturbed by other processes; noise only ever adds time),
the median ratio is printed beside it, and the old loader runs as two arms (old, old'): their
ratio, an A/A comparison of one loader with itself, is the noise floor of that model's row.
The same ratios in CPU time (``process_time``) leave out the time other processes held the cores.
Target: allow-list / old loader <= 1.05 per model.
"""

from __future__ import annotations

import argparse
import hashlib
import random
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
    parser.add_argument("--min-repeat", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=3.0, help="least run time per arm and model")
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
        new_dispatch = dict(unpickler.dispatch)
        new_check = unpickler.check_call

        def no_check(self: Any, func: Any, args: Any, kwargs: Any) -> None:
            return None

        nested = unpickler.nested
        new_nested_dispatch = dict(nested.dispatch)
        plain_unpickler: Any = __import__("pickle")._Unpickler
        plain_ops = {op[0]: plain_unpickler.dispatch[op[0]] for op in (b"R", b"\x81", b"\x92")}
        old_dispatch = {**new_dispatch, **plain_ops}
        old_nested_dispatch = {**new_nested_dispatch, **plain_ops}

        def old_find(self: Any, module: str, name: str) -> Any:
            # The previous rule: the card's pairs, minus the deny-list, nothing else checked.
            if pickle_audit.denied(module, name) or not self.policy.recorded(module, name):
                raise RuntimeError(f"{module}.{name}")
            __import__(module, level=0)
            return getattr(sys.modules[module], name)

        print(
            f"{'model':28} {'MB':>6} {'runs':>5} {'plain':>9} {'old':>9} {'allow':>9} "
            f"{'allow/old':>9} {'(median)':>8} {'old/old':>8} {'allow/plain':>11}"
        )
        ratios: list[float] = []
        floors: list[float] = []
        cpu_ratios: list[float] = []
        cpu_floors: list[float] = []
        for label, path in models:

            def plain(path: Path = path) -> None:
                _sha256(path)
                joblib.load(path)

            def old(path: Path = path) -> None:
                unpickler.find_class = old_find
                unpickler.dispatch = old_dispatch
                nested.dispatch = old_nested_dispatch  # an object array's nested stream: the same opcodes
                unpickler.check_call = no_check
                try:
                    toolkit.load(path)
                finally:
                    unpickler.find_class = new_find
                    unpickler.dispatch = new_dispatch
                    nested.dispatch = new_nested_dispatch
                    unpickler.check_call = new_check

            def allow(path: Path = path) -> None:
                toolkit.load(path)

            runs, cpu = _interleaved((plain, old, old, allow), args.min_repeat, args.seconds)
            t_plain, t_old, t_old2, t_new = (min(t) for t in runs)
            m_old, m_new = statistics.median(runs[1]), statistics.median(runs[3])
            c_old, c_old2, c_new = min(cpu[1]), min(cpu[2]), min(cpu[3])
            cpu_ratios.append(c_new / c_old)
            cpu_floors.append(abs(c_old2 / c_old - 1))
            ratios.append(t_new / t_old)
            floors.append(abs(t_old2 / t_old - 1))
            size = path.stat().st_size / 1e6
            print(
                f"{label:28} {size:6.1f} {len(runs[0]):5d} {t_plain * 1000:7.1f}ms {t_old * 1000:7.1f}ms "
                f"{t_new * 1000:7.1f}ms {t_new / t_old:9.3f} {m_new / m_old:8.3f} {t_old2 / t_old:8.3f} "
                f"{t_new / t_plain:11.2f}   cpu {c_new / c_old:6.3f} (A/A {c_old2 / c_old:5.3f})",
                flush=True,
            )
        print(
            f"allow-list / old loader (minimums): geometric mean {statistics.geometric_mean(ratios):.3f}, "
            f"best {min(ratios):.3f}, worst {max(ratios):.3f}; A/A noise floor up to {max(floors):.1%}"
        )
        print(
            f"the same in CPU time (process_time, minimums): "
            f"geometric mean {statistics.geometric_mean(cpu_ratios):.3f}, "
            f"best {min(cpu_ratios):.3f}, worst {max(cpu_ratios):.3f}; A/A noise floor up to {max(cpu_floors):.1%}"
        )
        print("(target <= 1.05 per model; a row is resolved when its old/old is within a few %)")


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


def _interleaved(
    fns: tuple[Callable[[], Any], ...], min_repeat: int, seconds: float
) -> tuple[list[list[float]], list[list[float]]]:
    """Every wall and CPU time of each of ``fns``: rounds of all of them in a fresh random order
    (so a busy moment weighs on all alike), until each has ``min_repeat`` runs and ``seconds``.
    CPU time (this process, all its threads) leaves out the time other processes took the cores."""
    rng = random.Random(0)
    for fn in fns:
        fn()  # warm the page cache and imports
    times: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    while min(len(t) for t in times) < min_repeat or min(sum(t) for t in times) < seconds:
        order = list(range(len(fns)))
        rng.shuffle(order)
        for i in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            fns[i]()
            cpu[i].append(time.process_time() - start_cpu)
            times[i].append(time.perf_counter() - start)
    return times, cpu


if __name__ == "__main__":
    main()
