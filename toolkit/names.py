"""An artifact's file names: the one place they are spelled, and the paths of one artifact.

A leaf module (it imports only the errors): the loader, the signature, the provenance, the OCI
layers and the registry stores all name the files through it, and none has to import another
for it. ``toolkit.artifact`` re-exports these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UsageError

__all__ = [
    "CARD_JSON_SUFFIX",
    "CARD_MD_SUFFIX",
    "MODEL_SUFFIX",
    "PROVENANCE_SUFFIX",
    "REFERENCE_SUFFIX",
    "SIG_SUFFIX",
    "ArtifactPaths",
    "artifact_paths",
]

# The one place the artifact's file names are spelled (the OCI layers and the signature use them).
REFERENCE_SUFFIX = ".reference.json.gz"  # the reference set (card schema 3), covered by the card
MODEL_SUFFIX = ".joblib"
CARD_JSON_SUFFIX = ".card.json"
CARD_MD_SUFFIX = ".card.md"
SIG_SUFFIX = ".sig"  # the signature beside them (toolkit.signing), present only when signed
# The signed SLSA provenance (a DSSE envelope) beside an artifact; like the .sig, not covered by it.
PROVENANCE_SUFFIX = ".provenance.json"


@dataclass(frozen=True, kw_only=True, slots=True)
class ArtifactPaths:
    """The three files of one artifact."""

    model: Path
    card_json: Path
    card_md: Path

    @property
    def stem(self) -> str:
        return self.model.name[: -len(MODEL_SUFFIX)]

    @property
    def signature(self) -> Path:
        """``<stem>.sig`` beside the three files (present only when signed)."""
        return self.model.with_name(self.stem + SIG_SUFFIX)

    @property
    def provenance(self) -> Path:
        """``<stem>.provenance.json`` beside the three files (present only when attested)."""
        return self.model.with_name(self.stem + PROVENANCE_SUFFIX)

    @property
    def reference(self) -> Path:
        """``<stem>.reference.json.gz`` beside the three files (present when the card has a reference set)."""
        return self.model.with_name(self.stem + REFERENCE_SUFFIX)

    def files(self) -> tuple[Path, ...]:
        """Every file of the artifact that is there, the signature aside: the three, and the
        reference set when present. What a signature covers and what every copy carries."""
        extra = (self.reference,) if os.path.lexists(self.reference) else ()
        return (self.model, *extra, self.card_md, self.card_json)


def artifact_paths(path: str | os.PathLike[str]) -> ArtifactPaths:
    """The three paths for an artifact given its ``.joblib`` (or ``.card.json``) path.

    Raises: UsageError for any other file name.
    """
    p = Path(path)
    name = p.name
    if name.endswith(MODEL_SUFFIX):
        stem = name[: -len(MODEL_SUFFIX)]
    elif name.endswith(CARD_JSON_SUFFIX):
        stem = name[: -len(CARD_JSON_SUFFIX)]
    else:
        raise UsageError(f"{p}: an artifact path ends in {MODEL_SUFFIX}")
    if not stem:
        raise UsageError(f"{p}: the artifact file name has no stem")
    return ArtifactPaths(
        model=p.with_name(stem + MODEL_SUFFIX),
        card_json=p.with_name(stem + CARD_JSON_SUFFIX),
        card_md=p.with_name(stem + CARD_MD_SUFFIX),
    )
