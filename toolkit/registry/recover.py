"""``registry recover`` for a directory registry: rebuild a missing or empty SQLite index from the cards.

Every version whose files verify comes back as ``staging`` with a ``recovered`` event; the old
statuses and history are not on disk, so they are gone. A directory whose files fail their
checksum or card is reported and left exactly as it is. The new index is built under a
temporary name and moved into place whole.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from contextlib import suppress
from pathlib import Path
from typing import Any

from toolkit import _files
from toolkit.errors import IntegrityError, ReadOnlyRegistry, RegistryError, ToolkitError
from toolkit.identifiers import parse_version
from toolkit.registry.index.sqlite_db import DB_FILE, connect_readonly, has_schema, is_readonly, write_transaction
from toolkit.registry.rules import now as _now
from toolkit.registry.store.directory import UNCOMMITTED, own_leftovers, registered_dirs

__all__ = ["recover_directory"]


def recover_directory(root: Path, user: str) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[Path, str], ...]]:
    """(recovered (name, version) pairs, failed (directory, why) pairs).

    Raises:
        RegistryError: the index still lists versions (nothing to recover), or it is busy.
        ReadOnlyRegistry: the registry cannot be written.
    """
    from toolkit.artifact import verify

    db = root / DB_FILE
    if db.exists():
        conn = connect_readonly(root)
        if conn is not None:
            try:
                n = conn.execute("SELECT count(*) FROM versions").fetchone()[0] if has_schema(conn) else 0
            finally:
                conn.close()
            if n:
                raise RegistryError(
                    f"the registry index {db} lists {n} version(s); recover only rebuilds a missing or empty index"
                )
    good: list[tuple[str, str, Path, Any]] = []
    # Symlinked name or version folders are never followed (they could point anywhere), but
    # they are reported, not skipped silently.
    failed: list[tuple[Path, str]] = [(p, "a symbolic link, not a version folder; not followed") for p in _links(root)]
    for vdir in registered_dirs(root) + own_leftovers(root):
        name, version = vdir.parent.name, vdir.name
        try:
            models = sorted(p for p in vdir.iterdir() if p.name.endswith(".joblib"))
            if len(models) != 1:
                raise IntegrityError(f"expected one .joblib, found {len(models)}")
            card = verify(models[0])  # card valid, names this file, bytes hash to its sha256
            if card.version != version:
                raise IntegrityError(f"the card says version {card.version!r}")
        except (ToolkitError, OSError) as e:
            failed.append((vdir, str(e)))
            continue
        good.append((name, version, models[0], card))
    now = _now()
    detail = "index rebuilt from the card on disk; earlier statuses and history are lost"
    _files.sweep_stale_temps(root)  # an earlier recovery that was killed
    tmp_db = _files.temp_path(root / DB_FILE)
    try:
        conn = _new_index(tmp_db)
        try:
            with write_transaction(conn, path=tmp_db):
                for name, version, model, card in good:
                    major, minor, patch = parse_version(version)
                    metrics = {str(k): {str(m): float(v) for m, v in sec.items()} for k, sec in card.metrics.items()}
                    conn.execute(
                        "INSERT INTO versions (name, version, major, minor, patch, status, model_file, sha256,"
                        " size, metrics, data_sha256, registered_at, registered_by)"
                        " VALUES (?, ?, ?, ?, ?, 'staging', ?, ?, ?, ?, ?, ?, ?)",
                        (
                            name,
                            version,
                            major,
                            minor,
                            patch,
                            model.name,
                            card.artifact.sha256,
                            card.artifact.size,
                            json.dumps(metrics, sort_keys=True),
                            card.data.sha256 if card.data else None,
                            now,
                            user,
                        ),
                    )
                    conn.execute(
                        "INSERT INTO history (at, user, name, version, event, from_status, to_status, reason, detail)"
                        " VALUES (?, ?, ?, ?, 'recovered', NULL, 'staging', NULL, ?)",
                        (now, user, name, version, detail),
                    )
            conn.execute("PRAGMA journal_mode = DELETE")  # one self-contained file to move into place
        finally:
            conn.close()
        _retire_index(db)
        os.replace(tmp_db, db)
        _files.fsync_dir(root)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise ReadOnlyRegistry(f"the registry {root} is read-only here ({e.strerror}); cannot recover") from e
        raise RegistryError(f"cannot write the registry index {db}: {e}") from e
    except sqlite3.Error as e:
        if is_readonly(e):
            raise ReadOnlyRegistry(f"the registry {root} is read-only here ({e}); cannot recover") from e
        raise RegistryError(f"cannot write the registry index {db}: {e}") from e
    finally:
        for leftover in (tmp_db, Path(f"{tmp_db}-wal"), Path(f"{tmp_db}-shm"), Path(f"{tmp_db}-journal")):
            with suppress(FileNotFoundError):
                leftover.unlink()
    for name, version, _, _ in good:  # recovered: no longer a leftover to discard
        with suppress(OSError):
            (root / name / version / UNCOMMITTED).unlink()
    return tuple((n, v) for n, v, _, _ in good), tuple(failed)


def _links(root: Path) -> list[Path]:
    """``<name>`` and ``<name>/<X.Y.Z>`` entries of the registry that are symbolic links."""
    from toolkit.identifiers import VERSION_RE, is_name

    found: list[Path] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return found
    for entry in entries:
        if not is_name(entry.name):
            continue
        if entry.is_symlink():
            found.append(Path(entry.path))
        elif entry.is_dir(follow_symlinks=False):
            with suppress(OSError):
                found += [
                    Path(v.path)
                    for v in sorted(os.scandir(entry.path), key=lambda v: v.name)
                    if VERSION_RE.match(v.name) and v.is_symlink()
                ]
    return found


def _new_index(path: Path) -> sqlite3.Connection:
    from toolkit.registry.index.sqlite_db import BUSY_TIMEOUT_S, _configure, _ensure_schema

    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        _configure(conn)
        _ensure_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _retire_index(db: Path) -> None:
    # The empty index being replaced may still have a -wal file; SQLite would replay it
    # into the new one, so fold it back first (and make the old file self-contained).
    if db.exists():
        with suppress(sqlite3.Error):
            old = sqlite3.connect(db, isolation_level=None)
            try:
                old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                old.execute("PRAGMA journal_mode = DELETE")
            finally:
                old.close()
    for side in (f"{db}-wal", f"{db}-shm"):
        with suppress(FileNotFoundError):
            os.unlink(side)
