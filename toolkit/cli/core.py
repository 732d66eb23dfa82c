"""The gate and the read-only commands: check-env, verify, fingerprint, card, diff."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli._common import app, artifact_arg, out, plain, print_json, safe
from toolkit.cli._options import (
    ArtifactRefArg,
    CertificationsOpt,
    InsecureOpt,
    JsonOpt,
    Policy,
    PolicyOpt,
    RegistryOpt,
    TrustedKeyOpt,
    TrustOpt,
    VerifyPredictionsOpt,
)
from toolkit.cli._output import echo, json_error
from toolkit.errors import Difference, ToolkitError

__all__: list[str] = []


class CardFormat(str, Enum):
    md = "md"
    json = "json"


@app.command("check-env")
def check_env(
    artifact: Annotated[
        str,
        typer.Argument(
            metavar="ARTIFACT",
            help="The artifact's .joblib path, NAME@production, NAME@staging, NAME:X.Y.Z (in --registry), "
            "or oci://HOST[:PORT]/REPO:TAG.",
        ),
    ],
    policy: PolicyOpt = Policy.strict,
    as_json: JsonOpt = False,
    verify_predictions: VerifyPredictionsOpt = False,
    trusted_key: TrustedKeyOpt = None,
    insecure: InsecureOpt = False,
    registry: RegistryOpt = None,
    require_provenance: Annotated[
        bool,
        typer.Option(
            "--require-provenance",
            help="Also require <stem>.provenance.json signed by a --trusted-key, naming this card's base, "
            "lock and dataset (exit 3 otherwise).",
        ),
    ] = False,
    certifications: CertificationsOpt = None,
    trust: TrustOpt = None,
) -> None:
    """The deploy gate: exit 0 if this runtime matches the card, 1 if not, 3 on integrity failure."""
    try:
        if artifact.startswith("oci://"):  # manifest and card only; the model stays in the registry
            from toolkit.remote_gate import check_env as run_remote_gate

            report = run_remote_gate(
                artifact,
                policy=policy.value,
                verify_predictions=verify_predictions,
                insecure=insecure,
                trusted_keys=trusted_key,
                require_provenance=require_provenance,
                trusted=trust or (),
            )
        else:
            from toolkit.gate import check_env as run_gate

            report = run_gate(
                artifact_arg(artifact, registry),
                policy=policy.value,
                verify_predictions=verify_predictions,
                trusted_keys=trusted_key,
                require_provenance=require_provenance,
                certifications=certifications,
                trusted=trust or (),
            )
    except ToolkitError as e:
        if as_json:  # scripts parsing stdout still get one object
            json_error(e, artifact=str(artifact))
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
        if report.certification is not None:
            accepted = len(report.certified_differences)
            typer.echo(plain(f"{accepted} difference(s) accepted by certification {report.certification}"))
        for refused in report.refused_certifications:
            typer.echo(plain(f"certification refused: {refused}"))
        if report.predictions is not None:
            echo(plain(report.predictions))
            if report.differences and report.predictions.ok:
                echo(
                    "outputs agree, but the runtime is not the card's: exit 1 all the same "
                    "(the gate answers for the runtime; the agreement is evidence for a remedy)"
                )
        for remedy in report.remedies:
            typer.echo(plain(f"what to do: {remedy}"))
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
def verify(
    artifact: ArtifactRefArg, as_json: JsonOpt = False, trusted_key: TrustedKeyOpt = None, registry: RegistryOpt = None
) -> None:
    """Integrity only: card valid, sha256 matching (and the signature, with trust). Never unpickles."""
    from toolkit.artifact import verify as run_verify

    try:
        path = artifact_arg(artifact, registry)
        card = run_verify(path, trusted_keys=trusted_key)
    except ToolkitError as e:
        if as_json:  # scripts parsing stdout still get one object
            json_error(e, artifact=str(artifact))
        raise
    if as_json:
        print_json(
            {
                "ok": True,
                "exit_code": 0,
                "artifact": str(path),
                "name": card.name,
                "version": card.version,
                "sha256": card.artifact.sha256,
                "size": card.artifact.size,
                "schema_version": card.schema_version,
            }
        )
        return
    echo(f"OK {card.name} {card.version} sha256 {card.artifact.sha256} ({card.artifact.size} bytes)")


@app.command()
def fingerprint(as_json: JsonOpt = False) -> None:
    """This runtime's environment, as a model card would record it."""
    from toolkit.fingerprint import capture

    fp = capture(blas=True, lock=True)
    if as_json:
        print_json(fp.to_dict())
        return
    echo(f"Python    {fp.python_implementation} {fp.python_version}")
    echo(f"Platform  {fp.os} {fp.machine}, {fp.libc} (kernel {fp.os_release})")
    echo(f"Container {'yes' if fp.in_container else 'no'}; base image {fp.base_image or 'none'}")
    echo(f"Lock      {fp.lock_sha256 or 'none'}")
    for lib in fp.blas or ():
        echo(f"BLAS      {lib.get('internal_api')} {lib.get('version')} ({lib.get('num_threads')} threads)")
    from rich.table import Table

    table = Table("distribution", "version", title=f"{len(fp.packages)} installed distributions")
    for name, version in fp.packages.items():
        table.add_row(name, version)
    out.print(table)


