"""``toolkit serve``: serve exactly the model the registry says, never ready unless every check passed.

- ``model``: the start-up order for one version (signature, integrity, gate, guarded load, probe)
- ``source``: MODEL as a file, a registry reference or an OCI reference
- ``holder``: the served version, swapped atomically
- ``inputs``: request bodies (OIP tensors, records, CSV) to the card's feature frame
- ``app``: the HTTP routes (Open Inference Protocol v2 REST, /predict, /metrics)
- ``metrics``: the Prometheus metrics
- ``follow``: following a stage, swapping only to versions that pass
- ``server``: uvicorn, signals, the exit code

Importing this package imports nothing heavy; uvicorn and starlette are imported by ``server.run``.
"""

from __future__ import annotations

__all__ = ["ServeOptions", "run"]

from toolkit.serve.server import ServeOptions, run
