"""How long the image takes to build: from nothing, and after a change to the toolkit's code only.

The Dockerfile installs the locked wheels before it copies the toolkit's code, so a code change
must rebuild only the last layers. Measured against the obvious alternative, a full rebuild
(`--no-cache`), in the same run. Target: a code-only rebuild in under 15 s and at least 5x faster.

Needs a Docker engine and the pinned base (`make base`); run from the repository root:
    .venv/bin/python benchmarks/bench_docker_build.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from toolkit import docker as tdocker

REPO = Path(__file__).resolve().parents[1]
TAG = "toolkit:bench"
TARGET_SECONDS = 15.0
TARGET_RATIO = 5.0


def main() -> int:
    client = tdocker.connect()
    base = tdocker.resolve_base_image(None, base_file=REPO / ".cache" / "base-image")
    # Warm first (the build `make image` would do), then a code change, then from nothing:
    # a --no-cache build adds a second cache chain, so it goes last.
    cached = _build(client, base, REPO)
    with tempfile.TemporaryDirectory(prefix="bench-context-") as tmp:
        context = _context_with_code_change(Path(tmp))
        code_only = _build(client, base, context)
    full = _build(client, base, REPO, no_cache=True)
    size = client.images.get(TAG).attrs["Size"] / 1e6
    ratio = full / code_only
    print(f"full build (--no-cache):      {full:6.1f} s")
    print(f"code-only rebuild:            {code_only:6.1f} s   ({ratio:.1f}x faster than a full build)")
    print(f"rebuild with nothing changed: {cached:6.1f} s")
    print(f"image size:                   {size:6.0f} MB")
    ok = code_only < TARGET_SECONDS and ratio >= TARGET_RATIO
    print(
        f"target: code-only rebuild < {TARGET_SECONDS:.0f} s and >= {TARGET_RATIO:.0f}x faster: "
        f"{'met' if ok else 'MISSED'}"
    )
    client.images.remove(TAG, noprune=False)
    return 0 if ok else 1


def _build(client: object, base: str, context: Path, *, no_cache: bool = False) -> float:
    started = time.monotonic()
    tdocker.build_image(base_image=base, tag=TAG, context=context, no_cache=no_cache, client=client)
    return time.monotonic() - started


def _context_with_code_change(tmp: Path) -> Path:
    """The repository's build inputs, with one line added to one module of the toolkit."""
    for name in ("Dockerfile", "pyproject.toml", "requirements.lock", "README.md", "wheelhouse"):
        if (REPO / name).exists():
            (tmp / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "toolkit", tmp / "toolkit", ignore=shutil.ignore_patterns("__pycache__"))
    module = tmp / "toolkit" / "errors.py"
    module.write_text(module.read_text() + f"\n# benchmark edit {time.time()}\n")
    return tmp


if __name__ == "__main__":
    sys.exit(main())
