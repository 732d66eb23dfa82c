"""``toolkit image build | train | check | pin``: the pinned image, through the docker SDK."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toolkit import _files
from toolkit.cli._common import ToolkitGroup, app, artifact_arg, plain, print_json
from toolkit.cli._options import (
    ArtifactRefArg,
    ConfigOpt,
    DatasetOpt,
    IdOpt,
    JsonOpt,
    ModelOpt,
    NameOpt,
    OutOpt,
    Policy,
    PolicyOpt,
    RegisterOpt,
    RegistryOpt,
    ScriptOpt,
    SignKeyOpt,
    TargetOpt,
    TaskOpt,
    TrustedKeyOpt,
    VerifyPredictionsOpt,
    VersionOpt,
)
from toolkit.cli._output import BuildProgress, echo, echo_err, json_error
from toolkit.docker.images import DEFAULT_BASE_FILE, DEFAULT_IMAGE, ENV_BUILD_BASE, ENV_IMAGE, PIN_HINT, recorded_image

if TYPE_CHECKING:
    pass

__all__ = ["image_app"]

image_app = typer.Typer(cls=ToolkitGroup, no_args_is_help=True, help="Build, train in and check the pinned image.")
app.add_typer(image_app, name="image")

ImageOpt = Annotated[
    str | None, typer.Option("--image", help=f"Image to run (default ${ENV_IMAGE}, else {DEFAULT_IMAGE}).")
]


@image_app.command("build")
def build(
    base_image: Annotated[
        str | None,
        typer.Option(help=f"{PIN_HINT} (default ${ENV_BUILD_BASE}, else toolkit.toml's base_image: `toolkit base`)."),
    ] = None,
    tag: Annotated[str | None, typer.Option(help=f"Tag (default toolkit.toml's image, else {DEFAULT_IMAGE}).")] = None,
    lock: Annotated[Path | None, typer.Option(help="Lock file (default toolkit.toml's lock).")] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(help="Folder of the locked wheels; missing ones are downloaded (default: a shared cache)."),
    ] = None,
    context: Annotated[
        Path | None, typer.Option(hidden=True, help="The project folder (default: toolkit.toml's, else this one).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every layer.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the result line.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every build step (a failed build shows its log's tail).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object about the built image.")] = False,
) -> None:
    """Build the project's image: a digest-pinned base, its hash-locked wheels, its Debian
    system_packages and this toolkit, with the network off."""
    from toolkit.docker import build_image, resolve_base_image
    from toolkit.docker.system import resolve as resolve_system_packages
    from toolkit.project import current
    from toolkit.upgrade.runtime_image import default_wheelhouse, ensure_wheels

    settings = current()
    folder = context if context is not None else settings.root
    base = resolve_base_image(base_image, base_file=folder / DEFAULT_BASE_FILE)
    tag = tag or settings.image or DEFAULT_IMAGE
    lock = lock or settings.lock
    if not lock.is_file():
        from toolkit.errors import UsageError

        raise UsageError(f"{lock}: no such lock file; run `toolkit lock` first")
    # Debian packages resolved first: an unknown one is one line (exit 2) before any download or build.
    packages = resolve_system_packages(settings.system_packages, release=None)
    wheels = wheelhouse or default_wheelhouse(folder)
    if not quiet:
        echo_err(f"building {tag} from {base}" + ("" if verbose else " (-v shows each step)"))

    progress = BuildProgress(quiet=quiet, verbose=verbose)
    try:
        ensure_wheels(lock, wheels, on_progress=progress)
        result = build_image(
            base_image=base,
            tag=tag,
            context=folder,
            lock=lock,
            wheelhouse=wheels,
            system_packages=packages,
            no_cache=no_cache,
            on_progress=progress,
        )
    finally:
        progress.done()
    if as_json:
        print_json(result.to_dict())
    else:
        added = ", ".join(f"{p.name}={p.version}" for p in result.system_packages)
        line = f"built {result.tag} ({result.image_id[:19]}) in {result.seconds:.1f}s"
        echo(line + (f"; added {added}" if added else ""))


@image_app.command("pin")
def pin(
    ref: Annotated[str, typer.Argument(help="An image reference with a tag, e.g. python:3.11-slim-bookworm.")],
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help=f"Also write it to this file (without a toolkit.toml: {DEFAULT_BASE_FILE})."),
    ] = None,
    write: Annotated[bool, typer.Option("--write/--no-write", help="Record it (default yes).")] = True,
) -> None:
    """Resolve REF to name@sha256:<digest> and record it as toolkit.toml's base_image."""
    from toolkit.docker import pin_reference, write_pin
    from toolkit.project import current, record

    pinned = pin_reference(ref)
    if write:
        settings = current()
        if settings.path is not None and out_file is None:
            record(settings.path, "base_image", pinned)
            echo_err(f"recorded base_image in {settings.path}")
        else:
            target = out_file or DEFAULT_BASE_FILE
            write_pin(pinned, target)
            echo_err(f"wrote {target}")
    echo(pinned)


