"""The registry's rules, written once over its two seams (an index and a store).

What a registry guarantees, whichever backend: a version is registered once and never
changes; its files are checked on the way in and complete in the store before its row
commits; a promote or rollback is one transaction under the name's write lock, after the
target's files passed their checksum and the environment check; history only grows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit import _files
from toolkit.errors import EnvironmentMismatch, IntegrityError, RegistryError, ToolkitError
from toolkit.metrics import direction
from toolkit.provenance.carry import copy_provenance
from toolkit.registry.index import DuplicateVersion, HistoryRow, Index, IndexReader, NameRow, VersionRow
from toolkit.registry.store import Incoming, Store, TagState
from toolkit.signing import TrustedKeys, copy_signature

if TYPE_CHECKING:
    from toolkit.artifact import ArtifactPaths
    from toolkit.card import ModelCard

__all__ = [
    "Rules",
    "Switch",
    "copy_file",
    "duplicate",
    "now",
    "rollback_target",
    "unknown_name",
]

_COPY_CHUNK = 1 << 20
# Metrics where a smaller value is the better model (regression errors, spreads).


@dataclass(frozen=True, kw_only=True, slots=True)
class Switch:
    """What a promote or rollback did."""

    name: str
    version: str
    previous: str | None
    changed: bool
    detail: str | None = None
    warning: str | None = None  # committed, but a store tag could not follow (the index is the truth)


class Rules:
    """Add, promote, roll back and read, over any Index and Store."""

    def __init__(self, index: Index, store: Store, *, trusted_keys: TrustedKeys = None) -> None:
        self.index = index
        self.store = store
        # With trusted keys (these or $TOOLKIT_TRUSTED_KEYS) add, promote and rollback require signatures.
        self.trusted_keys = trusted_keys
        # When this runtime does not match a version's card: the gate run in the image the model
        # was trained in (model path, policy) -> that image's name when it passes there, else None.
        self.image_gate: Callable[[Path, str], str | None] | None = None

    # -- writing ----------------------------------------------------------------------------
    # The reference set (card schema 3) travels with the three files: copied, checked against
    # the card, signed with them, pushed as a layer.

    def add(self, src: ArtifactPaths, *, name: str | None, reason: str | None, user: str) -> VersionRow:
        """Copy in and check an artifact, store its files, then commit its row and register event."""
        from toolkit.artifact import read_card
        from toolkit.identifiers import parse_version, validate_name

        for p in (src.model, src.card_json, src.card_md):
            if not p.is_file():
                raise IntegrityError(f"artifact file missing: {p}")
        self.index.require_writable()  # before the store: a team store's push cannot be taken back
        with self.store.staging() as tmp:
            # The card is read from our own copy, so what we check is what stays registered.
            card_json = tmp / src.card_json.name
            copy_file(src.card_json, card_json)
            card = read_card(card_json)
            reg_name = validate_name(name if name is not None else card.name)
            version = card.version
            major, minor, patch = parse_version(version)
            if card.artifact.file != src.model.name:
                raise IntegrityError(
                    f"{src.card_json} describes {card.artifact.file!r}, not {src.model.name!r}; refusing to register it"
                )
            with self.index.claim(reg_name, version):
                return self._add_claimed(src, tmp, card, reg_name, (major, minor, patch), reason=reason, user=user)

    def _add_claimed(
        self,
        src: ArtifactPaths,
        tmp: Path,
        card: ModelCard,
        reg_name: str,
        semver: tuple[int, int, int],
        *,
        reason: str | None,
        user: str,
    ) -> VersionRow:
        """The rest of ``add``, holding the claim on NAME VERSION: check, store, then commit the row."""
        version = card.version
        major, minor, patch = semver
        with self.index.read() as r:
            if r.row(reg_name, version) is not None:  # fail before copying (and uploading) a large pickle
                raise duplicate(reg_name, version)
        digest, size = copy_file(src.model, tmp / src.model.name, hash_it=True)
        if digest != card.artifact.sha256 or size != card.artifact.size:
            raise IntegrityError(
                f"checksum mismatch for {src.model}: card says sha256 {card.artifact.sha256} "
                f"({card.artifact.size} bytes), file has {digest} ({size} bytes)"
            )
        copy_file(src.card_md, tmp / src.card_md.name)
        _copy_reference(src, tmp, card)
        from toolkit.artifact import artifact_paths

        copy_signature(
            src, artifact_paths(tmp / src.model.name), self.trusted_keys, known={tmp / src.model.name: digest}
        )
        copy_provenance(src, tmp, self.trusted_keys, known={tmp / src.model.name: digest})
        for p in tmp.iterdir():
            p.chmod(0o444)  # registered files are immutable; this keeps honest mistakes out
        _files.fsync_dir(tmp)
        incoming = Incoming(
            name=reg_name, version=version, directory=tmp, model_file=src.model.name, sha256=digest, size=size
        )
        ref = self.store.put(incoming)  # complete in the store, referenced by nothing yet
        metrics = {str(k): {str(m): float(v) for m, v in sec.items()} for k, sec in card.metrics.items()}
        at = now()
        row = VersionRow(
            name=reg_name,
            version=version,
            major=major,
            minor=minor,
            patch=patch,
            status="staging",
            rolled_back=False,
            model_file=src.model.name,
            sha256=digest,
            size=size,
            metrics=metrics,
            data_sha256=card.data.sha256 if card.data else None,
            registered_at=at,
            registered_by=user,
            store_ref=ref,
        )
        with self.index.write(reg_name) as w:
            if w.row(reg_name, version) is not None:
                raise duplicate(reg_name, version)
            self.store.place(incoming, w)
            try:
                w.insert_version(row)
                renamed = None if reg_name == card.name else f"card name {card.name!r}"
                w.log(_event(reg_name, version, "register", None, "staging", reason, renamed, at, user))
            except DuplicateVersion as e:
                self.store.unplace(incoming)
                raise duplicate(reg_name, version) from e
            except BaseException:
                self.store.unplace(incoming)  # still under the lock: out of sight before the rollback
                raise
        self.store.committed(incoming)
        return row

    def promote(
        self,
        name: str,
        version: str | None,
        *,
        best_by: tuple[str, str] | None,
        policy: str,
        reason: str | None,
        user: str,
        certifications: Path | None = None,
    ) -> Switch:
        """VERSION (or the best by ``(section, key)``) becomes production; the old one is archived."""
        detail = None
        if best_by is not None:
            version, detail = self.best_by(name, *best_by)
        assert version is not None
        row = self.get(name, version)
        image, certified = self.check_artifact(row, policy, certifications)
        where = f"checked in image {image}" if image else None
        detail = "; ".join(x for x in (detail, f"policy {policy}", certified, where) if x)
        with self.index.write(name) as w:
            target = w.row(name, version)
            if target is None:  # checked before the transaction; rows are never deleted
                raise RegistryError(f"{name} has no version {version} in {self.index.location}")
            current = w.production(name)
            if current == version:
                return Switch(name=name, version=version, previous=current, changed=False, detail=detail)
            at = now()
            if current is not None:
                w.set_status(name, current, "archived", rolled_back=False)
                w.log(
                    _event(
                        name, current, "archive", "production", "archived", reason, f"replaced by {version}", at, user
                    )
                )
            w.set_status(name, version, "production", rolled_back=False)
            w.log(_event(name, version, "promote", target.status, "production", reason, detail, at, user))
        warning = self._after_stage_change(name)
        return Switch(name=name, version=version, previous=current, changed=True, detail=detail, warning=warning)

    def rollback(
        self, name: str, *, policy: str, reason: str | None, user: str, certifications: Path | None = None
    ) -> Switch:
        """The previous production version comes back; the current one is archived and marked rolled back."""
        with self.index.read() as r:
            current, target = rollback_target(r, name, self.index.location)
        image, certified = self.check_artifact(self.get(name, target), policy, certifications)
        said = "; ".join(x for x in (f"policy {policy}", certified) if x)
        with self.index.write(name) as w:
            if rollback_target(w, name, self.index.location) != (current, target):
                raise RegistryError(f"production of {name} changed while rolling back; run the rollback again")
            at = now()
            w.set_status(name, current, "archived", rolled_back=True)
            w.log(
                _event(
                    name, current, "rolled_back", "production", "archived", reason, f"rolled back to {target}", at, user
                )
            )
            prev = w.row(name, target)
            if prev is None:  # checked before the transaction; rows are never deleted
                raise RegistryError(f"{name} has no version {target} in {self.index.location}")
            w.set_status(name, target, "production", rolled_back=False)
            back = f"back from {current}; {said}" + (f"; checked in image {image}" if image else "")
            w.log(_event(name, target, "rollback", prev.status, "production", reason, back, at, user))
        warning = self._after_stage_change(name)
        return Switch(name=name, version=target, previous=current, changed=True, detail=said, warning=warning)

    def served(self, name: str, version: str, *, where: str, reason: str | None, user: str) -> HistoryRow:
        """Record that a server at ``where`` now serves NAME VERSION; no status changes."""
        with self.index.write(name) as w:
            row = w.row(name, version)
            if row is None:
                if not w.name_exists(name):
                    raise unknown_name(name, self.index.location)
                raise RegistryError(f"{name} has no version {version} in {self.index.location}")
            event = _event(name, version, "served", row.status, row.status, reason, where, now(), user)
            w.log(event)
        return event

    # -- reading ----------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> VersionRow:
        with self.index.read() as r:
            if version is None:
                row = r.production_or_latest(name)
                if row is None:
                    raise unknown_name(name, self.index.location)
                return row
            row = r.row(name, version)
            if row is None:
                if not r.name_exists(name):
                    raise unknown_name(name, self.index.location)
                raise RegistryError(f"{name} has no version {version} in {self.index.location}")
            return row

    def has(self, name: str, version: str) -> bool:
        with self.index.read() as r:
            return r.row(name, version) is not None

    def names(self) -> list[NameRow]:
        with self.index.read() as r:
            return r.names()

    def versions(self, name: str, *, limit: int | None = None) -> list[VersionRow]:
        with self.index.read() as r:
            rows = r.versions(name, limit=limit)
            if not rows and not r.name_exists(name):
                raise unknown_name(name, self.index.location)
            return rows

    def count(self, name: str) -> int:
        with self.index.read() as r:
            return r.count(name)

    def history(self, name: str) -> list[HistoryRow]:
        with self.index.read() as r:
            rows = r.history(name)
        if not rows:
            raise unknown_name(name, self.index.location)
        return rows

    def best_by(self, name: str, section: str, key: str) -> tuple[str, str]:
        """(version, detail) of the best version by a card metric; rolled-back versions are out."""
        # Rolled-back versions are out: re-promoting one "because it scores best" would undo the rollback.
        higher = direction(key) == "higher"  # toolkit.metrics: errors and spreads are better lower
        with self.index.read() as r:
            best = r.best_by(name, section, key, higher_is_better=higher)
            if best is None and not r.name_exists(name):
                raise unknown_name(name, self.index.location)
            tied = r.tied(name, section, key, best[1]) if best is not None else []
        if best is None:
            raise RegistryError(f"no version of {name} records metric {section}.{key} (rolled-back versions excluded)")
        detail = f"best by {section}.{key} = {best[1]:.6g} ({direction(key)} is better)"
        if len(tied) > 1:  # the tie rule (README): between equal values, the highest version
            detail += f"; tie on {section}.{key} {best[1]:.6g} between {', '.join(tied)}: the highest version wins"
        return best[0], detail

    def disagreements(self, row: VersionRow) -> list[TagState]:
        with self.index.read() as r:
            production = r.production_or_latest(row.name)
        if production is not None and production.status != "production":
            production = None
        return self.store.disagreements(row, production=production)

    def check_artifact(
        self, row: VersionRow, policy: str, certifications: Path | None = None
    ) -> tuple[str | None, str | None]:
        """The version's files pass their checksum and this runtime (or, with an ``image_gate``, the
        model's own image) passes the gate, or it raises. Returns the image it passed in, if not
        here, and the certification that accepted this runtime (``certification <file> ...``), if one did."""
        from toolkit.gate import check_env

        with self.store.local(row) as model:
            # check_env verifies the checksum and the card first (IntegrityError), never unpickles;
            # under --policy certified it weighs the certifications (the gate's one rule).
            report = check_env(model, policy=policy, trusted_keys=self.trusted_keys, certifications=certifications)
            if report.sha256 != row.sha256:
                # The joblib and its card were swapped together: consistent, but not what was registered.
                raise IntegrityError(
                    f"{self.store.describe(row)}: card sha256 {report.sha256} differs from the registered {row.sha256}"
                )
            if not report.ok and self.image_gate is not None:
                passed_in = self.image_gate(model, policy)
                if passed_in is not None:
                    return passed_in, None
        if not report.ok:
            why = [f"{row.name} {row.version} refused, production unchanged"]
            why += [f"certification refused: {r}" for r in report.refused_certifications]
            why += [r for r in report.remedies if "certif" in r]  # the one that would apply, or how to get one
            raise EnvironmentMismatch(report.differences, policy=policy, detail="; ".join(why))
        if report.certification is None:
            return None, None
        return None, f"certification {report.certification}"

    def verify_files(self, row: VersionRow) -> None:
        """The version's files, as the store hands them out, hash to what the index registered."""
        from toolkit.artifact import verify

        with self.store.local(row) as model:
            card = verify(model)  # the model hashes to its card's sha256 ...
        if card.artifact.sha256 != row.sha256 or card.artifact.size != row.size:  # ... which is the registered one
            where = self.store.describe(row)
            raise IntegrityError(
                f"{where}: card sha256 {card.artifact.sha256} differs from the registered {row.sha256}"
            )

    def _after_stage_change(self, name: str) -> str | None:
        """Move the store's convenience tags; the change is committed, so a failure here is a warning."""
        try:
            with self.index.read() as r:
                production = r.production_or_latest(name)
            self.store.stage_changed(name, production if production and production.status == "production" else None)
        except ToolkitError as e:
            return f"the store's tags did not follow ({e}); `registry recover` re-points them"
        return None


