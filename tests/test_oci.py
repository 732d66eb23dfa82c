"""push, pull and check-env oci:// against a real `docker-registry` on a loopback port.

Each test starts its own registry (plain, or with htpasswd authentication) in a temp dir
and stops it: the tests corrupt and delete blobs on the registry's disk, and blobs are
shared by digest across repositories.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from toolkit import oci
from toolkit.card import card_from_dict
from toolkit.errors import IntegrityError, RegistryError, RemoteError, UsageError

sys.path.insert(0, str(Path(__file__).parent))
from _oci_support import LoopbackRegistry, ensure_tools, free_port

pytestmark = pytest.mark.oci

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LoopbackRegistry]:
    reg = LoopbackRegistry(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[LoopbackRegistry]:
    reg = LoopbackRegistry(tmp_path / "auth-registry", auth=("alice", "s3cret-pw"))
    yield reg
    reg.stop()


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Docker config dir, so the machine's own ~/.docker never leaks into a test."""
    d = tmp_path / "docker-config"
    d.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(d))
    return d


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess (what a deploy script runs)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    full_env.pop("TOOLKIT_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def files_of(artifact: Path) -> dict[str, bytes]:
    stem = artifact.name.removesuffix(".joblib")
    return {p.name: p.read_bytes() for p in sorted(artifact.parent.iterdir()) if p.name.startswith(stem + ".")}


def write_docker_config(directory: Path, host: str, user: str, password: str) -> None:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))


