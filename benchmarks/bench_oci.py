"""The remote gate and pull on a 200 MB artifact in a loopback `docker-registry`.

Measured in one run, against the obvious alternatives:
- `toolkit check-env oci://...` (manifest + card only) vs `toolkit pull` then `toolkit check-env`
  on the file: wall time and bytes the registry served (from its access log).
  Target: the remote gate downloads under 1% of the artifact's bytes.
- `oci.pull` throughput vs a plain HTTP GET of the same model blob from the same registry
  (read into a file, no hashing, no checks). Target: pull >= 0.8x the plain GET.
- Peak RSS of the `toolkit pull` process: memory stays flat (streamed), far below the model.

Run: .venv/bin/python benchmarks/bench_oci.py   (MB=200 by default; BENCH_OCI_MB to change)
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from _oci_support import LoopbackRegistry  # noqa: E402

from toolkit import oci  # noqa: E402

MB = int(os.environ.get("BENCH_OCI_MB", "200"))
RUNS = 3
THROUGHPUT_RUNS = 5
GATE_BYTES_TARGET = 0.01
PULL_RATIO_TARGET = 0.8
# The access log's combined format: "... "GET /v2/... HTTP/1.1" 200 5850 ..."
_LOG_LINE = re.compile(r'"(GET|HEAD) (/v2/\S*) HTTP/[\d.]+" (\d{3}) (\d+|-)')


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-oci-"))
    registry = LoopbackRegistry(work / "registry")
    try:
        artifact = _big_artifact(work / "artifact", MB)
        total = sum(p.stat().st_size for p in artifact.parent.iterdir())
        ref = f"oci://{registry.host}/bench/big:1.0.0"
        started = time.perf_counter()
        pushed = oci.push(artifact, ref)
        push_s = time.perf_counter() - started
        model = next(d for d in _layers(registry, ref) if d.file_name == artifact.name)

        gate_s, gate_bytes = [], []
        full_s, full_bytes, pull_rss = [], [], []
        for i in range(RUNS):
            mark = len(registry.log())
            t = time.perf_counter()
            _cli("check-env", ref)
            gate_s.append(time.perf_counter() - t)
            gate_bytes.append(_served(registry.log()[mark:]))

            out = work / f"pulled-{i}"
            mark = len(registry.log())
            t = time.perf_counter()
            rss = _cli("pull", ref, "--out", str(out))
            _cli("check-env", str(out / artifact.name))
            full_s.append(time.perf_counter() - t)
            full_bytes.append(_served(registry.log()[mark:]))
            pull_rss.append(rss)
            shutil.rmtree(out)

        # Interleaved, so both see the same machine load; best of N, as throughput goes.
        pull_rates, get_rates = [], []
        for i in range(THROUGHPUT_RUNS):
            target = work / f"get-{i}.bin"
            t = time.perf_counter()
            got = _plain_get(registry, f"/v2/bench/big/blobs/{model.digest}", target)
            get_rates.append(got / (time.perf_counter() - t))
            target.unlink()
            out = work / f"lib-pull-{i}"
            t = time.perf_counter()
            oci.pull(ref, out)
            pull_rates.append(total / (time.perf_counter() - t))
            shutil.rmtree(out)

        gate_b, full_b = statistics.median(gate_bytes), statistics.median(full_bytes)
        pull_rate, get_rate = max(pull_rates), max(get_rates)
        print(f"artifact: {total / 1e6:.1f} MB in 3 files; pushed in {push_s:.2f} s as {pushed.digest[:19]}…")
        print(f"{'':34}{'median s':>10}{'bytes served':>16}")
        print(f"{'check-env oci:// (manifest+card)':34}{statistics.median(gate_s):>10.3f}{gate_b:>16,.0f}")
        print(f"{'pull, then check-env on the file':34}{statistics.median(full_s):>10.3f}{full_b:>16,.0f}")
        print(
            f"remote gate: {gate_b / total:.4%} of the artifact's bytes (target < {GATE_BYTES_TARGET:.0%}), "
            f"{statistics.median(full_s) / statistics.median(gate_s):.1f}x faster than pull-then-gate"
        )
        print(
            f"pull {pull_rate / 1e6:.0f} MB/s vs plain GET {get_rate / 1e6:.0f} MB/s of the model blob "
            f"(best of {THROUGHPUT_RUNS}): {pull_rate / get_rate:.2f}x (target >= {PULL_RATIO_TARGET}); medians "
            f"{statistics.median(pull_rates) / 1e6:.0f} vs {statistics.median(get_rates) / 1e6:.0f} MB/s"
        )
        print(f"`toolkit pull` peak RSS {max(pull_rss) / 1e6:.0f} MB for a {total / 1e6:.0f} MB artifact")
        ok = gate_b / total < GATE_BYTES_TARGET and pull_rate / get_rate >= PULL_RATIO_TARGET
        print("targets met" if ok else "TARGET MISSED")
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def _big_artifact(directory: Path, megabytes: int) -> Path:
    """A real saved pipeline carrying ``megabytes`` of incompressible fitted state."""
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import toolkit

    X, y = load_iris(return_X_y=True, as_frame=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    # A fitted attribute as large as a big forest's arrays, random so nothing compresses it.
    pipeline.steps[0][1].bench_padding_ = np.random.default_rng(0).integers(
        0, 255, size=megabytes * 1_000_000, dtype=np.uint8
    )
    path = directory / "big-1.0.0.joblib"
    toolkit.save(pipeline, path, name="big", version="1.0.0", probe=X.head(8))
    return path


def _layers(registry: LoopbackRegistry, ref: str) -> tuple[oci.Descriptor, ...]:
    with oci.Client(registry.host) as client:
        return client.get_manifest(oci.parse_reference(ref)).layers


def _cli(*args: str) -> int:
    """Run the real command; returns its peak RSS in bytes.

    Read from /proc (VmHWM, the high-water mark of the process image after exec): the
    getrusage figure for children would include the pages the fork copied from this
    benchmark, which holds the model in memory.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    peak_kb = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
        except OSError:
            break
        if found:
            peak_kb = max(peak_kb, int(found.group(1)))
        time.sleep(0.01)
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"toolkit {' '.join(args)} exited {proc.returncode}: {stderr.decode()}")
    return peak_kb * 1024


def _served(log: str) -> int:
    """Bytes of response bodies the registry sent for GETs, from its access log."""
    return sum(int(m.group(4)) for m in _LOG_LINE.finditer(log) if m.group(1) == "GET" and m.group(4) != "-")


def _plain_get(registry: LoopbackRegistry, path: str, target: Path) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    conn.request("GET", path)
    answer = conn.getresponse()
    got = 0
    with target.open("wb") as f:
        while chunk := answer.read(1 << 20):
            f.write(chunk)
            got += len(chunk)
    conn.close()
    return got


if __name__ == "__main__":
    main()
