"""What `toolkit image run` costs over running the same script with `docker run` by hand.

Run: .venv/bin/python benchmarks/bench_image_run.py [--image toolkit:latest] [--repeat 5]
Needs a Docker engine and the image (`make image`). The workload is the worked example
(examples/custom/train.py: load the diabetes data, fit a pipeline with a user-defined
transformer, save it with its card), in a fresh copy of the example folder.

  toolkit    `toolkit image run --image IMAGE --out DIR -- python train.py`, a fresh process:
             the CLI's start-up, the SDK's connection, mounts, environment, the container, the
             ownership hand-back: everything the user waits for.
  by hand    `docker run --rm --network none --read-only --tmpfs /tmp -v PROJECT:/work:ro
             -v DIR:/out -w /work -e TOOLKIT_OUT=/out --user UID:GID --entrypoint python IMAGE
             train.py`: the same container, the same script, typed by hand.

Both save the same artifact with the same card (container environment included). Runs are
interleaved so drifting machine load hits both alike; medians. Target: ratio <= 1.1.
A second, empty workload (`python -c pass`) shows the fixed cost in seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=os.environ.get("TOOLKIT_IMAGE", "toolkit:latest"))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if subprocess.run(["docker", "image", "inspect", args.image], capture_output=True).returncode != 0:
        sys.exit(f"image {args.image} not found: build it first (make image, or --image TAG)")

    with tempfile.TemporaryDirectory(prefix="bench-image-run-") as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(REPO / "examples" / "custom", project, ignore=shutil.ignore_patterns("out", "__pycache__"))
        os.chmod(tmp, 0o755)  # the image's user (root's runs) must be able to read the project
        results: dict[str, dict[str, list[float]]] = {}
        for workload, command in (("train.py", ["python", "train.py"]), ("empty", ["python", "-c", "pass"])):
            timings: dict[str, list[float]] = {"toolkit": [], "by hand": []}
            _toolkit(args.image, project, Path(tmp) / "warm", command)  # page cache, image layers
            for i in range(args.repeat):
                timings["toolkit"].append(_toolkit(args.image, project, Path(tmp) / f"t-{workload}-{i}", command))
                timings["by hand"].append(_by_hand(args.image, project, Path(tmp) / f"h-{workload}-{i}", command))
            results[workload] = timings

    print(f"toolkit image run vs docker run by hand, image {args.image}; medians of {args.repeat} interleaved runs")
    for workload, timings in results.items():
        ours, hand = statistics.median(timings["toolkit"]), statistics.median(timings["by hand"])
        print(
            f"  {workload:<9} toolkit {ours:6.2f} s   by hand {hand:6.2f} s   "
            f"overhead {ours - hand:+5.2f} s   ratio {ours / hand:4.2f}"
        )
    ours = statistics.median(results["train.py"]["toolkit"])
    hand = statistics.median(results["train.py"]["by hand"])
    ratio = ours / hand
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"ratio on the example {ratio:.2f}: {verdict} the target (<= {TARGET})")


def _toolkit(image: str, project: Path, out: Path, command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "image", "run", "--image", image, "--out", str(out), "--", *command],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"toolkit image run failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def _by_hand(image: str, project: Path, out: Path, command: list[str]) -> float:
    started = time.perf_counter()
    out.mkdir()
    hand = [
        *("docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp"),
        *("-v", f"{project}:/work:ro", "-v", f"{out}:/out", "-w", "/work", "-e", "TOOLKIT_OUT=/out"),
        *("--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp", "--entrypoint", command[0]),
        *(image, *command[1:]),
    ]
    done = subprocess.run(
        hand,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"docker run failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


if __name__ == "__main__":
    main()
