"""``toolkit train`` and ``toolkit predict``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from toolkit.cli._common import app, artifact_arg, err, out
from toolkit.cli._options import (
    ArtifactRefArg,
    ConfigOpt,
    DatasetOpt,
    IdOpt,
    ModelOpt,
    NameOpt,
    OutOpt,
    Policy,
    PolicyOpt,
    RegisterOpt,
    RegistryOpt,
    SignKeyOpt,
    TargetOpt,
    TrustedKeyOpt,
    VersionOpt,
)

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
    name: NameOpt = None,
    version: VersionOpt = None,
    out_dir: OutOpt = None,
    registry: RegistryOpt = None,
    register: RegisterOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary; print only the path.")] = False,
    sign_key: SignKeyOpt = None,
) -> None:
    """Train a pipeline, save it with its model card, and register it."""
    from toolkit.config import resolve_config
    from toolkit.train import artifact_path
    from toolkit.train import train as run_training

    cfg = resolve_config(
        config,
        dataset=dataset,
        target=target,
        model=model,
        name=name,
        version=version,
        out=out_dir,
        registry=registry,
        register=register,
    )
    registry_obj = None
    if cfg.register:
        from toolkit.registry import Registry, resolve_root

        registry_obj = Registry(resolve_root(cfg.registry))
        registry_obj.require_unregistered(cfg.model_name, cfg.version)  # before training, not after
    path = artifact_path(cfg.out, cfg.model_name, cfg.version)
    if sign_key is not None:  # a bad key fails now, not after training
        from toolkit.signing import load_signing_key

        load_signing_key(sign_key)
    display = None if quiet else _StageDisplay(err)
    try:
        result = run_training(cfg, progress=display)
    finally:
        if display is not None:
            display.stop()
    if sign_key is not None:  # before registering: with trust configured, add requires it
        from toolkit.signing import sign

        sign(result.path, sign_key)
    entry = None
    if registry_obj is not None:
        with registry_obj:
            entry = registry_obj.add(result.path)
    final = entry.path if entry is not None and entry.path is not None else path
    if quiet:
        out.print(str(final), markup=False)
        return
    if os.environ.get("TOOLKIT_TRAIN_SUMMARY") == "0":
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
    result = run_predict(model, input_file, policy=policy.value, trusted_keys=trusted_key, id_column=id_column)
    if result.ignored:
        shown = ", ".join(result.ignored[:5]) + (", ..." if len(result.ignored) > 5 else "")
        err.print(f"note: ignoring {len(result.ignored)} column(s) the model does not use: {shown}", markup=False)
    if out_file is None:
        sys.stdout.write(result.to_csv().decode("utf-8"))
        sys.stdout.flush()
        return
    write_csv(result, out_file, sources=inputs)
    err.print(f"wrote {len(result)} predictions to {out_file}", markup=False)


# --- helpers -------------------------------------------------------------------------------


class _StageDisplay:
    """Progress callback for ``toolkit.train.train``: a spinner per stage, a line when it ends."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Status | None = None
        self.started = 0.0

    def __call__(self, stage: str, event: str, detail: str) -> None:
        if event == "start":
            self.stop()
            self.started = time.perf_counter()
            label = f"{stage} {detail}".strip()
            self.status = self.console.status(_escape(f"{label} ..."))
            self.status.start()
            return
        self.stop()
        elapsed = time.perf_counter() - self.started
        self.console.print(f"[green]✓[/] {stage:<8} {_escape(detail)} [dim]({elapsed:.2f}s)[/]")

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _print_summary(result: Any, entry: Any) -> None:
    print_result(result.card, result.metrics, result.path)
    if entry is not None:
        out.print(f"  registered {_escape(str(entry.path))} ({entry.status})")
    else:
        out.print("  not registered (--no-register)")


def print_result(card: Any, metrics: Any, path: Any) -> None:
    """The summary's head: what was trained, its scores, where the artifact is (shared with ``image train``)."""
    out.print(f"[bold]{_escape(card.name)} {card.version}[/] {card.algorithm} on {_escape(card.data.source or '?')}")
    cv = metrics.get("cv", {})
    test = metrics.get("test", {})
    keys = [k for k in test if not k.endswith("_std")]
    out.print(
        "  cv    " + "  ".join(f"{k} {cv.get(k, float('nan')):.3f} ± {cv.get(k + '_std', 0.0):.3f}" for k in keys)
    )
    out.print("  test  " + "  ".join(f"{k} {test[k]:.3f}" for k in keys))
    out.print(f"  artifact  {_escape(str(path))}")
    out.print(f"  sha256    {card.artifact.sha256}")
    out.print(f"  data      sha256 {card.data.sha256}")


def _escape(text: str) -> str:
    # rich is imported on first use only: every command's start-up, the gate's included, pays for imports here.
    from rich.markup import escape as rich_escape

    return rich_escape(text)
