"""The three jobs the image does: build it, train in it, gate in it; and their container command lines.

The core never prints: progress and container output go to the callbacks the caller passes.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import _files, env
from toolkit.docker.client import Mount, OutputCallback, build, connect, run, stdout_into
from toolkit.docker.context import ContextStream, git_revision, lock_sha256, locked_wheels, write_context
from toolkit.docker.images import DEFAULT_IMAGE, IMAGE_UID, validate_base_image
from toolkit.docker.paths import PathMap, Rewriter
from toolkit.docker.system import SystemPackage
from toolkit.errors import EXIT_INTERNAL, DockerError, IntegrityError, RegistryError, ToolkitError, UsageError
from toolkit.identifiers import current_user

__all__ = [
    "BuildResult",
    "PredictResult",
    "TrainCommand",
    "base_state",
    "build_image",
    "check_command",
    "check_in_container",
    "compare_in_container",
    "default_cache",
    "gate_in_model_image",
    "model_image",
    "predict_in_container",
    "train_command",
    "train_in_container",
]

# A toolkit error inside a container keeps its meaning (a bad flag is still exit 2).
_INNER_ERRORS: dict[int, type[ToolkitError]] = {
    ToolkitError.exit_code: ToolkitError,
    UsageError.exit_code: UsageError,
    IntegrityError.exit_code: IntegrityError,
    RegistryError.exit_code: RegistryError,
}
_GATE_EXIT_CODES = range(6)  # what `toolkit check-env` itself ever returns
# What `toolkit predict` returns: its one error line is the container's, the code is the caller's.
_PREDICT_EXIT_CODES = frozenset({0, 1, 2, 3, 4, EXIT_INTERNAL})


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildResult:
    """A built image and what it was built from."""

    tag: str
    image_id: str
    base_image: str
    lock_sha256: str
    revision: str
    seconds: float
    system_packages: tuple[SystemPackage, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "image_id": self.image_id,
            "base_image": self.base_image,
            "lock_sha256": self.lock_sha256,
            "revision": self.revision,
            "seconds": round(self.seconds, 2),
            "system_packages": [p.to_dict() for p in self.system_packages],
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class PredictResult:
    """How ``toolkit predict`` ended in the image, the CSV it printed, and the image that ran."""

    exit_code: int  # toolkit's own: 0, or the error its one line (already passed on) was about
    csv: bytes
    image_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainCommand:
    """``toolkit train``'s arguments for the container, and the host files they name."""

    args: tuple[str, ...]
    inputs: tuple[Path, ...]


