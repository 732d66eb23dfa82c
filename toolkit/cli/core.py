"""The gate and the read-only commands: check-env, verify, fingerprint, card, diff."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli._common import app, out, plain, print_json, safe
from toolkit.cli._options import ArtifactArg, JsonOpt, Policy, PolicyOpt, VerifyPredictionsOpt
from toolkit.errors import Difference, ToolkitError

__all__: list[str] = []


class CardFormat(str, Enum):
    md = "md"
    json = "json"


@app.command("check-env")
def check_env(
    artifact: ArtifactArg,
    policy: PolicyOpt = Policy.strict,
    as_json: JsonOpt = False,
    verify_predictions: VerifyPredictionsOpt = False,
) -> None:
    """The deploy gate: exit 0 if this runtime matches the card, 1 if not, 3 on integrity failure."""
    from toolkit.gate import check_env as run_gate

    try:
        report = run_gate(artifact, policy=policy.value, verify_predictions=verify_predictions)
    except ToolkitError as e:
        if as_json:  # scripts parsing stdout still get one object
            print_json({"ok": False, "exit_code": e.exit_code, "artifact": str(artifact), "error": str(e)})
        raise
    if as_json:
        print_json(report.to_dict())
    else:
        # typer.secho, not rich: the common (matching) path then never imports rich.
        typer.secho("MATCH" if report.ok else "MISMATCH", fg="green" if report.ok else "red", bold=True, nl=False)
        typer.echo(
            plain(f" {report.name} {report.version} under policy {report.policy!r}")
            + f" (sha256 {report.sha256[:12]}… verified)"
        )
        if report.differences:
            _print_differences(report.differences)
        if report.predictions is not None:
            out.print(plain(report.predictions), markup=False)
    raise typer.Exit(report.exit_code)


# Columns wider than this let the row run long rather than widen every row (never truncate).
_DIFF_COL_MAX = 40


def _print_differences(differences: tuple[Difference, ...]) -> None:
    """The gate's differences as an aligned plain-text table, built in one pass.

    Not a rich Table: laying one out costs seconds per 10,000 rows (a card listing 100,000
    packages took 29 s against 1.7 s for --json), and this path then never imports rich.
    Every cell comes from the card or this runtime, so each is escaped (``plain``); values are
    never truncated or folded, so whole digests and versions stay greppable on one line.
    """
    rows = [(plain(d.name), plain(d.expected or "(absent)"), plain(d.actual or "(absent)")) for d in differences]
    w0 = min(max(len("what"), *(len(r[0]) for r in rows)), _DIFF_COL_MAX)
    w1 = min(max(len("card"), *(len(r[1]) for r in rows)), _DIFF_COL_MAX)
    lines = [f"{len(rows)} difference(s)", f"{'what':<{w0}}  {'card':<{w1}}  this runtime"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    typer.echo("\n".join(lines))


@app.command()
def verify(artifact: ArtifactArg) -> None:
    """Integrity only: the card is valid and the artifact matches its sha256. Never unpickles."""
    from toolkit.artifact import verify as run_verify

    card = run_verify(artifact)
    out.print(f"OK {card.name} {card.version} sha256 {card.artifact.sha256} ({card.artifact.size} bytes)", markup=False)


@app.command()
def fingerprint(as_json: JsonOpt = False) -> None:
    """This runtime's environment, as a model card would record it."""
    from toolkit.fingerprint import capture

    fp = capture(blas=True)
    if as_json:
        print_json(fp.to_dict())
        return
    out.print(f"Python    {fp.python_implementation} {fp.python_version}", markup=False)
    out.print(f"Platform  {fp.os} {fp.machine}, {fp.libc} (kernel {fp.os_release})", markup=False)
    out.print(f"Container {'yes' if fp.in_container else 'no'}; base image {fp.base_image or 'none'}", markup=False)
    out.print(f"Lock      {fp.lock_sha256 or 'none'}", markup=False)
    for lib in fp.blas or ():
        out.print(
            f"BLAS      {lib.get('internal_api')} {lib.get('version')} ({lib.get('num_threads')} threads)", markup=False
        )
    from rich.table import Table

    table = Table("distribution", "version", title=f"{len(fp.packages)} installed distributions")
    for name, version in fp.packages.items():
        table.add_row(name, version)
    out.print(table)


@app.command()
def card(
    artifact: ArtifactArg,
    fmt: Annotated[CardFormat, typer.Option("--format", help="md for people, json for machines.")] = CardFormat.md,
) -> None:
    """Print the artifact's card (validated; nothing is unpickled)."""
    from toolkit.artifact import read_card

    model_card = read_card(artifact)
    if fmt is CardFormat.json:
        typer.echo(model_card.to_json().decode(), nl=False)
    else:
        typer.echo(model_card.to_markdown())


@app.command()
def diff(
    artifact_a: Annotated[Path, typer.Argument(help="First artifact (.joblib).")],
    artifact_b: Annotated[Path, typer.Argument(help="Second artifact (.joblib).")],
    as_json: JsonOpt = False,
) -> None:
    """Two artifacts' environments and metrics side by side."""
    from toolkit.artifact import read_card
    from toolkit.policy import differences

    a, b = read_card(artifact_a), read_card(artifact_b)
    env = differences(a.environment, b.environment, policy="strict")
    sections = sorted(set(a.metrics) | set(b.metrics))
    metrics = [
        (f"{s}.{m}", a.metrics.get(s, {}).get(m), b.metrics.get(s, {}).get(m))
        for s in sections
        for m in sorted(set(a.metrics.get(s, {})) | set(b.metrics.get(s, {})))
    ]
    if as_json:
        print_json(
            {
                "a": {"name": a.name, "version": a.version, "sha256": a.artifact.sha256},
                "b": {"name": b.name, "version": b.version, "sha256": b.artifact.sha256},
                "environment": [{"name": d.name, "a": d.expected, "b": d.actual} for d in env],
                "metrics": [{"metric": k, "a": x, "b": y} for k, x, y in metrics],
                "data_sha256": {"a": a.data.sha256, "b": b.data.sha256},
            }
        )
        return
    from rich.table import Table

    head_a, head_b = f"A {plain(a.name)} {plain(a.version)}", f"B {plain(b.name)} {plain(b.version)}"
    table = Table("metric", head_a, head_b, "B - A", title="Metrics")
    for key, x, y in metrics:
        delta = f"{y - x:+.4f}" if x is not None and y is not None else ""
        table.add_row(safe(key), _num(x), _num(y), delta)
    out.print(table)
    if a.data.sha256 != b.data.sha256:
        out.print("Trained on different data: metrics are not directly comparable.", style="yellow")
    if env:
        table = Table("environment", head_a, head_b, title=f"{len(env)} environment difference(s)")
        for d in env:
            table.add_row(safe(d.name), safe(d.expected or "(absent)"), safe(d.actual or "(absent)"))
        out.print(table)
    else:
        out.print("Environments are identical.")


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
