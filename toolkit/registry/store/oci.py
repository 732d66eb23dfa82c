"""The OCI store: each version is one OCI manifest in a team's repository (``toolkit.oci``).

Every version is pushed under its own tag ``NAME-VERSION`` before its index row commits, and
the row records the manifest's digest. Tags are pointers anyone can move (and distribution
has no compare-and-swap), so the index never trusts one: every read of a registered version
goes by the recorded digest, and ``disagreements`` reports a tag that points elsewhere.
After a stage change the store also moves a ``NAME-production`` tag, for tools that only see
the OCI registry; the index stays the truth.

A crash between the push and the commit leaves a tagged manifest no row points at; the next
add of that version pushes over it (its tag was never the truth of anything).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from toolkit import _files, env
from toolkit.errors import IntegrityError, RegistryError, RemoteError, UsageError
from toolkit.registry.index import IndexReader, VersionRow
from toolkit.registry.store import Incoming, TagState

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.oci import Client, Reference

__all__ = ["ENV_VAR", "OciStore", "is_oci_url", "production_tag", "version_tag"]

ENV_VAR = env.STORE
_PREFIX = "oci://"
_RETRY_PAUSES_S = (0.1, 0.3, 1.0, 2.0)
T = TypeVar("T")


def _retrying(call: Callable[[], T], *, writing: bool = False) -> T:
    """``call()``, again after a short pause when the registry answered with a transient error.

    distribution 2.8 answers HTTP 500 now and then when several processes read and write one
    repository at once, and refuses a manifest as "does not match its digest" while another
    process's upload of the same blob is half-linked. Anything else is raised at once.
    """
    for pause in (*_RETRY_PAUSES_S, None):
        try:
            return call()
        except (RemoteError, IntegrityError) as e:
            text = str(e)
            transient = "registry error HTTP 5" in text or (writing and "does not match its digest" in text)
            if pause is None or not transient:
                raise
            time.sleep(pause * (1 + random.random()))
    raise AssertionError("unreachable")  # pragma: no cover


def is_oci_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX)


def version_tag(name: str, version: str) -> str:
    """The tag a version is pushed under; version tags (``-X.Y.Z``) never collide with ``-production``."""
    return f"{name}-{version}"


def production_tag(name: str) -> str:
    return f"{name}-production"


class OciStore:
    """One OCI repository, ``oci://HOST[:PORT]/REPO``, holding every version of every name."""

    def __init__(self, url: str) -> None:
        from toolkit.oci import Reference, parse_reference

        rest = url[len(_PREFIX) :] if is_oci_url(url) else ""
        if not rest or "@" in rest or ":" in rest.partition("/")[2]:
            raise UsageError(f"invalid store {url[:80]!r}: expected oci://HOST[:PORT]/REPO (no tag, no digest)")
        probe = parse_reference(f"{url}:probe")  # the oci module's grammar for host and repository
        self._base = Reference(host=probe.host, repository=probe.repository)
        self._client: Client | None = None

    @property
    def location(self) -> str:
        return f"oci://{self._base.host}/{self._base.repository}"

    @contextmanager
    def staging(self) -> Iterator[Path]:
        tmp = _files.scratch_dir("toolkit-add")
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def put(self, incoming: Incoming) -> str | None:
        from toolkit.oci import push

        ref = self._ref(tag=version_tag(incoming.name, incoming.version))
        model = incoming.directory / incoming.model_file
        # A retry skips the blobs already there (HEAD); our bytes were hashed locally, so a server's
        # "does not match its digest" during another process's upload of the same blob is its race.
        return _retrying(lambda: push(model, ref, client=self._connect()).digest, writing=True)

    def place(self, incoming: Incoming, index: IndexReader) -> None:
        return None  # the manifest is already complete under its tag; the row is what registers it

    def unplace(self, incoming: Incoming) -> None:
        return None  # an unreferenced manifest is harmless: nothing reads a version the index lacks

    def committed(self, incoming: Incoming) -> None:
        return None

    def describe(self, row: VersionRow) -> str:
        return str(self._pinned(row))

    @contextmanager
    def local(self, row: VersionRow) -> Iterator[Path]:
        """Pull by digest into a private temp dir; the oci module checks every blob and the card."""
        from toolkit.oci import pull

        tmp = _files.scratch_dir("toolkit-pull")
        try:

            def fetch() -> Path:
                out = Path(tempfile.mkdtemp(prefix="files-", dir=tmp))  # a fresh one per attempt
                return pull(self._pinned(row), out, client=self._connect()).files[0]

            model = _retrying(fetch)
            if model.name != row.model_file:
                raise IntegrityError(
                    f"{self.describe(row)}: the manifest holds {model.name!r}, the index registered {row.model_file!r}"
                )
            yield model
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def card(self, row: VersionRow) -> ModelCard:
        """The version's card, fetched with its manifest (never the model) and checked against it."""
        from toolkit.oci import fetch_card

        return _retrying(lambda: fetch_card(self._connect(), self._pinned(row)).card)

    def stage_changed(self, name: str, production: VersionRow | None) -> None:
        if production is None or production.store_ref is None:
            return  # distribution cannot delete a tag by name; `show` reports a stale one
        client = self._connect()
        manifest = _retrying(lambda: client.get_manifest(self._pinned(production)))
        _retrying(lambda: client.put_manifest(self._base.repository, production_tag(name), manifest.raw))

    def disagreements(self, row: VersionRow, *, production: VersionRow | None) -> list[TagState]:
        found = []
        checks = [(version_tag(row.name, row.version), row.store_ref)]
        checks.append((production_tag(row.name), production.store_ref if production else None))
        for tag, expected in checks:
            actual = self._tag_digest(tag)
            if actual != expected:
                found.append(TagState(tag=tag, expected=expected, actual=actual))
        return found

    def repair_tags(self, rows: list[VersionRow], production: VersionRow | None) -> list[TagState]:
        """Point every version tag (and the production tag) back at what the index says; what moved."""
        client = self._connect()
        moved = []
        for row in rows:
            if row.store_ref is None:
                continue
            tag = version_tag(row.name, row.version)
            actual = self._tag_digest(tag)
            if actual != row.store_ref:
                manifest = client.get_manifest(self._pinned(row))
                client.put_manifest(self._base.repository, tag, manifest.raw)
                moved.append(TagState(tag=tag, expected=row.store_ref, actual=actual))
        if production is not None and production.store_ref is not None:
            tag = production_tag(production.name)
            actual = self._tag_digest(tag)
            if actual != production.store_ref:
                self.stage_changed(production.name, production)
                moved.append(TagState(tag=tag, expected=production.store_ref, actual=actual))
        return moved

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _tag_digest(self, tag: str) -> str | None:
        try:
            return _retrying(lambda: self._connect().get_manifest(self._ref(tag=tag)).digest)
        except RegistryError:  # unknown tag (404)
            return None

    def _ref(self, *, tag: str | None = None, digest: str | None = None) -> Reference:
        from toolkit.oci import Reference

        return Reference(host=self._base.host, repository=self._base.repository, tag=tag, digest=digest)

    def _pinned(self, row: VersionRow) -> Reference:
        if row.store_ref is None:
            raise RegistryError(f"{row.name} {row.version} has no manifest digest in the index; it is not in {self}")
        return self._ref(tag=version_tag(row.name, row.version), digest=row.store_ref)

    def _connect(self) -> Client:
        from toolkit.oci import Client

        if self._client is None:
            self._client = Client(self._base.host)
        return self._client

    def __str__(self) -> str:
        return self.location
