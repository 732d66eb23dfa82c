"""``toolkit serve`` and ``toolkit image serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli._common import app, artifact_arg, plain
from toolkit.cli._options import (
    AnyRegistryOpt,
    ArtifactRefArg,
    CertificationsOpt,
    InsecureOpt,
    Policy,
    PolicyOpt,
    RegistryOpt,
    StoreOpt,
    TrustedKeyOpt,
    TrustOpt,
)
from toolkit.cli._output import echo_err
from toolkit.cli.image import ImageOpt, image_app
from toolkit.errors import UsageError


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="The artifact's .joblib path, NAME@production, NAME@staging, NAME:X.Y.Z (in --registry), "
            "or oci://HOST[:PORT]/REPO:TAG.",
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback unless told otherwise).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one, printed in the ready line).")] = 8080,
    policy: PolicyOpt = Policy.strict,
    on_mismatch: Annotated[
        str, typer.Option("--on-mismatch", help="exit: exit 1 on a refused model; hold: stay live, never ready.")
    ] = "exit",
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Watch MODEL's stage; swap to a promoted or rolled-back version that passes."),
    ] = False,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between looks at the stage.")] = 5.0,
    max_rows: Annotated[int, typer.Option("--max-rows", help="Most rows in one request (413 beyond).")] = 10_000,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes (413 beyond).")] = 1 << 20,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", help="Seconds a client has to send its body (408 after).")
    ] = 10.0,
    drain_timeout: Annotated[
        int, typer.Option("--drain-timeout", help="Seconds SIGTERM waits for in-flight requests.")
    ] = 30,
    log_format: Annotated[str, typer.Option("--log-format", help="text, or json (one object per line).")] = "text",
    trusted_key: TrustedKeyOpt = None,
    trust: TrustOpt = None,
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Serve MODEL over HTTP (Open Inference Protocol v2, /predict, /metrics): ready only after
    its signature (with trusted keys), checksum, this process's gate, the guarded load and the probe pass.
    Under --policy certified the gate honours the certifications in $TOOLKIT_CERTIFICATIONS.

    A refused model: one log line and exit 1, or with --on-mismatch hold, live and never ready.
    SIGTERM drains in-flight requests and exits 0.
    """
    from toolkit.serve.server import ServeOptions, run

    code = run(
        ServeOptions(
            model=model,
            host=host,
            port=port,
            policy=policy.value,
            on_mismatch=on_mismatch,
            follow=follow,
            poll_interval=poll_interval,
            max_rows=max_rows,
            max_body=max_body,
            body_timeout=body_timeout,
            drain_timeout=drain_timeout,
            log_format=log_format,
            registry=registry,
            store=store,
            insecure=insecure,
            trusted_keys=trusted_key,
            trusted=tuple(trust or ()),
        )
    )
    raise typer.Exit(code)


