"""Which files an artifact's provenance covers, and their digests, each file hashed once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit import _files
from toolkit.errors import IntegrityError

if TYPE_CHECKING:
    from toolkit.artifact import ArtifactPaths

__all__ = ["REFERENCE_INFIX", "artifact_files", "digests_of"]

# Companions that belong to the artifact besides its three files: the reference set
# (``<stem>.reference.<ext>``, card schema 3) is covered by the card, so by the provenance too.
# The .sig and the provenance itself are attestations about the files, not files of the artifact.
REFERENCE_INFIX = ".reference."
_MAX_COMPANIONS = 16


def artifact_files(paths: ArtifactPaths, *, present_only: bool = False) -> list[Path]:
    """The artifact's files: the three (only those on disk with ``present_only``), plus any
    reference companion beside them, by name.

    A companion is found by its name on disk, not by the card's word: a file added beside the
    artifact must be seen (and refused when it is not a subject), whatever the card says.
    Raises: IntegrityError (a directory that cannot be listed).
    """
    prefix = paths.stem + REFERENCE_INFIX
    try:
        names = sorted(n for n in os.listdir(paths.model.parent) if n.startswith(prefix))
    except OSError as e:
        raise IntegrityError(f"{paths.model.parent}: cannot list it: {e.strerror or e}") from e
    if len(names) > _MAX_COMPANIONS:
        raise IntegrityError(f"{paths.model.parent}: {len(names)} reference files beside {paths.model.name}; refused")
    companions = [paths.model.with_name(n) for n in names if not n.endswith(".tmp")]
    three = [paths.model, paths.card_json, paths.card_md]
    if present_only:
        three = [p for p in three if os.path.lexists(p)]
    return [*three, *companions]


def digests_of(files: list[Path], known: Mapping[Path, str] | None = None) -> dict[str, str]:
    """name -> sha256 hex of each file; ``known`` digests (already hashed by the caller) are reused.

    Raises: IntegrityError (missing, refused or unreadable file).
    """
    out: dict[str, str] = {}
    for p in files:
        digest = (known or {}).get(p)
        if digest is None:
            digest, _ = _files.sha256_file(p, "artifact file")
        out[p.name] = digest
    return out