def rollback_target(r: IndexReader, name: str, where: str) -> tuple[str, str]:
    """(current production, the version a rollback brings back), replayed from the history."""
    current = r.production(name)
    if current is None:
        if not r.name_exists(name):
            raise unknown_name(name, where)
        raise RegistryError(f"{name} has no production version to roll back")
    # Each promote pushes, each rollback pops. The history is the record of what production
    # was, so it (not a mutable column) decides "previous".
    stack: list[str] = []
    for event, version in r.production_events(name):
        if event == "promote":
            stack.append(version)
        elif stack:
            stack.pop()
    if len(stack) < 2 or stack[-1] != current:
        raise RegistryError(f"{name} {current} has no earlier production version to roll back to")
    return current, stack[-2]


def duplicate(name: str, version: str) -> RegistryError:
    return RegistryError(f"{name} {version} is already registered; a version is registered once (bump the version)")


def unknown_name(name: str, where: str) -> RegistryError:
    return RegistryError(f"no model named {name!r} in the registry {where}")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def copy_file(src: Path, dst: Path, *, hash_it: bool = False) -> tuple[str, int]:
    """Copy a regular file (no symlinks, FIFOs or devices), fsynced; its sha256 when asked."""
    h = hashlib.sha256() if hash_it else None
    size = 0
    fd, _ = _files.open_regular(src, "artifact file")
    with os.fdopen(fd, "rb") as fin:
        try:
            fout = open(dst, "xb")  # noqa: SIM115 - closed below, after the fsync
        except OSError as e:
            raise _files.write_failed(dst, e) from e
        with fout:
            while True:
                try:
                    chunk = fin.read(_COPY_CHUNK)
                except OSError as e:
                    raise IntegrityError(f"artifact file unreadable: {src}: {e.strerror}") from e
                if not chunk:
                    break
                if h is not None:
                    h.update(chunk)
                try:
                    _files.write_all(fout, chunk)
                except OSError as e:
                    raise _files.write_failed(dst, e) from e
                size += len(chunk)
            try:
                fout.flush()
                os.fsync(fout.fileno())
            except OSError as e:
                raise _files.write_failed(dst, e) from e
    return (h.hexdigest() if h is not None else ""), size


