"""The model registry: versions of named pipelines, promotion, rollback and an audit history.

Layout of a registry root (default ``./models``)::

    registry.db                       SQLite index + append-only history (WAL)
    <name>/<version>/<stem>.joblib    each version is the three files of an artifact,
    <name>/<version>/<stem>.card.json   byte-identical to what was registered, read-only
    <name>/<version>/<stem>.card.md
    .tmp/                             copies in flight; anything here is ignored

Crash ordering for ``add``: the files are copied and fsynced into ``.tmp`` with an
``.uncommitted`` marker beside them, then under the index's write lock the directory is renamed
into place and only then is the row committed; the marker is removed after the commit. A kill
before the commit leaves a marked directory no row points at (ignored, and replaced the next
time that version is added); a row therefore never points at missing or partial files.
Promote and rollback only change rows, in one transaction each.

The registry never deletes or replaces a version directory unless its own index says so: only
a marked directory without a row is its own leftover. An unmarked directory without a row is a
registered version whose row is gone, so an index that is missing or empty while such
directories exist is refused (exit 4) until ``recover`` rebuilds it from the cards.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import _files
from toolkit._registry_db import (
    DB_FILE,
    ReadOnlyRegistry,
    connect,
    connect_readonly,
    has_schema,
    write_transaction,
)
from toolkit.errors import DataError, EnvironmentMismatch, IntegrityError, RegistryError, ToolkitError, UsageError
from toolkit.identifiers import VERSION_RE, current_user, is_name, parse_version, validate_name
from toolkit.policy import validate_policy
from toolkit.signing import TrustedKeys, copy_signature

try:
    import fcntl
except ImportError:  # not POSIX: leftovers are then only swept by age
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from toolkit.artifact import ArtifactPaths

__all__ = [
    "DEFAULT_ROOT",
    "ENV_VAR",
    "Change",
    "Comparison",
    "Entry",
    "Event",
    "NameSummary",
    "Recovery",
    "Registry",
    "parse_metric",
    "parse_version",
    "resolve_root",
    "validate_name",
]

DEFAULT_ROOT = Path("models")
ENV_VAR = "TOOLKIT_REGISTRY"
# Promotion usually happens on a workstation or CI host, not in the training image, so the
# default asks what matters for unpickling (Python minor + the pickle's own libraries).
DEFAULT_POLICY = "compatible"

_METRIC_RE = re.compile(r"(?:([a-z][a-z0-9_]*)\.)?([a-z][a-z0-9_]*)")
_TMP_DIR = ".tmp"
_LOCK_SUFFIX = ".lock"
_STALE_TMP_S = 24 * 3600
_COPY_CHUNK = 1 << 20
# Put in a staged copy by ``add`` and removed after its row is committed: a version directory
# that has it and no row is the registry's own leftover, the only kind it ever deletes.
_UNCOMMITTED = ".uncommitted"


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One registered version."""

    name: str
    version: str
    status: str
    path: Path  # the registered .joblib; the cards sit beside it
    sha256: str
    size: int
    metrics: dict[str, dict[str, float]]
    data_sha256: str | None
    registered_at: str
    registered_by: str
    rolled_back: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "rolled_back": self.rolled_back,
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "metrics": self.metrics,
            "data_sha256": self.data_sha256,
            "registered_at": self.registered_at,
            "registered_by": self.registered_by,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One line of a name's history."""

    id: int
    at: str
    user: str
    name: str
    version: str
    event: str  # register | promote | archive | rollback | rolled_back | recovered
    from_status: str | None
    to_status: str
    reason: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "user": self.user,
            "name": self.name,
            "version": self.version,
            "event": self.event,
            "from_status": self.from_status,
            "to_status": self.to_status,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class NameSummary:
    """One row of ``registry list``: a name and where it stands."""

    name: str
    versions: int
    production: str | None
    latest: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "versions": self.versions, "production": self.production, "latest": self.latest}


@dataclass(frozen=True, kw_only=True, slots=True)
class Change:
    """What a promote or rollback did."""

    name: str
    version: str  # production now
    previous: str | None  # production before
    changed: bool  # False: it already was production, nothing was written
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "previous": self.previous,
            "changed": self.changed,
            "detail": self.detail,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Comparison:
    """Two versions re-scored on the same data."""

    name: str
    versions: tuple[str, str]
    data: dict[str, Any]  # source, sha256, rows, how ("held-out test split" | "whole dataset")
    scores: dict[str, dict[str, float]]  # version -> metric -> value
    difference: dict[str, float] = field(default_factory=dict)  # second minus first
    # metric -> (low, high) of the difference, paired bootstrap (toolkit.evaluate); None: undefined
    interval: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)  # resamples, skipped, seed, level

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "data": self.data,
            "scores": self.scores,
            "difference": self.difference,
            "interval": {k: None if v is None else list(v) for k, v in self.interval.items()},
            "bootstrap": self.bootstrap,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Recovery:
    """What ``recover`` rebuilt: the versions back in the index, and those left out."""

    root: Path
    recovered: tuple[tuple[str, str], ...]  # (name, version), each back as staging
    failed: tuple[tuple[Path, str], ...]  # (version directory, why), left in place untouched

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "recovered": [{"name": n, "version": v} for n, v in self.recovered],
            "failed": [{"path": str(p), "error": e} for p, e in self.failed],
            "history_lost": True,
        }


