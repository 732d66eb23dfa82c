"""The card's fixed Markdown rendering (the ``.card.md`` beside every artifact)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.card.records import ModelCard

__all__ = ["markdown"]


def markdown(card: ModelCard) -> str:
    """The card for people. The rendering of each schema version is fixed: ``verify``
    holds the ``.card.md`` beside an artifact to exactly these bytes, so a line is only
    ever added for a new schema, never changed for an old one."""
    env = card.environment
    lines = [
        f"# Model card: {card.name} {card.version}",
        "",
        f"- **Algorithm:** {card.algorithm}",
        f"- **Created:** {card.created_at} by {card.author}",
        f"- **Artifact:** `{card.artifact.file}` ({card.artifact.size} bytes)",
        f"- **sha256:** `{card.artifact.sha256}`",
        "",
        "## Intended use",
        "",
        card.intended_use or "_not stated_",
        "",
        "## Limitations",
        "",
        card.limitations or "_not stated_",
        "",
        "## Metrics",
        "",
        "| section | metric | value |",
        "| --- | --- | --- |",
        *(f"| {s} | {m} | {v:.4f} |" for s, ms in card.metrics.items() for m, v in ms.items()),
        "",
        "## Data",
        "",
        f"- **Source:** {card.data.source or '_unknown_'}",
        f"- **Dataset sha256:** `{card.data.sha256 or 'unknown'}`",
        f"- **Samples:** {card.data.n_train} train, {card.data.n_test} test",
        f"- **Target:** {card.data.target or '_unknown_'}; classes: {_join(card.data.classes)}",
        "",
        "| feature | dtype |",
        "| --- | --- |",
        *(f"| {f.name} | {f.dtype} |" for f in card.data.features),
        "",
        "## Preprocessing",
        "",
        *(f"- {step}" for step in card.preprocessing),
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(dict(card.params), indent=2, sort_keys=True),
        "```",
        "",
        "## Environment",
        "",
        f"- **Python:** {env.python_implementation} {env.python_version}",
        f"- **Platform:** {env.os} {env.machine}, {env.libc}",
        f"- **In a container:** {'yes' if env.in_container else 'no'}",
        f"- **Base image:** `{env.base_image or 'none'}`",
        f"- **requirements.lock sha256:** `{env.lock_sha256 or 'none'}`",
        f"- **Pickle references:** {', '.join(card.references.distributions) or 'none'}",
        "",
        "| distribution | version |",
        "| --- | --- |",
        *(f"| {n} | {v} |" for n, v in env.packages.items()),
        "",
        f"Probe: {len(card.probe.rows)} reference predictions, tolerance {card.probe.tolerance:g}.",
        "",
    ]
    if card.schema_version >= 2:  # a schema 1 card renders exactly as it always did
        lines += _schema2(card)
    if card.schema_version >= 3:
        lines += _schema3(card)
    return "\n".join(lines)


def _schema2(card: ModelCard) -> list[str]:
    refs = card.references
    lines = ["## Training recipe", ""]
    if card.training is None:
        lines += ["_none recorded (saved through the API without one)_", ""]
    else:
        lines += ["```json", json.dumps(card.training.to_dict(), indent=2, sort_keys=True), "```", ""]
    lines += ["## Lineage", ""]
    if card.lineage is None:
        lines += ["_none_", ""]
    else:
        lines += [f"- **Parent:** {card.lineage.parent}", f"- **Reason:** {card.lineage.reason}", ""]
    lines += [
        "## What loading imports",
        "",
        f"{len(refs.globals or ())} globals; local modules: "
        + (", ".join(f"`{m.module}` (sha256 `{m.sha256}`)" for m in refs.local_modules or ()) or "none"),
        "",
    ]
    if card.environment.lock is not None:
        lines += [
            "<details><summary>requirements.lock</summary>",
            "",
            "```",
            card.environment.lock,
            "```",
            "",
            "</details>",
            "",
        ]
    return lines


def _schema3(card: ModelCard) -> list[str]:
    env = card.environment
    image = env.image
    lines = [
        "## Runtime image",
        "",
        f"- **Image:** {'_not recorded_' if image is None else f'`{image.ref or image.id}` (`{image.id}`)'}",
        "- **System packages added:** "
        + (", ".join(f"{p.name} {p.version}" for p in env.system_packages or ()) or "none"),
    ]
    threads = env.threads
    if threads is None:
        lines += ["- **Threads:** _not recorded_"]
    else:
        settings = ", ".join(f"{k}={v}" for k, v in threads.variables.items() if v is not None) or "none set"
        lines += [
            f"- **Threads:** BLAS {threads.blas or 'none'}, OpenMP {threads.openmp or 'none'}, "
            f"{threads.cpus or 'unknown'} CPUs; variables: {settings}",
            f"- **Reference outputs computed under:** {threads.limit} thread(s)",
        ]
    lines += ["", "## Reference set", ""]
    ref = card.reference
    if ref is None:
        lines += ["_none (saved with a probe only)_", ""]
    else:
        sampled = f", sampled with seed {ref.seed}" if ref.seed is not None else ""
        lines += [
            f"- **File:** `{ref.file}` ({ref.size} bytes)",
            f"- **sha256:** `{ref.sha256}`",
            f"- **Rows:** {ref.rows} of {ref.source_rows} held-out rows{sampled}",
            f"- **Outputs:** {', '.join(ref.outputs)}; tolerance {ref.tolerance:g}",
            f"- **Computed in batches of** {ref.batch_size} rows under {ref.thread_limit} thread(s)",
            "",
        ]
    return lines


def _join(values: Sequence[Any] | None) -> str:
    return ", ".join(map(str, values)) if values else "_none_"
