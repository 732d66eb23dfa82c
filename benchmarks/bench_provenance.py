"""What provenance costs: `provenance` and `verify-provenance` on a large pipeline vs one sha256 pass.

Run: .venv/bin/python benchmarks/bench_provenance.py [--mb 1024] [--repeat 5]
A real scikit-learn pipeline (a scaler and a brute-force nearest-neighbours model that keeps its
training rows) is saved through ``toolkit.save`` at about ``--mb`` MB. Then, interleaved run for
run so a busy machine slows every side alike, with the page cache warm for all of them:
- one sha256 pass over the artifact's files (hashlib, 1 MiB chunks): the obvious alternative;
- ``attest`` (toolkit provenance: card checks, every file hashed once, statement, DSSE signature,
  atomic write);
- ``verify_provenance`` (signature, statement, subject set, every file hashed once).
Figures are medians. Target: each of the two / one sha256 pass <= 1.1.
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

TARGET = 1.1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=1024, help="size of the pipeline, in MB (about 1 GB for the target)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from toolkit import signing
    from toolkit.artifact import artifact_paths
    from toolkit.provenance.attest import attest
    from toolkit.provenance.verify import verify_provenance

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = _save_large(root / "big-1.0.0.joblib", args.mb)
        signing.keygen(root / "k")
        paths = artifact_paths(model)
        files = [paths.model, paths.card_json, paths.card_md]
        size = sum(p.stat().st_size for p in files)
        attest(model, root / "k.key")  # warms the page cache and checks it works before timing

        runs: dict[str, list[float]] = {"sha256": [], "provenance": [], "verify": []}
        steps: dict[str, Callable[[], object]] = {
            "sha256": lambda: [_sha256(p) for p in files],
            "provenance": lambda: attest(model, root / "k.key"),
            "verify": lambda: verify_provenance(model, [root / "k.pub"]),
        }
        for _ in range(args.repeat):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                runs[name].append(time.perf_counter() - start)

    base = statistics.median(runs["sha256"])
    print(f"artifact: {size / 1e6:.0f} MB in {len(files)} files, {args.repeat} interleaved runs (median)")
    print(f"one sha256 pass                 {base:8.3f} s   ({size / base / 1e9:.2f} GB/s)")
    failed = False
    for name, label in (("provenance", "toolkit provenance"), ("verify", "toolkit verify-provenance")):
        t = statistics.median(runs[name])
        ratio = t / base
        ok = ratio <= TARGET
        failed |= not ok
        print(f"{label:<31} {t:8.3f} s   {ratio:5.2f}x  (target <= {TARGET}x: {'ok' if ok else 'MISSED'})")
    return 1 if failed else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
    return digest.hexdigest()


def _save_large(path: Path, mb: int) -> Path:
    import numpy as np
    import pandas as pd
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import toolkit

    columns = 64
    rows = max(1000, mb * 1_000_000 // (columns * 8))
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.standard_normal((rows, columns)), columns=[f"f{i}" for i in range(columns)])
    y = (X["f0"] > 0).astype(int)
    # brute force keeps the (scaled) training rows as they are: the pickle is about rows * columns * 8 bytes
    pipeline = make_pipeline(StandardScaler(), KNeighborsClassifier(algorithm="brute")).fit(X, y)
    toolkit.save(pipeline, path, name="big", version="1.0.0", probe=X.head(8))
    return path


if __name__ == "__main__":
    sys.exit(main())
