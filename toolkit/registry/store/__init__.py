"""The registry's store seam: where a registered version's three files live.

Two implementations: a directory (the registry's own root, next to its SQLite index) and an
OCI repository (a team's, next to a PostgreSQL index). The ordering rule is the store's to
keep and the same for both: a version's files are complete in the store before the index row
that points at them commits, so a crash between the two leaves files no row points at (swept
or ignored), never a row without its files.

``put`` runs before the index transaction (slow: an upload); ``place`` runs inside it, holding
the name's write lock, just before the row is inserted (fast: a rename); ``unplace`` undoes
``place`` when the transaction fails; ``committed`` runs after the commit.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from toolkit.registry.index import IndexReader, VersionRow

__all__ = ["Incoming", "Store", "TagState"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Incoming:
    """A verified private copy of an artifact on its way in (``directory`` holds its three files)."""

    name: str
    version: str
    directory: Path
    model_file: str
    sha256: str
    size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class TagState:
    """A moving or fixed tag in the store that disagrees with the index (the index is the truth)."""

    tag: str
    expected: str | None  # the manifest digest the index says it should point at (None: absent)
    actual: str | None  # what it points at now (None: absent)

    def __str__(self) -> str:
        return f"tag {self.tag} points at {self.actual or 'nothing'}, the index says {self.expected or 'nothing'}"


class Store(Protocol):
    """Where the files are; the index says which versions exist and what stage each is in."""

    @property
    def location(self) -> str:
        """The store for messages: a directory, or ``oci://host:port/repo``."""
        ...

    def staging(self) -> AbstractContextManager[Path]:
        """A private empty directory for one incoming copy, removed afterwards."""
        ...

    def put(self, incoming: Incoming) -> str | None:
        """Before the index transaction: store the files where nothing points at them yet.

        Returns the reference the index records (an OCI manifest digest), or None.
        """
        ...

    def place(self, incoming: Incoming, index: IndexReader) -> None:
        """Inside the transaction, before the row: make the files findable by NAME VERSION.

        ``index`` reads inside the same transaction, so the store can tell its own leftovers
        (files no row points at) from registered versions.
        """
        ...

    def unplace(self, incoming: Incoming) -> None:
        """Inside the failing transaction: undo ``place``."""
        ...

    def committed(self, incoming: Incoming) -> None:
        """After the commit: tidy up (best effort; the row already points at complete files)."""
        ...

    def describe(self, row: VersionRow) -> str:
        """Where this version's model is, for people: a path, or a pinned OCI reference."""
        ...

    def local(self, row: VersionRow) -> AbstractContextManager[Path]:
        """The version's ``.joblib`` on this machine (fetched and digest-checked if remote)."""
        ...

    def stage_changed(self, name: str, production: VersionRow | None) -> None:
        """After a stage change committed: move any convenience tag (best effort)."""
        ...

    def disagreements(self, row: VersionRow, *, production: VersionRow | None) -> list[TagState]:
        """Tags about ROW (and NAME's production tag) that disagree with the index."""
        ...
