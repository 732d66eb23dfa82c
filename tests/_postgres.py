"""A real PostgreSQL server for the tests: started once per session by scripts/postgres.sh.

No SQLite stand-in: a test that claims PostgreSQL talks to this server, and a machine that
cannot start it fails those tests (the script installs Debian's postgresql when it is missing).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PgServer", "Team", "free_port", "pg_server", "scratch_database"]

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"


@dataclass(frozen=True, kw_only=True, slots=True)
class PgServer:
    """A running server: its admin URL (database ``postgres``), port and data directory."""

    url: str
    port: int
    directory: Path

    def database_url(self, db: str) -> str:
        return f"postgresql://toolkit@127.0.0.1:{self.port}/{db}"


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """Start a throwaway server (initdb in a fresh directory, loopback port); stop and delete it after."""
    directory = Path(tempfile.mkdtemp(prefix="toolkit-pg-teamreg-"))
    port = free_port()
    proc = subprocess.run(
        ["bash", str(SCRIPT), "start", str(directory), str(port)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120)
        raise RuntimeError(f"scripts/postgres.sh start failed ({proc.returncode}): {proc.stderr.strip()}")
    url = proc.stdout.splitlines()[0]
    try:
        yield PgServer(url=url, port=port, directory=directory)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=120)


@contextmanager
def scratch_database(server: PgServer) -> Iterator[str]:
    """A new empty database on the server for one test; dropped afterwards (connections forced out)."""
    import psycopg

    db = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {db}")
    try:
        yield server.database_url(db)
    finally:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@dataclass(frozen=True, kw_only=True, slots=True)
class Team:
    """A team registry for one test: a fresh database, and an OCI repository on a real loopback registry."""

    url: str
    store: str
    oci: Any  # _oci_support.LoopbackRegistry (its blobs on disk, for tampering)