def build_image(
    *,
    base_image: str,
    tag: str = DEFAULT_IMAGE,
    context: Path = Path(),
    lock: Path | None = None,
    wheelhouse: Path | None = None,
    revision: str | None = None,
    system_packages: Sequence[str | SystemPackage] = (),
    deb_cache: Path | None = None,
    no_cache: bool = False,
    on_progress: Callable[[str], None] | None = None,
    client: Any | None = None,
) -> BuildResult:
    """Build the image with the network off: the packaged Dockerfile, ``lock`` and its wheels from
    ``wheelhouse``, the Debian ``system_packages`` (names resolved to this host's candidate
    version, or exact ones), and a wheel of this toolkit. ``context`` is the project folder: the
    default lock and wheelhouse are there, and its git commit is the image's revision label.

    Raises: UsageError (unpinned base, missing lock or wheels, an unknown Debian package: before
    any build), DockerError.
    """
    from toolkit.docker import system

    validate_base_image(base_image)
    lock = lock or context / "requirements.lock"
    wheelhouse = wheelhouse or context / "wheelhouse"
    lock_hash = lock_sha256(lock)
    revision = revision or git_revision(context)
    wheels = locked_wheels(lock, wheelhouse)
    names = [p for p in system_packages if isinstance(p, str)]
    packages = [p for p in system_packages if isinstance(p, system.SystemPackage)]
    packages += system.resolve(names, release=None)  # an unknown name: exit 2 before Docker is asked
    client = client or connect()
    if packages:
        base = base_state(client, base_image, cache=deb_cache or default_cache() / "debs")
        host = system.host_release()
        if base.release != host:
            raise UsageError(
                f"system_packages: the base image is Debian {base.release or '(unknown)'}, this host's apt serves "
                f"{host or 'no Debian release'}: the .deb files would be for the wrong release"
            )
        packages = system.closure(packages, base_status=base.status)  # and what they need that the base lacks
    debs = system.fetch(packages, deb_cache or default_cache() / "debs", on_progress=on_progress)
    started = time.monotonic()
    with _files.scratch("toolkit-dist") as dist:
        toolkit_wheel = _self_wheel(Path(dist))
        stream = ContextStream(
            lambda fileobj: write_context(
                fileobj,
                lock=lock,
                wheels=wheels,
                toolkit_wheel=toolkit_wheel,
                debs=debs,
                system_manifest=system.manifest(packages),
            )
        )
        try:
            image_id = build(
                client,
                stream,
                tag=tag,
                buildargs={
                    "BASE_IMAGE": base_image,
                    "BASE_DIGEST": base_image.rpartition("@")[2],
                    "LOCK_SHA256": lock_hash,
                    "REVISION": revision,
                },
                no_cache=no_cache,
                on_progress=on_progress,
            )
        except DockerError:
            if stream.error is not None:  # the context could not be written: that is the cause
                raise stream.error from None
            raise
    return BuildResult(
        tag=tag,
        image_id=image_id,
        base_image=base_image,
        lock_sha256=lock_hash,
        revision=revision,
        seconds=time.monotonic() - started,
        system_packages=tuple(sorted(packages, key=lambda p: p.name)),
    )


def _self_wheel(scratch: Path) -> Path:
    """This toolkit's wheel: the one cached for exactly these files, else one built in ``scratch``
    (a cache that cannot be written costs the build nothing but the time)."""
    from toolkit.docker.selfwheel import build_self_wheel, cached_self_wheel

    try:
        return cached_self_wheel(default_cache() / "selfwheel")
    except UsageError:
        return build_self_wheel(scratch)


def default_cache() -> Path:
    """Where downloads are kept across projects: ``$TOOLKIT_CACHE``, else ``$XDG_CACHE_HOME/toolkit``."""
    explicit = os.environ.get(env.CACHE)
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "toolkit"


@dataclass(frozen=True, kw_only=True, slots=True)
class BaseState:
    """What a base image's Debian holds: its release and its dpkg status (the installed packages)."""

    release: str | None
    status: str


_STATUS_LIMIT = 16 * 1024 * 1024  # a minbase's status is ~100 KB; a full Debian's a few MB


def base_state(client: Any, base_image: str, *, cache: Path | None = None) -> BaseState:
    """``base_image``'s release (``VERSION_CODENAME``) and ``/var/lib/dpkg/status``, read once in a
    network-less container and kept in ``cache`` by the base's digest (a digest's files never change)."""
    from toolkit import _json
    from toolkit.docker.system import release_of

    digest = validate_base_image(base_image).rpartition("@sha256:")[2]
    kept = cache / f"base-{digest}.json" if cache is not None else None
    if kept is not None and kept.is_file():
        with contextlib.suppress(OSError, ValueError):
            data = _json.loads(kept.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("status"), str):
                release = data.get("release")
                return BaseState(release=release if isinstance(release, str) else None, status=data["status"])
    printed = bytearray()
    files = ["/etc/os-release", "/var/lib/dpkg/status"]
    result = run(client, base_image, files, entrypoint=["cat"], on_output=stdout_into(printed, limit=_STATUS_LIMIT))
    if result.exit_code != 0:
        raise DockerError(f"cannot read {' and '.join(files)} in {base_image} (exit {result.exit_code})")
    text = printed.decode("utf-8", errors="replace")
    cut = text.find("Package: ")
    state = BaseState(release=release_of(text[:cut] if cut >= 0 else text), status=text[cut:] if cut >= 0 else "")
    if kept is not None:
        with contextlib.suppress(OSError):
            kept.parent.mkdir(parents=True, exist_ok=True)
            tmp = _files.write_temp(kept, json.dumps({"release": state.release, "status": state.status}).encode())
            _files.publish(tmp, kept, overwrite=True)
    return state


