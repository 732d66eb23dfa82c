"""``toolkit provenance``, ``verify-provenance`` and ``sbom``: what supply-chain tools read of a card."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from toolkit import env
from toolkit.cli._common import app, artifact_arg, plain
from toolkit.cli._options import ArtifactRefArg, RegistryOpt, TrustedKeyOpt
from toolkit.cli._output import echo, echo_err

__all__: list[str] = []


class SbomFormat(str, Enum):
    cyclonedx = "cyclonedx"


@app.command()
def provenance(
    artifact: ArtifactRefArg,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            envvar=env.SIGNING_KEY,
            metavar="PREFIX.key",
            help="The private key from `toolkit keygen` that signs it (default $TOOLKIT_SIGNING_KEY; required).",
            show_default=False,
        ),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Where to write it (default <stem>.provenance.json beside it)."),
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Write the artifact's SLSA v1 provenance (in-toto Statement, DSSE-signed); prints its path."""
    from toolkit.errors import UsageError
    from toolkit.provenance.attest import attest

    if key is None:
        raise UsageError("provenance is always signed: give --key PREFIX.key (or set $TOOLKIT_SIGNING_KEY)")
    written = attest(artifact_arg(artifact, registry), key, out=out_file)
    for note in written.notes:
        echo_err(plain(f"note: {note}"))
    echo(plain(written.path))


@app.command("verify-provenance")
def verify_provenance(
    artifact: ArtifactRefArg,
    trusted_key: TrustedKeyOpt = None,
    expect_base: Annotated[
        str | None,
        typer.Option("--expect-base", metavar="DIGEST", help="Require this base image: name@sha256:HEX or sha256:HEX."),
    ] = None,
    expect_lock: Annotated[
        str | None, typer.Option("--expect-lock", metavar="SHA256", help="Require this requirements.lock sha256.")
    ] = None,
    expect_dataset: Annotated[
        str | None, typer.Option("--expect-dataset", metavar="SHA256", help="Require this training-data sha256.")
    ] = None,
    provenance_file: Annotated[
        Path | None,
        typer.Option("--provenance", metavar="FILE", help="The provenance file (default <stem>.provenance.json)."),
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """Check the provenance's signature (a trusted key is required), its subjects against the files
    on disk, and the expectations given. Exit 0 when all hold, 3 (one line) when one does not."""
    from toolkit.provenance.verify import Expectations
    from toolkit.provenance.verify import verify_provenance as run_verify

    verified = run_verify(
        artifact_arg(artifact, registry),
        trusted_key,
        expect=Expectations(base=expect_base, lock=expect_lock, dataset=expect_dataset),
        provenance=provenance_file,
    )
    echo(
        plain(f"OK {verified.path.name}: {len(verified.subjects)} subjects match; base {verified.base_image or 'none'}")
        + f", lock {_short(verified.lock_sha256)}, dataset {_short(verified.dataset_sha256)}"
    )


@app.command()
def sbom(
    artifact: ArtifactRefArg,
    fmt: Annotated[SbomFormat, typer.Option("--format", help="The BOM format.")] = SbomFormat.cyclonedx,
    out_file: Annotated[
        Path | None, typer.Option("--out", metavar="FILE", help="Write it there (atomically) instead of stdout.")
    ] = None,
    registry: RegistryOpt = None,
) -> None:
    """The artifact's CycloneDX 1.6 ML-BOM (JSON): model, dataset, every locked library, base image, recipe."""
    from toolkit.provenance.sbom import render_sbom, write_sbom

    path = artifact_arg(artifact, registry)
    if out_file is None:
        typer.echo(render_sbom(path).decode(), nl=False)
        return
    echo(plain(write_sbom(path, out_file)))


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12] + "…"
