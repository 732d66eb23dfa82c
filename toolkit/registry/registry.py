"""The model registry: versions of named pipelines, promotion, rollback and an audit history.

One set of rules (``_registry_rules``) over two seams: an index (``_registry_index``: SQLite in
the registry directory, or PostgreSQL for a team) and a store (``_registry_store``: the
registry directory, or an OCI repository). ``Registry(DIR)`` is the local, embedded registry;
``Registry("postgresql://USER@HOST:PORT/DB", store="oci://HOST[:PORT]/REPO")`` is a team's.

Layout of a local registry root (default ``./models``)::

    registry.db                       SQLite index + append-only history (WAL)
    <name>/<version>/<stem>.joblib    each version is the three files of an artifact,
    <name>/<version>/<stem>.card.json   byte-identical to what was registered, read-only
    <name>/<version>/<stem>.card.md
    .tmp/                             copies in flight; anything here is ignored

Crash ordering for ``add``, both backends: the files are complete in the store before the
index row that points at them commits (``_registry_dirstore``, ``_registry_ocistore``), so a
kill leaves files no row points at, never a row without its files. Promote and rollback only
change rows, in one transaction each.

The registry never deletes or replaces a version directory unless its own index says so: only
a marked directory without a row is its own leftover. An unmarked directory without a row is a
registered version whose row is gone, so an index that is missing or empty while such
directories exist is refused (exit 4) until ``recover`` rebuilds it from the cards.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import env
from toolkit.errors import IntegrityError, ReadOnlyRegistry, RegistryError, ToolkitError, UsageError
from toolkit.identifiers import current_user, parse_version, validate_name
from toolkit.policy import validate_policy
from toolkit.registry.index import HistoryRow, VersionRow, is_postgres_url
from toolkit.registry.index.sqlite import SqliteIndex
from toolkit.registry.rules import Rules
from toolkit.registry.store import TagState
from toolkit.registry.store.directory import DirStore
from toolkit.signing import TrustedKeys

if TYPE_CHECKING:
    from toolkit.card import ModelCard
    from toolkit.registry.migrate import Migration
    from toolkit.registry.store.oci import OciStore

__all__ = [
    "DEFAULT_ROOT",
    "ENV_VAR",
    "STORE_ENV_VAR",
    "Audit",
    "Change",
    "Entry",
    "Event",
    "NameSummary",
    "Recovery",
    "Registry",
    "parse_metric",
    "parse_version",
    "resolve_root",
    "resolve_store",
    "validate_name",
]

DEFAULT_ROOT = Path("models")
ENV_VAR = env.REGISTRY
STORE_ENV_VAR = env.STORE
# Promotion usually happens on a workstation or CI host, not in the training image, so the
# default asks what matters for unpickling (Python minor + the pickle's own libraries).
DEFAULT_POLICY = "compatible"

_METRIC_RE = re.compile(r"(?:([a-z][a-z0-9_]*)\.)?([a-z][a-z0-9_]*)")


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """One registered version."""

    name: str
    version: str
    status: str
    path: Path | None  # the registered .joblib in a directory registry (cards beside it); None if remote
    location: str  # where the model is: that path, or the pinned OCI reference
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
            "path": None if self.path is None else str(self.path),
            "location": self.location,
            "sha256": self.sha256,
            "size": self.size,
            "metrics": self.metrics,
            "data_sha256": self.data_sha256,
            "registered_at": self.registered_at,
            "registered_by": self.registered_by,
        }


# One line of a name's history: the index's own record (its id is None only before it is written).
Event = HistoryRow


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
    warning: str | None = None  # done, but a team store's tag could not follow (the index is the truth)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "previous": self.previous,
            "changed": self.changed,
            "detail": self.detail,
            "warning": self.warning,
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

    def lines(self) -> list[str]:
        """What to tell the user, a line each."""
        n = len(self.recovered)
        return [
            f"rebuilt the index of {self.root} from the cards on disk: {n} version{'s' if n != 1 else ''} "
            "back as staging. The old history (statuses, promotions, rollbacks) is gone: promote the "
            "production version again.",
            *(f"not recovered (left in place): {path}: {error}" for path, error in self.failed),
        ]

    def error(self) -> IntegrityError | None:
        """The integrity error to end with, when a version directory failed its checks."""
        if not self.failed:
            return None
        return IntegrityError(
            f"{len(self.failed)} version director{'y' if len(self.failed) == 1 else 'ies'} failed verification "
            "and were left out of the index (nothing was deleted)"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Audit:
    """What ``recover`` found in a team registry: each row's artifact pulled and verified, tags re-pointed.

    A team index is never lost with a directory, so nothing is rebuilt: every row is
    checked against its artifact in the store, and tags that drifted from the index go back.
    """

    location: str
    store: str
    checked: int
    failed: tuple[tuple[str, str, str], ...]  # (name, version, why)
    retagged: tuple[str, ...]  # "tag T was at X, now at Y"

    def to_dict(self) -> dict[str, Any]:
        return {
            "registry": self.location,
            "store": self.store,
            "checked": self.checked,
            "failed": [{"name": n, "version": v, "error": e} for n, v, e in self.failed],
            "retagged": list(self.retagged),
        }

    def lines(self) -> list[str]:
        """What to tell the user, a line each."""
        return [
            f"checked {self.checked} version{'s' if self.checked != 1 else ''} of {self.location}: "
            f"{self.checked - len(self.failed)} pulled from {self.store} and verified",
            *(f"re-pointed: {line}" for line in self.retagged),
            *(f"FAILED {name} {version}: {error}" for name, version, error in self.failed),
        ]

    def error(self) -> IntegrityError | None:
        """The integrity error to end with, when a registered version failed in the store."""
        if not self.failed:
            return None
        return IntegrityError(f"{len(self.failed)} registered version(s) failed verification in the store")


def resolve_root(cli_value: Path | str | None) -> Path | str:
    """The registry: ``--registry``, else ``$TOOLKIT_REGISTRY``, else toolkit.toml's, else ``./models``.

    A ``postgresql://`` connection string stays a string (a team registry); anything else is a directory.
    """
    value = str(cli_value) if cli_value is not None and str(cli_value) != "" else os.environ.get(ENV_VAR, "")
    if not value:  # a project's toolkit.toml, found by walking up (toolkit.project)
        from toolkit import project

        value = project.current().registry or ""
    if is_postgres_url(value):
        return value
    if value.startswith(("postgresql:/", "postgres:/")):
        # A URL that went through a Path (a command whose --registry is a directory): never a directory.
        raise UsageError("this command registers into a directory; add to a team registry with `toolkit registry add`")
    return Path(value).expanduser() if value else DEFAULT_ROOT


def resolve_store(cli_value: str | None) -> str | None:
    """The team store: ``--store``, else ``$TOOLKIT_STORE``, else None."""
    if cli_value:
        return cli_value
    return os.environ.get(STORE_ENV_VAR) or None


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
    """A registry: a directory, or a team's PostgreSQL index with an OCI store. Connects on first use."""

    def __init__(self, root: Path | str, *, store: str | None = None, trusted_keys: TrustedKeys = None) -> None:
        text = str(root)
        # With trusted keys (these or $TOOLKIT_TRUSTED_KEYS) add, promote, rollback and compare require signatures.
        self.trusted_keys = trusted_keys
        self._oci: OciStore | None = None
        self.root: Path | None
        if is_postgres_url(text):
            from toolkit.registry.index.postgres import PgIndex
            from toolkit.registry.index.postgres import describe as describe_postgres
            from toolkit.registry.store.oci import OciStore, is_oci_url

            store = resolve_store(store)
            if store is None or not is_oci_url(store):
                raise UsageError(
                    f"a team registry ({describe_postgres(text)}) keeps its files in an OCI repository: "
                    f"give --store oci://HOST[:PORT]/REPO (or ${STORE_ENV_VAR})"
                )
            self._oci = OciStore(store)
            self.root = None
            self.location = describe_postgres(text)
            self._rules = Rules(PgIndex(text), self._oci, trusted_keys=trusted_keys)
        else:
            if store is not None:
                raise UsageError(
                    "--store is for a team registry (--registry postgresql://...); a directory stores its own files"
                )
            self.root = Path(root)
            if os.path.exists(self.root) and not os.path.isdir(self.root):
                # /dev/zero, a FIFO, a file: never opened as an index (an empty answer would be a lie).
                raise RegistryError(f"{self.root}: not a registry folder (it is a file or a device); refused")
            self.location = str(self.root)
            self._dir = DirStore(self.root)
            self._rules = Rules(
                SqliteIndex(self.root, self._dir.refuse_lost_index), self._dir, trusted_keys=trusted_keys
            )

    @property
    def is_team(self) -> bool:
        return self._oci is not None

    @property
    def store_location(self) -> str:
        return self._rules.store.location

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the index connection (the object can be used again afterwards)."""
        self._rules.index.close()
        if self._oci is not None:
            self._oci.close()

    # -- writing ----------------------------------------------------------------------------

    def add(self, artifact_path: Path | str, *, name: str | None = None, reason: str | None = None) -> Entry:
        """Copy an artifact's three files in as ``staging``, checking the checksum on the way in.

        Raises:
            IntegrityError: a file is missing or unreadable, the card is invalid, or the bytes
                do not hash to the card's sha256.
            RegistryError: invalid name or version, or NAME+VERSION is already registered.
            RemoteError: the team index or store cannot be reached.
        """
        from toolkit.artifact import artifact_paths

        if name is not None:
            validate_name(name)
        src = artifact_paths(Path(artifact_path))
        try:
            row = self._rules.add(src, name=name, reason=reason, user=current_user())
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and not self.is_team:
                raise ReadOnlyRegistry(
                    f"the registry {self.root} is read-only here ({e.strerror}); reading works, writing does not"
                ) from e
            raise RegistryError(f"cannot write into the registry {self.location}: {e}") from e
        return self._entry(row)

    def gate_in_image(self, gate: Callable[[Path, str], str | None] | None) -> None:
        """Where this runtime does not match a version's card, promote and rollback run the gate
        through ``gate`` (model path, policy -> the image it passed in, or None) before refusing."""
        self._rules.image_gate = gate

    def promote(
        self,
        name: str,
        version: str | None = None,
        *,
        best_by: str | None = None,
        policy: str = DEFAULT_POLICY,
        reason: str | None = None,
        certifications: str | os.PathLike[str] | None = None,
    ) -> Change:
        """Make VERSION (or the best by a card metric) production; the old production is archived.

        ``certifications``: the folder ``--policy certified`` honours; None: $TOOLKIT_CERTIFICATIONS,
        else (a local registry) ``<registry>/.certifications`` when it exists
        (``toolkit.certification.locate``). The change's detail names the certification used.

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
        if version is not None:
            parse_version(version)
        metric = parse_metric(best_by) if best_by is not None else None
        s = self._rules.promote(
            name,
            version,
            best_by=metric,
            policy=policy,
            reason=reason,
            user=current_user(),
            certifications=self._certifications(certifications),
        )
        return Change(
            name=s.name, version=s.version, previous=s.previous, changed=s.changed, detail=s.detail, warning=s.warning
        )

    def rollback(
        self,
        name: str,
        *,
        policy: str = DEFAULT_POLICY,
        reason: str | None = None,
        certifications: str | os.PathLike[str] | None = None,
    ) -> Change:
        """Put back the previous production version; the current one is archived and marked rolled back.
        ``certifications``: as ``promote``'s (the target passes the same gate).

        Raises:
            RegistryError: unknown name, no production, or no earlier production to go back to.
            IntegrityError: the target's files fail their checksum (production is left as it was).
            EnvironmentMismatch: the target fails the check under ``policy`` (production unchanged).
        """
        validate_name(name)
        validate_policy(policy)
        s = self._rules.rollback(
            name, policy=policy, reason=reason, user=current_user(), certifications=self._certifications(certifications)
        )
        return Change(
            name=s.name, version=s.version, previous=s.previous, changed=s.changed, detail=s.detail, warning=s.warning
        )

    def _certifications(self, given: str | os.PathLike[str] | None) -> Path | None:
        """Where promote and rollback read certifications (``toolkit.certification.locate``)."""
        from toolkit.certification import locate

        return locate(given, registry=self.root)

    def recover(self) -> Recovery | Audit:
        """A directory: rebuild a missing or empty index from the cards on disk (``Recovery``).
        A team registry: pull and verify every row's artifact and re-point drifted tags (``Audit``).

        Raises:
            RegistryError: the directory's index still lists versions, or it is busy.
            ReadOnlyRegistry: the registry cannot be written.
        """
        if self._oci is None:
            self.close()
            assert self.root is not None
            from toolkit.registry.recover import recover_directory

            recovered, failed = recover_directory(self.root, current_user())
            return Recovery(root=self.root, recovered=recovered, failed=failed)
        return self._audit(self._oci)

    def migrate_from(self, source: Path | str) -> Migration:
        """Move a local registry (its versions, stages, history and files) into this team registry.

        Raises:
            UsageError: this is not a team registry, or SOURCE is not a registry directory.
            RegistryError: a version on both sides with different bytes, or a name with
                another history here (nothing written).
        """
        from toolkit.registry.migrate import migrate

        if not self.is_team:
            raise UsageError(f"migrate moves a directory into a team registry; {self.location} is a directory")
        src = Path(source)
        if is_postgres_url(str(source)) or not src.is_dir():
            raise UsageError(f"--from must be a local registry directory, got {str(source)[:120]!r}")
        with Registry(src) as local:
            if not local._rules.index.exists():
                raise RegistryError(f"{src} holds no registry index ({src / 'registry.db'}); nothing to migrate")
            return migrate(local._rules, self._rules)

    # -- reading ----------------------------------------------------------------------------

    def record_served(self, name: str, version: str, *, where: str, reason: str | None = None) -> Event:
        """Append a ``served`` event: a server at ``where`` (host:port, process) serves NAME VERSION now.

        It answers "what was serving at time T"; it changes no status.
        Raises: RegistryError (unknown name or version, a read-only index), RemoteError.
        """
        validate_name(name)
        parse_version(version)
        return self._rules.served(name, version, where=where, reason=reason, user=current_user())

    @contextmanager
    def local_copy(self, entry: Entry) -> Iterator[Path]:
        """The registered ``.joblib`` of ENTRY on this machine: its own path in a directory, a
        private pull (every blob and the card checked) from a team registry's store, removed on exit."""
        with self._rules.store.local(self._rules.get(entry.name, entry.version)) as path:
            yield path

    def has(self, name: str, version: str) -> bool:
        """Whether NAME VERSION is registered.

        Raises:
            RegistryError: invalid name or version.
        """
        validate_name(name)
        parse_version(version)
        return self._rules.has(name, version)

    def require_unregistered(self, name: str, version: str) -> None:
        """Refuse NAME VERSION if it is registered: callers check before minutes of training.

        Raises:
            RegistryError: invalid name or version, or NAME VERSION is already registered.
        """
        if self.has(name, version):
            raise RegistryError(
                f"{name} {version} is already registered in {self.location}; "
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
        return self._entry(self._rules.get(name, version))

    def read_card(self, entry: Entry) -> ModelCard:
        """The card of a registered version (from the store; for OCI, the card blob only).

        Raises:
            IntegrityError, CardError: the card is missing, unreadable or invalid.
            RemoteError: the store cannot be reached.
        """
        from toolkit.artifact import read_card

        if entry.path is not None:
            return read_card(entry.path)
        assert self._oci is not None
        return self._oci.card(self._rules.get(entry.name, entry.version))

    def disagreements(self, entry: Entry) -> list[TagState]:
        """Store tags about ENTRY (its own, its name's production tag) that disagree with the index."""
        return self._rules.disagreements(self._rules.get(entry.name, entry.version))

    def list_names(self) -> list[NameSummary]:
        """Every name with its version count, production version and latest version."""
        return [
            NameSummary(name=n.name, versions=n.versions, production=n.production, latest=n.latest)
            for n in self._rules.names()
        ]

    def list_versions(self, name: str, *, limit: int | None = None) -> list[Entry]:
        """NAME's versions, newest (by semantic version) first; ``limit`` keeps the first N.

        Raises:
            RegistryError: invalid or unknown name.
        """
        validate_name(name)
        return [self._entry(r) for r in self._rules.versions(name, limit=limit)]

    def count(self, name: str) -> int:
        """How many versions NAME has (0 if none)."""
        validate_name(name)
        return self._rules.count(name)

    def history(self, name: str) -> list[Event]:
        """Every event for NAME, oldest first.

        Raises:
            RegistryError: invalid or unknown name.
        """
        validate_name(name)
        return self._rules.history(name)

    @contextmanager
    def local_versions(self, name: str, *versions: str) -> Iterator[list[tuple[Path, ModelCard]]]:
        """Registered versions as local files with their cards, each card checked against its row.

        The paths hold for the ``with`` block only (a team store fetches into a temporary folder).
        Nothing is unpickled here: loading and scoring are the caller's (``toolkit.workflows.compare``).
        Raises: RegistryError (unknown name or version), IntegrityError (a card that is not the
        one registered, or unreadable), RemoteError.
        """
        from toolkit.artifact import read_card

        validate_name(name)
        rows = [self._rules.get(name, _checked(v)) for v in versions]
        with ExitStack() as stack:
            local = []
            for row in rows:
                path = stack.enter_context(self._rules.store.local(row))
                card = read_card(path)
                if card.artifact.sha256 != row.sha256:
                    raise IntegrityError(
                        f"{self._rules.store.describe(row)}: card sha256 differs from the one registered"
                    )
                local.append((path, card))
            yield local

    # -- internals ----------------------------------------------------------------------------

    def _entry(self, row: VersionRow) -> Entry:
        path = None if self.root is None else self.root / row.name / row.version / row.model_file
        return Entry(
            name=row.name,
            version=row.version,
            status=row.status,
            path=path,
            location=self._rules.store.describe(row),
            sha256=row.sha256,
            size=row.size,
            metrics=row.metrics,
            data_sha256=row.data_sha256,
            registered_at=row.registered_at,
            registered_by=row.registered_by,
            rolled_back=row.rolled_back,
        )

    def _audit(self, store: OciStore) -> Audit:
        checked = 0
        failed: list[tuple[str, str, str]] = []
        retagged: list[str] = []
        for summary in self._rules.names():
            rows = self._rules.versions(summary.name)
            for row in rows:
                checked += 1
                try:
                    self._rules.verify_files(row)
                except ToolkitError as e:
                    failed.append((row.name, row.version, str(e)))
            production = next((r for r in rows if r.status == "production"), None)
            retagged += [str(t) for t in store.repair_tags(rows, production)]
        return Audit(
            location=self.location,
            store=store.location,
            checked=checked,
            failed=tuple(failed),
            retagged=tuple(retagged),
        )


def _checked(version: str) -> str:
    parse_version(version)
    return version
