"""The offline pinned base: the packaged recipe (``base.sh``, beside this module) run from anywhere.

``make base`` in this repository and ``toolkit base`` in a project run the same script. In a
project its state (the loopback registry's storage, debootstrap's cache, the pin) lives in the
user's cache, so every project on the machine shares one base; without a toolkit.toml it lives
in ``./.cache`` as ``make base`` keeps it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from toolkit import env as envvars
from toolkit.errors import DockerError, UsageError

__all__ = ["RECIPE", "build_base"]

RECIPE = Path(__file__).resolve().parent / "base.sh"
_TIMEOUT = 1800


def build_base(*, in_project: bool, rebuild: bool = False) -> str:
    """Run the recipe; return the pinned ``name@sha256:<digest>``. Its one-line stages go to stderr.

    Raises: UsageError (no bash), DockerError (the recipe failed: its last line says why).
    """
    from toolkit.docker.images import validate_base_image
    from toolkit.docker.jobs import default_cache

    bash = shutil.which("bash")
    if bash is None:
        raise UsageError("toolkit base needs bash on this host")
    env = dict(os.environ)
    if in_project:
        state = default_cache() / "base"
        env.setdefault(envvars.STATE, str(state))
        env.setdefault(envvars.BASE_FILE, str(state / "base-image"))
    if rebuild:
        env[envvars.BASE_REBUILD] = "1"
    try:
        done = subprocess.run(
            [bash, str(RECIPE)], stdout=subprocess.PIPE, stderr=None, text=True, env=env, timeout=_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise DockerError(f"the base recipe could not run: {e}") from e
    if done.returncode != 0:
        raise DockerError(f"the base image was not built (exit {done.returncode}; its reason is above)")
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise DockerError("the base recipe printed no pinned reference")
    return validate_base_image(lines[-1])
