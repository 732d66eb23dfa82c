"""A real `docker-registry` (CNCF distribution) on a free loopback port, in a temp dir.

The OCI tests and the benchmark start their own (plain or with htpasswd authentication)
and stop it; the shared registry on 127.0.0.1:5000 that `make base` runs is never touched.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["LoopbackRegistry", "ensure_tools", "free_port"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def ensure_tools() -> None:
    """docker-registry, skopeo and htpasswd: installed by the project's script when missing."""
    if all(shutil.which(t) for t in ("docker-registry", "skopeo", "htpasswd")):
        return
    subprocess.run([str(_REPO_ROOT / "scripts" / "oci-deps.sh")], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackRegistry:
    """One registry process; ``auth=(user, password)`` turns on htpasswd (bcrypt) auth."""

    def __init__(self, root: Path, *, auth: tuple[str, str] | None = None) -> None:
        ensure_tools()
        self.root = root
        self.storage = root / "data"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "registry.log"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        auth_yaml = ""
        if auth is not None:
            htpasswd = root / "htpasswd"
            subprocess.run(
                ["htpasswd", "-Bbc", str(htpasswd), auth[0], auth[1]], check=True, capture_output=True, text=True
            )
            auth_yaml = f"auth: {{htpasswd: {{realm: toolkit-test, path: {htpasswd}}}}}\n"
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: info, formatter: text}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: {self.host}}}\n" + auth_yaml
        )
        self._log = self.log_path.open("wb")
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/v2/")
                answer = conn.getresponse()
                conn.close()
                if answer.getheader("Docker-Distribution-Api-Version"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not start on {self.host}: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self._log.close()

    def blob_data(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes on disk."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")