@image_app.command("serve")
def image_serve(
    artifact: ArtifactRefArg,
    image: ImageOpt = None,
    port: Annotated[int, typer.Option(help="Host port, published on 127.0.0.1 only (0: any free one).")] = 8080,
    policy: PolicyOpt = Policy.strict,
    on_mismatch: Annotated[
        str, typer.Option("--on-mismatch", help="exit: exit 1 on a refused model; hold: stay live, never ready.")
    ] = "exit",
    max_rows: Annotated[int, typer.Option("--max-rows", help="Most rows in one request (413 beyond).")] = 10_000,
    max_body: Annotated[int, typer.Option("--max-body", help="Largest request body in bytes (413 beyond).")] = 1 << 20,
    drain_timeout: Annotated[
        int, typer.Option("--drain-timeout", help="Seconds SIGTERM waits for in-flight requests.")
    ] = 30,
    log_format: Annotated[str, typer.Option("--log-format", help="text, or json (one object per line).")] = "text",
    trusted_key: TrustedKeyOpt = None,
    trust: TrustOpt = None,
    registry: RegistryOpt = None,
    certifications: CertificationsOpt = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="The container watches ARTIFACT's stage (NAME@production in a directory registry, mounted "
            "read-only, or an oci:// tag) and swaps as `serve --follow` does.",
        ),
    ] = False,
    poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between looks at the stage.")] = 5.0,
    insecure: InsecureOpt = False,
) -> None:
    """Run `toolkit serve` on ARTIFACT inside the image it was trained in, the port published on 127.0.0.1.

    The image: --image, else the one the card records (environment.image), else $TOOLKIT_IMAGE or
    toolkit:latest. The checks run in the container, so the gate judges the image itself.
    --certifications DIR is mounted read-only there for --policy certified ($TOOLKIT_CERTIFICATIONS).
    With --follow, the image is chosen by the version served at start; a later one that needs
    another runtime is refused in the container (it needs its own image).
    """
    import sys

    from toolkit.docker import resolve_image
    from toolkit.serve.image import serve_in_image
    from toolkit.serve.server import ON_MISMATCH
    from toolkit.signing import trusted_keys_from_env

    if on_mismatch not in ON_MISMATCH:
        raise UsageError(f"--on-mismatch {on_mismatch!r}: choose exit or hold")
    if poll_interval <= 0:
        raise UsageError("--poll-interval must be positive")
    model, card, followed = _image_serve_target(artifact, registry, follow=follow, insecure=insecure)
    recorded = getattr(card.environment, "image", None)
    tag = image or (getattr(recorded, "ref", None) or getattr(recorded, "id", None) if recorded else None)
    tag = tag or resolve_image(None)
    keys = [Path(k.source) for k in trusted_keys_from_env(trusted_key)]

    def output(chunk: bytes) -> None:
        sys.stderr.buffer.write(chunk)
        sys.stderr.flush()

    code = serve_in_image(
        tag,
        model,
        serve_args=[
            "--policy",
            policy.value,
            "--on-mismatch",
            on_mismatch,
            "--max-rows",
            str(max_rows),
            "--max-body",
            str(max_body),
            "--log-format",
            log_format,
            *(arg for name in trust or () for arg in ("--trust", name)),
            *(("--poll-interval", str(poll_interval)) if follow else ()),
            *(("--insecure",) if insecure else ()),
        ],
        port=port,
        trusted_keys=keys,
        certifications=certifications,
        drain_timeout=drain_timeout,
        on_output=output,
        on_published=lambda url: echo_err(plain(f"image {tag}: published on {url}")),
        follow=followed,
    )
    raise typer.Exit(code)


def _image_serve_target(
    artifact: str, registry: Path | None, *, follow: bool, insecure: bool
) -> tuple[Path | None, Any, Any]:
    """(the file served now or None, its card, what the container follows or None)."""
    from toolkit.artifact import read_card
    from toolkit.serve.image import Followed

    if not follow:
        model = artifact_arg(artifact, registry)
        return model, read_card(model), None
    if artifact.startswith("oci://"):
        from toolkit.oci import Client, fetch_card, parse_reference

        ref = parse_reference(artifact)
        if ref.digest is not None:
            raise UsageError(f"--follow watches a tag; {artifact!r} names one manifest by digest")
        with Client(ref.host, insecure=insecure) as client:
            return None, fetch_card(client, ref).card, Followed(model=artifact)
    from toolkit.registry.index import is_postgres_url
    from toolkit.registry.refs import parse_reference as parse_registry_reference
    from toolkit.registry.registry import resolve_root

    ref_ = parse_registry_reference(artifact)
    if ref_ is None or ref_.stage is None:
        raise UsageError(
            f"--follow watches a stage: give NAME@production, NAME@staging or an oci:// tag, not {artifact!r}"
        )
    root = resolve_root(registry)
    if is_postgres_url(str(root)):
        raise UsageError(
            "image serve --follow reads a directory registry (mounted read-only) or an oci:// tag; for a team "
            "registry follow its production tag: oci://STORE:NAME-production"
        )
    model = artifact_arg(artifact, registry)
    return model, read_card(model), Followed(model=artifact, registry=Path(root))
