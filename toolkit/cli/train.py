"""``toolkit train`` and ``toolkit predict``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toolkit import _files, env
from toolkit.cli._common import app, artifact_arg, err, out
from toolkit.cli._options import (
    AllowModuleOpt,
    ArtifactRefArg,
    AuthorOpt,
    ConfigOpt,
    CvFoldsOpt,
    DatasetOpt,
    IdOpt,
    IntendedUseOpt,
    LimitationsOpt,
    ModelOpt,
    NameOpt,
    OutOpt,
    ParamOpt,
    Policy,
    PolicyOpt,
    RegisterOpt,
    RegistryOpt,
    ScalerOpt,
    ScriptArgOpt,
    ScriptOpt,
    SeedOpt,
    SignKeyOpt,
    TargetOpt,
    TaskOpt,
    TestSizeOpt,
    TrustedKeyOpt,
    TrustOpt,
    VersionOpt,
)
from toolkit.cli._output import echo, echo_err, markup

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status

__all__: list[str] = []


@app.command()
def train(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    target: TargetOpt = None,
    model: ModelOpt = None,
    task: TaskOpt = None,
    name: NameOpt = None,
    version: VersionOpt = None,
    out_dir: OutOpt = None,
    registry: RegistryOpt = None,
    register: RegisterOpt = None,
    script: ScriptOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary; print only the path.")] = False,
    sign_key: SignKeyOpt = None,
    seed: SeedOpt = None,
    test_size: TestSizeOpt = None,
    cv_folds: CvFoldsOpt = None,
    scaler: ScalerOpt = None,
    param: ParamOpt = None,
    intended_use: IntendedUseOpt = None,
    limitations: LimitationsOpt = None,
    author: AuthorOpt = None,
    allow_module: AllowModuleOpt = None,
    script_arg: ScriptArgOpt = None,
) -> None:
    """Train a pipeline, save it with its model card, and register it.

    With a script (--script, or `script` in the config), run that instead of the built-in
    recipe: it saves its artifacts with toolkit.save into $TOOLKIT_OUT, and they are registered.
    """
    from toolkit.training.config import parse_params, resolve_config
    from toolkit.training.train import artifact_path
    from toolkit.training.train import train as run_training

    cfg = resolve_config(
        config,
        dataset=dataset,
        target=target,
        model=model,
        task=task,
        name=name,
        version=version,
        out=out_dir,
        registry=registry,
        register=register,
        seed=seed,
        test_size=test_size,
        cv_folds=cv_folds,
        scaler=scaler,
        params=parse_params(param),
        intended_use=intended_use,
        limitations=limitations,
        author=author,
        script=script,
        allow_modules=None if allow_module is None else tuple(allow_module),
        script_args=None if script_arg is None else tuple(script_arg),
    )
    for note in cfg.notes:
        echo_err(f"note: {note}")
    if cfg.script is not None:
        from toolkit.training.script import refuse_recipe_flags

        recipe = {"--dataset": dataset, "--target": target, "--model": model, "--task": task}
        refuse_recipe_flags(cfg.script, recipe | {"--name": name, "--version": version})
        _train_with_script(cfg, quiet=quiet, sign_key=sign_key)
        return
    from toolkit.workflows.deliver import deliver, destination

    # Before training, not after: a bad signing key, a version registered already.
    dest = destination(
        register=cfg.register,
        registry=cfg.registry,
        out=cfg.out,
        sign_key=sign_key,
        unregistered=(cfg.model_name, cfg.version),
    )
    path = artifact_path(cfg.out, cfg.model_name, cfg.version)
    display = None if quiet else _StageDisplay(err)
    try:
        result = run_training(cfg, progress=display)
    finally:
        if display is not None:
            display.stop()
    delivered = deliver(result.path, dest)  # already in cfg.out: signed, registered or left there
    entry = delivered.entry
    final = delivered.path or path
    if quiet:
        echo(str(final))
        return
    if os.environ.get(env.TRAIN_SUMMARY) == "0":
        return  # `image train` runs this in a container: the host prints the summary, with host paths
    _print_summary(result, entry)


@app.command()
def predict(
    artifact: ArtifactRefArg,
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV (or Parquet) with the feature columns.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the CSV here instead of stdout.")] = None,
    policy: PolicyOpt = Policy.strict,
    trusted_key: TrustedKeyOpt = None,
    registry: RegistryOpt = None,
    id_column: IdOpt = None,
    trust: TrustOpt = None,
) -> None:
    """Predict with a guarded load: one row per input row, the class and each class's probability.

    Input columns are matched by name; extra columns (e.g. the target) are ignored; --id COLUMN
    passes an identifier column through, as the output's first column.
    --out is written atomically and never over the input itself.
    """
    from toolkit.artifact import artifact_paths
    from toolkit.prediction import check_output, write_csv
    from toolkit.prediction import predict as run_predict

    model = artifact_arg(artifact, registry)
    paths = artifact_paths(model)
    inputs = (input_file, paths.model, paths.card_json, paths.card_md)
    if out_file is not None:
        check_output(out_file, sources=inputs)  # before minutes of loading and predicting
    result = run_predict(
        model, input_file, policy=policy.value, trusted_keys=trusted_key, id_column=id_column, trusted=trust or ()
    )
    if result.ignored:
        shown = ", ".join(result.ignored[:5]) + (", ..." if len(result.ignored) > 5 else "")
        echo_err(f"note: ignoring {len(result.ignored)} column(s) the model does not use: {shown}")
    if out_file is None:
        sys.stdout.write(result.to_csv().decode("utf-8"))
        sys.stdout.flush()
        return
    write_csv(result, out_file, sources=inputs)
    echo_err(f"wrote {len(result)} predictions to {out_file}")


# --- helpers -------------------------------------------------------------------------------


def _train_with_script(cfg: Any, *, quiet: bool, sign_key: Path | None) -> None:
    """Run the config's script here (``sys.executable``), then register what it saved."""
    import shutil

    from toolkit.training.script import resolve_script, run_script
    from toolkit.workflows.deliver import deliver_all, destination

    assert cfg.script is not None
    relative = resolve_script(cfg.script, workdir=Path.cwd())
    dest = destination(
        register=cfg.register,
        registry=cfg.registry,
        out=cfg.out,
        sign_key=sign_key,
        script=cfg.script,
        script_args=cfg.script_args,
    )
    staging = _files.scratch_dir("toolkit-script")
    try:
        if not quiet:
            echo_err(f"running {relative} (TOOLKIT_OUT={staging})")
        staged = run_script(relative, cfg.script_args, out=staging, on_output=_to_stderr)
        for delivered in deliver_all(staged, dest):
            if not quiet:
                echo_err(delivered.note())
            echo(delivered.shown)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _to_stderr(stream: str, chunk: bytes) -> None:
    # The script's stdout too: ours carries only the artifacts' paths.
    del stream
    sys.stdout.flush()
    buffer = getattr(sys.stderr, "buffer", None)
    if buffer is not None:
        buffer.write(chunk)
        buffer.flush()
    else:  # a text-only stream (CliRunner)
        sys.stderr.write(chunk.decode("utf-8", errors="replace"))
        sys.stderr.flush()