def gate_in_model_image(model: Path, policy: str) -> str | None:
    """Run the gate on ``model`` in the image it was trained in (its card's, else toolkit.toml's);
    return that image's name when the gate passes there, else None (no image known, no engine,
    a mismatch there too). For promote and rollback from a host that lacks the model's packages."""
    image = model_image(model)
    if not image:
        return None
    try:
        code = check_in_container(image, model, policy=policy)
    except (DockerError, UsageError):
        return None
    return image if code == 0 else None


def model_image(model: Path) -> str | None:
    """The image ``model`` was trained in: its card's (``environment.image``), else toolkit.toml's;
    None when neither names one. The one rule for every registry operation that must load a model
    this host cannot (promote's and rollback's gate, compare's re-scoring)."""
    from toolkit.docker.images import recorded_image
    from toolkit.project import current

    return recorded_image(model) or current().image or None


def compare_in_container(
    image: str,
    registry_root: Path,
    compare_args: Sequence[str],
    *,
    inputs: Sequence[Path] = (),
    on_output: OutputCallback | None = None,
    client: Any | None = None,
) -> dict[str, Any]:
    """Run ``toolkit registry compare COMPARE_ARGS --json`` in ``image`` against the directory
    registry at ``registry_root``; return the comparison it printed (its JSON object).

    The registry is mounted read-only at /registry, the working directory read-only at /work
    (a card's relative data source means there what it means here), each path in ``inputs``
    (a ``--dataset`` file, trusted keys) read-only and rewritten in the arguments; nothing in the
    container can write anywhere but /tmp, it has no network and no capabilities, and it runs as
    a non-root user (the image's, or the caller's own uid). Its messages reach
    ``on_output`` with host paths. A toolkit error in the container is raised here as the same
    class with its one line. Raises: ToolkitError (the container's), DockerError (killed, engine
    error, no JSON object on its stdout).
    """
    from toolkit import _json

    workdir = Path.cwd().resolve()
    root = registry_root.resolve()
    args, mounts = map_inputs(list(compare_args), inputs, workdir)
    uid = os.getuid()
    # The registry by itself too: "no model named 'x' in the registry /registry" names the host's.
    prefixes = {
        "/registry/": f"{registry_root}/",
        "/registry": str(registry_root),
        **_host_paths(mounts, workdir).prefixes,
    }
    rewriter = Rewriter(PathMap(prefixes=prefixes), on_output)
    printed = bytearray()  # stdout is the JSON answer, read here, never shown as it is

    try:
        result = run(
            client or connect(),
            image,
            ["registry", "compare", *args, "--registry", "/registry", "--json"],
            mounts=[Mount(source=root, target="/registry"), Mount(source=workdir, target="/work"), *mounts],
            user=None if uid == 0 else f"{uid}:{os.getgid()}",
            environment={env.HOME: "/tmp"} if uid != 0 else {},
            working_dir="/work",
            on_output=stdout_into(printed, rewriter, limit=_ANSWER_LIMIT),
            drop_capabilities=True,  # it reads the registry and computes: nothing more
        )
    finally:
        rewriter.flush()
    try:
        answer = _json.loads(printed.decode("utf-8", errors="replace"))
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise DockerError(f"compare in {image} ended with exit code {result.exit_code} and no JSON answer")
    if result.exit_code != 0:
        error = _INNER_ERRORS.get(result.exit_code)
        message = answer.get("error")
        if error is None or not isinstance(message, str):
            raise DockerError(f"compare in {image} ended with exit code {result.exit_code} (killed or crashed)")
        # The exit code keeps its meaning (an environment mismatch there is exit 1 here too).
        raise error(PathMap(prefixes=prefixes).rewrite_text(message))
    return answer


_ANSWER_LIMIT = 4 * 1024 * 1024  # a comparison is a few KB; a container cannot make the host hold more


