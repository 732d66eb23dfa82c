"""``python -m toolkit._pip_compile compile ARGS``: pip-tools' pip-compile, its hashes taken from the index.

``--generate-hashes`` lists every file of each pinned release (every platform's wheel and the
sdist). pip-tools means to read their sha256 from PyPI's JSON API, but 7.6.1 and 7.6.2 ask
``https://pypi.org/NAME/json`` (the API is under ``/pypi/``), get a 404 and download every file
to hash it: 449 files, 4.2 GB for scikit-learn + imbalanced-learn + LightGBM + the toolkit's
runtime, nine tenths of a first ``toolkit lock``. Yet the index page pip reads to resolve (PEP
691/503) states each file's sha256 already, and pip refuses a download that does not match it,
so that digest is the one a hash-locked install can ever accept: it is used as is. A file the
index states no sha256 for, a local file and a URL requirement are still downloaded and hashed
by pip-tools. Should pip-tools' internals move, pip-compile runs unpatched: slower, not different.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pip._internal.models.link import Link
    from pip._internal.req import InstallRequirement
    from piptools.repositories.pypi import PyPIRepository

__all__ = ["index_sha256", "patch"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def index_sha256(link: Link) -> str | None:
    """The ``sha256:HEX`` an index page stated for this file, or None (none stated, a local file, a URL requirement)."""
    if link.is_file or link.comes_from is None or link.hash_name != "sha256":
        return None
    digest = (link.hash or "").lower()
    return f"sha256:{digest}" if _SHA256.match(digest) else None


def patch() -> bool:
    """Make pip-tools hash from the index's digests; False (nothing changed) where its internals differ."""
    try:
        from piptools.repositories.pypi import PyPIRepository
    except ImportError:
        return False
    names = ("_get_file_hash", "_get_hashes_from_pypi", "_get_matching_candidates")
    if not all(callable(getattr(PyPIRepository, name, None)) for name in names):
        return False
    download_and_hash = PyPIRepository._get_file_hash
    json_api = PyPIRepository._get_hashes_from_pypi

    def _get_file_hash(self: PyPIRepository, link: Link) -> str:
        return index_sha256(link) or download_and_hash(self, link)

    def _get_hashes_from_pypi(self: PyPIRepository, ireq: InstallRequirement) -> dict[str, str]:
        # Every file's digest is on the index page: no JSON API round trip (a second of numpy's).
        if all(index_sha256(c.link) for c in self._get_matching_candidates(ireq)):
            return {}
        return json_api(self, ireq)

    PyPIRepository._get_file_hash = _get_file_hash  # type: ignore[method-assign]
    PyPIRepository._get_hashes_from_pypi = _get_hashes_from_pypi  # type: ignore[method-assign]
    return True


def main() -> None:
    patch()
    from piptools.__main__ import cli

    cli(prog_name="python -m piptools")


if __name__ == "__main__":
    main()