class CountingSession(requests.Session):
    """A requests session that records every request (method and path)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        from urllib.parse import urlsplit

        self.calls.append((str(method), urlsplit(str(url)).path))
        return super().request(method, url, *args, **kwargs)


# --- round trip ---------------------------------------------------------------------------------


def test_push_takes_a_registry_reference(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    from toolkit.registry import Registry

    with Registry(tmp_path / "models") as reg:
        entry = reg.add(artifact)
    ref = f"oci://{registry.host}/models/iris:staged"
    pushed = cli("push", "iris@staging", ref, "--registry", str(tmp_path / "models"))
    assert pushed.returncode == 0, pushed.stderr
    pulled = cli("pull", ref, "--out", str(tmp_path / "pulled"))
    assert pulled.returncode == 0, pulled.stderr
    assert files_of(tmp_path / "pulled" / artifact.name) == files_of(entry.path)


def test_round_trip_push_pull_identical_files_then_gate(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    pushed = cli("push", str(artifact), ref)
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.strip()
    assert digest.startswith("sha256:") and len(digest) == 71

    out = tmp_path / "pulled"
    pulled = cli("pull", ref, "--out", str(out))
    assert pulled.returncode == 0, pulled.stderr
    assert files_of(out / artifact.name) == files_of(artifact)
    assert sorted(p.name for p in out.iterdir()) == sorted(files_of(artifact))  # no staging dir left

    assert cli("check-env", str(out / artifact.name)).returncode == 0
    by_digest = cli("pull", f"oci://{registry.host}/models/iris@{digest}", "--out", str(tmp_path / "by-digest"))
    assert by_digest.returncode == 0, by_digest.stderr
    assert files_of(tmp_path / "by-digest" / artifact.name) == files_of(artifact)


def test_second_push_same_digest_and_no_blob_uploaded(
    artifact: Path, registry: LoopbackRegistry, docker_config: Path
) -> None:
    ref = oci.parse_reference(f"oci://{registry.host}/models/iris:1.0.0")
    first_session, second_session = CountingSession(), CountingSession()
    first = oci.push(artifact, ref, client=oci.Client(registry.host, session=first_session))
    second = oci.push(artifact, ref, client=oci.Client(registry.host, session=second_session))
    assert first.digest == second.digest
    assert len(first.uploaded) == 4 and first.skipped == ()
    assert second.uploaded == () and len(second.skipped) == 4
    uploads = [c for c in second_session.calls if c[0] in ("POST", "PATCH") or "/blobs/uploads/" in c[1]]
    assert uploads == []
    assert sum(1 for c in first_session.calls if c[0] == "POST") == 4
    # The CLI says so too.
    again = cli("push", str(artifact), str(ref))
    assert again.returncode == 0 and again.stdout.strip() == first.digest
    assert "0 blob(s) uploaded, 4 already there" in again.stderr


def test_chunked_upload_round_trips(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    session = CountingSession()
    ref = f"oci://{registry.host}/models/chunked:1"
    result = oci.push(artifact, ref, client=oci.Client(registry.host, session=session), chunk_size=1000)
    assert sum(1 for c in session.calls if c[0] == "PATCH") > 4  # several chunks per blob
    pulled = oci.pull(ref, tmp_path / "out")
    assert pulled.digest == result.digest
    assert files_of(tmp_path / "out" / artifact.name) == files_of(artifact)


def test_skopeo_reads_the_manifest(artifact: Path, registry: LoopbackRegistry, docker_config: Path) -> None:
    ensure_tools()
    digest = oci.push(artifact, f"oci://{registry.host}/models/iris:1.0.0").digest
    shown = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/models/iris:1.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    raw = shown.stdout.encode()
    assert oci.parse_manifest(raw).digest == digest
    doc = json.loads(raw)
    assert doc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert doc["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    layers = {layer["annotations"]["org.cncf.model.filepath"]: layer for layer in doc["layers"]}
    assert set(layers) == {"iris-1.0.0.joblib", "iris-1.0.0.card.json", "iris-1.0.0.card.md"}
    assert layers["iris-1.0.0.joblib"]["mediaType"] == "application/vnd.cncf.model.weight.v1.raw"
    assert layers["iris-1.0.0.card.json"]["mediaType"] == "application/vnd.cncf.model.doc.v1.raw"
    for name, layer in layers.items():
        assert layer["annotations"]["org.opencontainers.image.title"] == name
    card_sha = hashlib.sha256((artifact.parent / "iris-1.0.0.card.json").read_bytes()).hexdigest()
    assert doc["annotations"]["dev.toolkit.card.sha256"] == card_sha
    assert doc["annotations"]["dev.toolkit.name"] == "iris"
    assert doc["annotations"]["dev.toolkit.version"] == "1.0.0"


def test_signature_file_travels_as_a_fourth_layer(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    sig = artifact.with_name("iris-1.0.0.sig")
    sig.write_bytes(b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}\n')
    ref = f"oci://{registry.host}/models/signed:1.0.0"
    pushed = oci.push(artifact, ref)
    with oci.Client(registry.host) as client:
        manifest = client.get_manifest(oci.parse_reference(ref))
    layout = oci.layout_of(manifest, where=ref)
    assert layout.signature is not None and layout.signature.media_type == oci.SIGNATURE_MEDIA_TYPE
    pulled = oci.pull(ref, tmp_path / "out")
    assert pulled.digest == pushed.digest
    assert (tmp_path / "out" / "iris-1.0.0.sig").read_bytes() == sig.read_bytes()


# --- the remote gate ----------------------------------------------------------------------------


def test_check_env_remote_never_downloads_the_model(
    artifact: Path, registry: LoopbackRegistry, docker_config: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    pushed = oci.push(artifact, ref)
    with oci.Client(registry.host) as client:
        layout = oci.layout_of(client.get_manifest(oci.parse_reference(ref)), where=ref)
    # The model's bytes are gone from the registry's disk: a gate that needed them would fail.
    registry.blob_data(layout.model.digest).unlink()
    gated = cli("check-env", ref, "--json")
    assert gated.returncode == 0, gated.stderr
    report = json.loads(gated.stdout)
    assert report["ok"] is True and report["name"] == "iris"
    assert report["artifact"] == f"{ref}@{pushed.digest}"
    # ... and the registry's access log shows the card fetched and the model never asked for.
    log = registry.log()
    assert f"GET /v2/models/iris/blobs/{layout.card_json.digest}" in log
    gets = [line for line in log.splitlines() if f"GET /v2/models/iris/blobs/{layout.model.digest}" in line]
    assert gets == []


def test_check_env_remote_text_and_mismatch_exit_codes(
    artifact: Path, registry: LoopbackRegistry, docker_config: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    ok = cli("check-env", ref)
    assert ok.returncode == 0 and ok.stdout.startswith("MATCH iris 1.0.0"), ok.stdout + ok.stderr
    # A card that records another runtime: the same verdict (exit 1) and JSON as for a file.
    card_path = artifact.with_name("iris-1.0.0.card.json")
    card = json.loads(card_path.read_text())
    card["environment"]["packages"]["scikit-learn"] = "1.2.2"
    card_path.write_text(json.dumps(card))
    # The .card.md must stay the card's rendering, or push refuses the artifact as edited.
    artifact.with_name("iris-1.0.0.card.md").write_text(card_from_dict(card).to_markdown())
    oci.push(artifact, f"oci://{registry.host}/models/iris:old-sklearn")
    for policy in ("strict", "compatible"):
        file_gate = cli("check-env", str(artifact), "--json", "--policy", policy)
        remote = cli("check-env", f"oci://{registry.host}/models/iris:old-sklearn", "--json", "--policy", policy)
        assert remote.returncode == file_gate.returncode == 1
        remote_report, file_report = json.loads(remote.stdout), json.loads(file_gate.stdout)
        assert remote_report.pop("artifact").startswith(f"oci://{registry.host}/models/iris:old-sklearn@sha256:")
        file_report.pop("artifact")
        # The remedies name the artifact as it was given (a path, or the oci:// reference).
        assert remote_report.pop("remedies") and file_report.pop("remedies")
        assert remote_report == file_report


def test_check_env_remote_verify_predictions_pulls_to_a_private_temp_dir(
    artifact: Path, registry: LoopbackRegistry, docker_config: Path, tmp_path: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    gated = cli("check-env", ref, "--verify-predictions", "--json", env={"TMPDIR": str(tmp)})
    assert gated.returncode == 0, gated.stderr
    report = json.loads(gated.stdout)
    assert report["predictions"]["ok"] is True
    assert list(tmp.iterdir()) == []  # the private copy is gone


# --- failures: exit codes, one line, nothing left behind ----------------------------------------


def test_unknown_tag_and_repository_exit_4(registry: LoopbackRegistry, tmp_path: Path, docker_config: Path) -> None:
    out = tmp_path / "out"
    for ref in (f"oci://{registry.host}/models/nothing:1.0.0", f"oci://{registry.host}/nothing/here:latest"):
        for args in (("pull", ref, "--out", str(out)), ("check-env", ref)):
            result = cli(*args)
            assert result.returncode == 4, result.stderr
            line = one_error_line(result)
            assert "unknown repository or tag" in line and ref in line
    assert not out.exists() or list(out.iterdir()) == []


def test_stopped_registry_exits_6_within_seconds(
    artifact: Path, tmp_path: Path, registry: LoopbackRegistry, docker_config: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    registry.stop()
    for args in (("pull", ref, "--out", str(tmp_path / "out")), ("check-env", ref), ("push", str(artifact), ref)):
        started = time.monotonic()
        result = cli(*args, timeout=30)
        elapsed = time.monotonic() - started
        assert result.returncode == 6, result.stderr
        line = one_error_line(result)
        assert registry.host in line and "unreachable" in line
        assert elapsed < 10, elapsed
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_port_nobody_listens_on_exits_6(tmp_path: Path, docker_config: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    result = cli("check-env", f"oci://{host}/models/iris:1.0.0")
    assert result.returncode == 6
    assert host in one_error_line(result)


def test_corrupted_blob_on_disk_pull_exits_3_and_out_stays_empty(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    model_digest = "sha256:" + hashlib.sha256(artifact.read_bytes()).hexdigest()
    data = registry.blob_data(model_digest)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    out = tmp_path / "out"
    out.mkdir()
    result = cli("pull", ref, "--out", str(out))
    assert result.returncode == 3, result.stderr
    line = one_error_line(result)
    assert "iris-1.0.0.joblib" in line and "digest" in line
    assert list(out.iterdir()) == []


def test_manifest_pointing_at_a_missing_blob_exits_3_and_out_stays_empty(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    md_digest = "sha256:" + hashlib.sha256(artifact.with_name("iris-1.0.0.card.md").read_bytes()).hexdigest()
    shutil.rmtree(registry.blob_data(md_digest).parent)
    out = tmp_path / "out"
    result = cli("pull", ref, "--out", str(out))
    assert result.returncode == 3, result.stderr
    assert "iris-1.0.0.card.md" in one_error_line(result) and "missing" in result.stderr
    assert list(out.iterdir()) == []


def test_pull_never_overwrites_a_file_in_out(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    out = tmp_path / "out"
    out.mkdir()
    (out / "iris-1.0.0.card.json").write_text("mine")
    result = cli("pull", ref, "--out", str(out))
    assert result.returncode == 2
    assert "already exists" in one_error_line(result)
    assert [p.name for p in out.iterdir()] == ["iris-1.0.0.card.json"]
    assert (out / "iris-1.0.0.card.json").read_text() == "mine"


def test_push_refuses_a_tampered_artifact(artifact: Path, registry: LoopbackRegistry, docker_config: Path) -> None:
    with artifact.open("r+b") as f:
        f.seek(10)
        f.write(b"X")
    result = cli("push", str(artifact), f"oci://{registry.host}/models/iris:1.0.0")
    assert result.returncode == 3
    assert "sha256" in one_error_line(result)
    with oci.Client(registry.host) as client, pytest.raises(RegistryError):
        client.get_manifest(oci.parse_reference(f"oci://{registry.host}/models/iris:1.0.0"))


# --- authentication -----------------------------------------------------------------------------


def test_htpasswd_registry_with_docker_config_credentials(
    artifact: Path, auth_registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    ref = f"oci://{auth_registry.host}/models/iris:1.0.0"
    env = {"DOCKER_CONFIG": str(docker_config)}

    anonymous = cli("push", str(artifact), ref, env=env)
    assert anonymous.returncode == 6
    assert auth_registry.host in one_error_line(anonymous) and "credentials" in anonymous.stderr

    write_docker_config(docker_config, auth_registry.host, "alice", "s3cret-pw")
    pushed = cli("push", str(artifact), ref, env=env)
    assert pushed.returncode == 0, pushed.stderr
    out = tmp_path / "out"
    pulled = cli("pull", ref, "--out", str(out), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert files_of(out / artifact.name) == files_of(artifact)
    assert cli("check-env", ref, env=env).returncode == 0

    write_docker_config(docker_config, auth_registry.host, "alice", "wrong-password")
    for args in (("pull", ref, "--out", str(tmp_path / "out2")), ("check-env", ref), ("push", str(artifact), ref)):
        refused = cli(*args, env=env)
        assert refused.returncode == 6, refused.stderr
        line = one_error_line(refused)
        assert auth_registry.host in line and "refused the credentials" in line
    assert not (tmp_path / "out2").exists() or list((tmp_path / "out2").iterdir()) == []


# --- hostile manifests --------------------------------------------------------------------------


def _hostile(registry: LoopbackRegistry, artifact: Path, edit: Any, tag: str) -> str:
    """Push the artifact, then store an edited copy of its manifest under ``tag``."""
    good = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, good)
    with oci.Client(registry.host) as client:
        doc = json.loads(client.get_manifest(oci.parse_reference(good)).raw)
        edit(doc)
        client.put_manifest("models/iris", tag, json.dumps(doc).encode())
    return f"oci://{registry.host}/models/iris:{tag}"


def _set_name(index: int, name: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["layers"][index]["annotations"] = {"org.cncf.model.filepath": name}

    return edit


HOSTILE = {
    "traversal": (_set_name(2, "../iris-1.0.0.card.md"), "not a plain file name"),
    "absolute": (_set_name(2, "/tmp/iris-1.0.0.card.md"), "not a plain file name"),
    "hidden": (_set_name(2, ".bashrc"), "not a plain file name"),
    "duplicate": (_set_name(2, "iris-1.0.0.card.json"), "two layers are named"),
    "missing-layer": (lambda d: d["layers"].pop(2), "is missing"),
    "wrong-layer-type": (lambda d: d["layers"][0].update(mediaType="application/octet-stream"), "media type"),
    "no-artifact-type": (lambda d: d.pop("artifactType"), "artifactType"),
    "extra-layer": (_set_name(2, "evil.sh"), "unexpected layer"),
    "smaller-than-blob": (lambda d: d["layers"][2].update(size=d["layers"][2]["size"] - 10), "larger than"),
    "model-not-the-cards": (
        lambda d: d["layers"][0].update(digest=d["layers"][2]["digest"], size=d["layers"][2]["size"]),
        "does not match the card",
    ),
    "huge": (lambda d: d["annotations"].update(pad="x" * 300_000), "limit"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifests_are_refused_and_nothing_is_written(
    case: str, artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    edit, message = HOSTILE[case]
    ref = _hostile(registry, artifact, edit, case)
    out = tmp_path / "sub" / "out"
    out.mkdir(parents=True)
    result = cli("pull", ref, "--out", str(out))
    assert result.returncode == 3, result.stderr
    assert message in one_error_line(result)
    assert list(out.iterdir()) == []
    assert list(out.parent.iterdir()) == [out]  # nothing escaped beside it either
    if case != "smaller-than-blob":  # the gate reads only the card, not the document layer
        gated = cli("check-env", ref)
        assert gated.returncode == 3, gated.stderr
        assert message in one_error_line(gated)


# --- library units: references, plain HTTP, errors ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "repo", "tag", "digest"),
    [
        ("oci://127.0.0.1:5000/models/iris:1.0.0", "127.0.0.1:5000", "models/iris", "1.0.0", None),
        ("oci://registry.example/a/b/c:v1", "registry.example", "a/b/c", "v1", None),
        ("oci://[::1]:5000/iris@sha256:" + "a" * 64, "[::1]:5000", "iris", None, "sha256:" + "a" * 64),
        ("oci://localhost/iris:1@sha256:" + "b" * 64, "localhost", "iris", "1", "sha256:" + "b" * 64),
    ],
)
def test_parse_reference(text: str, host: str, repo: str, tag: str | None, digest: str | None) -> None:
    ref = oci.parse_reference(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == (host, repo, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize(
    "text",
    [
        "docker://127.0.0.1:5000/iris:1",
        "oci://127.0.0.1:5000/iris",  # neither tag nor digest
        "oci://127.0.0.1:5000/Iris:1",  # uppercase repository
        "oci://127.0.0.1:5000/../iris:1",
        "oci://127.0.0.1:99999/iris:1",
        "oci://127.0.0.1:5000/iris@sha256:abc",
        "oci://127.0.0.1:5000/iris:bad tag",
        "oci:///iris:1",
    ],
)
def test_parse_reference_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        oci.parse_reference(text)


def test_bad_reference_on_the_cli_exits_2(artifact: Path) -> None:
    result = cli("push", str(artifact), "oci://127.0.0.1:5000/iris")
    assert result.returncode == 2
    assert "tag" in one_error_line(result)


@pytest.mark.parametrize(
    ("host", "insecure", "scheme"),
    [
        ("127.0.0.1:5000", False, "http"),
        ("127.3.2.1", False, "http"),
        ("localhost:5000", False, "http"),
        ("[::1]:5000", False, "http"),
        ("registry.example:5000", False, "https"),
        ("10.0.0.1:5000", False, "https"),
        ("registry.example", True, "http"),
    ],
)
def test_plain_http_only_for_loopback_or_insecure(host: str, insecure: bool, scheme: str) -> None:
    with oci.Client(host, insecure=insecure) as client:
        assert client.scheme == scheme


def test_library_errors_carry_exit_codes() -> None:
    assert RemoteError.exit_code == 6 and RegistryError.exit_code == 4 and IntegrityError.exit_code == 3


def test_parse_manifest_refuses_duplicate_keys_and_wrong_types() -> None:
    with pytest.raises(IntegrityError, match="duplicate key"):
        oci.parse_manifest(b'{"schemaVersion": 2, "schemaVersion": 2}')
    with pytest.raises(IntegrityError, match="mediaType"):
        oci.parse_manifest(b'{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}')
    base = {"schemaVersion": 2, "mediaType": oci.MANIFEST_MEDIA_TYPE, "config": {}, "layers": []}
    with pytest.raises(IntegrityError, match="config"):
        oci.parse_manifest(json.dumps(base).encode())


# --- token auth, registry errors and a silent server: a stub registry on loopback ---------------


class _StubRegistry:
    """A tiny HTTP server on loopback: Bearer-token auth like Docker Hub's, or canned failures."""

    def __init__(self, mode: str) -> None:
        import http.server
        import threading

        stub = self
        self.mode = mode
        self.token_requests: list[str | None] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                port = self.server.server_address[1]
                if stub.mode == "silent":
                    time.sleep(5)
                    return
                if stub.mode == "error":
                    self._send(503, b'{"errors":[{"code":"UNAVAILABLE","message":"down"}]}')
                    return
                if self.path.startswith("/token"):
                    stub.token_requests.append(self.headers.get("Authorization"))
                    good = "Basic " + base64.b64encode(b"alice:pw").decode()
                    if self.headers.get("Authorization") == good:
                        self._send(200, b'{"token": "T0KEN"}')
                    else:
                        self._send(401, b"{}")
                    return
                if self.headers.get("Authorization") != "Bearer T0KEN":
                    realm = f'Bearer realm="http://127.0.0.1:{port}/token",service="stub",scope="repository:x:pull"'
                    self._send(401, b"{}", {"WWW-Authenticate": realm})
                    return
                self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_registry(request: pytest.FixtureRequest) -> Iterator[_StubRegistry]:
    stub = _StubRegistry(request.param)
    yield stub
    stub.stop()


