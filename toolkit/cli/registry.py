"""``toolkit registry ...``: add, list, show, promote, rollback, compare, check, history, recover, migrate.

Every string that came from a card, the index or the user is printed through ``safe``/``plain``
(cli._common): never as rich markup, never with its control characters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toolkit.cli._common import ToolkitGroup, app, out, plain, print_json, safe
from toolkit.cli._options import (
    AnyRegistryOpt,
    ArtifactArg,
    CertificationsOpt,
    JsonOpt,
    Policy,
    StoreOpt,
    TrustedKeyOpt,
)
from toolkit.cli._output import echo, echo_err, json_error
from toolkit.errors import IntegrityError, ToolkitError

if TYPE_CHECKING:
    from rich.table import Table

    from toolkit.errors import Difference
    from toolkit.registry.registry import Entry, Registry

__all__ = ["registry_app"]

registry_app = typer.Typer(cls=ToolkitGroup, no_args_is_help=True, help="Versions, promotion, rollback, history.")
app.add_typer(registry_app, name="registry")


ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why; recorded in the history.")]
NameArg = Annotated[str, typer.Argument(help="Model name.")]
PolicyOpt = Annotated[
    Policy,
    typer.Option(
        help="Environment check before the switch: compatible (what the pickle needs) or strict (everything)."
    ),
]

# Metrics shown in the version table, in this order, when the cards have them.
_TABLE_METRICS = ("roc_auc", "accuracy", "f1")
_DEFAULT_LIMIT = 20


@registry_app.command("add")
def add(
    artifact: ArtifactArg,
    name: Annotated[str | None, typer.Option(help="Register under this name instead of the card's.")] = None,
    reason: ReasonOpt = None,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    trusted_key: TrustedKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy an artifact in as staging, verifying its checksum on the way in."""
    from toolkit.registry.check import same_bytes

    with _opened(registry, as_json, trusted_key, store=store) as reg:
        entry = reg.add(artifact, name=name, reason=reason)
        twins = same_bytes(reg, entry)
        if as_json:
            print_json({**entry.to_dict(), "same_bytes_as": twins})
        else:
            echo(plain(f"registered {entry.name} {entry.version} as {entry.status}: {entry.location}"))
        if twins and not as_json:
            echo_err(
                plain(
                    f"note: the same bytes (sha256 {entry.sha256[:12]}…) are already registered as "
                    f"{entry.name} {', '.join(twins)}; registered anyway"
                )
            )


@registry_app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="List this name's versions; without it, every name.")] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help=f"Newest N versions (table default {_DEFAULT_LIMIT}, JSON default all; 0 = all).", show_default=False
        ),
    ] = None,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Names with their production and latest version, or one name's versions (newest first)."""
    with _opened(registry, as_json, store=store) as reg:
        if name is None:
            names = reg.list_names()
            if as_json:
                print_json([n.to_dict() for n in names])
                return
            if not names:
                echo(plain(f"no models registered in {reg.location}"))
                return
            table = _table("name", "versions", "production", "latest", title=f"registry {reg.location}")
            for n in names:
                _add_row(table, n.name, str(n.versions), n.production or "-", n.latest)
            out.print(table)
            return
        wanted = limit if limit is not None else (None if as_json else _DEFAULT_LIMIT)
        entries = reg.list_versions(name, limit=None if wanted == 0 else wanted)
        if as_json:
            print_json([e.to_dict() for e in entries])
            return
        total = reg.count(name)
        keys = [k for k in _TABLE_METRICS if any(k in e.metrics.get("test", {}) for e in entries)]
        table = _table(title=f"{name} ({total} version{'s' if total != 1 else ''})")
        for column in ("version", "status", *[f"test {k}" for k in keys], "registered (UTC)", "by"):
            table.add_column(safe(column), no_wrap=column != "by")
        for e in entries:
            test = e.metrics.get("test", {})
            _add_row(
                table,
                e.version,
                _status(e),
                *[_num(test.get(k)) for k in keys],
                _short_time(e.registered_at),
                e.registered_by,
            )
        out.print(table)
        if len(entries) < total:
            echo(plain(f"{len(entries)} of {total} shown; --limit 0 for all"))


