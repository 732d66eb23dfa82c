"""Where the served model comes from: a file, a registry reference, or an OCI reference.

``Source.current()`` answers "which version does MODEL name right now?" (a cheap index read,
or one manifest GET for OCI) and ``Source.materialize()`` gives that version's files on
this machine for the checks: the registry's own path for a directory registry, a private pull
(every blob and the card checked) for a team registry or an OCI reference. Registry
references are parsed by ``toolkit.registry.refs``, the rule every other command uses.

An OCI tag is a stage too (``oci://HOST/REPO:production``, or the ``NAME-production`` tag a
team registry moves): what it names is the manifest's digest, read from the manifest itself
(size-capped and digest-checked by the OCI client), and the pull that follows is pinned to
that digest, so the files checked are the ones the poll saw even if the tag moves meanwhile.
The manifest's name and version annotations are only shown in logs: nothing trusts them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import _files
from toolkit.errors import ReadOnlyRegistry, RegistryError, UsageError
from toolkit.registry.refs import Reference, parse_reference

if TYPE_CHECKING:
    from toolkit.oci import Client
    from toolkit.oci import Reference as OciReference

__all__ = ["Current", "Source"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Current:
    """One version as the source names it now."""

    name: str | None  # None for a plain file (known after its card is read)
    version: str | None
    sha256: str | None  # the registry's (or the manifest's) record of it, to notice a change
    digest: str | None = None  # OCI: the manifest digest the tag names, which the pull is pinned to


class Source:
    """MODEL as given to ``toolkit serve``."""

    def __init__(
        self, model: str, *, registry: str | None = None, store: str | None = None, insecure: bool = False
    ) -> None:
        self.model = model
        self._registry = registry
        self._store = store
        self._insecure = insecure
        self.oci = model.startswith("oci://")
        self.ref: Reference | None = None if self.oci else parse_reference(model)
        self._oci_ref: OciReference | None = None
        self._client: Client | None = None
        if self.oci:
            from toolkit.oci import parse_reference as parse_oci

            self._oci_ref = parse_oci(model)

    @property
    def followable(self) -> bool:
        """Whether MODEL names something that can move: a stage (``NAME@production``,
        ``NAME@staging``) or an OCI tag (not a digest, which names one manifest for good)."""
        if self._oci_ref is not None:
            return self._oci_ref.digest is None
        return self.ref is not None and self.ref.stage is not None

    @property
    def in_registry(self) -> bool:
        return self.ref is not None

    @property
    def keeps_history(self) -> bool:
        """Whether the ``served`` events have a history to go to (registry references only)."""
        return self.ref is not None

    def describe(self) -> str:
        return self.model

    def current(self) -> Current:
        """The version MODEL names now. Raises: RegistryError, IntegrityError, RemoteError, UsageError."""
        if self._oci_ref is not None:
            return self._oci_current(self._oci_ref)
        if self.ref is None:
            return Current(name=None, version=None, sha256=None)
        with self._open() as reg:
            entry = self._entry(reg)
            return Current(name=entry.name, version=entry.version, sha256=entry.sha256)

    @contextmanager
    def materialize(self, current: Current) -> Iterator[Path]:
        """The ``.joblib`` of ``current`` on this machine while the context is open.

        Raises: RegistryError, IntegrityError, RemoteError, UsageError.
        """
        if self._oci_ref is not None:
            ref = self._oci_ref if current.digest is None else self._oci_ref.pinned(current.digest)
            with _pulled(ref, self._insecure) as path:
                yield path
            return
        if self.ref is None:
            yield _artifact_in(Path(self.model))
            return
        assert current.name is not None and current.version is not None
        with self._open() as reg:
            entry = reg.get(current.name, current.version)
            if entry.sha256 != current.sha256:  # a version is immutable: this is not the one we read
                raise RegistryError(f"{entry.name} {entry.version} changed in the index while being loaded")
            with reg.local_copy(entry) as path:
                yield path

    def record_served(self, name: str, version: str, *, where: str, reason: str) -> None:
        """Append the ``served`` event to the registry's history (registry references only)."""
        if self.ref is None:
            return
        from toolkit.registry.index import is_postgres_url
        from toolkit.registry.registry import resolve_root

        root = resolve_root(self._registry)
        # A directory mounted read-only (`image serve --follow`): said as such, before SQLite is
        # asked to write to a file it opened read-only behind our back.
        if not is_postgres_url(str(root)) and not os.access(root, os.W_OK):
            raise ReadOnlyRegistry(f"{root} is read-only here")
        with self._open() as reg:
            reg.record_served(name, version, where=where, reason=reason)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _oci_current(self, ref: OciReference) -> Current:
        """One manifest GET (the OCI client's timeouts and deadline bound it); not thread-safe,
        as the client is not: the start-up reads it, then only the follower does."""
        from toolkit.oci import ANNOTATION_NAME, ANNOTATION_VERSION, Client, layout_of

        if self._client is None:
            self._client = Client(ref.host, insecure=self._insecure)
        try:
            manifest = self._client.get_manifest(ref)
        except BaseException:
            self.close()  # a fresh session next time, not one left mid-answer
            raise
        model = layout_of(manifest, where=str(ref.pinned(manifest.digest))).model
        notes = manifest.annotations
        return Current(
            name=_shown(notes.get(ANNOTATION_NAME)),
            version=_shown(notes.get(ANNOTATION_VERSION)),
            sha256=model.digest.removeprefix("sha256:"),
            digest=manifest.digest,
        )

    @contextmanager
    def _open(self) -> Iterator[Any]:
        from toolkit.registry.registry import Registry, resolve_root, resolve_store

        root = resolve_root(self._registry)
        from toolkit.registry.index import is_postgres_url

        store = resolve_store(self._store) if is_postgres_url(str(root)) else None
        reg = Registry(root, store=store)
        try:
            yield reg
        finally:
            reg.close()

    def _entry(self, reg: Any) -> Any:
        ref = self.ref
        assert ref is not None
        if ref.version is not None:
            return reg.get(ref.name, ref.version)
        for entry in reg.list_versions(ref.name):  # newest first: the first at the stage is meant
            if entry.status == ref.stage:
                return entry
        raise RegistryError(f"{ref.name} has no {ref.stage} version in the registry {reg.location}")


