"""Where a finished artifact goes: sign it (on this host), then register it or move it into ``--out``.

Every command that produces an artifact (``train``, ``train --script``, ``image train``,
``image run``'s scripts, ``retrain``, ``image retrain``) ends the same way, so the rule is
written once: ``destination`` checks what can fail before minutes of training (the signing key
loads, NAME VERSION is not registered yet), ``deliver`` then signs (the private key never enters
a container) and registers as staging, or moves the files into the output folder, refusing to
overwrite. A signature comes first: with trust configured, ``registry add`` requires one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.provenance.statement import Script
    from toolkit.registry.registry import Entry, Registry

__all__ = ["Delivered", "Destination", "deliver", "deliver_all", "destination", "move_into"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Destination:
    """Into ``registry`` as staging, or (no registry) moved into ``out``; signed with ``sign_key``
    first, and attested by it (``<stem>.provenance.json``, naming ``script`` when a script trained it)."""

    registry: Registry | None
    out: Path
    sign_key: Path | None = None
    script: Script | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivered:
    """Where one artifact went."""

    path: Path | None  # its .joblib now (None: a team registry keeps no local file)
    card: ModelCard
    entry: Entry | None  # the registry's entry, when registered
    signed: bool
    where: str  # the registry's location, or the folder it was moved into

    @property
    def shown(self) -> str:
        """The path to print: the local file, else where the registry keeps it."""
        if self.path is not None:
            return str(self.path)
        return self.entry.location if self.entry is not None else self.where

    def note(self) -> str:
        """One line saying where the artifact went."""
        if self.entry is not None:
            how = f"{self.entry.status}, signed" if self.signed else self.entry.status
            return f"registered {self.entry.name} {self.entry.version} ({how}) in {self.where}"
        signed = ", signed" if self.signed else ""
        return f"wrote {self.card.name} {self.card.version} to {self.where} (not registered{signed})"


def destination(
    *,
    register: bool,
    registry: Path | str | None,
    out: Path,
    sign_key: Path | None = None,
    unregistered: tuple[str, str] | None = None,
    script: Path | None = None,
    script_args: tuple[str, ...] = (),
) -> Destination:
    """The destination, checked before any long work: the signing key loads, and (``unregistered``)
    NAME VERSION is not in the registry yet. ``script`` (and its ``script_args``): the training script
    the provenance names.

    ``registry`` is the ``--registry`` value (``$TOOLKIT_REGISTRY`` and the default apply).
    Raises: UsageError (a bad key), RegistryError (the version exists), RemoteError.
    """
    if sign_key is not None:
        from toolkit.signing import load_signing_key

        load_signing_key(sign_key)
    registry_obj = None
    if register:
        from toolkit.registry.registry import Registry, resolve_root

        registry_obj = Registry(resolve_root(registry))
        if unregistered is not None:
            with registry_obj:
                registry_obj.require_unregistered(*unregistered)
    recorded = None
    if sign_key is not None and script is not None:  # the provenance names the script the host ran
        from toolkit.provenance.attest import script_of

        recorded = script_of(script, script.as_posix(), script_args)
    return Destination(registry=registry_obj, out=out, sign_key=sign_key, script=recorded)


def deliver(staged: Path, dest: Destination, *, reason: str | None = None) -> Delivered:
    """Sign ``staged`` (``dest.sign_key``), then register it or move its files into ``dest.out``.

    Raises: RegistryError (the version is registered already), IntegrityError (the artifact
    fails its card), UsageError (an output file exists already, or cannot be written).
    """
    from toolkit.artifact import read_card

    signed = False
    if dest.sign_key is not None:
        _sign(staged, dest)
        signed = True
    card = read_card(staged)
    if dest.registry is not None:
        with dest.registry:
            entry = dest.registry.add(staged, reason=reason)
        return Delivered(path=entry.path, card=card, entry=entry, signed=signed, where=dest.registry.location)
    return Delivered(path=move_into(staged, dest.out), card=card, entry=None, signed=signed, where=str(dest.out))


def deliver_all(staged: Sequence[Path], dest: Destination, *, reason: str | None = None) -> Iterator[Delivered]:
    """``deliver`` for each of several artifacts (a script's), every one signed before the first
    is registered or moved: a signature that fails leaves nothing half delivered.

    Raises: as ``deliver``.
    """
    if dest.sign_key is not None:
        for path in staged:
            _sign(path, dest)
    unsigned = replace(dest, sign_key=None)
    for path in staged:
        yield replace(deliver(path, unsigned, reason=reason), signed=dest.sign_key is not None)


def move_into(staged: Path, out: Path) -> Path:
    """Move an artifact's files (its reference set, signature and provenance, if any) into ``out``;
    a no-op when it is there.

    ``out`` must be a real folder (``toolkit.docker.outdir.check_out_dir``: not a link, not a system
    folder); only regular files are copied, never through a link, and nothing is overwritten: an
    existing file of the same name refuses the whole move.
    Raises: UsageError.
    """
    from toolkit.artifact import artifact_paths
    from toolkit.docker.outdir import check_out_dir, place

    source = artifact_paths(staged)
    if source.model.parent.resolve() == out.resolve():
        return source.model
    out = check_out_dir(out, project=None)
    files = [p for p in (*source.files(), source.signature, source.provenance) if os.path.lexists(p)]
    place(files, out)
    for path in files:  # a move: the staged copies go
        path.unlink(missing_ok=True)
    return out / source.model.name


def _sign(staged: Path, dest: Destination) -> None:
    """The signature, then the provenance by the same key (carried like the .sig)."""
    from toolkit.artifact import sign
    from toolkit.provenance.attest import attest

    assert dest.sign_key is not None
    sign(staged, dest.sign_key)
    attest(staged, dest.sign_key, script=dest.script)