@image_app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    image: ImageOpt = None,
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    target: TargetOpt = None,
    model: ModelOpt = None,
    task: TaskOpt = None,
    name: NameOpt = None,
    version: VersionOpt = None,
    registry: RegistryOpt = None,
    register: RegisterOpt = None,
    out_dir: OutOpt = None,
    script: ScriptOpt = None,
    sign_key: SignKeyOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary; print only the path.")] = False,
) -> None:
    """Train inside the image (network off), then sign (with --sign-key) and register it on the host.

    Extra arguments after the options are passed to `toolkit train` in the container. With a
    script (--script, or `script` in the config), `python SCRIPT ARGS` runs there instead, as
    under `image run`, with the extra arguments as its ARGS, and every artifact it saves is
    registered.
    """
    from toolkit.docker import resolve_image, train_command, train_in_container
    from toolkit.training.config import resolve_config

    tag = resolve_image(image)
    configured = _config_script(config)
    if script is not None or configured is not None:
        from toolkit.training.script import refuse_recipe_flags

        recipe = {"--dataset": dataset, "--target": target, "--model": model, "--task": task}
        refuse_recipe_flags(script or str(configured), recipe | {"--name": name, "--version": version})
        _train_script_in_image(
            tag,
            config,
            script=script,
            extra=ctx.args,
            out_dir=out_dir,
            registry=registry,
            register=register,
            sign_key=sign_key,
        )
        return
    command = train_command(
        config=config,
        dataset=dataset,
        target=target,
        model=model,
        task=task,
        name=name,
        version=version,
        extra=ctx.args,
    )
    # The same config, read on the host: where to register, and whether, decided before training.
    cfg = resolve_config(config, dataset=dataset, name=name, version=version, out=out_dir, register=register)
    from toolkit.workflows.deliver import deliver, destination

    # A bad key or a registered version fails now, not after minutes of training.
    dest = destination(
        register=cfg.register,
        registry=registry if registry is not None else cfg.registry,
        out=cfg.out,
        sign_key=sign_key,
        unregistered=(cfg.model_name, cfg.version),
    )
    # A terminal for the container only when ours is one: its progress and colours, as on the host.
    tty = not quiet and sys.stdout.isatty()
    staging = _files.scratch_dir("toolkit-image-train")
    try:
        staged = train_in_container(tag, command, staging=staging, on_output=None if quiet else _passthrough, tty=tty)
        # Signed here, on the host: the private key never enters the container.
        delivered = deliver(staged, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if delivered.path is None:  # a directory registry always keeps the files; only a team's would not
        from toolkit.errors import RegistryError

        raise RegistryError(f"{delivered.note()}, but the registry kept no local file")
    final, card, closing = delivered.path, delivered.card, delivered.note()
    if quiet:
        echo(str(final))
        return
    # One summary, with this host's paths, ending with what happened to the artifact.
    from toolkit.cli.train import print_result

    print_result(card, card.metrics, final)
    echo(f"  image     {tag}")
    if delivered.signed:
        from toolkit.artifact import artifact_paths

        echo(f"  signed    {artifact_paths(final).signature} (key {sign_key})")
    echo(plain(closing))


@image_app.command("check")
def check(
    artifact: ArtifactRefArg,
    image: ImageOpt = None,
    policy: PolicyOpt = Policy.strict,
    as_json: JsonOpt = False,
    verify_predictions: VerifyPredictionsOpt = False,
    trusted_key: TrustedKeyOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Run the check-env gate inside the image; exit codes as check-env's (0 match, 1 mismatch, 3 integrity).

    2: bad usage; 5: Docker (no engine, the image is not built, the container was killed).
    The output names this host's paths and the image checked (its tag and ID).
    """
    from toolkit.errors import ToolkitError
    from toolkit.workflows.in_image import check_in_image, image_for

    model = artifact_arg(artifact, registry)
    tag = image_for(model, image)
    try:
        result = check_in_image(
            model,
            tag,
            policy=policy.value,
            as_json=as_json,
            verify_predictions=verify_predictions,
            trusted_keys=trusted_key,
            on_output=_passthrough,
        )
    except ToolkitError as e:
        if as_json:  # as check-env: scripts parsing stdout still get one object
            image_info = {"tag": tag, "id": None}
            json_error(e, artifact=str(artifact), image=image_info)
        raise
    image_id = result.image_id
    if as_json:
        _print_with_image(result.report, {"tag": tag, "id": image_id})
    else:
        echo(plain(f"checked in image {tag}" + (f" ({image_id})" if image_id else "")))
    raise typer.Exit(result.exit_code)


@image_app.command("predict")
def predict(
    artifact: ArtifactRefArg,
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV (or Parquet) with the feature columns.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the CSV here (atomically) instead of stdout.")
    ] = None,
    id_column: IdOpt = None,
    image: ImageOpt = None,
    policy: PolicyOpt = Policy.strict,
    trusted_key: TrustedKeyOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Predict inside the image the model was trained in (network off, inputs read-only); as `toolkit predict`.

    The CSV is written on this host: to stdout, or atomically to --out (never over an input).
    """
    from toolkit.workflows.in_image import predict_in_image

    model = artifact_arg(artifact, registry)
    tag, result = predict_in_image(
        model,
        input_file,
        out=out_file,
        image=image,
        id_column=id_column,
        policy=policy.value,
        trusted_keys=trusted_key,
        on_output=_passthrough,
    )
    if result.exit_code != 0:  # the container said why, in one line
        raise typer.Exit(result.exit_code)
    if out_file is None:
        _passthrough("stdout", result.csv)
        return
    echo_err(plain(f"wrote {result.rows()} predictions to {out_file} (in image {tag}, {result.image_id})"))


@image_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "allow_interspersed_args": False}
)
def run(
    ctx: typer.Context,
    image: ImageOpt = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Mounted writable at /out, named to the command as $TOOLKIT_OUT.")
    ] = Path("out"),
) -> None:
    """Run your own command in the image: `toolkit image run -- python train.py ARGS`.

    The current directory is mounted read-only at /work (the working directory), --out
    writable at /out; network off; files written are yours; the command's exit code is ours.
    """
    from toolkit.docker import resolve_image
    from toolkit.docker.usercode import run_command

    code = run_command(resolve_image(image), list(ctx.args), out=out_dir, on_output=_passthrough)
    raise typer.Exit(code)


