"""``upgrade-check --certify``: a certification for each model the check found safe.

A workflow, not part of ``toolkit.certification``: it reads the registry (each model's sha256)
and writes certifications, so the format and the gate's reading of it import no registry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolkit.certification import Certification, write
from toolkit.errors import UsageError

__all__ = ["certify"]


def certify(
    report: Any, *, registry: Path, directory: Path, key: str | os.PathLike[str] | None = None
) -> tuple[Path, ...]:
    """``upgrade-check --certify``: a certification for each model of ``report`` (an
    ``UpgradeReport``) whose verdict is ``safe``, under its candidate lock and base,
    the model's sha256 read from ``registry``. Returns the files written.

    Raises: UsageError (the folder or key; a report without the candidate's runtime), RegistryError.
    """
    from datetime import datetime, timezone

    from toolkit.registry.registry import Registry

    if report.runtime is None:
        raise UsageError("--certify: the check did not report its candidate runtime; nothing certified")

    at = datetime.now(tz=timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    written = []
    with Registry(registry) as reg:
        for check in report.models:
            if check.verdict != "safe" or check.probe is None:
                continue
            entry = reg.get(check.name, check.version)
            cert = Certification(
                name=check.name,
                version=check.version,
                model_sha256=entry.sha256,
                lock_sha256=report.lock_sha256,
                base_image=report.base_image,
                runtime=report.runtime,
                verdict=check.verdict,
                result=dict(check.probe),
                at=at,
            )
            written.append(write(directory, cert, key=key))
    return tuple(written)