def train_command(
    *,
    config: Path | None = None,
    dataset: str | None = None,
    target: str | None = None,
    model: str | None = None,
    task: str | None = None,
    name: str | None = None,
    version: str | None = None,
    extra: Sequence[str] = (),
) -> TrainCommand:
    """The arguments of ``toolkit train`` in the container, from the options of ``image train``.

    A config and a dataset file are host paths: they are listed in ``inputs`` so that
    :func:`train_in_container` mounts them and rewrites them to container paths.
    """
    args: list[str] = []
    inputs: list[Path] = []
    if config is not None:
        args += ["--config", str(config)]
        inputs.append(config)
    if dataset is not None:
        args += ["--dataset", dataset]
        if not dataset.startswith("builtin:"):
            inputs.append(Path(dataset))
    recipe = (("--target", target), ("--model", model), ("--task", task), ("--name", name), ("--version", version))
    for flag, value in recipe:
        if value is not None:
            args += [flag, value]
    return TrainCommand(args=(*args, *extra), inputs=tuple(inputs))


def train_in_container(
    image: str,
    train_args: Sequence[str] | TrainCommand,
    *,
    staging: Path,
    workdir: Path = Path(),
    inputs: Sequence[Path] = (),
    on_output: OutputCallback | None = None,
    tty: bool = False,
    client: Any | None = None,
    command: str = "train",
) -> Path:
    """Run ``toolkit train --out /out --no-register TRAIN_ARGS`` in ``image``; return the staged .joblib.

    ``command="retrain"`` runs ``toolkit retrain`` the same way (its ARTIFACT listed in ``inputs``).

    ``staging`` (an empty host directory) is mounted at /out; ``workdir`` read-only at /work, so
    relative paths in the arguments and configs mean what they mean on the host; each path in
    ``inputs`` outside ``workdir`` is mounted read-only and rewritten in ``train_args``. The
    artifact files end up owned by the invoking user: a non-root invoker runs the container as
    itself; root runs it as the image's non-root user and gets the files handed back.
    The container's progress reaches ``on_output`` with host paths in place of its mounts; its
    summary does not (the caller's own summary names where the artifact went on the host).
    ``tty`` gives the container a terminal (progress and colours): only when the caller's is one.
    Raises: DockerError (training failed in the container, engine error), UsageError.
    """
    if isinstance(train_args, TrainCommand):
        inputs = (*train_args.inputs, *inputs)
        train_args = train_args.args
    workdir = workdir.resolve()
    staging = staging.resolve()
    args, mounts = map_inputs(list(train_args), inputs, workdir)
    rewriter = Rewriter(
        _host_paths(mounts, workdir),
        on_output,
        # The summary is the only thing `toolkit train` prints on stdout; without a terminal the
        # streams are apart and an image that predates TOOLKIT_TRAIN_SUMMARY is kept quiet too.
        drop=frozenset() if tty else frozenset({"stdout"}),
    )
    mounts = [Mount(source=workdir, target="/work"), Mount(source=staging, target="/out", read_only=False), *mounts]
    uid, gid = os.getuid(), os.getgid()
    environment = {**run_environment(), env.TRAIN_SUMMARY: "0", **(_terminal_environment() if tty else {})}
    if uid == 0:
        user = f"{IMAGE_UID}:{IMAGE_UID}"
        os.chown(staging, IMAGE_UID, IMAGE_UID)
    else:
        user = f"{uid}:{gid}"
        environment[env.HOME] = "/tmp"  # the image's home belongs to its own user
    try:
        result = run(
            client or connect(),
            image,
            [command, "--out", "/out", "--no-register", *args],
            mounts=mounts,
            user=user,
            environment=environment,
            working_dir="/work",
            on_output=rewriter,
            tty=tty,
        )
    finally:
        rewriter.flush()
        if uid == 0:
            _chown_tree(staging, 0, 0)
    if result.exit_code != 0:
        # Anything but a toolkit error (killed, out of memory, no entry point) is a failed Docker step.
        error = _INNER_ERRORS.get(result.exit_code, DockerError)
        raise error(f"training in {image} failed with exit code {result.exit_code} (the container's message is above)")
    found = sorted(staging.glob("*.joblib"))
    if len(found) != 1:
        raise DockerError(f"training in {image} left {len(found)} .joblib files in its output, expected 1")
    return found[0]


