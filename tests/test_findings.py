"""The attack pass's medium and low findings, one test each (issue 21)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

import toolkit
from toolkit.cli import app
from toolkit.registry import Registry


def _one_line(result: object) -> str:
    stderr = getattr(result, "stderr", "")
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, getattr(result, "output", "")
    return str(lines[0])


def test_an_empty_trusted_key_list_is_refused(
    artifact: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    for value in (":", "::", " : "):
        monkeypatch.setenv("TOOLKIT_TRUSTED_KEYS", value)
        with pytest.raises(toolkit.UsageError, match="names no key file"):
            toolkit.check_env(artifact)
        result = runner.invoke(app, ["check-env", str(artifact)])
        assert result.exit_code == 2 and "names no key file" in _one_line(result)
    monkeypatch.setenv("TOOLKIT_TRUSTED_KEYS", "")
    assert toolkit.check_env(artifact).ok  # empty is "no trust from the environment", as unset


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_non_regular_inputs_are_refused_before_reading(
    kind: str, artifact: Path, runner: CliRunner, tmp_path: Path
) -> None:
    if kind == "device":
        source = Path("/dev/zero")
    else:
        source = tmp_path / "pipe.csv"
        os.mkfifo(source)  # no writer: a blocking open would hang forever
    done: dict[str, object] = {}

    def go() -> None:
        done["predict"] = runner.invoke(app, ["predict", str(artifact), str(source)])
        done["train"] = runner.invoke(
            app, ["train", "--dataset", str(source), "--target", "y", "--out", str(tmp_path / "o"), "--no-register"]
        )

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "reading a non-regular file hung"
    for what in ("predict", "train"):
        result = done[what]
        assert getattr(result, "exit_code", None) == 2, (what, getattr(result, "output", ""))
        assert "not a regular file" in _one_line(result)


def test_a_registry_that_is_a_device_is_refused(runner: CliRunner) -> None:
    result = runner.invoke(app, ["registry", "list", "--registry", "/dev/zero"])
    assert result.exit_code == 4 and "not a registry folder" in _one_line(result), result.output


def test_recover_reports_symlinked_version_folders(base_artifact: Path, tmp_path: Path, runner: CliRunner) -> None:
    root = tmp_path / "models"
    with Registry(root) as reg:
        reg.add(base_artifact)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(root / "iris" / "1.0.0", elsewhere / "1.1.0")
    (root / "iris" / "1.1.0").symlink_to(elsewhere / "1.1.0")
    (root / "other").symlink_to(elsewhere)
    for side in ("registry.db", "registry.db-wal", "registry.db-shm"):
        (root / side).unlink(missing_ok=True)
    result = runner.invoke(app, ["registry", "recover", "--registry", str(root)])
    text = result.output
    assert str(root / "iris" / "1.1.0") in text and str(root / "other") in text, text
    assert "symbolic link" in text
    with Registry(root) as reg:
        assert [e.version for e in reg.list_versions("iris")] == ["1.0.0"]  # the link was not followed


@pytest.mark.parametrize("protocol", ["HTTP/1.0", "HTTP/1.1"])
def test_an_oci_answer_that_trickles_in_meets_an_overall_deadline(protocol: str) -> None:
    # A registry that sends a manifest one byte every 0.1 s: never a read timeout (30 s), so
    # only an overall deadline ends it. Real HTTP server on loopback, real client.
    import http.server
    import time

    from toolkit.errors import RemoteError
    from toolkit.oci.client import Client
    from toolkit.oci.manifest import MANIFEST_MEDIA_TYPE
    from toolkit.oci.reference import parse_reference

    stop = threading.Event()

    class Drip(http.server.BaseHTTPRequestHandler):
        protocol_version = protocol

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", MANIFEST_MEDIA_TYPE)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            for _ in range(100000):
                if stop.is_set():
                    return
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host = f"127.0.0.1:{server.server_address[1]}"
    try:
        client = Client(host, use_docker_config=False, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(RemoteError, match=r"no complete answer for .*manifest within 1 s \(the overall deadline\)"):
            client.get_manifest(parse_reference(f"oci://{host}/m:v1"))
        assert time.monotonic() - started < 10
        client.close()
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


@pytest.mark.process  # serves on loopback from threads
@pytest.mark.parametrize("drip", ["silent", "status line", "headers", "token headers"])
def test_an_oci_server_that_drips_its_headers_meets_the_overall_deadline(drip: str) -> None:
    # The deadline covers the whole exchange, not only the body: a server that accepts and
    # answers nothing, or sends its status line or headers a byte every 0.3 s (never a 30 s
    # read timeout), is cut at the deadline. A real socket server on loopback, the real client.
    import socket
    import time

    from toolkit.errors import RemoteError
    from toolkit.oci.client import Client
    from toolkit.oci.reference import parse_reference

    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    challenge = (
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n"
        f'WWW-Authenticate: Bearer realm="http://127.0.0.1:{port}/token",service="t"\r\n\r\n'
    )

    def drip_to(conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if stop.wait(0.3):
                return
            conn.sendall(data[i : i + 1])

    def serve(conn: socket.socket) -> None:
        with conn:
            request = conn.recv(65536)
            try:
                if drip == "silent":
                    stop.wait(60)
                elif drip == "status line":
                    drip_to(conn, b"HTTP/1.1 200 " + b"O" * 60 + b"\r\n\r\n")
                elif drip == "headers" or request.startswith(b"GET /token"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\n")
                    drip_to(conn, b"X-Slow: " + b"a" * 400 + b"\r\n")
                else:
                    conn.sendall(challenge.encode())
            except OSError:
                pass

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    host = f"127.0.0.1:{port}"
    what = "token for manifest v1" if drip == "token headers" else "manifest v1"
    try:
        client = Client(host, use_docker_config=False, deadline=1.0)
        started = time.monotonic()
        with pytest.raises(
            RemoteError, match=rf"^{host}: no complete answer for {what} within 1 s \(the overall deadline\)$"
        ):
            client.get_manifest(parse_reference(f"oci://{host}/m:v1"))
        assert time.monotonic() - started < 8  # the read timeout is 30 s: only the deadline ends it this soon
        client.close()
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


@pytest.mark.parametrize("foreign", ["meta without columns", "versions with other columns"])
def test_a_foreign_postgresql_schema_is_exit_4(pg_url: str, foreign: str) -> None:
    import psycopg

    from toolkit.errors import RegistryError
    from toolkit.registry.index.postgres import PgIndex

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA toolkit")
        if foreign == "meta without columns":
            conn.execute("CREATE TABLE toolkit.meta (k text)")
        else:
            conn.execute("CREATE TABLE toolkit.meta (key text PRIMARY KEY, value text)")
            conn.execute("INSERT INTO toolkit.meta VALUES ('schema_version', '1')")
            conn.execute("CREATE TABLE toolkit.versions (id int)")
            conn.execute("CREATE TABLE toolkit.names (id int)")
    index = PgIndex(pg_url)
    try:
        with pytest.raises(RegistryError, match="schema this toolkit did not create") as e, index.read() as r:
            r.names()
        assert e.value.exit_code == 4 and "\n" not in str(e.value)
    finally:
        index.close()


def test_postgresql_statements_have_a_timeout(pg_url: str) -> None:
    from toolkit.registry.index.postgres import STATEMENT_TIMEOUT_S, PgIndex

    index = PgIndex(pg_url)
    try:
        with index.read() as r:
            r.names()
        conn = index._conn
        assert conn is not None
        shown = conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"]
        assert shown in (f"{STATEMENT_TIMEOUT_S}s", f"{STATEMENT_TIMEOUT_S // 60}min"), shown
        assert conn.execute("SHOW lock_timeout").fetchone()["lock_timeout"] != "0"
    finally:
        index.close()


@pytest.mark.process  # serves on loopback from threads
@pytest.mark.parametrize("stall", ["startup drip", "silent statement", "statement drip"])
def test_a_postgresql_server_that_stalls_or_drips_meets_a_deadline(stall: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # statement_timeout is the server's to enforce: a server that stalls or drips (or a
    # half-open connection) is bounded by the client. psycopg's connect_timeout covers the
    # whole connection however it drips; after it, every round trip has the client's own
    # deadline. A real socket server on loopback speaking just enough of the protocol.
    import socket
    import struct
    import time

    from toolkit.errors import RemoteError
    from toolkit.registry.index import postgres

    monkeypatch.setattr(postgres, "ROUND_TRIP_DEADLINE_S", 1)
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def message(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("!i", len(body) + 4) + body

    hello = message(b"R", struct.pack("!i", 0))
    for key, value in (("server_version", "15.0"), ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY")):
        hello += message(b"S", key.encode() + b"\0" + value.encode() + b"\0")
    hello += message(b"K", struct.pack("!ii", 1, 2)) + message(b"Z", b"I")

    def drip_to(conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            if stop.wait(0.3):
                return
            conn.sendall(data[i : i + 1])

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                length = struct.unpack("!i", conn.recv(4))[0]
                conn.recv(length - 4)  # the startup message (sslmode=disable: no SSL request)
                if stall == "startup drip":
                    drip_to(conn, hello * 10)
                    return
                conn.sendall(hello)
                conn.recv(65536)  # the first statement
                if stall == "silent statement":
                    stop.wait(60)
                else:
                    drip_to(conn, message(b"C", b"SET\0") * 40 + message(b"Z", b"I"))
            except OSError:
                pass

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    index = postgres.PgIndex(
        f"postgresql://toolkit@127.0.0.1:{port}/db?sslmode=disable&gssencmode=disable&connect_timeout=2"
    )
    try:
        started = time.monotonic()
        expected = "connection timeout expired" if stall == "startup drip" else r"within 1s \(the overall deadline\)"
        with pytest.raises(RemoteError, match=expected) as e:
            index.exists()
        assert time.monotonic() - started < 10  # (psycopg's connect takes about 2x connect_timeout here)
        assert e.value.exit_code == 6 and "\n" not in str(e.value)
    finally:
        index.close()
        stop.set()
        listener.close()
        thread.join(timeout=5)
