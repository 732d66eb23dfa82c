"""The model card: typed records (``records``), the strict parser (``parse``) and the fixed
Markdown rendering (``render``). ``from toolkit.card import X`` is the public way in.

The card imports nothing of the loader: the rule for forbidden callables lives in
``toolkit.forbidden``, which both the parser and the loader read.
"""

from __future__ import annotations

from toolkit.card.parse import REFERENCE_SUFFIX, card_from_dict, lineage_from, parse_card, split_from, training_from
from toolkit.card.records import (
    MAX_CARD_BYTES,
    NAME_RE,
    SCHEMA_VERSION,
    SCHEMAS,
    SEMVER_RE,
    ArtifactInfo,
    DataInfo,
    Feature,
    Lineage,
    LocalModule,
    ModelCard,
    Probe,
    References,
    ReferenceSet,
    Split,
    Training,
    jsonable,
    require_schema2,
    require_schema3,
)

__all__ = [
    "MAX_CARD_BYTES",
    "NAME_RE",
    "REFERENCE_SUFFIX",
    "SCHEMAS",
    "SCHEMA_VERSION",
    "SEMVER_RE",
    "ArtifactInfo",
    "DataInfo",
    "Feature",
    "Lineage",
    "LocalModule",
    "ModelCard",
    "Probe",
    "ReferenceSet",
    "References",
    "Split",
    "Training",
    "card_from_dict",
    "jsonable",
    "lineage_from",
    "parse_card",
    "require_schema2",
    "require_schema3",
    "split_from",
    "training_from",
]
