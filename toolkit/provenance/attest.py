"""``toolkit provenance``: attest an artifact's files, signed, beside them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from toolkit import _files
from toolkit.errors import IntegrityError, UsageError
from toolkit.provenance.envelope import seal
from toolkit.provenance.statement import Script, build_statement
from toolkit.provenance.subjects import artifact_files, digests_of

__all__ = ["Attested", "attest", "script_of"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Attested:
    """A provenance file written, and the one-line notes on what the card could not tell."""

    path: Path
    subjects: tuple[str, ...]
    notes: tuple[str, ...]


def attest(
    artifact: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    script: Script | None = None,
) -> Attested:
    """Write the artifact's signed provenance (``<stem>.provenance.json``, or ``out``) atomically.

    Each file is hashed once; the ``.joblib`` must match its card and the ``.card.md`` be its
    rendering, so a tampered artifact is never attested.
    Raises: UsageError (bad key or output path), IntegrityError/CardError (the artifact fails its card).
    """
    from toolkit import __version__
    from toolkit.artifact import artifact_paths, check_companions, read_card
    from toolkit.signing import load_signing_key

    private = load_signing_key(key)  # a bad key fails before a gigabyte is hashed
    paths = artifact_paths(artifact)
    target = Path(out) if out is not None else paths.provenance
    if target.is_dir():
        raise UsageError(f"--out {target} is a directory; give the provenance file's path")
    card = read_card(paths.model)
    check_companions(paths, card)
    digests = digests_of(artifact_files(paths))
    if digests[paths.model.name] != card.artifact.sha256:
        raise IntegrityError(f"{paths.model}: sha256 does not match its card; refusing to attest it")
    statement = build_statement(card, digests, script=script, toolkit_version=__version__)
    envelope = seal(private, statement.to_json())
    _files.save(target, envelope)
    return Attested(path=target, subjects=tuple(sorted(digests)), notes=statement.notes)


def script_of(path: Path, relative: str, args: tuple[str, ...] = ()) -> Script:
    """The script as the host ran it: ``relative`` to the project, hashed from ``path``."""
    digest, _ = _files.sha256_file(path, "training script")
    return Script(path=relative, sha256=digest, args=args)