@app.command()
def card(
    artifact: ArtifactRefArg,
    fmt: Annotated[CardFormat, typer.Option("--format", help="md for people, json for machines.")] = CardFormat.md,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            help="Also write evaluation plots (PNG) and a Markdown card embedding them into this directory; "
            "recomputed on the card's held-out rows (loads the model, guarded: under --policy, and when this "
            "runtime differs from the card's, only after its outputs agree here).",
        ),
    ] = None,
    policy: Annotated[
        Policy,
        typer.Option(
            "--policy",
            help="For --plots: compatible (default: draws on a host that is not the training image, after "
            "the outputs are re-checked, listing each difference) or strict (refuses any difference).",
        ),
    ] = Policy.compatible,
    trusted_key: TrustedKeyOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Print the artifact's card (validated; nothing is unpickled unless --plots is given)."""
    from toolkit.artifact import read_card

    artifact_file = artifact_arg(artifact, registry)
    model_card = read_card(artifact_file)
    if plots is not None:
        from toolkit.workflows.plots import plot_artifact

        run = plot_artifact(artifact_file, plots, policy=policy.value, trusted_keys=trusted_key)
        for d in run.differences:
            typer.echo(f"note: drawn in a runtime that differs from the card's: {d}", err=True)
        if run.outputs is not None:
            typer.echo(f"note: {run.outputs}", err=True)
        for plot in run.plots:
            typer.echo(f"wrote {plot.file} ({plot.title})", err=True)
        typer.echo(f"wrote {run.markdown} ({run.rows} {run.how})", err=True)
    if fmt is CardFormat.json:
        typer.echo(model_card.to_json().decode(), nl=False)
    else:
        typer.echo(model_card.to_markdown())


@app.command()
def diff(
    artifact_a: Annotated[
        str, typer.Argument(metavar="ARTIFACT_A", help="First artifact (.joblib, or a reference as for check-env).")
    ],
    artifact_b: Annotated[
        str, typer.Argument(metavar="ARTIFACT_B", help="Second artifact (.joblib, or a reference as for check-env).")
    ],
    as_json: JsonOpt = False,
    registry: RegistryOpt = None,
) -> None:
    """Two artifacts side by side: model, data, metrics, environment. Exit 1 when they differ."""
    from toolkit.artifact import read_card
    from toolkit.diff import diff_cards

    result = diff_cards(read_card(artifact_arg(artifact_a, registry)), read_card(artifact_arg(artifact_b, registry)))
    if as_json:
        print_json(result.to_dict())
        raise typer.Exit(1 if result.differ else 0)
    from rich.table import Table

    a, b = result.a, result.b
    head_a, head_b = f"A {plain(a.name)} {plain(a.version)}", f"B {plain(b.name)} {plain(b.version)}"
    if result.identical_pickles:
        echo(f"Pickles are byte-identical (sha256 {a.artifact.sha256}).")
    else:
        echo(f"Pickles differ: A {a.artifact.sha256[:12]}…, B {b.artifact.sha256[:12]}….")
    if result.model:
        table = Table("what", head_a, head_b, title="Model and data")
        for change in result.model:
            table.add_row(safe(change.field), safe(change.a or "(absent)"), safe(change.b or "(absent)"))
        out.print(table)
    else:
        out.print("Same algorithm, hyperparameters, data and preprocessing.")
    table = Table("metric", head_a, head_b, "B - A", title="Metrics")
    for row in result.metrics:
        delta = row.delta
        table.add_row(safe(row.metric), _num(row.a), _num(row.b), "" if delta is None else f"{delta:+.4f}")
    out.print(table)
    if a.data.sha256 != b.data.sha256:
        out.print("Trained on different data: metrics are not directly comparable.", style="yellow")
    if result.environment:
        table = Table("environment", head_a, head_b, title=f"{len(result.environment)} environment difference(s)")
        for d in result.environment:
            table.add_row(safe(d.name), safe(d.expected or "(absent)"), safe(d.actual or "(absent)"))
        out.print(table)
    else:
        out.print("Environments are identical.")
    raise typer.Exit(1 if result.differ else 0)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
