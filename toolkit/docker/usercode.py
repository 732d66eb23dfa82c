"""``toolkit image run``: the user's own command in the pinned image, as ``image train`` runs ``toolkit train``.

The current directory is mounted read-only at /work (the working directory, and on
``PYTHONPATH``, so the gate finds the user's local modules as the script did); the output
directory writable at /out, named to the command as ``$TOOLKIT_OUT``; network off; the root
filesystem read-only; the image's own environment (base digest, lock hash, ``PYTHONHASHSEED``)
left as it was built. The container's /out is a fresh folder the toolkit made; afterwards only
the regular files in it are copied into the output directory (owned by the caller, never
through a link), so the container never touches a host path it was not given.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit import env
from toolkit.docker.client import Mount, OutputCallback, connect, run
from toolkit.docker.images import IMAGE_UID
from toolkit.docker.jobs import run_environment
from toolkit.docker.outdir import check_out_dir, collect, make_staging, seed
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
    root: Path = Path("/"),
) -> int:
    """Run ``command`` in ``image`` with ``workdir`` at /work and a fresh staging folder at
    /out; return its exit code. Afterwards the regular files it wrote are copied into ``out``
    (``toolkit.docker.outdir``: never through a link, nothing chowned outside staging).

    ``out`` is created if missing. Raises: UsageError (no command; ``out`` a symlink, ``/``, a
    system folder, the project or a parent of it, or not writable), DockerError (no engine,
    unknown image, the command cannot be started).
    """
    if not command or not command[0]:
        raise UsageError("image run needs a command after --, e.g. toolkit image run -- python train.py")
    workdir = workdir.resolve()
    out = check_out_dir(out, project=workdir, root=root)
    environment = {**run_environment(), OUT_ENV: CONTAINER_OUT, env.PYTHONPATH: CONTAINER_WORKDIR}
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        _require_readable_by_image_user(workdir)
        user = f"{IMAGE_UID}:{IMAGE_UID}"
    else:
        user = f"{uid}:{gid}"
        environment[env.HOME] = "/tmp"  # the image's home belongs to its own user
    owner = IMAGE_UID if uid == 0 else None
    staging = make_staging("toolkit-image-run-", owner=owner)
    try:
        seeded = seed(out, staging, owner=owner)  # the container sees --out's files as before
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    mounts = [
        Mount(source=workdir, target=CONTAINER_WORKDIR),
        Mount(source=staging, target=CONTAINER_OUT, read_only=False),
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
        collect(staging, out, unchanged=seeded)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the toolkit's own folder; rmtree follows no link
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


def _require_readable_by_image_user(workdir: Path) -> None:
    """Root runs the command as the image's user: say so plainly instead of a confusing failure inside."""
    st = workdir.stat()
    if st.st_uid != IMAGE_UID and st.st_mode & 0o005 != 0o005:
        raise UsageError(
            f"{workdir}: not readable by the image's user (uid {IMAGE_UID}); "
            "make it world-readable (chmod o+rx) to run in the image"
        )
