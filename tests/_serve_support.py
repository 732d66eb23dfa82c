"""A real `toolkit serve` in a subprocess on a free loopback port, and its JSON log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Generous: these machines run six engineers' tests on 2 cores (load 10+ is common).
START_TIMEOUT_S = 180.0


_STARTED: list[Served] = []


def started_count() -> int:
    return len(_STARTED)


def kill_leftovers(since: int = 0) -> list[str]:
    """Kill every server started after the ``since``-th and left running (a failed assertion
    before its stop); returns their models. Servers of longer-lived fixtures started earlier stay."""
    left = []
    while len(_STARTED) > since:
        served = _STARTED.pop()
        if served.proc.poll() is None:
            left.append(served.model)
            served.proc.kill()
            served.proc.wait()
    return left


class Served:
    """`python -m toolkit serve MODEL --port 0 --log-format json ...`; the port comes from the log."""

    def __init__(self, model: str | Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.model = str(model)
        cmd = [sys.executable, "-m", "toolkit", "serve", str(model), "--port", "0", "--log-format", "json", *args]
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd
        )
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = ""
        _STARTED.append(self)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.raw.append(line)
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, *names: str, timeout: float = START_TIMEOUT_S, after: int = 0) -> dict[str, Any] | None:
        """The first event (from index ``after``) named one of ``names``; None if the process exited first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[after:]:
                    if e.get("event") in names:
                        if "url" in e:
                            self.url = e["url"]
                        return e
                if self.proc.poll() is not None and not self._reader.is_alive():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {names} event within {timeout}s; log: {''.join(self.raw)[-2000:]}")
                self._cond.wait(min(left, 0.2))

    def started(self, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        event = self.wait_for("ready", "not_ready", timeout=timeout)
        assert event is not None, f"the server exited {self.proc.poll()}: {''.join(self.raw)[-2000:]}"
        return event

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def exited(self, timeout: float = START_TIMEOUT_S) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


def image_serve_round_trip(
    toolkit: str, model: Path, *, image: str, cwd: Path, env: dict[str, str], timeout: float = 180.0
) -> None:
    """``toolkit image serve MODEL`` with no ``--image`` (the card's must be picked): ready, one
    ``/v2/models/NAME/infer`` and one ``/predict`` on the card's probe rows, each checked against
    ``toolkit image predict`` on the same rows, then SIGTERM and exit 0. ``toolkit`` is the CLI to
    run (a project's venv), ``image`` the one the card records."""
    import socket

    import requests

    from toolkit import probe
    from toolkit.artifact import read_card

    card = read_card(model)
    rows = cwd / "serve-rows.csv"
    frame = probe.frame(card.probe)
    frame.to_csv(rows, index=False)
    predicted = subprocess.run(
        [toolkit, "image", "predict", str(model), str(rows)], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [toolkit, "image", "serve", str(model), "--port", str(port), "--log-format", "json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, f"image serve never ready ({proc.poll()})"
            try:
                if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        as_csv = requests.post(
            url + "/predict",
            data=rows.read_bytes(),
            headers={"Content-Type": "text/csv", "Accept": "text/csv"},
            timeout=30,
        )
        assert as_csv.status_code == 200 and as_csv.headers["X-Model-Version"] == card.version, as_csv.text
        assert as_csv.text == predicted.stdout  # byte for byte what `toolkit image predict` prints
        # One tensor per column, typed as the server's own OIP metadata says (from the card).
        meta = requests.get(url + f"/v2/models/{card.name}", timeout=30).json()
        cast = {"FP64": float, "INT64": int, "BYTES": str, "BOOL": bool}
        inputs = [
            {
                "name": i["name"],
                "shape": [len(frame)],
                "datatype": i["datatype"],
                "data": [None if v != v else cast[i["datatype"]](v) for v in frame[i["name"]].tolist()],
            }
            for i in meta["inputs"]
        ]
        body = {"inputs": inputs, "outputs": [{"name": "predict"}]}
        infer = requests.post(url + f"/v2/models/{card.name}/infer", json=body, timeout=30)
        assert infer.status_code == 200, infer.text
        (output,) = infer.json()["outputs"]
        first = [line.split(",")[0] for line in predicted.stdout.splitlines()[1:]]
        assert [str(v) for v in output["data"]] == first
    finally:
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=90)
    assert proc.returncode == 0, errors[-2000:]
    assert f"image {image}: published on {url}" in errors and "stopped on SIGTERM" in errors
