"""``upgrade-check``: is a candidate lock safe for the models a registry serves?

On the host: select the registry's versions, build (or find) the candidate image (the same
base, the candidate lock, the current toolkit), and run ONE container that checks every
selected model (one interpreter start, the imports shared), then register what ``--retrain``
produced. In the container: :func:`run_job` reads the job's manifest, decides each model's
verdict with :func:`toolkit.upgrade.verdict.check_artifact`, retrains when asked, and writes the
results back. The manifest and results are JSON files in a folder mounted at ``/job``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import _files, _json, env
from toolkit.errors import DockerError, RegistryError, ToolkitError, UsageError
from toolkit.upgrade.verdict import ModelCheck, RetrainOutcome, UpgradeReport

if TYPE_CHECKING:
    from toolkit.docker.system import SystemPackage
    from toolkit.signing import TrustedKeys

__all__ = ["STAGES", "Selected", "next_patch", "run_job", "select", "upgrade_check"]

STAGES = ("production", "staging", "all")
JOB_MOUNT = "/job"
_MANIFEST = "manifest.json"
_RESULTS = "results.json"
_PROGRESS = "upgrade-check: "  # the prefix of the container's progress lines on stderr

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class Selected:
    """A registry version to check."""

    name: str
    version: str
    status: str
    path: Path


def select(registry: Path, *, name: str | None = None, stage: str = "production") -> list[Selected]:
    """The versions of ``registry`` (every name, or ``name``) in ``stage``, by name then version.

    Raises: UsageError (unknown stage), RegistryError (invalid or unknown name).
    """
    from toolkit.registry.registry import Registry

    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    wanted = {"production": ("production",), "staging": ("staging",), "all": ("production", "staging")}[stage]
    chosen: list[Selected] = []
    with Registry(registry) as reg:
        names = [name] if name is not None else [s.name for s in reg.list_names()]
        for each in names:
            for entry in reversed(reg.list_versions(each)):
                if entry.status in wanted:
                    if entry.path is None:
                        raise UsageError(
                            f"{entry.name} {entry.version}: not a local file; upgrade-check needs a directory registry"
                        )
                    chosen.append(
                        Selected(name=entry.name, version=entry.version, status=entry.status, path=entry.path)
                    )
    return chosen


def next_patch(registry: Path, name: str) -> str:
    """The next free patch version after NAME's highest, for a retrained model."""
    from toolkit.identifiers import parse_version
    from toolkit.registry.registry import Registry

    with Registry(registry) as reg:
        latest = reg.list_versions(name, limit=1)[0].version
    major, minor, patch = parse_version(latest)
    return f"{major}.{minor}.{patch + 1}"


def upgrade_check(
    lock: Path,
    *,
    registry: Path,
    base_image: str,
    name: str | None = None,
    stage: str = "production",
    retrain: bool = False,
    context: Path = Path(),
    wheelhouse: Path | None = None,
    system_packages: Sequence[SystemPackage] = (),
    on_progress: Progress | None = None,
    client: Any | None = None,
    trusted_keys: TrustedKeys = None,
) -> UpgradeReport:
    """Check every selected registry version in the candidate image of ``lock``, in one container.

    Raises: UsageError (bad lock or stage, nothing selected), RegistryError, IntegrityError (with
    trusted keys: a selected model's signature), DockerError
    (the candidate image cannot be built, or its container failed).
    """
    from toolkit import docker as tdocker
    from toolkit.docker.context import lock_pins
    from toolkit.signing import trusted_keys_from_env
    from toolkit.upgrade.runtime_image import ensure_runtime_image

    started = time.monotonic()
    emit = on_progress or _silent
    if not lock.is_file():
        raise UsageError(f"{lock}: no such lock file")
    lock_pins(lock)  # data, not pip options: refused before anything runs
    selected = select(registry, name=name, stage=stage)
    if not selected:
        which = f"{name} " if name else ""
        raise UsageError(f"no {which}{stage} model in the registry {registry} to check")
    for item in selected:
        if not item.path.is_file():
            raise RegistryError(f"{item.name} {item.version}: its artifact {item.path} is missing from the registry")
    keys = trusted_keys_from_env(trusted_keys)
    if keys:  # checked here on the host, before any container: the keys never enter the image
        from toolkit.artifact import verify

        for item in selected:
            verify(item.path, trusted_keys=keys)
    timings: dict[str, float] = {}
    client = client or tdocker.connect()
    phase = time.monotonic()
    emit(f"candidate image for {lock}")
    image = ensure_runtime_image(
        base_image=base_image,
        lock=lock,
        context=context,
        wheelhouse=wheelhouse,
        system_packages=system_packages,
        on_progress=_build_lines(emit),
        client=client,
    )
    timings["image"] = time.monotonic() - phase
    emit(f"candidate image {image.tag}" + (" (cached)" if image.cached else " (built)"))
    versions = _retrain_versions(registry, selected) if retrain else {}
    phase = time.monotonic()
    with _files.scratch("toolkit-upgrade") as tmp:
        job = Path(tmp)
        checks, runtime = _run_in_image(image.tag, selected, job, versions, emit=emit, client=client)
        timings["check"] = time.monotonic() - phase
        if retrain:
            phase = time.monotonic()
            checks = _register_retrained(checks, job, registry, emit=emit)
            timings["register"] = time.monotonic() - phase
    return UpgradeReport(
        lock=str(lock),
        lock_sha256=image.lock_sha256,
        image=image.tag,
        image_id=image.image_id,
        cached=image.cached,
        base_image=base_image,
        registry=str(registry),
        stage=stage,
        models=tuple(checks),
        runtime=_candidate_runtime(runtime, image.tag, base_image=base_image, lock_sha256=image.lock_sha256),
        seconds=time.monotonic() - started,
        timings=timings,
    )