def check_command(
    artifact_name: str, *, policy: str = "strict", as_json: bool = False, verify_predictions: bool = False
) -> list[str]:
    """``toolkit check-env``'s arguments in the container, the artifact's folder mounted at /artifact."""
    command = ["check-env", f"/artifact/{artifact_name}", "--policy", policy]
    if as_json:
        command.append("--json")
    if verify_predictions:
        command.append("--verify-predictions")
    return command


def check_in_container(
    image: str,
    artifact: Path,
    *,
    policy: str = "strict",
    as_json: bool = False,
    verify_predictions: bool = False,
    on_output: OutputCallback | None = None,
    on_image: Callable[[str], None] | None = None,
    client: Any | None = None,
) -> int:
    """Run ``toolkit check-env`` on ``artifact`` inside ``image``; return the gate's exit code.

    The artifact's directory is mounted read-only; the gate's output reaches ``on_output`` with
    the host's path for it (as given) in place of ``/artifact``, in text and JSON alike;
    ``on_image`` is told the ID of the image that ran.
    Raises: DockerError when the container ends in a way the gate never does (killed, out of
    memory), IntegrityError for a missing artifact (as ``check-env``'s own exit 3).
    """
    given = artifact
    artifact = artifact.resolve()
    if not artifact.is_file():
        raise IntegrityError(f"{given}: no such artifact file")
    uid = os.getuid()
    if uid == 0:
        require_readable_by_image_user(artifact)
    rewriter = Rewriter(PathMap(prefixes=_folder_prefix("/artifact", given), as_json=as_json), on_output)
    try:
        result = run(
            client or connect(),
            image,
            check_command(artifact.name, policy=policy, as_json=as_json, verify_predictions=verify_predictions),
            mounts=[Mount(source=artifact.parent, target="/artifact")],
            user=None if uid == 0 else f"{uid}:{os.getgid()}",
            environment={env.HOME: "/tmp"} if uid != 0 else {},
            on_output=rewriter,
        )
    finally:
        rewriter.flush()
    if on_image is not None:
        on_image(result.image_id)
    if result.exit_code not in _GATE_EXIT_CODES:
        raise DockerError(f"check-env in {image} ended with exit code {result.exit_code} (killed or crashed)")
    return result.exit_code


def predict_in_container(
    image: str,
    artifact: Path,
    input_file: Path,
    *,
    id_column: str | None = None,
    policy: str = "strict",
    on_output: OutputCallback | None = None,
    client: Any | None = None,
) -> PredictResult:
    """Run ``toolkit predict`` on ``input_file`` with ``artifact`` inside ``image``; return its CSV.

    The artifact's and the input's folders are mounted read-only; nothing in the container can
    write anywhere but /tmp. Its messages reach ``on_output`` (stderr) with host paths.
    A toolkit error in the container is returned as its exit code (its one line went to
    ``on_output``). Raises: UsageError (missing input), IntegrityError (missing artifact),
    DockerError (killed, engine error).
    """
    given_artifact, given_input = artifact, input_file
    artifact, input_file = artifact.resolve(), input_file.resolve()
    if not artifact.is_file():
        raise IntegrityError(f"{given_artifact}: no such artifact file")
    if not input_file.is_file():
        raise UsageError(f"{given_input}: no such input file")
    uid = os.getuid()
    if uid == 0:
        require_readable_by_image_user(artifact)
        _require_world_readable(input_file)
    command = ["predict", f"/artifact/{artifact.name}", f"/input/{input_file.name}", "--policy", policy]
    if id_column is not None:
        command += ["--id", id_column]
    prefixes = {**_folder_prefix("/artifact", given_artifact), **_folder_prefix("/input", given_input)}
    csv = bytearray()  # stdout is the CSV, never shown: the host writes it
    rewriter = Rewriter(PathMap(prefixes=prefixes), on_output)

    try:
        result = run(
            client or connect(),
            image,
            command,
            mounts=[
                Mount(source=artifact.parent, target="/artifact"),
                Mount(source=input_file.parent, target="/input"),
            ],
            user=None if uid == 0 else f"{uid}:{os.getgid()}",
            environment={env.HOME: "/tmp"} if uid != 0 else {},
            on_output=stdout_into(csv, rewriter),
        )
    finally:
        rewriter.flush()
    if result.exit_code not in _PREDICT_EXIT_CODES:
        raise DockerError(f"predict in {image} ended with exit code {result.exit_code} (killed or crashed)")
    return PredictResult(exit_code=result.exit_code, csv=bytes(csv), image_id=result.image_id)


