"""``toolkit serve``."""

from __future__ import annotations

from typing import Annotated

import typer

from toolkit.cli._common import app
from toolkit.cli._options import AnyRegistryOpt, InsecureOpt, Policy, PolicyOpt, StoreOpt, TrustedKeyOpt


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
    registry: AnyRegistryOpt = None,
    store: StoreOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Serve MODEL over HTTP (Open Inference Protocol v2, /predict, /metrics): ready only after
    its signature (with trusted keys), checksum, this process's gate, the guarded load and the probe pass.

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
        )
    )
    raise typer.Exit(code)
