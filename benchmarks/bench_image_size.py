"""How big the runtime image is, and what takes the room.

Builds the image from this checkout (the layers `make image` built are reused, so it takes seconds
when nothing changed), then prints its size against the target and the base it adds to, the
largest installed packages, and the obvious alternative measured in the same run: the locked
wheels installed as they are (the sum of the wheelhouse's files for the lock, unpacked), which is
what a plain `pip install -r requirements.lock` would have put in the image.
Target: at most 560 MB.

Needs a Docker engine and the pinned base (`make base`); run from the repository root:
    .venv/bin/python benchmarks/bench_image_size.py
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from toolkit import docker as tdocker
from toolkit.docker.context import locked_wheels

REPO = Path(__file__).resolve().parents[1]
TAG = "toolkit:bench-size"
TARGET_MB = 560.0
TOP = 15
# One line per top-level entry of site-packages: "<KiB>\t<name>", largest first.
_DU = "cd /opt/venv/lib/python3*/site-packages && du -sk -- * | sort -rn"


def main() -> int:
    client = tdocker.connect()
    try:
        base = tdocker.resolve_base_image(None, base_file=REPO / tdocker.DEFAULT_BASE_FILE)
        tdocker.build_image(base_image=base, tag=TAG, context=REPO, client=client)
        size = client.images.get(TAG).attrs["Size"] / 1e6
        base_size = client.images.get(base).attrs["Size"] / 1e6
        listing = client.containers.run(
            TAG, ["-c", _DU], entrypoint="sh", network_mode="none", remove=True, stdout=True, stderr=False
        ).decode()
    finally:
        client.close()
    packages = [(int(kib) / 1024, name) for kib, name in (line.split("\t", 1) for line in listing.splitlines())]
    venv = sum(mb for mb, _ in packages)
    as_is = _unpacked_mb(REPO / "requirements.lock", REPO / "wheelhouse")

    print(f"image {TAG}:                       {size:7.0f} MB   (target <= {TARGET_MB:.0f} MB)")
    print(f"  the base it starts from:         {base_size:7.0f} MB")
    print(f"  site-packages in the image:      {venv:7.0f} MB")
    print(f"  the locked wheels, as installed: {as_is:7.0f} MB   (unpacked, no bytecode)")
    print(f"  ratio image venv / as installed: {venv / as_is:7.2f}")
    print(f"largest of the {len(packages)} entries in site-packages:")
    for mb, name in packages[:TOP]:
        print(f"  {mb:7.1f} MB  {name}")
    ok = size <= TARGET_MB
    print(f"target: image <= {TARGET_MB:.0f} MB: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


def _unpacked_mb(lock: Path, wheelhouse: Path) -> float:
    total = 0
    for wheel in locked_wheels(lock, wheelhouse):
        with zipfile.ZipFile(wheel) as archive:
            total += sum(info.file_size for info in archive.infolist())
    return total / 1024 / 1024


if __name__ == "__main__":
    sys.exit(main())
