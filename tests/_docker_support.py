"""Helpers shared by the Docker unit and end-to-end tests."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["swap_pin"]


def swap_pin(lock: str, name: str, version: str, wheel: Path) -> str:
    """``lock`` with NAME's pin and hashes replaced by VERSION and the hash of ``wheel``."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    block = re.compile(rf"^{re.escape(name)}==\S+ \\\n(?:    --hash=sha256:[0-9a-f]{{64}}(?: \\)?\n)+", re.MULTILINE)
    swapped, count = block.subn(f"{name}=={version} \\\n    --hash=sha256:{digest}\n", lock)
    assert count == 1, f"{name} not found once in the lock"
    return swapped
