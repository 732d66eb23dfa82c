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
    context: Annotated[Path, typer.Option(help="The repository root: Dockerfile, pyproject.toml, toolkit/.")] = Path(),
    wheelhouse: Annotated[
        Path | None, typer.Option(help="Where the candidate's wheels are downloaded (default CONTEXT/wheelhouse).")
    ] = None,
    trusted_key: TrustedKeyOpt = None,
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
    base = resolve_base_image(base_image, base_file=context / ".cache" / "base-image")
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
            on_progress=emit,
            trusted_keys=trusted_key,
        )
    if junit is not None:
        _write_junit(junit, report)
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
    import tempfile

    from toolkit.identifiers import parse_version
    from toolkit.registry.registry import Registry, resolve_root
    from toolkit.training.retrain import retrain as run

    parse_version(version)
    artifact = artifact_arg(artifact_ref, registry)
    registry_obj = None
    if register:
        registry_obj = Registry(resolve_root(registry))
    with tempfile.TemporaryDirectory(prefix="toolkit-retrain-") as tmp:
        target = Path(tmp) if register else (out_dir or Path("out"))
        if registry_obj is not None:
            from toolkit.artifact import read_card

            with registry_obj:  # a duplicate version fails before minutes of training, not after
                registry_obj.require_unregistered(read_card(artifact).name, version)
        result = run(
            artifact,
            version=version,
            out=target,
            dataset=dataset,
            reason=reason,
            progress=_train_progress(),
            trusted_keys=trusted_key,
        )
        path = result.path
        if registry_obj is not None:
            with registry_obj:
                entry = registry_obj.add(path, reason=f"retrained from {result.parent.name}@{result.parent.version}")
            err.print(f"registered {entry.name} {entry.version} ({entry.status}) in {registry_obj.root}", markup=False)
            path = entry.path or path
    if as_json:
        print_json({**result.to_dict(), "path": str(path), "registered": registry_obj is not None})
        return
    _print_retrain(result)
    out.print(str(path), markup=False)


# --- output --------------------------------------------------------------------------------


def _print_report(report: UpgradeReport) -> None:
    from rich.table import Table
    from rich.text import Text

    counts = report.counts()
    out.print(
        f"candidate {report.lock} (sha256 {report.lock_sha256[:12]}) in {report.image}"
        + (" (cached)" if report.cached else ""),
        markup=False,
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
    changed: dict[str, str] = {}
    # Upgrades and downgrades first: they are what a lock bump is about; then added and removed.
    for check in report.models:
        for change in sorted(check.packages, key=lambda c: (c.card is None or c.candidate is None, c.name)):
            changed.setdefault(change.name, str(change))
    if changed:
        shown = sorted(changed.values(), key=lambda line: ("(absent)" in line, line))
        more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
        out.print("packages that change for these models: " + "; ".join(shown[:10]) + more, markup=False)
    retrained = [c for c in report.models if c.retrain is not None]
    if retrained:
        out.print("retrained in the candidate image:", markup=False)
        for check in retrained:
            assert check.retrain is not None
            r = check.retrain
            if r.error:
                out.print(f"  {check.name} {check.version}: not retrained: {r.error}", markup=False)
                continue
            kept = "registered as staging" if r.registered else "not registered"
            out.print(f"  {check.name} {check.version} -> {r.version} ({kept}): {_metric_pairs(r)}", markup=False)
    summary = ", ".join(f"{counts[v]} {v}" for v in ("safe", "drift", "broken"))
    out.print(f"{len(report.models)} models: {summary} -> {'safe to merge' if report.ok else 'NOT safe'}", markup=False)


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
    err.print(f"retrained {new} from {parent}" + (f" ({lineage.reason})" if lineage else ""), markup=False)
    out.print(table)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _write_junit(path: Path, report: UpgradeReport) -> None:
    from toolkit.errors import UsageError
    from toolkit.upgrade.verdict import junit_xml

    data = junit_xml(report)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write the JUnit report ({e.strerror or e})") from e


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
                err.print(f"  {line}", markup=False)
            status.update(f"upgrade-check: {line}")

        yield emit


def _train_progress() -> Callable[[str, str, str], None] | None:
    if not _interactive():
        return None

    def emit(stage: str, event: str, detail: str) -> None:
        if event == "done":
            err.print(f"  {stage}: {detail}" if detail else f"  {stage}", markup=False)

    return emit