def map_inputs(args: list[str], inputs: Sequence[Path], workdir: Path) -> tuple[list[str], list[Mount]]:
    """Rewrite host paths in ``args`` to container paths; mount those outside ``workdir``."""
    mounts: list[Mount] = []
    for index, path in enumerate(inputs):
        host = path.expanduser().resolve()
        if not host.exists():
            raise UsageError(f"{path}: no such file")
        try:
            inside = "/work/" + host.relative_to(workdir).as_posix()
        except ValueError:
            # Mount the folder, so a config's paths relative to its own folder still resolve.
            target = f"/in/{index}"
            mounts.append(Mount(source=host.parent, target=target))
            inside = f"{target}/{host.name}"
        args = [inside if a == str(path) else a for a in args]
    return args, mounts


def require_readable_by_image_user(artifact: Path) -> None:
    """Root runs the gate as the image's user: say so plainly instead of a confusing exit 3."""
    folder = artifact.parent
    for path, bits in ((folder, 0o005), *((p, 0o004) for p in folder.glob(f"{_stem(artifact)}.*"))):
        st = path.stat()
        if st.st_uid != IMAGE_UID and st.st_mode & bits != bits:
            raise UsageError(
                f"{path}: not readable by the image's user (uid {IMAGE_UID}); "
                f"make it world-readable (chmod o+r{'x' if path == folder else ''}) to check it in the image"
            )


def _host_paths(mounts: Sequence[Mount], workdir: Path) -> PathMap:
    """A training container's mounts as the host names them: /work is the working directory."""
    prefixes = {"/work/": "", "/out/": ""}  # the staged files are moved: their names are what stays
    for mount in mounts:
        prefixes[mount.target + "/"] = _relative(mount.source, workdir) + "/"
    return PathMap(prefixes=prefixes)


def _folder_prefix(target: str, given: Path) -> dict[str, str]:
    """``{target/: the folder of ``given``/}``, as the user wrote it ("" for the working directory)."""
    folder = given.parent
    return {target + "/": "" if str(folder) == "." else f"{folder}/"}


def _relative(path: Path, workdir: Path) -> str:
    try:
        return path.relative_to(workdir).as_posix()
    except ValueError:
        return str(path)


def _require_world_readable(path: Path) -> None:
    for target, bits in ((path.parent, 0o005), (path, 0o004)):
        st = target.stat()
        if st.st_uid != IMAGE_UID and st.st_mode & bits != bits:
            raise UsageError(
                f"{target}: not readable by the image's user (uid {IMAGE_UID}); "
                f"make it world-readable (chmod o+r{'x' if target == path.parent else ''}) to use it in the image"
            )


def _terminal_environment() -> dict[str, str]:
    # The host's terminal, so the container's progress fits it (rich reads both).
    import shutil

    size = shutil.get_terminal_size()
    return {env.TERM: os.environ.get(env.TERM) or "xterm", env.COLUMNS: str(size.columns), env.LINES: str(size.lines)}


def run_environment() -> dict[str, str]:
    # The card's author is the person who ran the job, not the container's user, and its
    # created_at honours the caller's SOURCE_DATE_EPOCH (reproducible cards).
    environment = {env.AUTHOR: current_user()}
    if os.environ.get(env.SOURCE_DATE_EPOCH):
        environment[env.SOURCE_DATE_EPOCH] = os.environ[env.SOURCE_DATE_EPOCH]
    return environment


def _stem(artifact: Path) -> str:
    name = artifact.name
    for suffix in (".card.json", ".card.md", ".joblib"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return artifact.stem


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, gid)
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
