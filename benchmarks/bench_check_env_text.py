"""check-env's human output against its --json output, on a card that lists 100,000 packages
none of which this runtime has (100,000 differences). Target: text within ~1.5x of JSON.

Both are timed as the real command in a subprocess (what a user pays, start-up included).
Run: .venv/bin/python benchmarks/bench_check_env_text.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = 100_000
RUNS = 3


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-check-env-"))
    try:
        artifact = _make_artifact(work)
        times = {}
        for label, extra in (("json", ["--json"]), ("text", [])):
            samples = []
            for _ in range(RUNS):
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "toolkit", "check-env", str(artifact), *extra],
                    capture_output=True,
                    env={**os.environ, "COLUMNS": "160"},
                )
                samples.append(time.perf_counter() - t0)
                assert proc.returncode == 1, proc.stderr[-500:]
            times[label] = min(samples)
            print(f"check-env {label:<4} {PACKAGES:,} differences: {times[label]:.2f} s (best of {RUNS})")
        print(f"text / json = {times['text'] / times['json']:.2f}x (target <= 1.5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _make_artifact(directory: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from toolkit.artifact import artifact_paths, save
    from toolkit.card import card_from_dict

    X, y = load_iris(return_X_y=True, as_frame=True)
    path = directory / "wide-1.0.0.joblib"
    save(make_pipeline(LogisticRegression(max_iter=200)).fit(X, y), path, name="wide", version="1.0.0", probe=X.head(4))
    card_json = artifact_paths(path).card_json
    card = json.loads(card_json.read_bytes())
    card["environment"]["packages"].update({f"pkg-{i:06d}": f"1.{i % 100}.0" for i in range(PACKAGES)})
    card_json.chmod(0o644)
    card_json.write_text(json.dumps(card))
    md = artifact_paths(path).card_md
    md.chmod(0o644)
    md.write_text(card_from_dict(card).to_markdown())  # the gate checks it is the card's rendering
    return path


if __name__ == "__main__":
    main()
