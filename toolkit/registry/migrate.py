"""``registry migrate``: a local registry, its history and its files, into a team registry.

Per name, all or nothing: every version's files are pushed to the team store first (checked
against their rows on the way), then one transaction writes the name's rows (with their
current stages and their original registration times and users) and its history, event for
event in the original order. Everything is checked before anything is written: a version
present on both sides with different bytes, or a name whose team history is not the local
one, refuses the whole run (exit 4) and leaves the team registry as it was. A name already
migrated (same versions, its team history starting with the local one) is skipped, so
running migrate twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from toolkit.errors import IntegrityError, RegistryError
from toolkit.registry.index import HistoryRow, VersionRow
from toolkit.registry.rules import Rules
from toolkit.registry.store import Incoming

__all__ = ["Migration", "migrate", "same_history"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """What a migrate did: names moved, names found already there, and how much moved."""

    source: str
    target: str
    migrated: tuple[str, ...]
    unchanged: tuple[str, ...]
    versions: int
    events: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "migrated": list(self.migrated),
            "unchanged": list(self.unchanged),
            "versions": self.versions,
            "events": self.events,
        }


def same_history(a: list[HistoryRow], b: list[HistoryRow]) -> bool:
    """Event for event, everything but the ids (each index numbers its own rows)."""
    return len(a) == len(b) and all(replace(x, id=None) == replace(y, id=None) for x, y in zip(a, b, strict=True))


def migrate(source: Rules, target: Rules) -> Migration:
    """Move every name of ``source`` into ``target`` (see the module's docstring).

    Raises:
        RegistryError: a version on both sides with different bytes, or a name with another
            history in the target (nothing written); a name that appeared meanwhile.
        IntegrityError: a local version's files fail their checksum (that name not written).
        RemoteError: the team index or store cannot be reached.
    """
    plan: list[tuple[str, list[VersionRow], list[HistoryRow]]] = []
    unchanged: list[str] = []
    for summary in source.names():
        name = summary.name
        with source.index.read() as r:
            rows, history = r.versions(name), r.history(name)
        with target.index.read() as r:
            theirs = {v.version: v for v in r.versions(name)}
            their_history = r.history(name)
        for row in rows:
            other = theirs.get(row.version)
            if other is not None and other.sha256 != row.sha256:
                raise RegistryError(
                    f"{name} {row.version} exists in both registries with different bytes "
                    f"(local sha256 {row.sha256[:12]}, team {other.sha256[:12]}); nothing migrated"
                )
        if not theirs and not their_history:
            plan.append((name, rows, history))
        elif set(theirs) >= {r.version for r in rows} and same_history(history, their_history[: len(history)]):
            unchanged.append(name)
        else:
            raise RegistryError(
                f"{name} is already in {target.index.location} with a different history; migrate does not merge "
                "two histories (nothing migrated)"
            )
    if plan:
        target.index.require_writable()  # before the first push: the store keeps what it was sent
    versions = events = 0
    for name, rows, history in plan:
        refs = {row.version: _push(source, target, row) for row in rows}
        # Rows in registration order, as the local index numbered them.
        order = {e.version: i for i, e in enumerate(history) if e.event in ("register", "recovered")}
        with target.index.write(name) as w:
            if w.name_exists(name):
                raise RegistryError(f"{name} appeared in {target.index.location} during the migration; run it again")
            for row in sorted(rows, key=lambda v: order.get(v.version, len(order))):
                w.insert_version(replace(row, store_ref=refs[row.version]))
            for event in history:
                w.log(event)
        production = next((r for r in rows if r.status == "production"), None)
        if production is not None:
            target.store.stage_changed(name, replace(production, store_ref=refs[production.version]))
        versions += len(rows)
        events += len(history)
    return Migration(
        source=source.index.location,
        target=target.index.location,
        migrated=tuple(n for n, _, _ in plan),
        unchanged=tuple(unchanged),
        versions=versions,
        events=events,
    )


def _push(source: Rules, target: Rules, row: VersionRow) -> str | None:
    from toolkit.artifact import verify

    with source.store.local(row) as model:
        card = verify(model)  # the bytes hash to the card's sha256 ...
        if card.artifact.sha256 != row.sha256:  # ... and the card is the one registered
            raise IntegrityError(
                f"{model}: card sha256 {card.artifact.sha256} differs from the registered {row.sha256}"
            )
        incoming = Incoming(
            name=row.name,
            version=row.version,
            directory=model.parent,
            model_file=row.model_file,
            sha256=row.sha256,
            size=row.size,
        )
        return target.store.put(incoming)