def run_job(job: Path, *, progress: Progress | None = None) -> None:
    """The container's side: check (and retrain) what ``job/manifest.json`` lists; write the
    results to ``job/results.json``. Raises: UsageError (a manifest this toolkit did not write)."""
    from toolkit.upgrade.verdict import check_artifact

    emit = progress or _silent
    try:
        manifest = _json.loads((job / _MANIFEST).read_bytes())
        models = [(Path(m["path"]), m.get("status"), m.get("retrain_version")) for m in manifest["models"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{job / _MANIFEST}: not an upgrade-check manifest ({e})") from e
    results = []
    for index, (path, status, retrain_version) in enumerate(models, start=1):
        emit(f"checking {path.name} ({index}/{len(models)})")
        check = check_artifact(path, status=status)
        if retrain_version:
            emit(f"retraining {check.name} {check.version} as {retrain_version} ({index}/{len(models)})")
            check = check.with_retrain(_retrain_here(path, retrain_version, job / "retrained" / str(index)))
        emit(f"{check.name} {check.version}: {check.verdict}")
        results.append(check.to_dict())
    from toolkit.certification import certified_runtime, runtime_to_dict
    from toolkit.fingerprint import capture

    # The candidate runtime as seen from inside: what --certify records and the gate compares.
    runtime = runtime_to_dict(certified_runtime(capture(blas=False)))
    _files.save(job / _RESULTS, json.dumps({"models": results, "runtime": runtime}).encode("utf-8"))


# --- host helpers ----------------------------------------------------------------------------


def _run_in_image(
    image: str,
    selected: Sequence[Selected],
    job: Path,
    versions: dict[tuple[str, str], str],
    *,
    emit: Progress,
    client: Any,
) -> tuple[list[ModelCheck], Any]:
    """Each selected model's check in ``image``, and the runtime the container saw (unparsed)."""
    from toolkit import docker as tdocker

    mounts = []
    models = []
    for index, item in enumerate(selected):
        target = f"/models/{index}"
        mounts.append(tdocker.Mount(source=item.path.parent.resolve(), target=target))
        models.append(
            {
                "path": f"{target}/{item.path.name}",
                "status": item.status,
                "retrain_version": versions.get((item.name, item.version)),
            }
        )
    (job / _MANIFEST).write_text(json.dumps({"models": models}), encoding="utf-8")
    mounts.append(tdocker.Mount(source=job, target=JOB_MOUNT, read_only=False))
    uid = os.getuid()
    if uid == 0:
        # Root runs the container as the image's own user, which must be able to write the job.
        os.chown(job, tdocker.IMAGE_UID, tdocker.IMAGE_UID)
        user = f"{tdocker.IMAGE_UID}:{tdocker.IMAGE_UID}"
        environment: dict[str, str] = {}
    else:
        user = f"{uid}:{os.getgid()}"
        environment = {env.HOME: "/tmp"}
    if os.environ.get(env.SOURCE_DATE_EPOCH):
        environment[env.SOURCE_DATE_EPOCH] = os.environ[env.SOURCE_DATE_EPOCH]
    lines = _LineSplitter(emit)
    try:
        result = tdocker.run_in_container(
            image,
            ["upgrade-check", "--job", JOB_MOUNT],
            mounts=mounts,
            user=user,
            environment=environment,
            on_output=lines,
            client=client,
        )
    finally:
        if uid == 0:
            _chown_tree(job, 0, 0)
    try:
        # What the container left behind: hostile until parsed strictly.
        raw = _json.loads((job / _RESULTS).read_bytes())
        checks = [ModelCheck.from_dict(m) for m in raw["models"]]
        runtime = raw["runtime"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        tail = " | ".join(lines.tail) or "no output"
        raise DockerError(
            f"upgrade-check in {image} ended with exit code {result.exit_code} and no results ({tail})"
        ) from e
    if len(checks) != len(selected):
        raise DockerError(f"upgrade-check in {image} reported {len(checks)} models, expected {len(selected)}")
    return checks, runtime


def _candidate_runtime(raw: Any, image: str, *, base_image: str, lock_sha256: str) -> Any:
    """The runtime the container reported (hostile until parsed). Raises: DockerError."""
    from toolkit.certification import runtime_from_dict
    from toolkit.errors import IntegrityError

    try:
        return runtime_from_dict(raw, f"upgrade-check in {image}", base_image=base_image, lock_sha256=lock_sha256)
    except IntegrityError as e:
        raise DockerError(f"upgrade-check in {image} reported a malformed runtime: {e}") from e


def _retrain_versions(registry: Path, selected: Sequence[Selected]) -> dict[tuple[str, str], str]:
    """One retrain per name (its production version when selected, else its highest), as the next patch."""
    chosen: dict[str, Selected] = {}
    for item in selected:  # by name, then ascending version: production wins, else the last one seen
        if chosen.get(item.name) is None or chosen[item.name].status != "production":
            chosen[item.name] = item
    return {(c.name, c.version): next_patch(registry, c.name) for c in chosen.values()}


def _register_retrained(checks: list[ModelCheck], job: Path, registry: Path, *, emit: Progress) -> list[ModelCheck]:
    from toolkit.registry.registry import Registry

    done = []
    for index, check in enumerate(checks, start=1):
        outcome = check.retrain
        if outcome is None or outcome.version is None or outcome.error:
            done.append(check)
            continue
        found = sorted((job / "retrained" / str(index)).glob("*.joblib"))
        if len(found) != 1:
            done.append(check.with_retrain(_failed(outcome, f"the container left {len(found)} artifacts, expected 1")))
            continue
        try:
            with Registry(registry) as reg:
                entry = reg.add(found[0], reason=f"retrained from {check.name}@{check.version} by upgrade-check")
        except ToolkitError as e:
            # A read-only or remote registry: the verdicts stand, the retrain is reported as not kept.
            done.append(check.with_retrain(_failed(outcome, f"not registered: {e}")))
            continue
        emit(f"registered {entry.name} {entry.version} as {entry.status}")
        done.append(
            check.with_retrain(
                RetrainOutcome(
                    version=outcome.version,
                    metrics=outcome.metrics,
                    parent_metrics=outcome.parent_metrics,
                    registered=True,
                    path=str(entry.path),
                )
            )
        )
    return done


def _failed(outcome: RetrainOutcome, error: str) -> RetrainOutcome:
    return RetrainOutcome(
        version=outcome.version, metrics=outcome.metrics, parent_metrics=outcome.parent_metrics, error=error
    )


def _retrain_here(path: Path, version: str, out: Path) -> RetrainOutcome:
    from toolkit.artifact import read_card
    from toolkit.training.retrain import retrain

    try:
        parent_metrics = read_card(path).metrics
    except ToolkitError:
        parent_metrics = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        result = retrain(path, version=version, out=out, reason="retrained by upgrade-check in the candidate runtime")
    except ToolkitError as e:
        return RetrainOutcome(version=None, metrics={}, parent_metrics=parent_metrics, error=str(e))
    except Exception as e:  # the recipe under a new library: its own error is the finding
        return RetrainOutcome(version=None, metrics={}, parent_metrics=parent_metrics, error=f"{type(e).__name__}: {e}")
    return RetrainOutcome(version=version, metrics=result.card.metrics, parent_metrics=parent_metrics)


class _LineSplitter:
    """The container's output: its progress lines to the caller, the rest kept as a tail for errors."""

    def __init__(self, emit: Progress) -> None:
        self.emit = emit
        self.buffer = b""
        self.tail: list[str] = []

    def __call__(self, stream: str, chunk: bytes) -> None:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith(_PROGRESS):
                self.emit(line.removeprefix(_PROGRESS))
            elif line:
                self.tail = [*self.tail[-4:], line]


def _build_lines(emit: Progress) -> Callable[[str], None]:
    def on_build(text: str) -> None:
        for line in text.splitlines():
            if line.strip().startswith("Step "):
                emit(f"build {line.strip()}")
            elif line.strip().startswith(("downloading", "wheel ")):
                emit(line.strip())

    return on_build


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        with contextlib.suppress(OSError):
            os.chown(dirpath, uid, gid)
        for entry in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                os.chown(os.path.join(dirpath, entry), uid, gid, follow_symlinks=False)


def _silent(message: str) -> None:
    del message
