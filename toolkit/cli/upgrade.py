"""``toolkit upgrade-check`` and ``toolkit retrain``: when the gate says no."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.cli._common import app, artifact_arg, err, out, print_json
from toolkit.cli._options import ArtifactRefArg, JsonOpt, RegistryOpt, TrustedKeyOpt
from toolkit.cli._output import echo, echo_err

if TYPE_CHECKING:
    from toolkit.training.retrain import RetrainResult
    from toolkit.upgrade.verdict import UpgradeReport

__all__ = ["retrain", "upgrade_check"]

_VERDICT_STYLE = {"safe": "green", "drift": "yellow", "broken": "red"}


@app.command("upgrade-check")
def upgrade_check(
    lock: Annotated[
        Path | None,
        typer.Option("--lock", help="The candidate lock (e.g. a Dependabot pull request's requirements.lock)."),
    ] = None,
    registry: RegistryOpt = None,
    name: Annotated[str | None, typer.Option(help="Only this model name (default: every name).")] = None,
    stage: Annotated[str, typer.Option(help="Which versions: production, staging or all.")] = "production",
    retrain: Annotated[
        bool, typer.Option("--retrain", help="Also retrain each model from its card's recipe in the candidate image.")
    ] = False,
    as_json: JsonOpt = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write a JUnit XML report: one test case per model.")
    ] = None,
    base_image: Annotated[
        str | None,
        typer.Option(help="Base of the candidate image, name@sha256:<digest> (default as `image build`)."),
    ] = None,
    context: Annotated[
        Path | None, typer.Option(hidden=True, help="The project folder (default: toolkit.toml's, else this one).")
    ] = None,
    wheelhouse: Annotated[
        Path | None, typer.Option(help="Where the candidate's wheels are downloaded (default: a shared cache).")
    ] = None,
    trusted_key: TrustedKeyOpt = None,
    certify: Annotated[
        Path | None,
        typer.Option(
            "--certify",
            help="Write a certification into this folder for each model safe under the candidate lock "
            "(check-env --policy certified --certifications honours them).",
        ),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="With --certify: sign each certification with this private key.")
    ] = None,
    job: Annotated[
        Path | None, typer.Option("--job", hidden=True, help="Inside the candidate image: the job folder.")
    ] = None,
) -> None:
    """Is a candidate lock safe for the models we serve? One verdict per model: safe, drift or broken.

    Builds (or reuses) the candidate image: the same base, the candidate lock, this toolkit;
    then checks every selected registry version inside it in one container run. Exit 0 only
    when every model is safe, 1 otherwise, 5 on a Docker failure.
    """
    if job is not None:  # the container's side of the same command
        from toolkit.upgrade.check import run_job

        run_job(job, progress=lambda line: print(f"upgrade-check: {line}", file=sys.stderr, flush=True))
        return
    from toolkit.docker import resolve_base_image
    from toolkit.errors import UsageError
    from toolkit.registry.registry import resolve_root
    from toolkit.upgrade.check import STAGES
    from toolkit.upgrade.check import upgrade_check as run

    if lock is None:
        raise UsageError("--lock CANDIDATE.lock is required")
    if stage not in STAGES:
        raise UsageError(f"--stage: unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if key is not None:
        if certify is None:
            raise UsageError("--key signs certifications: give --certify DIR with it")
        from toolkit.signing import load_signing_key

        load_signing_key(key)  # a bad key fails now, not after the candidate image is built
    from toolkit.docker.system import resolve as resolve_system_packages
    from toolkit.project import current

    settings = current()
    context = context if context is not None else settings.root
    base = resolve_base_image(base_image, base_file=context / ".cache" / "base-image")
    # The project's Debian packages go into the candidate image too: its models need them to load.
    system_packages = resolve_system_packages(settings.system_packages, release=None)
    root = resolve_root(registry)
    if not isinstance(root, Path):
        raise UsageError(f"upgrade-check needs a registry directory (mounted into the candidate image), not {root}")
    with _progress() as emit:
        report = run(
            lock,
            registry=root,
            base_image=base,
            name=name,
            stage=stage,
            retrain=retrain,
            context=context,
            wheelhouse=wheelhouse,
            system_packages=system_packages,
            on_progress=emit,
            trusted_keys=trusted_key,
        )
    if junit is not None:
        _write_junit(junit, report)
    if certify is not None:
        from toolkit.workflows.certify import certify as write_certifications

        for path in write_certifications(report, registry=root, directory=certify, key=key):
            echo_err(f"certified: {path}")
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    raise typer.Exit(report.exit_code)


@app.command("retrain")
def retrain(
    artifact_ref: ArtifactRefArg,
    version: Annotated[str, typer.Option("--version", help="The new version, X.Y.Z.")],
    dataset: Annotated[
        str | None, typer.Option(help="The training data, if not where the card's recipe found it (same sha256).")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write it when not registering.")] = None,
    registry: RegistryOpt = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register as staging (default yes).")
    ] = True,
    reason: Annotated[str | None, typer.Option(help="Why it was retrained (the card's lineage.reason).")] = None,
    as_json: JsonOpt = False,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Retrain ARTIFACT from its card's recipe in this runtime; print its metrics beside the parent's."""
    from toolkit import _files
    from toolkit.artifact import read_card
    from toolkit.identifiers import parse_version
    from toolkit.training.retrain import retrain as run
    from toolkit.workflows.deliver import deliver, destination

    parse_version(version)
    artifact = artifact_arg(artifact_ref, registry)
    folder = out_dir or Path("out")
    # A duplicate version fails before minutes of training, not after.
    unregistered = (read_card(artifact).name, version) if register else None
    dest = destination(register=register, registry=registry, out=folder, unregistered=unregistered)
    with _files.scratch("toolkit-retrain") as tmp:
        result = run(
            artifact,
            version=version,
            out=Path(tmp) if register else folder,
            dataset=dataset,
            reason=reason,
            progress=_train_progress(),
            trusted_keys=trusted_key,
        )
        delivered = deliver(result.path, dest, reason=f"retrained from {result.parent.name}@{result.parent.version}")
        if delivered.entry is not None:
            echo_err(delivered.note())
    path = delivered.shown
    if as_json:
        print_json({**result.to_dict(), "path": path, "registered": delivered.entry is not None})
        return
    _print_retrain(result)
    echo(path)


