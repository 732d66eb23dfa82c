"""registry compare's paired bootstrap: the numpy metrics against sklearn's (train.score) per draw.

Two logistic regressions on builtin:credit's held-out split (400 rows, binary) and on
builtin:wine's (36 rows, three classes), 1000 resamples each way, same seed; the intervals must
agree (the fast path is only used where it reproduces train.score on all the rows).
Run: .venv/bin/python benchmarks/bench_compare_bootstrap.py
"""

from __future__ import annotations

import time
from typing import Any

RESAMPLES = 1000


def main() -> None:
    from toolkit.training import scoring as evaluate

    for dataset in ("builtin:credit", "builtin:wine"):
        a, b, X, y = _models(dataset)
        t0 = time.perf_counter()
        fast = evaluate.paired_scores(a, b, X, y, resamples=RESAMPLES, seed=0)
        t_fast = time.perf_counter() - t0
        original = evaluate._FastClassification.of
        evaluate._FastClassification.of = classmethod(lambda cls, *args: None)  # type: ignore[assignment]
        try:
            t0 = time.perf_counter()
            slow = evaluate.paired_scores(a, b, X, y, resamples=RESAMPLES, seed=0)
            t_slow = time.perf_counter() - t0
        finally:
            evaluate._FastClassification.of = original  # type: ignore[method-assign]
        agree = all(
            abs(fast.intervals[k][0] - slow.intervals[k][0]) < 1e-9  # type: ignore[index]
            and abs(fast.intervals[k][1] - slow.intervals[k][1]) < 1e-9  # type: ignore[index]
            for k in slow.intervals
        )
        print(
            f"{dataset:<15} {len(y):>4} rows, {RESAMPLES} resamples: numpy {t_fast:.2f} s, sklearn {t_slow:.2f} s "
            f"({t_slow / t_fast:.0f}x); intervals agree: {agree}"
        )
        assert agree


def _models(dataset: str) -> tuple[Any, Any, Any, Any]:
    from sklearn.linear_model import LogisticRegression

    from toolkit.training.datasets import load_dataset, split
    from toolkit.training.train import build_pipeline

    ds = load_dataset(dataset, None)
    X_train, X_test, y_train, y_test = split(ds, test_size=0.2, seed=0)
    a = build_pipeline(X_train, LogisticRegression(C=0.01, max_iter=1000)).fit(X_train, y_train)
    b = build_pipeline(X_train, LogisticRegression(C=1.0, max_iter=1000)).fit(X_train, y_train)
    return a, b, X_test, y_test


if __name__ == "__main__":
    main()
