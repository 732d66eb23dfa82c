"""Supply-chain documents made from a card, and their checks.

- ``statement``: the in-toto Statement v1 with SLSA provenance v1 (subjects: the artifact's files).
- ``envelope``: its DSSE envelope, signed and checked with ``toolkit.signing``'s keys and code.
- ``attest`` / ``verify``: ``toolkit provenance`` and ``verify-provenance`` (and the gate's rule).
- ``sbom``: the CycloneDX 1.6 ML-BOM.

Nothing here imports scikit-learn or joblib, and nothing is unpickled: the gate calls ``verify``.
Import the submodules; this package itself imports none of them.
"""

from __future__ import annotations

__all__: list[str] = []