# --- output --------------------------------------------------------------------------------


def _print_report(report: UpgradeReport) -> None:
    from rich.table import Table
    from rich.text import Text

    counts = report.counts()
    echo(
        f"candidate {report.lock} (sha256 {report.lock_sha256[:12]}) in {report.image}"
        + (" (cached)" if report.cached else "")
    )
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("model", "version", "stage", "verdict", "reason"):
        table.add_column(column, overflow="fold")
    for check in report.models:
        table.add_row(
            Text(check.name),
            Text(check.version),
            Text(check.status or "-"),
            Text(check.verdict, style=_VERDICT_STYLE[check.verdict]),
            Text(check.reason),
        )
    out.print(table)
    # One line per stack (models whose cards record the same versions share one): a registry
    # of five stacks has five different diffs, and one merged line would show one of them.
    stacks: dict[tuple[str, ...], list[str]] = {}
    for check in report.models:
        # Upgrades and downgrades first: they are what a lock bump is about; then added and removed.
        lines = tuple(sorted((str(c) for c in check.packages), key=lambda line: ("(absent)" in line, line)))
        if lines:
            stacks.setdefault(lines, []).append(f"{check.name} {check.version}")
    for shown, models in stacks.items():
        more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
        who = "these models" if len(stacks) == 1 else ", ".join(models)
        echo(f"packages that change for {who}: " + "; ".join(shown[:10]) + more)
    retrained = [c for c in report.models if c.retrain is not None]
    if retrained:
        echo("retrained in the candidate image:")
        for check in retrained:
            assert check.retrain is not None
            r = check.retrain
            if r.error:
                echo(f"  {check.name} {check.version}: not retrained: {r.error}")
                continue
            kept = "registered as staging" if r.registered else "not registered"
            echo(f"  {check.name} {check.version} -> {r.version} ({kept}): {_metric_pairs(r)}")
    summary = ", ".join(f"{counts[v]} {v}" for v in ("safe", "drift", "broken"))
    echo(f"{len(report.models)} models: {summary} -> {'safe to merge' if report.ok else 'NOT safe'}")


def _metric_pairs(outcome: object) -> str:
    from toolkit.upgrade.verdict import RetrainOutcome

    assert isinstance(outcome, RetrainOutcome)
    parts = []
    for section in ("test", "cv"):
        for key, new in sorted(outcome.metrics.get(section, {}).items()):
            if key.endswith("_std"):
                continue
            old = outcome.parent_metrics.get(section, {}).get(key)
            parts.append(f"{section}.{key} {'-' if old is None else f'{old:.4f}'} -> {new:.4f}")
    return ", ".join(parts) or "no metrics"


def _print_retrain(result: RetrainResult) -> None:
    from rich.table import Table

    parent = f"{result.parent.name} {result.parent.version}"
    new = f"{result.card.name} {result.card.version}"
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("metric", parent, new, "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric, old, value in result.metrics_side_by_side():
        change = "-" if old is None or value is None else f"{value - old:+.4f}"
        table.add_row(metric, _num(old), _num(value), change)
    lineage = result.card.lineage
    echo_err(f"retrained {new} from {parent}" + (f" ({lineage.reason})" if lineage else ""))
    out.print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _write_junit(path: Path, report: UpgradeReport) -> None:
    from toolkit import _files
    from toolkit.upgrade.verdict import junit_xml

    _files.save(path, junit_xml(report))


# --- progress: on a terminal only, never in CI or a pipe -------------------------------------


def _interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str], None]]:
    if not _interactive():
        yield lambda line: None
        return
    with err.status("upgrade-check: starting") as status:

        def emit(line: str) -> None:
            if line.startswith(("registered", "candidate image ")) or (
                ": " in line and line.split(": ")[-1] in _VERDICT_STYLE
            ):
                echo_err(f"  {line}")
            status.update(f"upgrade-check: {line}")

        yield emit


def _train_progress() -> Callable[[str, str, str], None] | None:
    if not _interactive():
        return None

    def emit(stage: str, event: str, detail: str) -> None:
        if event == "done":
            echo_err(f"  {stage}: {detail}" if detail else f"  {stage}")

    return emit
