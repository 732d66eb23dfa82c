"""``toolkit image run``: the user's own command in the pinned image, as ``image train`` runs ``toolkit train``.

The current directory is mounted read-only at /work (the working directory, and on
``PYTHONPATH``, so the gate finds the user's local modules as the script did); the output
directory writable at /out, named to the command as ``$TOOLKIT_OUT``; network off; the root
filesystem read-only; the image's own environment (base digest, lock hash, ``PYTHONHASHSEED``)
left as it was built. Files the command writes end up owned by the caller: a non-root caller
runs the container as itself; root runs it as the image's non-root user and gets the files
handed back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit import env
from toolkit.docker.client import Mount, OutputCallback, connect, run
from toolkit.docker.images import IMAGE_UID
from toolkit.docker.jobs import run_environment
from toolkit.errors import UsageError
from toolkit.userscript import OUT_ENV, OutputTail, collect_artifacts, resolve_script, script_failed

__all__ = ["CONTAINER_OUT", "CONTAINER_WORKDIR", "run_command", "run_script_in_container"]

CONTAINER_WORKDIR = "/work"
CONTAINER_OUT = "/out"


def run_command(
    image: str,
    command: Sequence[str],
    *,
    out: Path,
    workdir: Path = Path(),
    on_output: OutputCallback | None = None,
    client: Any | None = None,
) -> int:
    """Run ``command`` in ``image`` with ``workdir`` at /work and ``out`` at /out; return its exit code.

    ``out`` is created if missing. Raises: UsageError (no command, ``out`` not writable),
    DockerError (no engine, unknown image, the command cannot be started).
    """
    if not command or not command[0]:
        raise UsageError("image run needs a command after --, e.g. toolkit image run -- python train.py")
    workdir = workdir.resolve()
    out = _prepare(out)
    environment = {**run_environment(), OUT_ENV: CONTAINER_OUT, env.PYTHONPATH: CONTAINER_WORKDIR}
    uid, gid = os.getuid(), os.getgid()
    owner = out.stat()
    if uid == 0:
        _require_readable_by_image_user(workdir)
        user = f"{IMAGE_UID}:{IMAGE_UID}"
        os.chown(out, IMAGE_UID, IMAGE_UID)
    else:
        user = f"{uid}:{gid}"
        environment[env.HOME] = "/tmp"  # the image's home belongs to its own user
    mounts = [
        Mount(source=workdir, target=CONTAINER_WORKDIR),
        Mount(source=out, target=CONTAINER_OUT, read_only=False),
    ]
    try:
        result = run(
            client or connect(),
            image,
            list(command[1:]),
            entrypoint=[command[0]],
            mounts=mounts,
            user=user,
            environment=environment,
            working_dir=CONTAINER_WORKDIR,
            on_output=on_output,
        )
    finally:
        if uid == 0:
            _hand_back(out, owner.st_uid, owner.st_gid)
    return result.exit_code


def run_script_in_container(
    image: str,
    script: Path,
    args: Sequence[str] = (),
    *,
    staging: Path,
    workdir: Path = Path(),
    on_output: OutputCallback | None = None,
    client: Any | None = None,
) -> list[Path]:
    """Run ``python SCRIPT ARGS`` in ``image`` (as ``run_command``, ``staging`` at /out); return its artifacts.

    Raises: UsageError (no such script, outside ``workdir``, it failed, it saved nothing), DockerError.
    """
    relative = resolve_script(script, workdir=workdir)
    tail = OutputTail(on_output)
    code = run_command(image, ["python", relative, *args], out=staging, workdir=workdir, on_output=tail, client=client)
    if code != 0:
        raise script_failed(relative, code, tail.lines())
    return collect_artifacts(staging, script=relative)


# --- helpers -------------------------------------------------------------------------------


def _prepare(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{out}: cannot create the output folder ({e.strerror or e})") from e
    if not out.is_dir():
        raise UsageError(f"{out}: not a folder")
    return out.resolve()


def _require_readable_by_image_user(workdir: Path) -> None:
    """Root runs the command as the image's user: say so plainly instead of a confusing failure inside."""
    st = workdir.stat()
    if st.st_uid != IMAGE_UID and st.st_mode & 0o005 != 0o005:
        raise UsageError(
            f"{workdir}: not readable by the image's user (uid {IMAGE_UID}); "
            "make it world-readable (chmod o+rx) to run in the image"
        )


def _hand_back(out: Path, uid: int, gid: int) -> None:
    """Root's run: what the image's user created in ``out`` becomes root's; ``out`` gets its owner back."""
    os.chown(out, uid, gid)
    for dirpath, dirnames, filenames in os.walk(out):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_uid == IMAGE_UID:
                os.chown(path, 0, 0, follow_symlinks=False)
