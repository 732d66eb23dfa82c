"""The model registry: versions of named pipelines, promotion, rollback and an audit history.

One set of rules (``rules``) over two seams: an index (``index``: SQLite in the registry
directory, or PostgreSQL for a team) and a store (``store``: the registry directory, or an
OCI repository). ``registry.Registry`` is the public face; ``refs`` resolves ``NAME@stage``;
``check``, ``recover`` and ``migrate`` are the commands of the same names.

The public names are re-exported here lazily: ``toolkit.registry.refs`` is on the gate's
start-up path (every command that takes an artifact takes a reference), and must not pull
in the registry's rules and both seams with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_ROOT",
    "ENV_VAR",
    "STORE_ENV_VAR",
    "Audit",
    "Change",
    "Comparison",
    "Entry",
    "Event",
    "NameSummary",
    "Recovery",
    "Registry",
    "parse_metric",
    "parse_version",
    "resolve_root",
    "resolve_store",
    "validate_name",
]

if TYPE_CHECKING:
    from toolkit.registry.registry import (
        DEFAULT_ROOT,
        ENV_VAR,
        STORE_ENV_VAR,
        Audit,
        Change,
        Comparison,
        Entry,
        Event,
        NameSummary,
        Recovery,
        Registry,
        parse_metric,
        parse_version,
        resolve_root,
        resolve_store,
        validate_name,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from toolkit.registry import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'toolkit.registry' has no attribute {name!r}")
