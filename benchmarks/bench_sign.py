"""What a signature costs: `sign`, and `check-env` with trust on, against one sha256 pass.

Run: .venv/bin/python benchmarks/bench_sign.py [--mb 1000]
A pipeline of --mb MB (a nearest-neighbours model keeps its training set) is saved once;
every figure is a median over runs taken round-robin in this process, page cache warm.
The baseline is one plain sha256 pass over the same three files (.joblib, .card.json,
.card.md). Target: both ratios <= 1.10 (the signature costs one hash pass, never two).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gate import _save_large  # the same pipeline builder as the gate benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1000, help="size of the pipeline, in MB (1000 for the target)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import toolkit
    from toolkit import signing
    from toolkit.artifact import artifact_paths, sign

    with tempfile.TemporaryDirectory() as tmp:
        large = _save_large(Path(tmp) / "large", args.mb)
        paths = artifact_paths(large)
        files = (paths.model, paths.card_json, paths.card_md)
        key, pub = signing.keygen(Path(tmp) / "bench")
        sign(large, key)
        size_mb = sum(p.stat().st_size for p in files) / 1e6

        t_sha, t_sign, t_gate_plain, t_gate_trust = _medians(
            [
                lambda: [_sha256(p) for p in files],
                lambda: sign(large, key),
                lambda: toolkit.check_env(large),
                lambda: toolkit.check_env(large, trusted_keys=[pub]),
            ],
            args.repeat,
        )
        print(f"pipeline: {size_mb:.0f} MB in its three files")
        print(f"one sha256 pass over the three files      {t_sha * 1000:8.1f} ms")
        print(f"toolkit sign (hash + ECDSA + write .sig)   {t_sign * 1000:8.1f} ms")
        print(f"check_env, no trust                       {t_gate_plain * 1000:8.1f} ms")
        print(f"check_env, trusted key (signature too)    {t_gate_trust * 1000:8.1f} ms")
        print(f"ratio sign / sha256 pass                  {t_sign / t_sha:8.2f}   (target <= 1.10)")
        print(f"ratio check_env+trust / sha256 pass       {t_gate_trust / t_sha:8.2f}   (target <= 1.10)")


def _sha256(path: Path) -> str:
    # The obvious alternative, at its best: the standard library's zero-copy file hashing.
    with path.open("rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _medians(fns: list[Callable[[], Any]], repeat: int) -> list[float]:
    """Median wall time of each, run round-robin so a busy machine slows all sides alike."""
    for fn in fns:
        fn()  # warm the page cache and imports
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


if __name__ == "__main__":
    main()