@pytest.mark.parametrize("stub_registry", ["token"], indirect=True)
def test_bearer_token_auth_with_docker_config_credentials(stub_registry: _StubRegistry, docker_config: Path) -> None:
    ref = oci.parse_reference(f"oci://{stub_registry.host}/x:1")
    with oci.Client(stub_registry.host) as client, pytest.raises(RemoteError, match="requires credentials"):
        client.get_manifest(ref)  # anonymous token refused
    write_docker_config(docker_config, stub_registry.host, "alice", "pw")
    with oci.Client(stub_registry.host) as client, pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
        client.get_manifest(ref)  # authenticated: the stub then says "unknown", exit 4
    assert stub_registry.token_requests == [None, "Basic " + base64.b64encode(b"alice:pw").decode()]
    write_docker_config(docker_config, stub_registry.host, "alice", "nope")
    with oci.Client(stub_registry.host) as client, pytest.raises(RemoteError, match="refused the credentials"):
        client.get_manifest(ref)


@pytest.mark.parametrize("stub_registry", ["error"], indirect=True)
def test_registry_5xx_exits_6_naming_the_host(stub_registry: _StubRegistry, docker_config: Path) -> None:
    result = cli("check-env", f"oci://{stub_registry.host}/x:1")
    assert result.returncode == 6
    line = one_error_line(result)
    assert stub_registry.host in line and "503" in line and "UNAVAILABLE" in line


