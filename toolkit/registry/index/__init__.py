"""The registry's index seam: what the registry's rules need from a database, and nothing else.

Two implementations: the SQLite file inside a registry directory, and a PostgreSQL server for
a team. Both enforce the invariants in the database itself (one production per name, versions
immutable once registered, history append-only), so the rules above them cannot break them
by mistake and neither can anyone with a SQL prompt.

A write is one transaction that holds NAME's write lock from its first statement: every
read the rules make inside it (is this version taken? what is production?) stays true until
the commit. SQLite has one lock for the whole file; PostgreSQL locks per name.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "EVENTS",
    "EVENTS_BEFORE_SERVED",
    "STATUSES",
    "DuplicateVersion",
    "EmptyReader",
    "HistoryRow",
    "Index",
    "IndexReader",
    "IndexWriter",
    "NameRow",
    "VersionRow",
    "is_postgres_url",
]

STATUSES = ("staging", "production", "archived")
# "served": a server started serving a version, or swapped to it (``toolkit serve``); it changes
# no status (from_status == to_status), so the rules that replay promotes and rollbacks skip it.
EVENTS = ("register", "promote", "archive", "rollback", "rolled_back", "recovered", "served")
# Indexes created before "served" existed check the older list; each index widens its check
# in place (same schema version: an older toolkit still reads and writes it) on first use.
EVENTS_BEFORE_SERVED = EVENTS[:-1]


@dataclass(frozen=True, kw_only=True, slots=True)
class VersionRow:
    """One registered version as the index stores it."""

    name: str
    version: str
    major: int
    minor: int
    patch: int
    status: str
    rolled_back: bool
    model_file: str
    sha256: str
    size: int
    metrics: dict[str, dict[str, float]]
    data_sha256: str | None
    registered_at: str
    registered_by: str
    # Where the store keeps the files, when the version's own name does not say it: the
    # manifest digest in an OCI store (tags move; a digest never does). None in a directory.
    store_ref: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryRow:
    """One history event; ``id`` is None for an event not yet written."""

    id: int | None
    at: str
    user: str
    name: str
    version: str
    event: str
    from_status: str | None
    to_status: str
    reason: str | None
    detail: str | None

    def insert_values(self) -> tuple[Any, ...]:
        """The row as both indexes insert it: (at, user, name, version, event, from_status,
        to_status, reason, detail); an empty reason is stored as NULL."""
        return (
            self.at,
            self.user,
            self.name,
            self.version,
            self.event,
            self.from_status,
            self.to_status,
            self.reason or None,
            self.detail,
        )

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
class NameRow:
    """A name with its version count, production version and highest version."""

    name: str
    versions: int
    production: str | None
    latest: str


class DuplicateVersion(Exception):
    """The index already holds NAME VERSION (the rules turn this into a RegistryError)."""


class IndexReader(Protocol):
    """Queries; inside ``Index.read()`` they all see one snapshot."""

    def row(self, name: str, version: str) -> VersionRow | None: ...

    def production_or_latest(self, name: str) -> VersionRow | None: ...

    def production(self, name: str) -> str | None: ...

    def name_exists(self, name: str) -> bool: ...

    def count(self, name: str) -> int: ...

    def names(self) -> list[NameRow]: ...

    def versions(self, name: str, *, limit: int | None = None) -> list[VersionRow]: ...

    def history(self, name: str) -> list[HistoryRow]: ...

    def production_events(self, name: str) -> list[tuple[str, str]]:
        """(event, version) of every promote and rollback of NAME, oldest first."""
        ...

    def best_by(self, name: str, section: str, key: str, *, higher_is_better: bool = True) -> tuple[str, float] | None:
        """The version (not rolled back) with the best finite ``metrics[section][key]``; ties: highest version."""
        ...

    def tied(self, name: str, section: str, key: str, value: float) -> list[str]:
        """Versions (not rolled back) whose ``metrics[section][key]`` equals ``value``, lowest first."""
        ...


class IndexWriter(IndexReader, Protocol):
    """Changes, all committed together when ``Index.write()`` exits cleanly."""

    def insert_version(self, row: VersionRow) -> None:
        """Raises DuplicateVersion when NAME VERSION exists."""
        ...

    def set_status(self, name: str, version: str, status: str, *, rolled_back: bool) -> None: ...

    def log(self, event: HistoryRow) -> None: ...


class Index(Protocol):
    """A connection to one index; cheap to make, connects on first use."""

    @property
    def location(self) -> str:
        """Where the index is, for messages (a path, or ``postgresql://user@host:port/db``)."""
        ...

    def exists(self) -> bool:
        """Whether anything was ever registered here (reading never creates an index)."""
        ...

    def read(self) -> AbstractContextManager[IndexReader]: ...

    def write(self, name: str) -> AbstractContextManager[IndexWriter]:
        """A transaction holding NAME's write lock; rolled back on any exception."""
        ...

    def require_writable(self) -> None:
        """Refuse (``ReadOnlyRegistry``) a user who may read this index but not write it, before
        anything is stored: a team store's push is not undone by the index refusing the row."""
        ...

    def claim(self, name: str, version: str) -> AbstractContextManager[None]:
        """While held, no other process stores NAME VERSION (outside any transaction: uploads are slow).

        Concurrent adds of one version then upload once: the others wait, see the row, and stop.
        """
        ...

    def close(self) -> None: ...


class EmptyReader:
    """What reading an index that was never created sees: nothing (and reading creates nothing)."""

    def row(self, name: str, version: str) -> VersionRow | None:
        return None

    def production_or_latest(self, name: str) -> VersionRow | None:
        return None

    def production(self, name: str) -> str | None:
        return None

    def name_exists(self, name: str) -> bool:
        return False

    def count(self, name: str) -> int:
        return 0

    def names(self) -> list[NameRow]:
        return []

    def versions(self, name: str, *, limit: int | None = None) -> list[VersionRow]:
        return []

    def history(self, name: str) -> list[HistoryRow]:
        return []

    def production_events(self, name: str) -> list[tuple[str, str]]:
        return []

    def best_by(self, name: str, section: str, key: str, *, higher_is_better: bool = True) -> tuple[str, float] | None:
        return None

    def tied(self, name: str, section: str, key: str, value: float) -> list[str]:
        return []


_URL_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(value: object) -> bool:
    """Whether ``--registry``/``TOOLKIT_REGISTRY`` names a PostgreSQL server rather than a directory.

    Here, not in ``_registry_pg``: telling the two apart must not import psycopg (an old stack or
    a lean serving host has none and still reads a directory registry).
    """
    return isinstance(value, str) and value.startswith(_URL_PREFIXES)
