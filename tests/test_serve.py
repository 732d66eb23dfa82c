"""`toolkit serve` end to end: a real uvicorn in a subprocess on a free loopback port, real HTTP clients.

Round trips are checked against `toolkit predict` on the same rows; refusals against the JSON log
line and the exit code; hostile requests against their status and their one-line JSON error.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

import toolkit
from tests._serve_support import Served, kill_leftovers, started_count
from toolkit.card import parse_card

pytestmark = pytest.mark.serve


@pytest.fixture(autouse=True)
def _no_server_left_running() -> Iterator[None]:
    before = started_count()  # module-scoped servers are set up before this and stay
    yield
    kill_leftovers(before)  # a failed test must not leave a server listening for the next ones


# --- models ---------------------------------------------------------------------------------


def _credit_frame(n: int = 300, seed: int = 0) -> tuple[Any, Any]:
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


def _classifier(C: float = 1.0) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income"]),
            # handle_unknown="error": an unseen region makes predict raise (the 500 case).
            ("cat", OneHotEncoder(handle_unknown="error"), ["region"]),
        ]
    )
    X, y = _credit_frame()
    return make_pipeline(pre, LogisticRegression(C=C, max_iter=500)).fit(X, y)


def _save_classifier(path: Path, *, name: str = "credit", version: str = "1.0.0", C: float = 1.0) -> Path:
    X, _ = _credit_frame()
    toolkit.save(_classifier(C), path, name=name, version=version, probe=X.head(8))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = tmp_path_factory.mktemp("models")
    classifier = _save_classifier(d / "credit-1.0.0.joblib")
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    regressor = d / "diabetes-1.0.0.joblib"
    toolkit.save(
        make_pipeline(StandardScaler(), Ridge()).fit(X, y),
        regressor,
        name="diabetes",
        version="1.0.0",
        probe=X.head(8),
    )
    rows = d / "credit-rows.csv"
    Xc, _ = _credit_frame(n=25, seed=7)
    Xc.loc[3, "income"] = None  # a missing value: imputed, in the server as in `toolkit predict`
    Xc.to_csv(rows, index=False)
    X.iloc[100:120].to_csv(d / "diabetes-rows.csv", index=False)
    return {
        "classifier": classifier,
        "regressor": regressor,
        "classifier_rows": rows,
        "regressor_rows": d / "diabetes-rows.csv",
    }


def _toolkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def _rewrite_card(model: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit a card and re-render its Markdown: integrity still passes (the model bytes are untouched)."""
    card_json = model.with_name(model.name.replace(".joblib", ".card.json"))
    data = json.loads(card_json.read_text())
    edit(data)
    raw = json.dumps(data, indent=2).encode()
    card = parse_card(raw)
    card_json.write_bytes(raw)
    model.with_name(model.name.replace(".joblib", ".card.md")).write_text(card.to_markdown())


def _copy(model: Path, into: Path) -> Path:
    import shutil

    into.mkdir(parents=True, exist_ok=True)
    stem = model.name[: -len(".joblib")]
    for f in model.parent.iterdir():
        if f.name.startswith(stem + "."):
            shutil.copy2(f, into / f.name)
    return into / model.name


# --- round trips ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_server(models: dict[str, Path]) -> Iterator[Served]:
    with Served(models["classifier"], "--max-rows", "50", "--max-body", "20000", "--body-timeout", "1") as s:
        s.started()
        yield s


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_ready_names_the_version_and_every_response_carries_the_sha256(
    classifier_server: Served, models: dict[str, Path]
) -> None:
    sha = toolkit.check_env(models["classifier"]).sha256
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/credit", "/v2/models/credit/ready", "/v2"):
        r = requests.get(classifier_server.url + path, timeout=10)
        assert r.status_code == 200, (path, r.text)
        assert r.headers["X-Model-Sha256"] == sha and r.headers["X-Model-Version"] == "1.0.0"
        assert r.json()["model_version"] == "1.0.0"
    r = requests.get(classifier_server.url + "/nowhere", timeout=10)
    assert r.status_code == 404 and r.headers["X-Model-Sha256"] == sha and r.json()["model_version"] == "1.0.0"
    assert urlparse(classifier_server.url).hostname == "127.0.0.1"  # loopback by default


