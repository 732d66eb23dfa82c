"""The provenance file travels with its artifact, as the ``.sig`` does: copied, checked with trust."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit import _files
from toolkit.provenance.envelope import MAX_ENVELOPE_BYTES
from toolkit.signing import TrustedKeys, trusted_keys_from_env

if TYPE_CHECKING:
    from toolkit.artifact import ArtifactPaths

__all__ = ["copy_provenance", "require_if_trusted"]


def copy_provenance(
    src: ArtifactPaths, dest_dir: Path, trusted_keys: TrustedKeys = None, *, known: Mapping[Path, str] | None = None
) -> bool:
    """Copy ``<stem>.provenance.json`` (if there is one) into ``dest_dir``, where the artifact's
    files were copied; with trust configured, check it against the copies (what is checked is
    what stays). Returns whether there was one.

    Raises: IntegrityError (not a regular file, over the size limit), ProvenanceError/SignatureError.
    """
    from toolkit.artifact import artifact_paths

    source = src.provenance
    if not os.path.lexists(source):
        return False
    data = _files.read_regular(source, "provenance", limit=MAX_ENVELOPE_BYTES)
    try:  # into the caller's staging folder, which it removes
        with open(dest_dir / source.name, "xb") as f:
            _files.write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _files.write_failed(dest_dir / source.name, e) from e
    require_if_trusted(artifact_paths(dest_dir / src.model.name), trusted_keys, known=known)
    return True


def require_if_trusted(
    paths: ArtifactPaths, trusted_keys: TrustedKeys = None, *, known: Mapping[Path, str] | None = None
) -> None:
    """With trust configured and a provenance file present, check it (a signature by a trusted key,
    its subjects these files); without either, nothing. Raises: as ``verify_provenance``."""
    if not os.path.lexists(paths.provenance) or not trusted_keys_from_env(trusted_keys):
        return
    from toolkit.provenance.verify import verify_provenance

    verify_provenance(paths.model, trusted_keys, known=known)