def resolve_root(cli_value: Path | str | None) -> Path:
    """The registry root: the ``--registry`` flag, else ``$TOOLKIT_REGISTRY``, else ``./models``."""
    if cli_value is not None and str(cli_value) != "":
        return Path(cli_value).expanduser()
    env = os.environ.get(ENV_VAR, "")
    return Path(env).expanduser() if env else DEFAULT_ROOT


def parse_metric(metric: str) -> tuple[str, str]:
    """``"roc_auc"`` -> ``("test", "roc_auc")``; ``"cv.accuracy"`` -> ``("cv", "accuracy")``.

    Raises:
        UsageError: not ``[SECTION.]KEY`` or a lower-is-better ``*_std`` key.
    """
    m = _METRIC_RE.fullmatch(metric)
    if m is None:
        raise UsageError(
            f"invalid metric {metric!r}: use KEY (held-out test) or SECTION.KEY, e.g. roc_auc, cv.accuracy"
        )
    if m[2].endswith("_std"):
        raise UsageError(f"metric {metric!r} is a spread (lower is better); --best-by picks the highest score")
    return m[1] or "test", m[2]


class Registry:
    """A registry rooted at a directory; cheap to create, opens its index on first use."""

    def __init__(self, root: Path | str, *, trusted_keys: TrustedKeys = None) -> None:
        self.root = Path(root)
        # With trusted keys (these or $TOOLKIT_TRUSTED_KEYS) add, promote, rollback and compare require signatures.
        self.trusted_keys = trusted_keys
        self._conn: sqlite3.Connection | None = None
        self._writable = False

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the index connection (the object can be used again afterwards)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writing ----------------------------------------------------------------------------

    def add(self, artifact_path: Path | str, *, name: str | None = None, reason: str | None = None) -> Entry:
        """Copy an artifact's three files in as ``staging``, checking the checksum on the way in.

        Raises:
            IntegrityError: a file is missing or unreadable, the card is invalid, or the bytes
                do not hash to the card's sha256.
            RegistryError: invalid name or version, or NAME+VERSION is already registered.
        """
        from toolkit.artifact import artifact_paths

        if name is not None:
            validate_name(name)
        src = artifact_paths(Path(artifact_path))
        for p in (src.model, src.card_json, src.card_md):
            if not p.is_file():
                raise IntegrityError(f"artifact file missing: {p}")
        tmp_root = self.root / _TMP_DIR
        try:
            tmp_root.mkdir(parents=True, exist_ok=True)
            _sweep_stale(tmp_root)
            with _staging_dir(tmp_root) as tmp:
                reg_name, version = self._add_from(src, tmp, tmp_root, name=name, reason=reason)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ReadOnlyRegistry(
                    f"the registry {self.root} is read-only here ({e.strerror}); reading works, writing does not"
                ) from e
            raise RegistryError(f"cannot write into the registry {self.root}: {e}") from e
        return self.get(reg_name, version)

    def promote(
        self,
        name: str,
        version: str | None = None,
        *,
        best_by: str | None = None,
        policy: str = DEFAULT_POLICY,
        reason: str | None = None,
    ) -> Change:
        """Make VERSION (or the best by a card metric) production; the old production is archived.

        Raises:
            UsageError: both or neither of VERSION and ``best_by``; an unknown policy.
            RegistryError: unknown name or version; no version has the metric.
            IntegrityError: the version's files fail their checksum (production is left as it was).
            EnvironmentMismatch: this runtime fails the check under ``policy`` (production unchanged).
        """
        validate_name(name)
        validate_policy(policy)
        if (version is None) == (best_by is None):
            raise UsageError("promote takes a VERSION or --best-by METRIC (exactly one)")
        conn = self._require_db(name, write=True)
        detail = None
        if best_by is not None:
            version, detail = self._best_by(conn, name, best_by)
        else:
            parse_version(version)
        assert version is not None
        entry = self.get(name, version)
        self._check_artifact(entry, policy)
        detail = "; ".join(x for x in (detail, f"policy {policy}") if x)
        with write_transaction(conn):
            row = self._existing_row(conn, name, version)
            current = self._production(conn, name)
            if current == version:
                return Change(name=name, version=version, previous=current, changed=False, detail=detail)
            now, user = _now(), current_user()
            if current is not None:
                conn.execute("UPDATE versions SET status = 'archived' WHERE name = ? AND version = ?", (name, current))
                self._log(
                    conn,
                    name,
                    current,
                    "archive",
                    "production",
                    "archived",
                    reason,
                    f"replaced by {version}",
                    now=now,
                    user=user,
                )
            conn.execute(
                "UPDATE versions SET status = 'production', rolled_back = 0 WHERE name = ? AND version = ?",
                (name, version),
            )
            self._log(conn, name, version, "promote", row["status"], "production", reason, detail, now=now, user=user)
        return Change(name=name, version=version, previous=current, changed=True, detail=detail)

    def rollback(self, name: str, *, policy: str = DEFAULT_POLICY, reason: str | None = None) -> Change:
        """Put back the previous production version; the current one is archived and marked rolled back.

        Raises:
            RegistryError: unknown name, no production, or no earlier production to go back to.
            IntegrityError: the target's files fail their checksum (production is left as it was).
            EnvironmentMismatch: the target fails the check under ``policy`` (production unchanged).
        """
        validate_name(name)
        validate_policy(policy)
        conn = self._require_db(name, write=True)
        current, target = self._rollback_target(conn, name)
        self._check_artifact(self.get(name, target), policy)
        with write_transaction(conn):
            if self._rollback_target(conn, name) != (current, target):
                raise RegistryError(f"production of {name} changed while rolling back; run the rollback again")
            now, user = _now(), current_user()
            conn.execute(
                "UPDATE versions SET status = 'archived', rolled_back = 1 WHERE name = ? AND version = ?",
                (name, current),
            )
            self._log(
                conn,
                name,
                current,
                "rolled_back",
                "production",
                "archived",
                reason,
                f"rolled back to {target}",
                now=now,
                user=user,
            )
            prev_status = self._existing_row(conn, name, target)["status"]
            conn.execute(
                "UPDATE versions SET status = 'production', rolled_back = 0 WHERE name = ? AND version = ?",
                (name, target),
            )
            self._log(
                conn,
                name,
                target,
                "rollback",
                prev_status,
                "production",
                reason,
                f"back from {current}; policy {policy}",
                now=now,
                user=user,
            )
        return Change(name=name, version=target, previous=current, changed=True, detail=f"policy {policy}")

    def recover(self) -> Recovery:
        """Rebuild a missing or empty index from the cards in the version directories.

        Every version whose files verify comes back as ``staging`` with a ``recovered``
        event; the old statuses and history are not on disk, so they are gone. A directory
        whose files fail their checksum or card is reported and left exactly as it is.

        Raises:
            RegistryError: the index still lists versions (nothing to recover), or it is busy.
            ReadOnlyRegistry: the registry cannot be written.
        """
        from toolkit.artifact import verify

        db = self.root / DB_FILE
        self.close()
        if db.exists():
            conn = connect_readonly(self.root)
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
        failed: list[tuple[Path, str]] = []
        for vdir in _registered_dirs(self.root) + _own_leftovers(self.root):
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
        now, user = _now(), current_user()
        detail = "index rebuilt from the card on disk; earlier statuses and history are lost"
        tmp_db = self.root / f".{DB_FILE}.recover-{uuid.uuid4().hex}"
        try:
            conn = _new_index(tmp_db)
            try:
                with write_transaction(conn):
                    for name, version, model, card in good:
                        major, minor, patch = parse_version(version)
                        metrics = {
                            str(k): {str(m): float(v) for m, v in sec.items()} for k, sec in card.metrics.items()
                        }
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
                        self._log(conn, name, version, "recovered", None, "staging", None, detail, now=now, user=user)
                conn.execute("PRAGMA journal_mode = DELETE")  # one self-contained file to move into place
            finally:
                conn.close()
            _retire_index(db)
            os.replace(tmp_db, db)
            _files.fsync_dir(self.root)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ReadOnlyRegistry(
                    f"the registry {self.root} is read-only here ({e.strerror}); cannot recover"
                ) from e
            raise RegistryError(f"cannot write the registry index {db}: {e}") from e
        except sqlite3.Error as e:
            raise RegistryError(f"cannot write the registry index {db}: {e}") from e
        finally:
            for leftover in (tmp_db, Path(f"{tmp_db}-wal"), Path(f"{tmp_db}-shm"), Path(f"{tmp_db}-journal")):
                with suppress(FileNotFoundError):
                    leftover.unlink()
        for name, version, _, _ in good:  # recovered: no longer a leftover to discard
            with suppress(OSError):
                (self.root / name / version / _UNCOMMITTED).unlink()
        return Recovery(
            root=self.root,
            recovered=tuple((n, v) for n, v, _, _ in good),
            failed=tuple(failed),
        )

    # -- reading ----------------------------------------------------------------------------

    def has(self, name: str, version: str) -> bool:
        """Whether NAME VERSION is registered.

        Raises:
            RegistryError: invalid name or version.
        """
        validate_name(name)
        parse_version(version)
        conn = self._db(write=False)
        return conn is not None and self._row(conn, name, version) is not None

    def require_unregistered(self, name: str, version: str) -> None:
        """Refuse NAME VERSION if it is registered: callers check before minutes of training.

        Raises:
            RegistryError: invalid name or version, or NAME VERSION is already registered.
        """
        if self.has(name, version):
            raise RegistryError(
                f"{name} {version} is already registered in {self.root}; "
                "versions are never overwritten (choose another --version)"
            )

    def get(self, name: str, version: str | None = None) -> Entry:
        """NAME at VERSION; without VERSION the production version, else the latest.

        Raises:
            RegistryError: invalid or unknown name or version.
        """
        validate_name(name)
        if version is not None:
            parse_version(version)
        conn = self._require_db(name)
        if version is None:
            # Two index lookups (production, else highest version), never a sort of every version.
            row = (
                conn.execute("SELECT * FROM versions WHERE name = ? AND status = 'production'", (name,)).fetchone()
                or conn.execute(
                    "SELECT * FROM versions WHERE name = ? ORDER BY major DESC, minor DESC, patch DESC LIMIT 1", (name,)
                ).fetchone()
            )
            if row is None:
                raise _unknown_name(name, self.root)
            return self._entry(row)
        row = self._row(conn, name, version)
        if row is None:
            if not self._name_exists(conn, name):
                raise _unknown_name(name, self.root)
            raise RegistryError(f"{name} has no version {version} in {self.root}")
        return self._entry(row)

    def list_names(self) -> list[NameSummary]:
        """Every name with its version count, production version and latest version."""
        conn = self._db(write=False)
        if conn is None:
            return []
        # Per name: a counter row and two index lookups, whatever the number of versions.
        rows = conn.execute(
            "SELECT n.name, n.versions AS n,"
            " (SELECT p.version FROM versions p WHERE p.name = n.name AND p.status = 'production') AS production,"
            " (SELECT l.version FROM versions l WHERE l.name = n.name"
            "  ORDER BY l.major DESC, l.minor DESC, l.patch DESC LIMIT 1) AS latest"
            " FROM names n ORDER BY n.name"
        ).fetchall()
        return [
            NameSummary(name=r["name"], versions=r["n"], production=r["production"], latest=r["latest"]) for r in rows
        ]

    def list_versions(self, name: str, *, limit: int | None = None) -> list[Entry]:
        """NAME's versions, newest (by semantic version) first; ``limit`` keeps the first N.

        Raises:
            RegistryError: invalid or unknown name.
        """
        validate_name(name)
        conn = self._require_db(name)
        rows = conn.execute(
            "SELECT * FROM versions WHERE name = ? ORDER BY major DESC, minor DESC, patch DESC LIMIT ?",
            (name, -1 if limit is None else max(limit, 0)),
        ).fetchall()
        if not rows and not self._name_exists(conn, name):
            raise _unknown_name(name, self.root)
        return [self._entry(r) for r in rows]

    def count(self, name: str) -> int:
        """How many versions NAME has (0 if none)."""
        validate_name(name)
        conn = self._db(write=False)
        if conn is None:
            return 0
        row = conn.execute("SELECT versions FROM names WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def history(self, name: str) -> list[Event]:
        """Every event for NAME, oldest first.

        Raises:
            RegistryError: invalid or unknown name.
        """
        validate_name(name)
        conn = self._require_db(name)
        rows = conn.execute("SELECT * FROM history WHERE name = ? ORDER BY id", (name,)).fetchall()
        if not rows:
            raise _unknown_name(name, self.root)
        return [Event(**{k: r[k] for k in r.keys()}) for r in rows]  # noqa: SIM118 (a Row iterates values)

    def compare(
        self,
        name: str,
        v1: str,
        v2: str,
        *,
        dataset: str | None = None,
        target: str | None = None,
        policy: str = DEFAULT_POLICY,
        resamples: int = 1000,
        seed: int = 0,
    ) -> Comparison:
        """Re-score two versions on the same data: the cards' held-out split, or all of ``dataset``.

        Each metric's difference comes with a paired bootstrap interval (``resamples`` draws of
        the same rows for both, seeded; ``toolkit.evaluate.paired_scores``).

        Raises:
            UsageError: the same version twice; a negative ``resamples``.
            RegistryError: unknown versions; the cards' data or split differ (and no ``dataset``).
            DataError: the data at the cards' source no longer hashes to what they recorded.
            IntegrityError, EnvironmentMismatch: from loading either pipeline under ``policy``.
        """
        from toolkit.artifact import load, read_card
        from toolkit.datasets import load_dataset, split
        from toolkit.evaluate import paired_scores

        validate_policy(policy)
        if v1 == v2:
            raise UsageError(f"compare needs two different versions, got {v1} twice")
        e1, e2 = self.get(name, v1), self.get(name, v2)
        c1, c2 = read_card(e1.path), read_card(e2.path)
        if dataset is not None:
            ds = load_dataset(dataset, target if target is not None else (c1.data.target if c1.data else None))
            X, y = ds.X, ds.y
            how = "whole dataset"
        else:
            d1, d2 = c1.data, c2.data
            if d1 is None or d2 is None or not d1.sha256 or not d1.source:
                raise RegistryError(
                    f"{name} {v1 if d1 is None or not d1.source else v2}: the card does not "
                    "say where its data came from; name one with --dataset"
                )
            if d1.sha256 != d2.sha256:
                raise RegistryError(
                    f"{name} {v1} was trained on data sha256 {d1.sha256[:12]}, {v2} on "
                    f"{(d2.sha256 or 'unknown')[:12]}: there is no common held-out set; name one with --dataset"
                )
            if not d1.split or d1.split != d2.split:
                raise RegistryError(
                    f"{name} {v1} and {v2} were split differently ({d1.split} vs {d2.split}): one's test rows "
                    "are the other's training rows; name a dataset with --dataset"
                )
            ds = load_dataset(d1.source, target if target is not None else d1.target)
            if ds.sha256 != d1.sha256:
                raise DataError(
                    f"{d1.source} now hashes to {ds.sha256[:12]}, the cards recorded {d1.sha256[:12]}: "
                    "the data changed; name a dataset with --dataset"
                )
            _, X, _, y = split(ds, test_size=float(d1.split["test_size"]), seed=int(d1.split["seed"]))
            how = "held-out test split"
        pipelines = []
        for entry, card in ((e1, c1), (e2, c2)):
            if card.artifact.sha256 != entry.sha256:
                raise IntegrityError(f"{entry.path}: card sha256 differs from the one registered")
            pipelines.append(load(entry.path, policy=policy, trusted_keys=self.trusted_keys))
        # Scoring lives in toolkit.evaluate: the registry stores and checks, it does not score.
        paired = paired_scores(pipelines[0], pipelines[1], X, y, resamples=resamples, seed=seed)
        data = {"source": ds.source, "sha256": ds.sha256, "rows": len(y), "how": how}
        return Comparison(
            name=name,
            versions=(v1, v2),
            data=data,
            scores={v1: paired.a, v2: paired.b},
            difference=paired.difference,
            interval=paired.intervals,
            bootstrap=paired.bootstrap_dict(),
        )

    # -- internals ----------------------------------------------------------------------------

    def _add_from(
        self, src: ArtifactPaths, tmp: Path, tmp_root: Path, *, name: str | None, reason: str | None
    ) -> tuple[str, str]:
        from toolkit.artifact import read_card

        # The card is read from our own copy, so what we check is what stays registered.
        card_json = tmp / src.card_json.name
        _copy_file(src.card_json, card_json)
        card = read_card(card_json)
        reg_name = validate_name(name if name is not None else card.name)
        version = card.version
        major, minor, patch = parse_version(version)
        if card.artifact.file != src.model.name:
            raise IntegrityError(
                f"{src.card_json} describes {card.artifact.file!r}, not {src.model.name!r}; refusing to register it"
            )
        conn = self._db(write=True, create=True)
        assert conn is not None
        if self._row(conn, reg_name, version) is not None:  # fail before copying a large pickle
            raise _duplicate(reg_name, version)
        digest, size = _copy_file(src.model, tmp / src.model.name, hash_it=True)
        if digest != card.artifact.sha256 or size != card.artifact.size:
            raise IntegrityError(
                f"checksum mismatch for {src.model}: card says sha256 {card.artifact.sha256} "
                f"({card.artifact.size} bytes), file has {digest} ({size} bytes)"
            )
        _copy_file(src.card_md, tmp / src.card_md.name)
        copy_signature(src, tmp, self.trusted_keys, known={tmp / src.model.name: digest})
        for p in tmp.iterdir():
            p.chmod(0o444)  # registered files are immutable; this keeps honest mistakes out
        (tmp / _UNCOMMITTED).write_bytes(b"")
        _files.fsync_dir(tmp)
        metrics = {str(k): {str(m): float(v) for m, v in sec.items()} for k, sec in card.metrics.items()}
        now, user = _now(), current_user()
        parent = self.root / reg_name
        final = parent / version
        with write_transaction(conn):
            if self._row(conn, reg_name, version) is not None:
                raise _duplicate(reg_name, version)
            parent.mkdir(exist_ok=True)
            # Directories left by processes killed between rename and commit: no row points at them.
            self._discard_orphans(conn, reg_name, parent, tmp_root)
            if os.path.lexists(final):
                if not _is_own_leftover(final):
                    raise RegistryError(
                        f"{final} holds files the index does not list (a registered version whose row is lost?); "
                        f"not replacing them: run `toolkit registry recover --registry {self.root}`"
                    )
                _discard(final, tmp_root)
            os.rename(tmp, final)  # files in place first ...
            try:
                _files.fsync_dir(parent)
                _files.fsync_dir(self.root)
                conn.execute(
                    "INSERT INTO versions (name, version, major, minor, patch, status, model_file, sha256, size,"
                    " metrics, data_sha256, registered_at, registered_by)"
                    " VALUES (?, ?, ?, ?, ?, 'staging', ?, ?, ?, ?, ?, ?, ?)",
                    (
                        reg_name,
                        version,
                        major,
                        minor,
                        patch,
                        src.model.name,
                        digest,
                        size,
                        json.dumps(metrics, sort_keys=True),
                        card.data.sha256 if card.data else None,
                        now,
                        user,
                    ),
                )
                self._log(
                    conn,
                    reg_name,
                    version,
                    "register",
                    None,
                    "staging",
                    reason,
                    None if reg_name == card.name else f"card name {card.name!r}",
                    now=now,
                    user=user,
                )
            except BaseException:
                # Still under the lock: take the directory back out of sight before rolling back.
                _discard(final, tmp_root)
                raise
        # ... then the row, committed on leaving the block: a row never points at missing files.
        # Only now is the directory no longer "ours to discard"; a kill before this unlink leaves
        # a marker beside a row, which the row outranks (only rowless marked directories go).
        with suppress(OSError):
            (final / _UNCOMMITTED).unlink()
            _files.fsync_dir(final)
        return reg_name, version

    def _discard_orphans(self, conn: sqlite3.Connection, name: str, parent: Path, tmp_root: Path) -> None:
        # Called under the write lock, when nobody else can be renaming a version into place.
        on_disk = [e.name for e in os.scandir(parent) if VERSION_RE.match(e.name)]
        counted = conn.execute("SELECT versions FROM names WHERE name = ?", (name,)).fetchone()
        if len(on_disk) <= (counted[0] if counted else 0):
            return  # every row has its directory, so there is nothing extra (the common case: no listing of rows)
        known = {r[0] for r in conn.execute("SELECT version FROM versions WHERE name = ?", (name,))}
        for version in on_disk:
            # Only what this registry staged and never committed; a directory without the
            # marker is a registered version whose row is missing, and is never touched.
            if version not in known and _is_own_leftover(parent / version):
                _discard(parent / version, tmp_root)

    def _db(self, *, write: bool, create: bool = False) -> sqlite3.Connection | None:
        """The index connection: read-only for reads (no write access needed), read-write for writes.

        Whatever the mode, an index that is missing or empty while registered version
        directories exist is refused before anything is read or written.
        """
        if self._conn is not None and (self._writable or not write):
            return self._conn
        self.close()
        if not (self.root / DB_FILE).exists():
            self._refuse_lost_index("missing")
        if write:
            conn = connect(self.root, create=create)
        else:
            conn = connect_readonly(self.root)
            if conn is not None and not has_schema(conn):
                conn.close()  # an index killed while being created by an older toolkit: no tables yet
                self._refuse_lost_index("empty")
                return None
        if conn is None:
            return None
        try:
            if conn.execute("SELECT 1 FROM versions LIMIT 1").fetchone() is None:
                self._refuse_lost_index("empty")
        except BaseException:
            conn.close()
            raise
        self._conn, self._writable = conn, write
        return conn

    def _refuse_lost_index(self, state: str) -> None:
        found = _registered_dirs(self.root)
        # A directory loses its marker only after its row is committed, so if the index has rows
        # now, a concurrent add created or filled it between our look at it and the scan: not lost.
        if found and not _index_has_rows(self.root):
            example = found[0].relative_to(self.root)
            raise RegistryError(
                f"the registry index {self.root / DB_FILE} is {state} but {self.root} holds {len(found)} registered "
                f"version director{'y' if len(found) == 1 else 'ies'} (e.g. {example}); refusing to use it: "
                f"run `toolkit registry recover --registry {self.root}` to rebuild the index from their cards"
            )

    def _require_db(self, name: str, *, write: bool = False) -> sqlite3.Connection:
        conn = self._db(write=write)
        if conn is None:
            raise _unknown_name(name, self.root)
        return conn

    def _row(self, conn: sqlite3.Connection, name: str, version: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM versions WHERE name = ? AND version = ?", (name, version)
        ).fetchone()
        return row

    def _existing_row(self, conn: sqlite3.Connection, name: str, version: str) -> sqlite3.Row:
        row = self._row(conn, name, version)
        if row is None:  # checked before the transaction; rows are never deleted
            raise RegistryError(f"{name} has no version {version} in {self.root}")
        return row

    def _name_exists(self, conn: sqlite3.Connection, name: str) -> bool:
        return conn.execute("SELECT 1 FROM versions WHERE name = ? LIMIT 1", (name,)).fetchone() is not None

    def _production(self, conn: sqlite3.Connection, name: str) -> str | None:
        row = conn.execute("SELECT version FROM versions WHERE name = ? AND status = 'production'", (name,)).fetchone()
        return None if row is None else row[0]

    def _entry(self, row: sqlite3.Row) -> Entry:
        return Entry(
            name=row["name"],
            version=row["version"],
            status=row["status"],
            path=self.root / row["name"] / row["version"] / row["model_file"],
            sha256=row["sha256"],
            size=row["size"],
            metrics=json.loads(row["metrics"]),
            data_sha256=row["data_sha256"],
            registered_at=row["registered_at"],
            registered_by=row["registered_by"],
            rolled_back=bool(row["rolled_back"]),
        )

    def _log(
        self,
        conn: sqlite3.Connection,
        name: str,
        version: str,
        event: str,
        from_status: str | None,
        to_status: str,
        reason: str | None,
        detail: str | None,
        *,
        now: str,
        user: str,
    ) -> None:
        conn.execute(
            "INSERT INTO history (at, user, name, version, event, from_status, to_status, reason, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (now, user, name, version, event, from_status, to_status, reason or None, detail),
        )

    def _best_by(self, conn: sqlite3.Connection, name: str, metric: str) -> tuple[str, str]:
        section, key = parse_metric(metric)
        best: tuple[float, tuple[int, int, int], str] | None = None
        # Rolled-back versions are out: re-promoting one "because it scores best" would undo the rollback.
        rows = conn.execute(
            "SELECT version, major, minor, patch, metrics FROM versions WHERE name = ? AND rolled_back = 0", (name,)
        ).fetchall()
        if not rows and not self._name_exists(conn, name):
            raise _unknown_name(name, self.root)
        candidates = []
        for r in rows:
            value = json.loads(r["metrics"]).get(section, {}).get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            candidate = (float(value), (r["major"], r["minor"], r["patch"]), r["version"])
            candidates.append(candidate)
            # The tie rule (README): the best value wins; between equal values, the highest version.
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        if best is None:
            raise RegistryError(f"no version of {name} records metric {section}.{key} (rolled-back versions excluded)")
        detail = f"best by {section}.{key} = {best[0]:.6g}"
        tied = sorted((c[1], c[2]) for c in candidates if c[0] == best[0])
        if len(tied) > 1:
            versions = ", ".join(v for _, v in tied)
            detail += f"; tie on {section}.{key} {best[0]:.6g} between {versions}: the highest version wins"
        return best[2], detail

    def _rollback_target(self, conn: sqlite3.Connection, name: str) -> tuple[str, str]:
        current = self._production(conn, name)
        if current is None:
            if not self._name_exists(conn, name):
                raise _unknown_name(name, self.root)
            raise RegistryError(f"{name} has no production version to roll back")
        # Replay the history: each promote pushes, each rollback pops. The history is the
        # record of what production was, so it (not a mutable column) decides "previous".
        stack: list[str] = []
        for event, version in conn.execute(
            "SELECT event, version FROM history WHERE name = ? AND event IN ('promote', 'rollback') ORDER BY id",
            (name,),
        ):
            if event == "promote":
                stack.append(version)
            elif stack:
                stack.pop()
        if len(stack) < 2 or stack[-1] != current:
            raise RegistryError(f"{name} {current} has no earlier production version to roll back to")
        return current, stack[-2]

    def _check_artifact(self, entry: Entry, policy: str) -> None:
        from toolkit.gate import check_env

        # check_env verifies the checksum and the card first (IntegrityError), never unpickles.
        report = check_env(entry.path, policy=policy, trusted_keys=self.trusted_keys)
        if report.sha256 != entry.sha256:
            # The joblib and its card were swapped together: consistent, but not what was registered.
            raise IntegrityError(
                f"{entry.path}: card sha256 {report.sha256} differs from the registered {entry.sha256}"
            )
        if not report.ok:
            raise EnvironmentMismatch(
                report.differences, policy=policy, detail=f"{entry.name} {entry.version} refused, production unchanged"
            )


def _duplicate(name: str, version: str) -> RegistryError:
    return RegistryError(f"{name} {version} is already registered; a version is registered once (bump the version)")


def _unknown_name(name: str, root: Path) -> RegistryError:
    return RegistryError(f"no model named {name!r} in the registry {root}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _copy_file(src: Path, dst: Path, *, hash_it: bool = False) -> tuple[str, int]:
    h = hashlib.sha256() if hash_it else None
    size = 0
    # Same refusals as the loader: no symlinks, FIFOs or devices are copied in.
    fd, _ = _files.open_regular(src, "artifact file")
    with os.fdopen(fd, "rb") as fin, open(dst, "xb") as fout:
        while True:
            try:
                chunk = fin.read(_COPY_CHUNK)
            except OSError as e:
                raise IntegrityError(f"artifact file unreadable: {src}: {e.strerror}") from e
            if not chunk:
                break
            if h is not None:
                h.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return (h.hexdigest() if h is not None else ""), size


def _index_has_rows(root: Path) -> bool:
    conn = connect_readonly(root)
    if conn is None:
        return False
    try:
        return has_schema(conn) and conn.execute("SELECT 1 FROM versions LIMIT 1").fetchone() is not None
    finally:
        conn.close()


def _new_index(path: Path) -> sqlite3.Connection:
    from toolkit._registry_db import BUSY_TIMEOUT_S, _configure, _ensure_schema

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


def _own_leftovers(root: Path) -> list[Path]:
    """Marked version directories: copies whose add may or may not have committed before a kill."""
    found: list[Path] = []
    with suppress(OSError):
        for name_dir in sorted(root.iterdir()):
            if is_name(name_dir.name) and name_dir.is_dir() and not name_dir.is_symlink():
                found += [d for d in sorted(name_dir.iterdir()) if VERSION_RE.match(d.name) and _is_own_leftover(d)]
    return found


def _is_own_leftover(version_dir: Path) -> bool:
    return os.path.lexists(version_dir / _UNCOMMITTED)


def _registered_dirs(root: Path) -> list[Path]:
    """Version directories (``<name>/<X.Y.Z>/``) that ``add`` committed: no ``.uncommitted`` marker."""
    found: list[Path] = []
    try:
        names = sorted(e.name for e in os.scandir(root) if is_name(e.name) and e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return found
    except OSError as e:
        raise RegistryError(f"cannot read the registry {root}: {e.strerror or e}") from e
    for name in names:
        with suppress(OSError):
            for entry in sorted(os.scandir(root / name), key=lambda x: x.name):
                if (
                    VERSION_RE.match(entry.name)
                    and entry.is_dir(follow_symlinks=False)
                    and not _is_own_leftover(Path(entry.path))
                ):
                    found.append(Path(entry.path))
    return found


def _discard(path: Path, tmp_root: Path) -> None:
    # Rename first (atomic: the version path is gone at once), delete at leisure.
    trash = tmp_root / f"trash-{uuid.uuid4().hex}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _staging_dir(tmp_root: Path) -> Iterator[Path]:
    """A private directory for one add, guarded by a held flock on ``<dir>.lock`` beside it.

    The kernel drops the lock when its process dies (even by SIGKILL), so the next add
    can tell a copy in flight from a dead one's leftovers without guessing from ages or pids.
    """
    fd, lock_path = tempfile.mkstemp(prefix="add-", suffix=_LOCK_SUFFIX, dir=tmp_root)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a brand-new file: never contended
        tmp = Path(lock_path[: -len(_LOCK_SUFFIX)])
        tmp.mkdir(mode=0o755)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when it was renamed into place
    finally:
        with suppress(FileNotFoundError):
            os.unlink(lock_path)  # unlink before close: a sweeper never locks a file still in use
        os.close(fd)


def _sweep_stale(tmp_root: Path) -> None:
    """Remove what killed processes left in ``.tmp``: unlocked copies, trash, and old strays."""
    cutoff = time.time() - _STALE_TMP_S
    for p in tmp_root.iterdir():
        with suppress(OSError):
            if p.name.endswith(_LOCK_SUFFIX):
                _remove_if_abandoned(p)
            elif p.name.startswith("trash-"):
                shutil.rmtree(p, ignore_errors=True)
            elif not os.path.lexists(f"{p}{_LOCK_SUFFIX}") and p.lstat().st_mtime < cutoff:
                # No lock file to ask (its owner died between creating the two): only age tells.
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink()


def _remove_if_abandoned(lock_path: Path) -> None:
    if fcntl is None:
        if lock_path.lstat().st_mtime < time.time() - _STALE_TMP_S:
            shutil.rmtree(str(lock_path)[: -len(_LOCK_SUFFIX)], ignore_errors=True)
            lock_path.unlink()
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its owner is alive and copying
        shutil.rmtree(str(lock_path)[: -len(_LOCK_SUFFIX)], ignore_errors=True)
        lock_path.unlink()
    finally:
        os.close(fd)