def test_oip_metadata_from_the_card(classifier_server: Served) -> None:
    meta = requests.get(classifier_server.url + "/v2/models/credit", timeout=10).json()
    assert meta["name"] == "credit" and meta["versions"] == ["1.0.0"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [
        {"name": "age", "datatype": "INT64", "shape": [-1]},
        {"name": "income", "datatype": "FP64", "shape": [-1]},
        {"name": "region", "datatype": "BYTES", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
    ]
    same = requests.get(classifier_server.url + "/v2/models/credit/versions/1.0.0", timeout=10).json()
    assert same == meta
    card = requests.get(classifier_server.url + "/v2/models/credit/card", timeout=10).json()
    assert card["name"] == "credit" and card["version"] == "1.0.0"


def test_classifier_infer_and_predict_agree_with_toolkit_predict(
    classifier_server: Served, models: dict[str, Path]
) -> None:
    done = _toolkit("predict", str(models["classifier"]), str(models["classifier_rows"]))
    assert done.returncode == 0, done.stderr
    expected = _csv_rows(done.stdout)
    body = models["classifier_rows"].read_bytes()
    # /predict with CSV in and CSV out: byte for byte what `toolkit predict` prints.
    r = requests.post(
        classifier_server.url + "/predict",
        data=body,
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.text == done.stdout
    # OIP: one tensor per column (a missing income is null).
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    inputs = [
        {"name": "age", "shape": [len(rows)], "datatype": "INT64", "data": [int(r["age"]) for r in rows]},
        {
            "name": "income",
            "shape": [len(rows)],
            "datatype": "FP64",
            "data": [float(r["income"]) if r["income"] else None for r in rows],
        },
        {"name": "region", "shape": [len(rows)], "datatype": "BYTES", "data": [r["region"] for r in rows]},
    ]
    r = requests.post(
        classifier_server.url + "/v2/models/credit/infer", json={"id": "q1", "inputs": inputs}, timeout=10
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_name"] == "credit" and answer["model_version"] == "1.0.0" and answer["id"] == "q1"
    labels, proba = answer["outputs"]
    assert labels["name"] == "predict" and labels["data"] == [e["prediction"] for e in expected]
    assert proba["shape"] == [len(rows), 2] and proba["parameters"]["classes"] == ["no", "yes"]
    for i, e in enumerate(expected):
        assert proba["data"][2 * i] == pytest.approx(float(e["proba_no"]), abs=1e-12)
        assert proba["data"][2 * i + 1] == pytest.approx(float(e["proba_yes"]), abs=1e-12)
    # The same rows as JSON records on /predict, and only the outputs asked for on /infer.
    records = [
        {"age": int(r["age"]), "income": float(r["income"]) if r["income"] else None, "region": r["region"]}
        for r in rows
    ]
    r = requests.post(classifier_server.url + "/predict", json={"records": records}, timeout=10)
    assert [p["prediction"] for p in r.json()["predictions"]] == [e["prediction"] for e in expected]
    r = requests.post(
        classifier_server.url + "/v2/models/credit/versions/1.0.0/infer",
        json={"inputs": inputs, "outputs": [{"name": "predict"}]},
        timeout=10,
    )
    assert [o["name"] for o in r.json()["outputs"]] == ["predict"]


def test_regressor_round_trips_agree_with_toolkit_predict(models: dict[str, Path]) -> None:
    done = _toolkit("predict", str(models["regressor"]), str(models["regressor_rows"]))
    assert done.returncode == 0, done.stderr
    expected = [float(r["prediction"]) for r in _csv_rows(done.stdout)]
    rows = list(csv.DictReader(io.StringIO(models["regressor_rows"].read_text())))
    names = list(rows[0])
    with Served(models["regressor"]) as s:
        s.started()
        meta = requests.get(s.url + "/v2/models/diabetes", timeout=10).json()
        assert [i["name"] for i in meta["inputs"]] == names and {i["datatype"] for i in meta["inputs"]} == {"FP64"}
        assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
        # KServe's layout: one [rows, features] tensor, each row a record, in the card's column order.
        flat = [float(r[n]) for r in rows for n in names]
        r = requests.post(
            s.url + "/v2/models/diabetes/infer",
            json={"inputs": [{"name": "input-0", "shape": [len(rows), len(names)], "datatype": "FP64", "data": flat}]},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        [out] = r.json()["outputs"]
        assert out["datatype"] == "FP64" and out["data"] == pytest.approx(expected, rel=1e-12)
        r = requests.post(
            s.url + "/predict",
            data=models["regressor_rows"].read_bytes(),
            headers={"Content-Type": "text/csv", "Accept": "text/csv"},
            timeout=10,
        )
        assert r.text == done.stdout
        metrics = requests.get(s.url + "/metrics", timeout=10).text
        assert 'toolkit_serve_rows_scored_total{model="diabetes",version="1.0.0"} 40.0' in metrics
        assert "toolkit_serve_ready 1.0" in metrics
        assert 'toolkit_serve_model_info{lock_sha256="",name="diabetes"' in metrics
        [diff] = [line for line in metrics.splitlines() if line.startswith("toolkit_serve_probe_max_abs_diff{")]
        assert diff.startswith('toolkit_serve_probe_max_abs_diff{version="1.0.0"} ') and float(diff.split()[-1]) < 1e-6
        assert 'toolkit_serve_swaps_total{result="refused"} 0.0' in metrics


# --- hostile input ----------------------------------------------------------------------------

_GOOD = {"age": 40, "income": 50000.0, "region": "north"}


def _tensor(name: str, data: list[Any], datatype: str = "FP64") -> dict[str, Any]:
    return {"name": name, "shape": [len(data)], "datatype": datatype, "data": data}


_INFER = "/v2/models/credit/infer"
HOSTILE: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    ("malformed json", _INFER, {}, b'{"inputs": [', 400, "malformed JSON"),
    ("NaN literal", "/predict", {}, b'[{"age": 1, "income": NaN, "region": "north"}]', 400, "NaN is not JSON"),
    ("Infinity literal", "/predict", {}, b'[{"age": 1, "income": Infinity, "region": "x"}]', 400, "Infinity"),
    ("duplicate key", "/predict", {}, b'[{"age": 1, "age": 2, "income": 1.0, "region": "north"}]', 400, "duplicate"),
    ("empty body", _INFER, {}, b"", 400, "empty body"),
    ("empty csv", "/predict", {"Content-Type": "text/csv"}, b"", 400, "empty body"),
    ("not utf-8", "/predict", {}, b"\xff\xfe[]", 400, "not UTF-8"),
    ("no inputs", _INFER, {}, b'{"inputs": []}', 400, "inputs"),
    ("missing column", "/predict", {}, json.dumps([{"age": 1, "income": 2.0}]).encode(), 422, "missing column"),
    (
        "wrong column name",
        _INFER,
        {},
        json.dumps(
            {"inputs": [_tensor("age", [1]), _tensor("incme", [2.0]), _tensor("region", ["a"], "BYTES")]}
        ).encode(),
        422,
        "missing input tensor",
    ),
    ("text in a number", "/predict", {}, json.dumps([{**_GOOD, "income": "lots"}]).encode(), 422, "must be numeric"),
    ("bool in a number", "/predict", {}, json.dumps([{**_GOOD, "age": True}]).encode(), 422, "bool is not a value"),
    ("object in a cell", "/predict", {}, json.dumps([{**_GOOD, "region": {"a": 1}}]).encode(), 422, "not a value"),
    (
        "BYTES for a number",
        _INFER,
        {},
        json.dumps(
            {
                "inputs": [
                    _tensor("age", ["x"], "BYTES"),
                    _tensor("income", [1.0]),
                    _tensor("region", ["north"], "BYTES"),
                ]
            }
        ).encode(),
        422,
        "takes a number",
    ),
    ("infinity in csv", "/predict", {"Content-Type": "text/csv"}, b"age,income,region\n1,inf,north\n", 422, "infinit"),
    (
        "shape lies",
        _INFER,
        {},
        json.dumps({"inputs": [{"name": "age", "shape": [3], "datatype": "INT64", "data": [1]}]}).encode(),
        400,
        "holds 3 values",
    ),
    (
        "rows disagree",
        _INFER,
        {},
        json.dumps(
            {"inputs": [_tensor("age", [1, 2]), _tensor("income", [1.0]), _tensor("region", ["north"], "BYTES")]}
        ).encode(),
        422,
        "rows",
    ),
    (
        "unknown output",
        _INFER,
        {},
        json.dumps(
            {
                "inputs": [_tensor("age", [1]), _tensor("income", [1.0]), _tensor("region", ["north"], "BYTES")],
                "outputs": [{"name": "secrets"}],
            }
        ).encode(),
        400,
        "unknown output",
    ),
    ("wrong content type", "/predict", {"Content-Type": "application/xml"}, b"<a/>", 415, "unsupported content type"),
    ("too many rows", "/predict", {}, json.dumps([_GOOD] * 51).encode(), 413, "--max-rows"),
    (
        "too many csv rows",
        "/predict",
        {"Content-Type": "text/csv"},
        b"age,income,region\n" + b"1,2.0,north\n" * 51,
        413,
        "--max-rows",
    ),
    ("body over the limit", "/predict", {}, b"[" + b" " * 20_001 + b"]", 413, "--max-body"),
    ("unknown model", "/v2/models/other/infer", {}, b"{}", 404, "no model"),
    ("unknown version", "/v2/models/credit/versions/9.9.9/infer", {}, b"{}", 404, "not served here"),
    ("model error", "/predict", {}, json.dumps([{**_GOOD, "region": "mars"}]).encode(), 500, "failed to predict"),
]


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "says"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_request_gets_one_json_line_and_its_status(
    classifier_server: Served, path: str, headers: dict[str, str], body: bytes, status: int, says: str
) -> None:
    r = requests.post(
        classifier_server.url + path, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error and "\n" not in error and "Traceback" not in r.text
    assert r.json()["model_version"] == "1.0.0"
    assert requests.get(classifier_server.url + "/v2/health/ready", timeout=10).status_code == 200


def test_chunked_body_over_the_limit_is_413(classifier_server: Served) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 1000

    r = requests.post(classifier_server.url + "/predict", data=chunks(), timeout=10)
    assert r.status_code == 413 and "--max-body" in r.json()["error"]


def test_slow_client_gets_408_and_the_server_stays_up(classifier_server: Served) -> None:
    u = urlparse(classifier_server.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n["
        )
        started = time.monotonic()
        first = s.recv(4096)
        waited = time.monotonic() - started
        # Headers and body may arrive in separate segments: read until the server closes or
        # the body's declared length is in.
        reply_bytes = first
        while b"did not arrive" not in reply_bytes:
            more = s.recv(4096)
            if not more:
                break
            reply_bytes += more
        reply = reply_bytes.decode()
    assert reply.startswith("HTTP/1.1 408"), reply
    assert 0.8 < waited < 30 and "did not arrive within 1 s" in reply  # the upper bound: a loaded machine
    assert requests.get(classifier_server.url + "/v2/health/ready", timeout=10).status_code == 200


def test_no_endpoint_changes_state(classifier_server: Served) -> None:
    for path in ("/v2/health/ready", "/v2/models/credit", "/metrics"):
        r = requests.post(classifier_server.url + path, data=b"{}", timeout=10)
        assert r.status_code == 405 and "method not allowed" in r.json()["error"]
    for path in ("/predict", _INFER):
        assert requests.get(classifier_server.url + path, timeout=10).status_code == 405
        assert requests.delete(classifier_server.url + path, timeout=10).status_code == 405


# --- never ready unless every check passes --------------------------------------------------------


def _refusal(served: Served) -> dict[str, Any]:
    event = served.wait_for("refused")
    assert event is not None, "".join(served.raw)
    return event


def test_a_model_whose_probe_fails_is_never_ready(models: dict[str, Path], tmp_path: Path) -> None:
    model = _copy(models["classifier"], tmp_path)

    def flip(d: dict[str, Any]) -> None:
        d["probe"]["predictions"][0] = "yes" if d["probe"]["predictions"][0] == "no" else "no"

    _rewrite_card(model, flip)
    s = Served(model)
    event = _refusal(s)
    assert s.exited() == 1
    assert event["step"] == "probe" and "probe predictions DIFFER" in event["message"]
    assert len([e for e in s.events if e["event"] != "stopped"]) == 1  # one line says why
    with Served(model, "--on-mismatch", "hold") as held:
        assert held.started()["event"] == "not_ready"
        assert requests.get(held.url + "/v2/health/live", timeout=10).status_code == 200
        ready = requests.get(held.url + "/v2/health/ready", timeout=10)
        assert ready.status_code == 503 and "probe" in ready.json()["reason"]
        assert ready.headers["X-Model-Sha256"] == ""
        r = requests.post(held.url + "/predict", json=[_GOOD], timeout=10)
        assert r.status_code == 503 and r.json()["model_version"] is None
        assert requests.get(held.url + "/v2/models/credit/ready", timeout=10).status_code == 503
        assert "toolkit_serve_ready 0.0" in requests.get(held.url + "/metrics", timeout=10).text


def test_a_forged_model_is_never_ready(models: dict[str, Path], tmp_path: Path) -> None:
    model = _copy(models["classifier"], tmp_path)
    data = bytearray(model.read_bytes())
    data[-20] ^= 0x01
    model.write_bytes(bytes(data))
    s = Served(model)
    event = _refusal(s)
    assert s.exited() == 1 and event["step"] == "integrity" and "sha256" in event["message"]


def test_an_unsigned_model_under_trust_is_never_ready(models: dict[str, Path], tmp_path: Path) -> None:
    from toolkit import signing
    from toolkit.artifact import sign

    _, pub = signing.keygen(tmp_path / "team")
    model = _copy(models["classifier"], tmp_path / "m")
    s = Served(model, "--trusted-key", str(pub))
    event = _refusal(s)
    assert s.exited() == 1 and event["step"] == "signature" and "signature" in event["message"]
    # Signed by that key, the same files are served.
    sign(model, tmp_path / "team.key")
    with Served(model, "--trusted-key", str(pub)) as ok:
        assert ok.started()["event"] == "ready"


def test_a_mismatched_model_is_never_ready_and_the_json_log_lists_the_differences(
    models: dict[str, Path], tmp_path: Path
) -> None:
    model = _copy(models["classifier"], tmp_path)

    def older_numpy(d: dict[str, Any]) -> None:
        d["environment"]["packages"]["numpy"] = "1.0.0"

    _rewrite_card(model, older_numpy)
    s = Served(model)
    event = _refusal(s)
    assert s.exited() == 1 and event["step"] == "gate"
    assert {"field": "package", "name": "numpy", "expected": "1.0.0", "actual": event["differences"][0]["actual"]} in (
        event["differences"]
    )
    text = Served(model, "--log-format", "text")  # --log-format text after json: the last flag wins
    assert text.exited() == 1
    lines = [line for line in text.raw if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("toolkit serve: not serving") and "numpy" in lines[0]


def test_a_card_without_the_server_packages_is_served_one_with_other_versions_is_not(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from toolkit.serve.model import checker_packages

    brought = checker_packages()
    assert {"uvicorn", "starlette", "prometheus-client", "h11", "anyio"} <= brought
    lean = _copy(models["classifier"], tmp_path / "lean")

    def without_server(d: dict[str, Any]) -> None:
        for name in brought:
            d["environment"]["packages"].pop(name, None)

    _rewrite_card(lean, without_server)
    assert not toolkit.check_env(lean).ok  # the plain gate sees extra packages here ...
    with Served(lean) as s:  # ... the server's gate does not count its own
        assert s.started()["event"] == "ready"
    other = _copy(models["classifier"], tmp_path / "other")

    def other_uvicorn(d: dict[str, Any]) -> None:
        d["environment"]["packages"]["uvicorn"] = "0.1.0"

    _rewrite_card(other, other_uvicorn)
    s = Served(other)
    event = _refusal(s)
    assert s.exited() == 1 and event["step"] == "gate" and "uvicorn" in event["message"]


# --- SIGTERM -----------------------------------------------------------------------------------

_SLOW_SOURCE = "import time\n\ndef slow(X):\n    time.sleep(0.4)\n    return X\n"


def _local_module_model(
    tmp_path: Path, monkeypatch: Any, module: str, source: str, *, name: str, version: str, code: Path
) -> Path:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    code.mkdir(parents=True, exist_ok=True)
    (code / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(code))
    sys.modules.pop(module, None)
    mod = __import__(module)
    X, y = _credit_frame()
    pipeline = make_pipeline(FunctionTransformer(func=mod.slow if hasattr(mod, "slow") else mod.same), _classifier())
    path = tmp_path / f"{name}-{version}.joblib"
    pipeline.fit(X, y)
    toolkit.save(pipeline, path, name=name, version=version, probe=X.head(2))
    return path


def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path, monkeypatch: Any) -> None:
    code = tmp_path / "code"
    model = _local_module_model(
        tmp_path, monkeypatch, "tk_serve_slow", _SLOW_SOURCE, name="slow", version="1.0.0", code=code
    )
    # The model holds the user's own function: the loading side trusts it by name (toolkit.trust).
    s = Served(model, "--trust", "tk_serve_slow.slow", env={"PYTHONPATH": str(code)})
    s.started()
    results: list[Any] = []

    def call() -> None:
        try:
            r = requests.post(s.url + "/predict", json=[_GOOD], headers={"Connection": "close"}, timeout=30)
            results.append((r.status_code, r.json()["model_version"]))
        except requests.RequestException as e:
            results.append(e)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # every request is being answered (the /metrics call is the 7th)
        text = requests.get(s.url + "/metrics", timeout=10).text
        if "toolkit_serve_in_flight_requests 7.0" in text:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the requests never got in flight")
    code_ = s.terminate()
    for t in threads:
        t.join(timeout=30)
    assert results == [(200, "1.0.0")] * 6
    assert code_ == 0
    assert s.events[-1]["event"] == "stopped" and "SIGTERM" in s.events[-1]["message"]


# --- following the stage ---------------------------------------------------------------------


class _Load:
    """A bounded constant load: two clients, each one request at a time with a short pause."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, float, int, str | None]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = session.post(self.url + "/predict", json=[_GOOD], timeout=30)
                    version = r.json().get("model_version")
                    self.results.append((sent, time.monotonic(), r.status_code, version))
                except (requests.RequestException, ValueError) as e:
                    self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.01)

    def __enter__(self) -> _Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def _served_version(url: str) -> str | None:
    return requests.get(url + "/v2/health/ready", timeout=10).json().get("model_version")


def _assert_consistent_with_the_stage(
    load: _Load, stage: list[tuple[float, str]], *, allowance: float, refused_at: float, kept: str
) -> None:
    """0 failed requests, and each answer's version was the stage's at some moment between
    (sent - the swap allowance) and its arrival; the allowance is one poll interval plus the
    slowest swap measured. After the refused move (``refused_at``), always the ``kept`` one."""
    assert load.errors == []
    assert all(status == 200 for _, _, status, _ in load.results), {r[2] for r in load.results}
    for sent, received, _, version in load.results:
        if sent > refused_at:
            assert version == kept
            continue
        window = [v for t, v in stage if t <= received]
        in_window = {v for t, v in stage if sent - allowance <= t <= received} | {window[-1]}
        earlier = [v for t, v in stage if t < sent - allowance]
        if earlier:
            in_window.add(earlier[-1])
        assert version in in_window, (sent, received, version, stage)


def test_follow_through_promotes_and_rollbacks_under_load(tmp_path: Path, monkeypatch: Any) -> None:
    from toolkit.registry import Registry

    poll = 0.3
    registry = tmp_path / "registry"
    src = tmp_path / "src"
    with Registry(registry) as reg:
        reg.add(_save_classifier(src / "credit-1.0.0.joblib", C=1.0))
        for i in range(1, 11):
            reg.add(_save_classifier(src / f"credit-1.{i}.0.joblib", version=f"1.{i}.0", C=1.0 + i))
        reg.promote("credit", "1.0.0")
    # A version saved with a local module that differs from the one the server imports: refused there.
    served_code, new_code = tmp_path / "served-code", tmp_path / "new-code"
    served_code.mkdir()
    (served_code / "tk_serve_steps.py").write_text("def same(X):\n    return X\n")
    bad = _local_module_model(
        src,
        monkeypatch,
        "tk_serve_steps",
        "def same(X):\n    return X  # changed\n",
        name="credit",
        version="2.0.0",
        code=new_code,
    )
    with Registry(registry) as reg:
        reg.add(bad)
    s = Served(
        "credit@production",
        "--registry",
        str(registry),
        "--follow",
        "--poll-interval",
        str(poll),
        "--trust",
        "tk_serve_steps.same",
        env={"PYTHONPATH": str(served_code)},
    )
    try:
        assert s.started()["version"] == "1.0.0"
        stage: list[tuple[float, str]] = [(0.0, "1.0.0")]  # (time the stage changed, version)
        lags: list[float] = []
        with _Load(s.url) as load:
            for i in range(1, 11):
                for action, version in (("promote", f"1.{i}.0"), ("rollback", "1.0.0")):
                    with Registry(registry) as reg:
                        if action == "promote":
                            reg.promote("credit", version)
                        else:
                            reg.rollback("credit")
                    changed = time.monotonic()
                    stage.append((changed, version))
                    deadline = changed + 30
                    while _served_version(s.url) != version:
                        assert time.monotonic() < deadline, f"{version} never served; log: {''.join(s.raw)[-1500:]}"
                        time.sleep(0.02)
                    lags.append(time.monotonic() - changed)
                    time.sleep(0.2)
            # The refused swap: production says 2.0.0, the server keeps 1.0.0 and says why.
            with Registry(registry) as reg:
                reg.promote("credit", "2.0.0")
            refused_at = time.monotonic()
            event = s.wait_for("swap_refused", timeout=90)
            assert event is not None and event["version"] == "2.0.0" and event["step"] == "gate"
            assert event["differences"][0]["field"] == "local_module" and event["serving"] == "1.0.0"
            time.sleep(3 * poll)
        assert len(load.results) > 100
        _assert_consistent_with_the_stage(load, stage, allowance=poll + max(lags), refused_at=refused_at, kept="1.0.0")
        metrics = requests.get(s.url + "/metrics", timeout=10).text
        assert 'toolkit_serve_swaps_total{result="swapped"} 20.0' in metrics
        assert 'toolkit_serve_swaps_total{result="refused"} 1.0' in metrics
        assert 'toolkit_serve_model_info{lock_sha256="",name="credit",sha256=' in metrics
        assert metrics.count("toolkit_serve_model_info{") == 1
    finally:
        code = s.terminate()
    assert code == 0, "".join(s.raw)[-3000:]
    with Registry(registry) as reg:
        served = [e for e in reg.history("credit") if e.event == "served"]
    assert [e.version for e in served] == ["1.0.0"] + [v for i in range(1, 11) for v in (f"1.{i}.0", "1.0.0")]
    port = urlparse(s.url).port
    assert all(e.detail is not None and e.detail.startswith(f"127.0.0.1:{port} (pid ") for e in served)
    assert served[1].reason == "swap from 1.0.0" and served[0].reason == "ready"
    assert all(e.from_status == e.to_status for e in served)
    print(f"swap lag (stage change -> served): max {max(lags):.3f}s, mean {sum(lags) / len(lags):.3f}s")


def _move_tag(host: str, repository: str, tag: str, to: str) -> None:
    """What a promote or a rollback does to an OCI stage tag: point it at another version's manifest."""
    from toolkit.oci import Client, Reference

    with Client(host) as client:
        manifest = client.get_manifest(Reference(host=host, repository=repository, tag=to))
        client.put_manifest(repository, tag, manifest.raw)


def test_follow_an_oci_tag_through_a_promote_and_a_rollback_under_load(team_oci: Any, tmp_path: Path) -> None:
    import os

    from toolkit import signing
    from toolkit.artifact import sign
    from toolkit.oci import push

    poll = 0.3
    host, repo = team_oci.host, "follow/credit"
    _, pub = signing.keygen(tmp_path / "team")
    signing.keygen(tmp_path / "other")
    src = tmp_path / "src"
    for version, c, key in (("1.0.0", 1.0, "team"), ("1.1.0", 2.0, "team"), ("1.2.0", 3.0, "other")):
        model = _save_classifier(src / version / f"credit-{version}.joblib", version=version, C=c)
        sign(model, tmp_path / f"{key}.key")  # 1.2.0 under a key the server does not trust
        push(model, f"oci://{host}/{repo}:credit-{version}")
    _move_tag(host, repo, "production", "credit-1.0.0")
    tmp = tmp_path / "server-tmp"  # the server's TMPDIR: every pull folder must be gone at the end
    tmp.mkdir()
    s = Served(
        f"oci://{host}/{repo}:production",
        "--follow",
        "--poll-interval",
        str(poll),
        "--trusted-key",
        str(pub),
        env={"TMPDIR": str(tmp)},
    )
    try:
        assert s.started()["version"] == "1.0.0"
        assert s.wait_for("history_none", timeout=10) is not None  # said once: OCI keeps no history
        stage: list[tuple[float, str]] = [(0.0, "1.0.0")]
        lags: list[float] = []
        with _Load(s.url) as load:
            for _ in range(2):
                for version in ("1.1.0", "1.0.0"):  # a promote, then a rollback
                    _move_tag(host, repo, "production", f"credit-{version}")
                    changed = time.monotonic()
                    stage.append((changed, version))
                    deadline = changed + 30
                    while _served_version(s.url) != version:
                        assert time.monotonic() < deadline, f"{version} never served; log: {''.join(s.raw)[-1500:]}"
                        time.sleep(0.02)
                    lags.append(time.monotonic() - changed)
                    time.sleep(0.3)
            # The refused move: the tag names 1.2.0, signed by another key; 1.0.0 keeps serving.
            _move_tag(host, repo, "production", "credit-1.2.0")
            refused_at = time.monotonic()
            event = s.wait_for("swap_refused", timeout=60)
            assert event is not None and event["version"] == "1.2.0" and event["step"] == "signature"
            assert event["serving"] == "1.0.0", event
            time.sleep(3 * poll)
            assert _served_version(s.url) == "1.0.0"
        assert len(load.results) > 30
        _assert_consistent_with_the_stage(load, stage, allowance=poll + max(lags), refused_at=refused_at, kept="1.0.0")
        metrics = requests.get(s.url + "/metrics", timeout=10).text
        said = [e for e in s.events if e.get("event", "").startswith(("swap", "follow"))]
        assert 'toolkit_serve_swaps_total{result="swapped"} 4.0' in metrics, said
        assert 'toolkit_serve_swaps_total{result="refused"} 1.0' in metrics, said
        # A poll or a pull the loaded registry failed (HTTP 5xx, a timeout) is counted and said once,
        # and retried: never taken for a refusal of the version.
        errors = [e for e in said if e["event"] in ("swap_error", "follow_error")]
        assert f'toolkit_serve_swaps_total{{result="error"}} {float(len(errors))}' in metrics, said
        assert [e["version"] for e in s.events if e.get("event") == "swapped"] == ["1.1.0", "1.0.0"] * 2, said
    finally:
        code = s.terminate()
    assert code == 0, "".join(s.raw)[-3000:]
    assert sum(e.get("event") == "swap_refused" for e in s.events) == 1  # said once, not once per poll
    assert os.listdir(tmp) == []
    print(f"oci swap lag (tag moved -> served): max {max(lags):.3f}s, mean {sum(lags) / len(lags):.3f}s")


def test_a_directory_of_one_artifact_is_served_a_directory_of_two_is_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    one = tmp_path / "one"
    _copy(models["classifier"], one)
    with Served(one) as s:
        assert s.started()["version"] == "1.0.0"
    _copy(models["regressor"], one)
    s = Served(one)
    event = _refusal(s)
    assert s.exited() == 1 and event["step"] == "resolve" and "holds 2 .joblib artifacts" in event["message"]


def test_memory_stays_flat_under_large_refused_bodies(models: dict[str, Path]) -> None:
    def rss_kb(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("VmRSS")).split()[1])

    body = json.dumps([{"age": 1}] * 10_000)  # ~120 kB, 10,000 rows, every one missing two columns
    with Served(models["classifier"]) as s, requests.Session() as session:
        s.started()
        session.post(s.url + "/predict", data=body, headers={"Content-Type": "application/json"}, timeout=30)
        before = rss_kb(s.proc.pid)
        for _ in range(100):
            r = session.post(s.url + "/predict", data=body, headers={"Content-Type": "application/json"}, timeout=30)
            assert r.status_code == 422
        grown = rss_kb(s.proc.pid) - before
    # Before refusals were returned across the thread pool instead of raised, this grew ~225 MB.
    assert grown < 30_000, f"RSS grew {grown} kB over 100 refused bodies"


def test_follow_needs_something_that_can_move(models: dict[str, Path], runner: Any) -> None:
    """A file, a pinned version or an OCI digest names one artifact for good: --follow says so,
    in one line, exit 2, before anything is pulled, bound or started (no engine is asked)."""
    from toolkit.cli import app

    digest = "oci://127.0.0.1:1/r@sha256:" + "0" * 64
    for args in (
        ["serve", str(models["classifier"]), "--follow"],
        ["serve", "credit:1.0.0", "--follow"],
        ["serve", digest, "--follow"],
        ["image", "serve", str(models["classifier"]), "--follow"],
        ["image", "serve", digest, "--follow"],
    ):
        done = runner.invoke(app, args)
        assert done.exit_code == 2, (args, done.output)
        lines = done.output.strip().splitlines()
        assert len(lines) == 1 and "--follow watches" in lines[0], (args, done.output)
