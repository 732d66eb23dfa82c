"""Tiny artifacts for the registry tests: one real iris pipeline, cloned into many versions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["clone_artifact", "registry_rows", "snapshot", "tamper"]


def clone_artifact(
    base: Path,
    out_dir: Path,
    *,
    version: str,
    name: str = "iris",
    metrics: dict[str, dict[str, float]] | None = None,
) -> Path:
    """The base artifact as NAME VERSION (same pickle bytes, its own valid card); returns the .joblib."""
    from toolkit.artifact import artifact_paths, read_card
    from toolkit.card import card_from_dict

    card = read_card(base).to_dict()
    stem = f"{name}-{version}"
    card.update(name=name, version=version)
    card["artifact"]["file"] = f"{stem}.joblib"
    if metrics is not None:
        card["metrics"] = metrics
    new = card_from_dict(card)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = artifact_paths(out_dir / f"{stem}.joblib")
    shutil.copyfile(base, target.model)
    target.card_json.write_bytes(new.to_json())
    target.card_md.write_text(new.to_markdown())
    return target.model


def tamper(path: Path) -> None:
    """Flip one byte of a (read-only) registered file."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def registry_rows(root: Path) -> list[dict[str, Any]]:
    """Every version row, read through the registry's own (read-only) open, as the safety tests audit it."""
    from toolkit.registry.index.sqlite_db import connect_readonly, has_schema

    conn = connect_readonly(root)
    if conn is None:
        return []
    try:
        if not has_schema(conn):
            return []
        return [dict(r) | {"metrics": json.loads(r["metrics"])} for r in conn.execute("SELECT * FROM versions")]
    finally:
        conn.close()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` but the index's own, with its sha256: what "nothing lost" compares."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if not rel.startswith("registry.db") and not rel.startswith(".tmp"):
                files[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files
