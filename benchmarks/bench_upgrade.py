"""upgrade-check over 10 production models vs 10 separate `image check --verify-predictions` runs.

Both sides answer "does each model load and predict as its card says, in the candidate
runtime?", in the same image (the candidate image of requirements.lock, built once and cached
before timing). upgrade-check does it in one container with one interpreter and shared imports;
the alternative starts a container, an interpreter and scikit-learn per model. Each side runs
ROUNDS times, interleaved; medians are compared. Target: upgrade-check <= 0.3 of the alternative.

Needs a Docker engine and the pinned base (`make base`); run from the repository root:
    .venv/bin/python benchmarks/bench_upgrade.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from toolkit import docker as tdocker
from toolkit.registry import Registry
from toolkit.upgrade.runtime_image import ensure_runtime_image

REPO = Path(__file__).resolve().parents[1]
MODELS = 10
ROUNDS = 3
TARGET = 0.3
KINDS = ("logistic_regression", "random_forest")


def main() -> int:
    client = tdocker.connect()
    base = tdocker.resolve_base_image(None, base_file=REPO / ".cache" / "base-image")
    lock = REPO / "requirements.lock"
    started = time.monotonic()
    image = ensure_runtime_image(base_image=base, lock=lock, context=REPO, client=client)
    print(f"candidate image {image.tag}: {'cached' if image.cached else 'built'} in {time.monotonic() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="bench-upgrade-") as tmp:
        registry = Path(tmp) / "models"
        started = time.monotonic()
        for i in range(MODELS):
            name = f"bench-{i}"
            _run("image", "train", "--image", image.tag, "--dataset", "builtin:wine", "--model", KINDS[i % 2],
                 "--name", name, "--registry", str(registry))  # fmt: skip
            _run("registry", "promote", name, "1.0.0", "--registry", str(registry))
        print(f"{MODELS} production models trained in the image in {time.monotonic() - started:.1f} s")
        paths = [Registry(registry).get(f"bench-{i}").path for i in range(MODELS)]
        one: list[float] = []
        separate: list[float] = []
        for _ in range(ROUNDS):
            one.append(_timed("upgrade-check", "--lock", str(lock), "--registry", str(registry), "--base-image", base))
            t = 0.0
            for path in paths:
                t += _timed("image", "check", str(path), "--image", image.tag, "--verify-predictions")
            separate.append(t)
    a, b = statistics.median(one), statistics.median(separate)
    ratio = a / b
    print(f"upgrade-check, {MODELS} models, one container:          {a:6.1f} s  (runs: {_fmt(one)})")
    print(f"{MODELS} x image check --verify-predictions:             {b:6.1f} s  (runs: {_fmt(separate)})")
    print(f"ratio {ratio:.2f} (target <= {TARGET}): {'met' if ratio <= TARGET else 'MISSED'}")
    return 0 if ratio <= TARGET else 1


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "CI": "1"},
    )
    if done.returncode not in (0, 1):
        raise SystemExit(f"toolkit {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done


def _timed(*args: str) -> float:
    started = time.monotonic()
    done = _run(*args)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"toolkit {' '.join(args)} said no ({done.returncode}): {done.stdout[-500:]}")
    return elapsed


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