def _event(
    name: str,
    version: str,
    event: str,
    from_status: str | None,
    to_status: str,
    reason: str | None,
    detail: str | None,
    at: str,
    user: str,
) -> HistoryRow:
    return HistoryRow(
        id=None,
        at=at,
        user=user,
        name=name,
        version=version,
        event=event,
        from_status=from_status,
        to_status=to_status,
        reason=reason or None,
        detail=detail,
    )


def _copy_reference(src: ArtifactPaths, tmp: Path, card: ModelCard) -> None:
    """Copy the reference set beside the copied files and check it against the card (a card
    with no reference set and a stray file beside it is refused). Raises: IntegrityError."""
    info = card.reference
    if info is None:
        if os.path.lexists(src.reference):
            raise IntegrityError(f"{src.reference}: the card records no reference set; refusing to register it")
        return
    if info.file != src.reference.name or not src.reference.is_file():
        raise IntegrityError(f"reference set missing: {src.reference}")
    digest, size = copy_file(src.reference, tmp / src.reference.name, hash_it=True)
    if digest != info.sha256 or size != info.size:
        raise IntegrityError(
            f"checksum mismatch for {src.reference}: card says sha256 {info.sha256} ({info.size} bytes), "
            f"file has {digest} ({size} bytes)"
        )