@image_app.command("retrain")
def retrain(
    artifact: ArtifactRefArg,
    version: Annotated[str, typer.Option("--version", help="The new version, X.Y.Z.")],
    image: ImageOpt = None,
    dataset: Annotated[
        str | None, typer.Option(help="The training data, if not where the card's recipe found it (same sha256).")
    ] = None,
    registry: RegistryOpt = None,
    register: Annotated[
        bool, typer.Option("--register/--no-register", help="Register as staging (default yes).")
    ] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write it when not registering.")] = None,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Retrain ARTIFACT from its card's recipe inside the image (network off), then register it on the host."""
    from toolkit.artifact import verify
    from toolkit.docker import resolve_image, train_in_container
    from toolkit.identifiers import parse_version
    from toolkit.workflows.deliver import deliver, destination

    parse_version(version)
    model = artifact_arg(artifact, registry)
    card = verify(model, trusted_keys=trusted_key)  # with trust, the signature here on the host
    # A duplicate version fails before minutes of training, not after.
    dest = destination(
        register=register, registry=registry, out=out_dir or Path("out"), unregistered=(card.name, version)
    )
    args = [str(model), "--version", version]
    inputs = [model]
    if dataset is not None:
        args += ["--dataset", dataset]
        if not dataset.startswith("builtin:"):
            inputs.append(Path(dataset))
    staging = _files.scratch_dir("toolkit-image-retrain")
    try:
        staged = train_in_container(
            resolve_image(image, recorded=recorded_image(model)),
            args,
            staging=staging,
            inputs=inputs,
            on_output=_passthrough,
            command="retrain",
        )
        delivered = deliver(staged, dest, reason=f"retrained from {card.name}@{card.version} in the image")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if delivered.entry is not None:
        echo_err(delivered.note())
    echo(delivered.shown)


@image_app.command("rebuild")
def rebuild(
    artifact: ArtifactRefArg,
    tag: Annotated[
        str | None, typer.Option(help="Also tag the rebuilt image so (default: toolkit-runtime:<key>).")
    ] = None,
    context: Annotated[
        Path | None, typer.Option(hidden=True, help="The project folder (default: toolkit.toml's, else this one).")
    ] = None,
    wheelhouse: Annotated[
        Path | None, typer.Option(help="Where the card's locked wheels are downloaded (default: a shared cache).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No build progress.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every build step (a failed build shows its log's tail).")
    ] = False,
    trusted_key: TrustedKeyOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Rebuild ARTIFACT's runtime from its card alone (base digest + the card's lock), then gate it
    inside under strict: 0 it passes, 1 it still differs, 2 the card has nothing to rebuild from."""
    from toolkit.upgrade.runtime_image import rebuild as run

    progress = BuildProgress(quiet=quiet, verbose=verbose)
    try:
        result = run(
            artifact_arg(artifact, registry),
            tag=tag,
            context=context if context is not None else _project_root(),
            wheelhouse=wheelhouse,
            on_progress=progress,
            on_output=_passthrough,
            trusted_keys=trusted_key,
        )
    finally:
        progress.done()
    how = "reused (cache hit)" if result.image.cached else f"built in {result.image.seconds:.1f}s"
    echo_err(f"runtime {result.image.tag} ({result.image.image_id[:19]}) {how}")
    raise typer.Exit(result.exit_code)


# --- helpers -------------------------------------------------------------------------------


def _project_root() -> Path:
    from toolkit.project import current

    return current().root


def _config_script(config: Path | None) -> object:
    from toolkit.training.config import load_config

    return None if config is None else load_config(config).get("script")


def _train_script_in_image(
    tag: str,
    config: Path | None,
    *,
    script: Path | None,
    extra: list[str],
    out_dir: Path | None,
    registry: Path | None,
    register: bool | None,
    sign_key: Path | None,
) -> None:
    from toolkit.docker.usercode import run_script_in_container
    from toolkit.training.config import resolve_config
    from toolkit.workflows.deliver import deliver_all, destination

    cfg = resolve_config(config, script=script, out=out_dir, registry=registry, register=register)
    assert cfg.script is not None
    # A bad key fails now, not after the script ran.
    dest = destination(
        register=cfg.register,
        registry=cfg.registry,
        out=cfg.out,
        sign_key=sign_key,
        script=cfg.script,
        script_args=cfg.script_args,
    )
    staging = _files.scratch_dir("toolkit-image-script")
    try:
        # The script's stdout goes to stderr: ours carries only the artifacts' paths.
        staged = run_script_in_container(
            tag,
            cfg.script,
            [*cfg.script_args, *extra],
            staging=staging,
            on_output=lambda _, chunk: _passthrough("stderr", chunk),
        )
        for delivered in deliver_all(staged, dest):
            echo_err(delivered.note())
            echo(delivered.shown)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _passthrough(stream: str, chunk: bytes) -> None:
    # The container's stdout is ours (so `--json` stays one object on stdout); same for stderr.
    target = sys.stdout if stream == "stdout" else sys.stderr
    target.flush()
    buffer = getattr(target, "buffer", None)
    if buffer is not None:
        buffer.write(chunk)
        buffer.flush()
    else:  # a text-only stream (CliRunner)
        target.write(chunk.decode("utf-8", errors="replace"))
        target.flush()


def _print_with_image(data: bytes, image_info: dict[str, Any]) -> None:
    from toolkit import _json

    try:
        report = _json.loads(data)
    except _json.JsonError:  # not the gate's JSON (an older image?): passed on as it came
        _passthrough("stdout", data)
        return
    if isinstance(report, dict):
        report["image"] = image_info
    print_json(report)