def _shown(annotation: str | None) -> str | None:
    """A manifest annotation as logs and metric labels show it: anyone who can push wrote it, so
    it is bounded (a 200 KB "version" would be one 200 KB log line and label)."""
    return None if annotation is None else annotation[:_ANNOTATION_SHOWN]


_ANNOTATION_SHOWN = 64


def _artifact_in(path: Path) -> Path:
    """``path`` itself, or the one ``.joblib`` in a directory (KServe's /mnt/models, a volume)."""
    if not path.is_dir():
        return path
    found = sorted(p for p in path.glob("*.joblib") if not p.name.startswith("."))
    if len(found) != 1:
        raise UsageError(
            f"{path} holds {len(found)} .joblib artifacts; give the directory of exactly one, or the .joblib itself"
        )
    return found[0]


@contextmanager
def _pulled(ref: OciReference, insecure: bool) -> Iterator[Path]:
    """A pull into a fresh private folder, removed once the model is loaded (or refused)."""
    from toolkit.oci import pull

    tmp = _files.scratch_dir("toolkit-serve")
    try:
        result = pull(ref, tmp / "files", insecure=insecure)
        yield result.files[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_follow(source: Source) -> None:
    """``--follow`` needs a stage to watch. Raises: UsageError."""
    if not source.followable:
        raise UsageError(
            "--follow watches a stage: give NAME@production, NAME@staging or an oci://HOST/REPO:TAG tag, "
            f"not {source.describe()!r}"
        )