class _StageDisplay:
    """Progress callback for ``toolkit.training.train.train``: a spinner per stage, a line when it ends."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Status | None = None
        self.started = 0.0

    def __call__(self, stage: str, event: str, detail: str) -> None:
        if event == "start":
            self.stop()
            self.started = time.perf_counter()
            label = f"{stage} {detail}".strip()
            self.status = self.console.status(markup(f"{label} ..."))
            self.status.start()
            return
        self.stop()
        elapsed = time.perf_counter() - self.started
        self.console.print(f"[green]✓[/] {stage:<8} {markup(detail)} [dim]({elapsed:.2f}s)[/]")

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _print_summary(result: Any, entry: Any) -> None:
    print_result(result.card, result.metrics, result.path)
    if entry is not None:
        out.print(f"  registered {markup(str(entry.path))} ({entry.status})")
    else:
        out.print("  not registered (--no-register)")


def print_result(card: Any, metrics: Any, path: Any) -> None:
    """The summary's head: what was trained, its scores, where the artifact is (shared with ``image train``)."""
    # Everything from the card is escaped: an algorithm's name is not trusted markup.
    out.print(
        f"[bold]{markup(card.name)} {markup(card.version)}[/] {markup(card.algorithm)} "
        f"on {markup(card.data.source or '?')}"
    )
    cv = metrics.get("cv", {})
    test = metrics.get("test", {})
    keys = [k for k in test if not k.endswith("_std")]
    out.print(
        "  cv    "
        + "  ".join(f"{markup(k)} {cv.get(k, float('nan')):.3f} ± {cv.get(k + '_std', 0.0):.3f}" for k in keys)
    )
    out.print("  test  " + "  ".join(f"{markup(k)} {test[k]:.3f}" for k in keys))
    out.print(f"  artifact  {markup(str(path))}")
    out.print(f"  sha256    {card.artifact.sha256}")
    out.print(f"  data      sha256 {card.data.sha256}")
