"""A project's `toolkit lock` and `toolkit image build` against doing the same by hand.

Run: .venv/bin/python benchmarks/bench_project.py [--only lock|image]
Needs PyPI (the lock, the wheels), a Docker engine and a pinned base (`toolkit base` or `make
base`; its reference from $BASE_IMAGE or .cache/base-image). The project is `toolkit init` plus
one extra package (imbalanced-learn), in a temporary folder outside this repository.

  lock   toolkit    `toolkit lock`: pip-compile of requirements.in plus the toolkit's runtime,
                    its checks, the change report.
         by hand    `pip-compile --generate-hashes --allow-unsafe -o requirements.lock
                    requirements.in toolkit-runtime.in` on the same two inputs.
         cold: no lock yet; warm: again with the lock there (pins kept).
  image  toolkit    `toolkit image build` (wheels already cached: the download is not timed).
         by hand    `docker build --network none` of the same context (the packaged Dockerfile,
                    the lock, its wheels, a toolkit wheel, an empty system/ folder), from a folder.
         cold: --no-cache; warm: after a normal build of each, every layer cached (what a code
         change of the project's own costs: its code is mounted at run time, not built in).

Targets: each toolkit/by-hand ratio <= 1.2; a warm toolkit build under 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET = 1.2
WARM_BUILD_TARGET = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("lock", "image"))
    args = parser.parse_args()
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-project-") as tmp:
        project = Path(tmp) / "proj"
        _ok([str(BIN / "toolkit"), "init", str(project)], env, Path(tmp))
        with (project / "requirements.in").open("a") as f:
            f.write("imbalanced-learn\n")
        from toolkit.lock import toolkit_requirements

        (project / "toolkit-runtime.in").write_text("\n".join(toolkit_requirements()) + "\n")
        hand = project / "by-hand"
        hand.mkdir()
        lock_by_hand = [str(BIN / "pip-compile"), "--quiet", "--generate-hashes", "--allow-unsafe", "--strip-extras"]
        lock_by_hand += ["-o", str(hand / "requirements.lock"), "requirements.in", "toolkit-runtime.in"]
        if args.only in (None, "lock"):
            for phase in ("cold", "warm"):
                ours = _timed([str(BIN / "toolkit"), "lock"], env, project)
                theirs = _timed(lock_by_hand, env, project)
                rows.append((f"lock, {phase}", ours, theirs))
        else:
            _ok([str(BIN / "toolkit"), "lock"], env, project)
        if args.only in (None, "image"):
            rows += _images(project, env)
    print("toolkit vs by hand, same inputs, same run")
    for title, ours, theirs in rows:
        ratio = ours / theirs if theirs else float("inf")
        flag = "ok" if ratio <= TARGET else f"OVER {TARGET}x"
        print(f"  {title:<16} toolkit {ours:7.1f}s  by hand {theirs:7.1f}s  ratio {ratio:4.2f}  {flag}")
    warm = [ours for title, ours, _ in rows if title == "image, warm"]
    if warm:
        print(f"  warm toolkit build {warm[0]:.1f}s (target < {WARM_BUILD_TARGET:.0f}s)")


def _images(project: Path, env: dict[str, str]) -> list[tuple[str, float, float]]:
    from toolkit.docker import resolve_base_image
    from toolkit.docker.context import lock_sha256, locked_wheels, packaged_dockerfile
    from toolkit.docker.jobs import default_cache
    from toolkit.docker.selfwheel import build_self_wheel
    from toolkit.upgrade.runtime_image import ensure_wheels

    base = resolve_base_image(None, base_file=REPO / ".cache" / "base-image")
    lock = project / "requirements.lock"
    wheels = default_cache() / "wheels"
    ensure_wheels(lock, wheels)  # the download is the same for both; not timed
    context = project / "context"
    (context / "wheelhouse").mkdir(parents=True)
    (context / "system").mkdir()
    (context / "system" / "system-packages.json").write_text("[]\n")
    shutil.copy(packaged_dockerfile(), context / "Dockerfile")
    shutil.copy(lock, context / "requirements.lock")
    for wheel in locked_wheels(lock, wheels):
        shutil.copy(wheel, context / "wheelhouse" / wheel.name)
    build_self_wheel(context / "dist")
    build_args = {"BASE_IMAGE": base, "BASE_DIGEST": base.rpartition("@")[2], "LOCK_SHA256": lock_sha256(lock)}
    build_args["REVISION"] = "unknown"
    by_hand = ["docker", "build", "-q", "--network", "none", "-t", "bench-project:by-hand"]
    for key, value in build_args.items():
        by_hand += ["--build-arg", f"{key}={value}"]
    ours = [str(BIN / "toolkit"), "image", "build", "-q", "--tag", "bench-project:toolkit", "--wheelhouse", str(wheels)]
    ours += ["--base-image", base]
    rows = []
    for phase, extra in (("cold", ["--no-cache"]), ("warm", [])):
        if phase == "warm":  # layers a --no-cache build made are no cache for the next: prime both once
            _ok([*ours, *extra], env, project)
            _ok([*by_hand, *extra, str(context)], env, project)
        a = _timed([*ours, *extra], env, project)
        b = _timed([*by_hand, *extra, str(context)], env, project)
        rows.append((f"image, {phase}", a, b))
    return rows


def _timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.monotonic()
    _ok(command, env, cwd)
    return time.monotonic() - started


def _ok(command: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")


if __name__ == "__main__":
    main()