@registry_app.command("show")
def show(
    name: NameArg,
    version: Annotated[str | None, typer.Argument(help="Default: the production version, else the latest.")] = None,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One version: status, files, checksum, metrics and what its card says (and any store tag that disagrees)."""
    with _opened(registry, as_json, store=store) as reg:
        entry = reg.get(name, version)
        card, card_error = None, None
        try:
            card = reg.read_card(entry)
        except ToolkitError as e:  # show what the index knows even when the files are broken
            card_error = str(e)
        # Tags are pointers anyone can move; the index is the truth, and says so when they differ.
        tags = [str(t) for t in reg.disagreements(entry)]
        if as_json:
            print_json(
                {
                    **entry.to_dict(),
                    "card": card.to_dict() if card else None,
                    "card_error": card_error,
                    "tag_disagreements": tags,
                }
            )
            return
        table = _table("field", "value", show_header=False, title=f"{entry.name} {entry.version}")
        _add_row(table, "status", _status(entry))
        _add_row(table, "path" if entry.path is not None else "location", entry.location)
        _add_row(table, "sha256", f"{entry.sha256} ({entry.size} bytes)")
        _add_row(table, "registered", f"{entry.registered_at} by {entry.registered_by}")
        if card is not None:
            _add_row(table, "algorithm", card.algorithm)
            _add_row(table, "created", f"{card.created_at} by {card.author}")
            _add_row(
                table,
                "data",
                f"{card.data.source or '-'} (sha256 {(card.data.sha256 or '-')[:12]}, "
                f"train {card.data.n_train}, test {card.data.n_test}, "
                f"split {None if card.data.split is None else card.data.split.to_dict()})",
            )
            env = card.environment
            _add_row(
                table,
                "trained in",
                f"Python {env.python_version}, {env.os} {env.machine}, image {env.base_image or '(none)'}",
            )
            if card.intended_use:
                _add_row(table, "intended use", card.intended_use)
        else:
            _add_row(table, "card", f"unreadable: {card_error}")
        for section, values in sorted(entry.metrics.items()):
            _add_row(table, f"metrics {section}", ", ".join(f"{k} {_num(v)}" for k, v in sorted(values.items())))
        for tag in tags:
            _add_row(table, "warning", f"{tag} (the index is the truth; `registry recover` re-points it)")
        out.print(table)


@registry_app.command("promote")
def promote(
    name: NameArg,
    version: Annotated[str | None, typer.Argument(help="The version to make production.")] = None,
    best_by: Annotated[
        str | None,
        typer.Option(
            "--best-by",
            metavar="METRIC",
            help="Pick the version with the best card metric (the highest; the lowest for rmse, mae): "
            "roc_auc (= test.roc_auc), cv.accuracy, rmse, ...",
        ),
    ] = None,
    policy: PolicyOpt = Policy.compatible,
    reason: ReasonOpt = None,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    trusted_key: TrustedKeyOpt = None,
    certifications: CertificationsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a version production (checksum and environment checked first); the old one is archived."""
    from toolkit.docker.jobs import gate_in_model_image

    with _opened(registry, as_json, trusted_key, store=store) as reg:
        # A host without the model's packages asks the model's own image (card or toolkit.toml).
        reg.gate_in_image(gate_in_model_image)
        change = reg.promote(
            name, version, best_by=best_by, policy=policy.value, reason=reason, certifications=certifications
        )
        if change.warning:
            echo_err(plain(f"warning: {change.warning}"))
        if as_json:
            print_json(change.to_dict())
        elif not change.changed:
            echo(plain(f"{name} {change.version} already is production; nothing changed"))
        else:
            was = f" (was {change.previous}, now archived)" if change.previous else ""
            echo(plain(f"{name}: production -> {change.version}{was}; {change.detail}"))


@registry_app.command("rollback")
def rollback(
    name: NameArg,
    policy: PolicyOpt = Policy.compatible,
    reason: ReasonOpt = None,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    trusted_key: TrustedKeyOpt = None,
    certifications: CertificationsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Production goes back to the previous production version; the current one is marked rolled back."""
    from toolkit.docker.jobs import gate_in_model_image

    with _opened(registry, as_json, trusted_key, store=store) as reg:
        reg.gate_in_image(gate_in_model_image)  # as promote: the model's own image when this host differs
        change = reg.rollback(name, policy=policy.value, reason=reason, certifications=certifications)
        if change.warning:
            echo_err(plain(f"warning: {change.warning}"))
        if as_json:
            print_json(change.to_dict())
        else:
            echo(plain(f"{name}: production -> {change.version} (rolled back from {change.previous})"))


@registry_app.command("compare")
def compare(
    name: NameArg,
    v1: Annotated[str, typer.Argument(help="First version.")],
    v2: Annotated[str, typer.Argument(help="Second version.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="Score on all of this dataset (builtin:NAME or a file) instead of the cards' test split."),
    ] = None,
    target: Annotated[str | None, typer.Option(help="Target column of --dataset (default: the card's).")] = None,
    policy: PolicyOpt = Policy.compatible,
    resamples: Annotated[
        int, typer.Option(min=0, help="Paired bootstrap resamples for each difference's 95% interval (0: none).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap (the same seed gives the same interval).")] = 0,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    trusted_key: TrustedKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-score two versions on the same held-out data; each difference with a paired bootstrap 95% interval.

    When this host cannot load them, they are re-scored in the image they were trained in."""
    with _opened(registry, as_json, trusted_key, store=store) as reg:
        from toolkit.workflows.compare import compare_versions

        result = compare_versions(
            reg,
            name,
            v1,
            v2,
            dataset=dataset,
            target=target,
            policy=policy.value,
            resamples=resamples,
            seed=seed,
            in_image=_compare_in_image,
            # stderr, so that stdout is what the host's own compare prints, in text and JSON alike
            on_image=lambda image: echo_err(plain(f"compared in image {image} (this host cannot load the versions)")),
        )
        if as_json:
            print_json(result.to_dict())
            return
        d = result.data
        table = _table(
            "metric",
            v1,
            v2,
            f"{v2} - {v1}",
            f"{round(result.bootstrap['level'] * 100)}% interval",
            "better",
            title=f"{name}: {d['how']} of {d['source']} ({d['rows']} rows, sha256 {d['sha256'][:12]})",
        )
        s1, s2 = result.scores[v1], result.scores[v2]
        for k in sorted(set(s1) | set(s2)):
            diff = result.difference.get(k)
            _add_row(
                table,
                k,
                _num(s1.get(k)),
                _num(s2.get(k)),
                "-" if diff is None else f"{diff:+.4f}",
                _interval(result.interval.get(k)),
                result.better.get(k, "-"),
            )
        out.print(table)
        b = result.bootstrap
        skipped = f", {b['skipped']} skipped (a metric undefined on the drawn rows)" if b["skipped"] else ""
        echo(
            plain(
                f"intervals: paired bootstrap, {b['resamples']} resamples of the same {d['rows']} rows for both "
                f"versions (seed {b['seed']}){skipped}; an interval that excludes 0 is a difference these rows support"
            )
        )


def _compare_in_image(image: str, root: Path, args: Sequence[str], inputs: Sequence[Path]) -> dict[str, Any]:
    from toolkit.docker.jobs import compare_in_container

    def to_stderr(stream: str, chunk: bytes) -> None:
        del stream  # the answer (stdout) never reaches here
        echo_err(plain(chunk.decode("utf-8", errors="replace").rstrip("\n")))

    return compare_in_container(image, root, args, inputs=inputs, on_output=to_stderr)


@registry_app.command("check")
def check(
    name: Annotated[str | None, typer.Argument(help="Check this name's versions; without it, every version.")] = None,
    policy: Annotated[
        Policy,
        typer.Option(help="compatible: would it load (what the pickle needs); strict: everything equal."),
    ] = Policy.compatible,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    trusted_key: TrustedKeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which registered versions would load in this runtime, why not, and what to do (never unpickles).

    Exit 0 when all would load, 1 when any would not, 3 when any fails its checksum.
    """
    from toolkit.registry.check import check_registry

    with _opened(registry, as_json, trusted_key, store=store) as reg:
        result = check_registry(reg, name, policy=policy.value, trusted_keys=trusted_key)
    if as_json:
        print_json(result.to_dict())
        raise typer.Exit(result.exit_code)
    if not result.versions:
        echo(plain(f"no models registered in {result.root}"))
    for v in result.versions:
        head = f"{v.name} {v.version} ({v.status})"
        if v.report is None:
            echo(plain(f"{head}: FAILS INTEGRITY: {v.error}"))
        elif v.report.ok:
            echo(plain(f"{head}: loads here"))
        else:
            echo(plain(f"{head}: would not load here: {_summary(v.report.differences)}"))
            for remedy in v.report.remedies:
                echo(plain(f"    what to do: {remedy}"))
    n = len(result.versions)
    echo(
        plain(
            f"{n} version{'s' if n != 1 else ''} checked under policy {result.policy}: {result.count('loads')} "
            f"load{'s' if result.count('loads') == 1 else ''}, {result.count('mismatch')} would not, "
            f"{result.count('integrity')} fail{'s' if result.count('integrity') == 1 else ''} integrity"
        )
    )
    raise typer.Exit(result.exit_code)


@registry_app.command("history")
def history(name: NameArg, registry: AnyRegistryOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Every register, promote, archive and rollback of NAME, oldest first (append-only)."""
    with _opened(registry, as_json, store=store) as reg:
        events = reg.history(name)
        if as_json:
            print_json([e.to_dict() for e in events])
            return
        table = _table(title=f"{name} history")
        for column in ("time (UTC)", "user", "version", "event", "from", "to", "reason", "detail"):
            # Short columns never wrap; free text folds onto more lines rather than vanish into "…".
            table.add_column(
                safe(column), no_wrap=column not in ("reason", "detail"), overflow="fold", min_width=len(column)
            )
        for e in events:
            _add_row(
                table,
                _short_time(e.at),
                e.user,
                e.version,
                e.event,
                e.from_status or "-",
                e.to_status,
                e.reason or "",
                e.detail or "",
            )
        out.print(table)


@registry_app.command("recover")
def recover(registry: AnyRegistryOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """A directory: rebuild a missing or empty index from the cards on disk (every version back as staging).
    A team registry: pull and verify every version's artifact, and re-point store tags that drifted.

    In a directory the old statuses and history are not on disk and are gone; versions whose files
    fail their checksum are reported, left in place and left out (exit 3).
    """
    with _opened(registry, as_json, store=store) as reg:
        result = reg.recover()
        if as_json:
            # One object either way; with failures it is the integrity exit, without a second object.
            print_json({"ok": not result.failed, **result.to_dict()})
            if result.failed:
                raise typer.Exit(IntegrityError.exit_code)
            return
        for line in result.lines():
            echo(plain(line))
        failure = result.error()
        if failure is not None:
            raise failure


@registry_app.command("migrate")
def migrate(
    source: Annotated[Path, typer.Option("--from", help="The local registry directory to move.", show_default=False)],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            metavar="postgresql://USER@HOST:PORT/DB",
            help="The team registry (default: $TOOLKIT_REGISTRY).",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move a local registry (versions, stages, history, files) into a team registry; safe to run twice."""
    with _opened(to, as_json, store=store) as reg:
        result = reg.migrate_from(source)
        if as_json:
            print_json(result.to_dict())
            return
        echo(
            plain(
                f"migrated {len(result.migrated)} name(s) ({result.versions} versions, {result.events} history events) "
                f"from {result.source} into {result.target}"
                + (f"; already there, unchanged: {', '.join(result.unchanged)}" if result.unchanged else "")
            )
        )


@contextmanager
def _opened(
    root: str | None, as_json: bool, trusted_keys: list[Path] | None = None, *, store: str | None = None
) -> Iterator[Registry]:
    from toolkit.registry.registry import Registry, resolve_root

    try:
        reg = Registry(resolve_root(root), store=store, trusted_keys=trusted_keys)
    except ToolkitError as e:
        if as_json:
            json_error(e)
        raise
    try:
        yield reg
    except ToolkitError as e:
        if as_json:  # scripts reading stdout still get one object; the exit code is the error's
            json_error(e)
        raise
    finally:
        reg.close()


def _summary(differences: tuple[Difference, ...], shown: int = 3) -> str:
    # One line per version: the first few differences, then how many more (--json has them all).
    parts = [f"{d.name} {d.expected or '(absent)'} in the card, {d.actual or '(absent)'} here" for d in differences]
    more = len(parts) - shown
    n = len(parts)
    return (
        f"{n} difference{'s' if n != 1 else ''}: "
        + "; ".join(parts[:shown])
        + (f"; and {more} more" if more > 0 else "")
    )


def _status(entry: Entry) -> str:
    return f"{entry.status} (rolled back)" if entry.rolled_back else entry.status


def _table(*columns: str, **kwargs: Any) -> Table:
    # rich is imported only when a table is printed (the CLI's start-up stays light).
    from rich.table import Column, Table

    if "title" in kwargs:
        kwargs["title"] = safe(kwargs["title"])
    return Table(*[Column(header=safe(c)) for c in columns], **kwargs)


def _add_row(table: Table, *cells: str) -> None:
    # Cells are card fields, reasons, users and paths: text, never markup or terminal codes.
    table.add_row(*[safe(c) for c in cells])


def _short_time(iso: str) -> str:
    return iso[:19].replace("T", " ")


def _interval(bounds: tuple[float, float] | None) -> str:
    return "-" if bounds is None else f"[{bounds[0]:+.4f}, {bounds[1]:+.4f}]"


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"
