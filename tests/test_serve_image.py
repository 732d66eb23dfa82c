"""`toolkit image serve`: a model trained in the pinned image, served from that image on the host's loopback.

Real engine, real image build, real HTTP; fails (never skips) without an engine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from toolkit import docker as tdocker
from toolkit.errors import DockerError

pytestmark = [pytest.mark.docker, pytest.mark.serve]

REPO = Path(__file__).resolve().parents[1]
IMAGE = "toolkit:e2e-serve"


def _toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def image() -> str:
    try:
        client = tdocker.connect()
    except DockerError as e:
        pytest.fail(f"image serve needs a Docker engine: {e}", pytrace=False)
    done = subprocess.run(["scripts/base.sh"], cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    base = tdocker.validate_base_image(done.stdout.strip().splitlines()[-1])
    try:
        tdocker.build_image(base_image=base, tag=IMAGE, context=REPO, client=client)
    finally:
        client.close()
    return IMAGE


@pytest.fixture(scope="module")
def trained(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    done = _toolkit(
        "image", "train", "--image", image, "--config", "configs/train.toml", "--registry", str(root), "--quiet"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    os.chmod(root, 0o755)
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_model_trained_in_the_image_is_served_from_it(image: str, trained: Path, tmp_path: Path) -> None:
    from toolkit.artifact import read_card

    card = read_card(trained)
    # The card records the server's packages: trained in an image whose lock has them.
    assert {"uvicorn", "starlette", "prometheus-client"} <= set(card.environment.packages)
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolkit",
            "image",
            "serve",
            str(trained),
            "--image",
            image,
            "--port",
            str(port),
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready: Any = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = requests.get(url + "/v2/health/ready", timeout=2)
                if ready.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        assert ready is not None and ready.status_code == 200, proc.poll()
        assert ready.json()["model_version"] == card.version
        assert ready.headers["X-Model-Sha256"] == card.artifact.sha256
        rows = tmp_path / "rows.csv"
        from toolkit import probe

        probe.frame(card.probe).to_csv(rows, index=False)
        r = requests.post(
            url + "/predict",
            data=rows.read_bytes(),
            headers={"Content-Type": "text/csv", "Accept": "text/csv"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        predicted = [line.split(",")[0] for line in r.text.splitlines()[1:]]
        assert predicted == [str(p) for p in card.probe.predictions]
        # Published on loopback only.
        inspect = subprocess.run(
            ["docker", "ps", "--filter", "label=org.toolkit.role=serve", "--format", "{{.Ports}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"127.0.0.1:{port}->8080/tcp" in inspect and "0.0.0.0" not in inspect
    finally:
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=90)
    assert proc.returncode == 0, errors[-2000:]
    assert "stopped on SIGTERM" in errors


def _ready_version(url: str) -> str | None:
    try:
        r = requests.get(url + "/v2/health/ready", timeout=5)
    except requests.RequestException:  # not listening yet (Docker's proxy may hold the connection)
        return None
    return r.json().get("model_version") if r.status_code == 200 else None


def _reversioned(model: Path, version: str, into: Path) -> Path:
    """The same trained files as another version (the card's version and file names changed, the
    model's bytes untouched): a second version of the image's runtime without a second training."""
    import json

    from toolkit.card import parse_card

    old_stem, stem = model.name.removesuffix(".joblib"), f"credit-{version}"
    into.mkdir(parents=True)
    for f in model.parent.glob(old_stem + ".*"):
        if not f.name.endswith((".card.json", ".card.md")):
            (into / f.name.replace(old_stem, stem)).write_bytes(f.read_bytes())
    data = json.loads(model.with_name(old_stem + ".card.json").read_text())
    data["version"] = version
    data["artifact"]["file"] = stem + ".joblib"
    if data.get("reference"):
        data["reference"]["file"] = data["reference"]["file"].replace(old_stem, stem)
    raw = json.dumps(data, indent=2).encode()
    (into / f"{stem}.card.json").write_bytes(raw)
    (into / f"{stem}.card.md").write_text(parse_card(raw).to_markdown())
    return into / f"{stem}.joblib"


def test_image_serve_follows_the_stage_from_the_container(image: str, trained: Path, tmp_path: Path) -> None:
    """The registry directory is mounted read-only; a promote and a rollback on the host are
    followed in the container; a version saved on the host (another runtime) is refused there."""
    import json

    import toolkit
    from toolkit.registry import Registry

    root = trained.parent.parent  # the registry's root: <root>/<name>/<version>/<files>
    while not (root / "registry.db").exists():
        root = root.parent
    from sklearn.dummy import DummyClassifier

    from toolkit.artifact import read_card
    from toolkit.training.datasets import load_dataset

    data = load_dataset("builtin:credit")
    X, y = data.X, data.y
    host = tmp_path / "credit-2.0.0.joblib"  # saved here: its card records this host's runtime
    toolkit.save(DummyClassifier().fit(X, y), host, name="credit", version="2.0.0", probe=X.head(4))
    with Registry(root) as reg:
        reg.add(_reversioned(trained, "1.1.0", tmp_path / "1.1.0"))  # the image's runtime, another version
        reg.add(host)
        reg.promote("credit", "1.0.0", policy="compatible")  # the host's gate, on what the pickle needs
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)  # readable by the image's user (we run as root)
    assert read_card(trained).version == "1.0.0"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "toolkit", "image", "serve", "credit@production", "--registry", str(root),
            "--image", image, "--follow", "--poll-interval", "0.5", "--port", str(port), "--log-format", "json",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:

        def served(version: str, within: float) -> None:
            deadline = time.monotonic() + within
            while _ready_version(url) != version:
                assert proc.poll() is None and time.monotonic() < deadline, f"{version} never served ({proc.poll()})"
                time.sleep(0.2)

        served("1.0.0", 240)  # a loaded machine takes a minute to import and check in the container
        with Registry(root) as reg:
            reg.promote("credit", "1.1.0", policy="compatible")
        served("1.1.0", 60)
        with Registry(root) as reg:
            reg.rollback("credit", policy="compatible")
        served("1.0.0", 60)
        with Registry(root) as reg:
            reg.promote("credit", "2.0.0")  # passes this host's gate; not the image's
        time.sleep(5)  # ten polls
        assert _ready_version(url) == "1.0.0"
        metrics = requests.get(url + "/metrics", timeout=10).text
        assert 'toolkit_serve_swaps_total{result="swapped"} 2.0' in metrics
        assert 'toolkit_serve_swaps_total{result="refused"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, errors = proc.communicate(timeout=90)
    assert proc.returncode == 0, errors[-3000:]
    events = [json.loads(line) for line in errors.splitlines() if line.startswith("{")]
    refused = [e for e in events if e.get("event") == "swap_refused"]
    assert len(refused) == 1 and refused[0]["version"] == "2.0.0" and refused[0]["step"] == "gate", refused
    assert "needs its own runtime: toolkit image serve" in refused[0]["message"]
    assert [e["version"] for e in events if e.get("event") == "swapped"] == ["1.1.0", "1.0.0"]
    # Mounted read-only: the container says it cannot record, and the history has no served event.
    assert [e["version"] for e in events if e.get("event") == "history_read_only"] == ["1.0.0", "1.1.0", "1.0.0"]
    with Registry(root) as reg:
        assert not [e for e in reg.history("credit") if e.event == "served"]