@pytest.mark.parametrize("stub_registry", ["silent"], indirect=True)
def test_a_registry_that_never_answers_times_out(stub_registry: _StubRegistry, docker_config: Path) -> None:
    started = time.monotonic()
    with oci.Client(stub_registry.host, timeout=(1.0, 1.0)) as client, pytest.raises(RemoteError) as caught:
        client.get_manifest(oci.parse_reference(f"oci://{stub_registry.host}/x:1"))
    assert time.monotonic() - started < 4
    assert stub_registry.host in str(caught.value)


# --- the signature hook (toolkit.signing lands separately; its seam is stubbed here) ------------


@pytest.fixture
def fake_signing(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A stand-in ``toolkit.signing`` with trust configured; records calls, fails on request."""
    import types

    # What imports the real module at its top must have done so before the stand-in is put in
    # its place, whatever ran first in this session (alone, this test once failed on that).
    import toolkit.gate
    import toolkit.remote_gate  # noqa: F401

    state: dict[str, Any] = {"calls": [], "fail": False}

    def require_signature(paths: Any, trusted_keys: Any = None, *, known: Any = None) -> None:
        state["calls"].append((paths, dict(known or {}), sorted(p.name for p in paths.model.parent.iterdir())))
        if state["fail"]:
            raise IntegrityError(f"{paths.model.parent}: the signature does not verify; refused")

    module = types.ModuleType("toolkit.signing")
    module.require_signature = require_signature  # type: ignore[attr-defined]
    module.trusted_keys_from_env = lambda keys=None: ("a-key",)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "toolkit.signing", module)
    return state


def test_pull_checks_the_signature_before_publishing(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path, fake_signing: dict[str, Any]
) -> None:
    artifact.with_name("iris-1.0.0.sig").write_bytes(b"{}")
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    fake_signing["fail"] = True
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match="signature"):
        oci.pull(ref, out)
    assert list(out.iterdir()) == []
    paths, known, staged = fake_signing["calls"][0]
    assert staged == ["iris-1.0.0.card.json", "iris-1.0.0.card.md", "iris-1.0.0.joblib", "iris-1.0.0.sig"]
    model_sha = hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert known[paths.model] == model_sha  # the downloaded, verified digest: no second hashing pass
    fake_signing["fail"] = False
    assert oci.pull(ref, out).files[0] == out / artifact.name


def test_remote_gate_checks_the_signature_without_the_model(
    artifact: Path, registry: LoopbackRegistry, docker_config: Path, fake_signing: dict[str, Any]
) -> None:
    from toolkit.remote_gate import check_env

    artifact.with_name("iris-1.0.0.sig").write_bytes(b"{}")
    ref = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, ref)
    assert check_env(ref).ok
    paths, known, staged = fake_signing["calls"][0]
    assert staged == ["iris-1.0.0.card.json", "iris-1.0.0.card.md", "iris-1.0.0.sig"]  # no model
    assert known[paths.model] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    fake_signing["fail"] = True
    with pytest.raises(IntegrityError, match="signature"):
        check_env(ref)


def test_a_blob_whose_bytes_do_not_match_its_digest_is_refused_by_the_registry(
    registry: LoopbackRegistry, docker_config: Path
) -> None:
    lie = oci.Descriptor(media_type=oci.DOC_MEDIA_TYPE, digest="sha256:" + "0" * 64, size=5, annotations={})
    with oci.Client(registry.host) as client, pytest.raises(IntegrityError, match="does not match its digest"):
        client.push_blob("models/iris", lie, b"hello")
    with oci.Client(registry.host) as client:
        assert client.blob_size("models/iris", lie.digest) is None


def test_a_docker_image_manifest_under_the_tag_is_refused(
    artifact: Path, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    good = f"oci://{registry.host}/models/iris:1.0.0"
    oci.push(artifact, good)
    with oci.Client(registry.host) as client:
        doc = json.loads(client.get_manifest(oci.parse_reference(good)).raw)
    doc["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    doc["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    for layer in doc["layers"]:
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    doc.pop("artifactType")
    stored = requests.put(
        f"http://{registry.host}/v2/models/iris/manifests/image",
        data=json.dumps(doc).encode(),
        headers={"Content-Type": doc["mediaType"]},
        timeout=10,
    )
    assert stored.status_code == 201, stored.text
    out = tmp_path / "out"
    result = cli("pull", f"oci://{registry.host}/models/iris:image", "--out", str(out))
    assert result.returncode == 3
    assert "not an OCI image manifest" in one_error_line(result)
    assert not out.exists() or list(out.iterdir()) == []


def test_build_manifest_is_deterministic_and_annotates_base_image_and_lock(artifact: Path) -> None:
    import dataclasses

    from toolkit.artifact import read_card

    card = read_card(artifact)
    env = dataclasses.replace(
        card.environment, base_image="127.0.0.1:5000/python-base@sha256:" + "c" * 64, lock_sha256="d" * 64
    )
    card = dataclasses.replace(card, environment=env)
    card_json = card.to_json()
    layers = [oci.Descriptor(media_type=oci.WEIGHT_MEDIA_TYPE, digest="sha256:" + "e" * 64, size=1, annotations={})]
    first, config = oci.build_manifest(card, card_json, layers)
    assert oci.build_manifest(card, card_json, layers) == (first, config)
    doc = json.loads(first)
    assert doc["annotations"][oci.ANNOTATION_BASE_IMAGE] == env.base_image
    assert doc["annotations"][oci.ANNOTATION_LOCK_SHA256] == "d" * 64
    assert doc["annotations"][oci.ANNOTATION_CARD_SHA256] == hashlib.sha256(card_json).hexdigest()
    assert doc["config"]["digest"] == "sha256:" + hashlib.sha256(config).hexdigest()
    assert json.loads(config)["modelfs"] == {"type": "layers", "diffIds": ["sha256:" + "e" * 64]}


@pytest.mark.process
def test_a_pull_killed_mid_download_publishes_nothing(
    registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    """SIGKILL while the model streams in: --out shows no artifact file (only the hidden
    staging dir the kill left), and the next pull succeeds beside it."""
    import signal

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from bench_oci import _big_artifact

    artifact = _big_artifact(tmp_path / "big", 40)
    ref = f"oci://{registry.host}/models/big:1.0.0"
    oci.push(artifact, ref)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "pull", ref, "--out", str(out)], env=env)
    deadline = time.monotonic() + 60
    staged: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        staged = [p for d in out.glob(".toolkit-pull.*") for p in d.iterdir() if p.stat().st_size > 0]
        if staged:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staged, "the pull finished before it could be killed"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []
    assert oci.pull(ref, out).files[0] == out / artifact.name
    assert list(out.glob(".toolkit-pull.*")) == []  # the killed pull's staging folder was swept


def test_the_reference_set_travels_as_a_layer_signed_with_the_rest(
    make_artifact: Any, iris_frame: Any, registry: LoopbackRegistry, tmp_path: Path, docker_config: Path
) -> None:
    from toolkit.artifact import sign
    from toolkit.signing import keygen

    X, _ = iris_frame
    artifact = make_artifact(name="ref", directory=tmp_path / "src", reference=X)
    private, public = keygen(tmp_path / "k")
    sign(artifact, private)
    ref = f"oci://{registry.host}/models/ref:1.0.0"
    oci.push(artifact, ref)
    with oci.Client(registry.host) as client:
        layout = oci.layout_of(client.get_manifest(oci.parse_reference(ref)), where=ref)
    assert layout.reference is not None and layout.reference.media_type == oci.REFERENCE_MEDIA_TYPE
    assert layout.reference.file_name == "ref-1.0.0.reference.json.gz"
    out = tmp_path / "pulled"
    oci.pull(ref, out, trusted_keys=[public])
    assert files_of(out / artifact.name) == files_of(artifact)
    assert "ref-1.0.0.reference.json.gz" in files_of(artifact)
    # The remote gate checks the signature over the four files, the reference set fetched too.
    gated = cli("check-env", ref, "--trusted-key", str(public))
    assert gated.returncode == 0, gated.stderr
