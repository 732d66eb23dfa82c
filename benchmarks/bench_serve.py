"""`toolkit serve` vs a bare uvicorn app calling pipeline.predict vs MLServer's scikit-learn runtime.

Same pipeline (numeric + categorical columns, LogisticRegression), same OIP v2 request body
(one tensor per column, pandas content type, both outputs asked for), same load generator:
wrk (Debian's; not the bottleneck on 2 cores), at 1 and 16 connections. Reported: requests/s,
p50 and p99 latency, and the ratios the issue targets (throughput >= MLServer's and >= 0.8x the
bare app; p99 no worse than MLServer's). Also: time from start to ready for each server, and
the cost of a swap (`--follow`): the time from a promote to serving the new version, and p99
under load while swaps happen vs without.

MLServer runs from a venv of its own (BENCH_MLSERVER_VENV, default /tmp/bench-mlserver, with
`mlserver` and `mlserver-sklearn`); when it cannot be found or cannot load the model it is
skipped with a printed line.

Run: .venv/bin/python benchmarks/bench_serve.py   (BENCH_SERVE_SECONDS=8 per wrk run by default)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import requests

import toolkit

SECONDS = int(os.environ.get("BENCH_SERVE_SECONDS", "8"))
ROWS = int(os.environ.get("BENCH_SERVE_ROWS", "10"))
MLSERVER_VENV = Path(os.environ.get("BENCH_MLSERVER_VENV", "/tmp/bench-mlserver"))
CONNECTIONS = (1, 16)

_BARE_APP = textwrap.dedent(
    '''
    """The obvious alternative: uvicorn, joblib.load, pipeline.predict; no checks, no metrics."""
    import json, os
    import joblib, pandas as pd

    PIPELINE = joblib.load(os.environ["BENCH_MODEL"])

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"].endswith("/ready"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        frame = pd.DataFrame({t["name"]: t["data"] for t in request["inputs"]})
        labels = PIPELINE.predict(frame).tolist()
        proba = PIPELINE.predict_proba(frame).tolist()
        answer = {"model_name": "credit", "outputs": [
            {"name": "predict", "shape": [len(labels)], "datatype": "BYTES", "data": labels},
            {"name": "predict_proba", "shape": [len(labels), 2], "datatype": "FP64",
             "data": [v for row in proba for v in row]}]}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
    '''
)


def main() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    model = _train(work / "models" / "credit-1.0.0.joblib", version="1.0.0")
    body = _body(ROWS)
    (work / "body.json").write_text(json.dumps(body))
    script = work / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[{json.dumps(body)}]]\n'
    )
    results: dict[str, dict[int, dict[str, float]]] = {}
    ready: dict[str, float] = {}

    servers: list[tuple[str, Any]] = [
        ("toolkit serve", lambda port: _start_toolkit(model, port)),
        ("bare uvicorn", lambda port: _start_bare(work, model, port)),
    ]
    mlserver = _mlserver_ready(work, model)
    if mlserver is not None:
        servers.append(("MLServer sklearn", mlserver))
    for name, start in servers:
        port = _free_port()
        started = time.monotonic()
        proc, infer_path = start(port)
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(url, infer_path, proc, body)
            except RuntimeError as e:
                if name == "MLServer sklearn":
                    print(f"MLServer: skipped ({e}; its log: {work / 'mlserver.log'})")
                    continue
                raise RuntimeError(f"{name}: {e}") from None
            ready[name] = time.monotonic() - started
            results[name] = {}
            for c in CONNECTIONS:
                results[name][c] = _wrk(url + infer_path, script, c)
        finally:
            _stop(proc)
    _report(results, ready)
    _swap_cost(work, body, script)


# --- servers --------------------------------------------------------------------------------


def _start_toolkit(model: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "serve", str(model), "--port", str(port), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, "/v2/models/credit/infer"


def _start_bare(work: Path, model: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    (work / "bare_app.py").write_text(_BARE_APP)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=work,
        env={**os.environ, "BENCH_MODEL": str(model)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, "/v2/models/credit/infer"


def _mlserver_ready(work: Path, model: Path) -> Any:
    exe = MLSERVER_VENV / "bin" / "mlserver"
    if not exe.exists():
        print(
            f"MLServer: skipped ({exe} not found: python -m venv {MLSERVER_VENV} && "
            f"{MLSERVER_VENV}/bin/pip install mlserver mlserver-sklearn)"
        )
        return None
    versions = subprocess.run(
        [
            str(MLSERVER_VENV / "bin" / "python"),
            "-c",
            "import sklearn, mlserver; print(sklearn.__version__, mlserver.__version__)",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    import sklearn

    if not versions or versions[0] != sklearn.__version__:
        print(
            f"MLServer: scikit-learn {versions[:1]} in its venv, {sklearn.__version__} here: the pickle may not "
            "load there; trying anyway"
        )
    folder = work / "mlserver"
    (folder / "credit").mkdir(parents=True)
    shutil.copy2(model, folder / "credit" / "model.joblib")
    (folder / "credit" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "credit",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "1.0.0"},
            }
        )
    )

    def start(port: int) -> tuple[subprocess.Popen[bytes], str]:
        (folder / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": port,
                    "grpc_port": _free_port(),
                    "metrics_port": _free_port(),
                    "host": "127.0.0.1",
                    # MLServer 1.7.1's inference-pool workers crash at start with the current uvloop
                    # ("no current event loop"): inference in the server process, as on 2 cores anyway.
                    "parallel_workers": 0,
                }
            )
        )
        log = open(work / "mlserver.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([str(exe), "start", str(folder)], stdout=log, stderr=log)
        return proc, "/v2/models/credit/infer"

    print(f"MLServer {versions[1] if len(versions) > 1 else '?'} (scikit-learn {versions[0] if versions else '?'})")
    return start


def _wait_ready(url: str, infer_path: str, proc: subprocess.Popen[bytes], body: dict[str, Any]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server at {url} exited {proc.returncode}")
        try:
            r = requests.post(url + infer_path, json=body, timeout=5)
            if r.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- load ------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk(url: str, script: Path, connections: int) -> dict[str, float]:
    threads = min(connections, 2)
    done = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    latency = {
        m[0]: float(m[1]) * _UNITS[m[2]] for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\b", text, re.M)
    }
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"rps": rps, "p50": latency["50"], "p99": latency["99"], "non2xx": float(errors.group(1)) if errors else 0}


def _report(results: dict[str, dict[int, dict[str, float]]], ready: dict[str, float]) -> None:
    print(f"\n{ROWS} rows per request, {SECONDS} s per run, wrk")
    print(f"{'server':<18} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, by_c in results.items():
        for c, r in by_c.items():
            print(f"{name:<18} {c:>5} {r['rps']:>9.1f} {r['p50']:>8.2f} {r['p99']:>8.2f} {int(r['non2xx']):>8}")
    ours = results["toolkit serve"]
    for c in CONNECTIONS:
        bare = ours[c]["rps"] / results["bare uvicorn"][c]["rps"]
        line = f"{c:>2} conn: toolkit/bare throughput {bare:.2f}x (target >= 0.8)"
        if "MLServer sklearn" in results:
            ml = results["MLServer sklearn"][c]
            line += (
                f"; toolkit/MLServer throughput {ours[c]['rps'] / ml['rps']:.2f}x (target >= 1), "
                f"p99 {ours[c]['p99']:.2f} vs {ml['p99']:.2f} ms (target <=)"
            )
        print(line)
    print("time from start to ready: " + ", ".join(f"{n} {t:.2f} s" for n, t in ready.items()))


def _swap_cost(work: Path, body: dict[str, Any], script: Path) -> None:
    from toolkit.registry import Registry

    registry = work / "registry"
    with Registry(registry) as reg:
        reg.add(_train(work / "src" / "credit-1.0.0.joblib", version="1.0.0"))
        for i in range(1, 7):
            reg.add(_train(work / "src" / f"credit-1.{i}.0.joblib", version=f"1.{i}.0", C=1.0 + i))
        reg.promote("credit", "1.0.0")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolkit",
            "serve",
            "credit@production",
            "--registry",
            str(registry),
            "--follow",
            "--poll-interval",
            "0.1",
            "--port",
            str(port),
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, "/v2/models/credit/infer", proc, body)
        quiet = _wrk(url + "/v2/models/credit/infer", script, 16)
        lags = []
        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c16", f"-d{SECONDS}s", "--latency", "-s", str(script), url + "/v2/models/credit/infer"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(1, 7):
            time.sleep(SECONDS / 8)
            with Registry(registry) as reg:
                reg.promote("credit", f"1.{i}.0")
            t = time.monotonic()
            while requests.get(url + "/v2/health/ready", timeout=5).json().get("model_version") != f"1.{i}.0":
                time.sleep(0.005)
            lags.append(time.monotonic() - t)
        out, _ = wrk.communicate(timeout=SECONDS * 3)
        p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", out, re.M)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        with_swaps = float(p99.group(1)) * _UNITS[p99.group(2)] if p99 else float("nan")
        print(
            f"\nswap (poll 0.1 s): promote -> serving the new version: mean {sum(lags) / len(lags) * 1000:.0f} ms, "
            f"max {max(lags) * 1000:.0f} ms over {len(lags)} swaps (includes signature/checksum/gate/load/probe)"
        )
        print(
            f"16 conn under 6 swaps: {float(rps.group(1)) if rps else float('nan'):.1f} req/s, "
            f"p99 {with_swaps:.2f} ms, "
            f"non-2xx {errors.group(1) if errors else 0}; without swaps: {quiet['rps']:.1f} req/s, "
            f"p99 {quiet['p99']:.2f} ms"
        )
    finally:
        _stop(proc)


# --- helpers -----------------------------------------------------------------------------------


def _frame(n: int, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np
    import pandas as pd

    rng = np.random.RandomState(seed)
    X = pd.DataFrame(
        {
            "age": rng.randint(18, 80, n).astype("int64"),
            "income": rng.normal(50_000, 15_000, n),
            "region": rng.choice(["north", "south", "east"], n).astype(object),
        }
    )
    y = pd.Series(np.where(X["income"] + 300 * X["age"] > 60_000, "yes", "no"), name="default")
    return X, y


def _train(path: Path, *, version: str, C: float = 1.0) -> Path:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = _frame(2000)
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["age", "income"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])]
    )
    pipeline = make_pipeline(pre, LogisticRegression(C=C, max_iter=500)).fit(X, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    toolkit.save(pipeline, path, name="credit", version=version, probe=X.head(8))
    return path


def _body(rows: int) -> dict[str, Any]:
    X, _ = _frame(rows, seed=1)
    return {
        "parameters": {"content_type": "pd"},
        "inputs": [
            {"name": "age", "shape": [rows], "datatype": "INT64", "data": X["age"].tolist()},
            {"name": "income", "shape": [rows], "datatype": "FP64", "data": X["income"].tolist()},
            {"name": "region", "shape": [rows], "datatype": "BYTES", "data": X["region"].tolist()},
        ],
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
