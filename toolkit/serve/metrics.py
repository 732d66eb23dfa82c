"""The server's Prometheus metrics, on a registry of its own (never the process-global one).

Names follow Prometheus' conventions (``_total`` counters, ``_seconds`` histograms). Labels are
bounded: model name and version come from the served cards, ``route`` is the route template,
never the raw path, so a client cannot grow the label set by requesting odd URLs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from toolkit.serve.model import ServedModel

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# Latency buckets for a small tabular model: most answers take a few milliseconds.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Everything ``GET /metrics`` shows; one instance per server."""

    def __init__(self) -> None:
        # The *_created series double every counter's lines and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "toolkit_serve_requests", "HTTP requests answered.", ["model", "version", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "toolkit_serve_request_duration_seconds",
            "Time from request to response.",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.rows = Counter("toolkit_serve_rows_scored", "Rows predicted.", ["model", "version"], registry=r)
        self.in_flight = Gauge("toolkit_serve_in_flight_requests", "Requests being answered now.", registry=r)
        self.model_info = Gauge(
            "toolkit_serve_model_info",
            "The model being served (1), with its artifact and lock sha256.",
            ["name", "version", "sha256", "lock_sha256"],
            registry=r,
        )
        self.ready = Gauge("toolkit_serve_ready", "1 when a model passed every check and is served.", registry=r)
        self.gate = Gauge(
            "toolkit_serve_gate_passed",
            "The last start-up or swap check of a version: 1 passed, 0 refused (by step).",
            ["version", "step"],
            registry=r,
        )
        self.swaps = Counter("toolkit_serve_swaps", "Swaps to a new version, by result.", ["result"], registry=r)
        for result in ("swapped", "refused", "error"):
            self.swaps.labels(result=result)
        self.probe_diff = Gauge(
            "toolkit_serve_probe_max_abs_diff",
            "The probe's max |diff| against the card when the served version was loaded.",
            ["version"],
            registry=r,
        )
        self._info: tuple[str, str, str, str] | None = None
        self._probe_version: str | None = None

    def serving(self, model: ServedModel) -> None:
        """``model`` is now the one served: the info gauge names it alone."""
        if self._info is not None:
            self.model_info.remove(*self._info)
        if self._probe_version is not None:
            self.probe_diff.remove(self._probe_version)
        self._info = (model.name, model.version, model.sha256, model.lock_sha256 or "")
        self.model_info.labels(*self._info).set(1)
        self._probe_version = model.version
        self.probe_diff.labels(version=model.version).set(model.probe_max_abs_diff)
        self.ready.set(1)

    def checked(self, version: str, step: str | None) -> None:
        """The outcome of one version's checks (``step`` None: every step passed)."""
        self.gate.clear()
        self.gate.labels(version=version, step=step or "all").set(0 if step else 1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
