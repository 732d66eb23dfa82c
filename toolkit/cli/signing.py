"""``toolkit keygen`` and ``toolkit sign``: OpenSSF model-signing bundles for artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli._common import app, artifact_arg, err, out
from toolkit.cli._options import ArtifactRefArg, RegistryOpt

__all__: list[str] = []


@app.command()
def keygen(
    out_prefix: Annotated[
        Path, typer.Option("--out", metavar="PREFIX", help="Writes PREFIX.key (mode 0600) and PREFIX.pub.")
    ],
) -> None:
    """Make an ECDSA P-256 key pair for `toolkit sign`; existing files are never overwritten."""
    from toolkit.signing import keygen as run_keygen

    key_path, pub_path = run_keygen(out_prefix)
    err.print(f"wrote {key_path} (private, mode 0600: keep it secret) and {pub_path} (public)", markup=False)
    out.print(str(pub_path), markup=False)


@app.command()
def sign(
    artifact: ArtifactRefArg,
    key: Annotated[Path, typer.Option("--key", metavar="PREFIX.key", help="The private key from `toolkit keygen`.")],
    registry: RegistryOpt = None,
) -> None:
    """Sign the artifact's .joblib, .card.json and .card.md; writes <stem>.sig beside them."""
    from toolkit.artifact import sign as run_sign

    out.print(str(run_sign(artifact_arg(artifact, registry), key)), markup=False)
