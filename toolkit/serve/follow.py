"""``--follow``: watch the stage MODEL names; on a promote or rollback, check the new version
beside the served one and swap only when every check passes.

The stage is the registry index's (SQLite, PostgreSQL) or an OCI tag's (``Source.current``
reads either); everything after "it moved" is this one code path for all of them.

The new version is loaded in this process while the old one keeps answering; a refusal (a
signature, a checksum, the gate, the probe) leaves the old one serving, is logged once with
why and counted. A version whose card needs another runtime is refused here for good: it
needs its own image (``toolkit image serve``). Each swap is recorded as a ``served`` event.
"""

from __future__ import annotations

import threading
from typing import Any

from toolkit.errors import ReadOnlyRegistry, RemoteError, SignatureError, ToolkitError
from toolkit.serve.holder import Holder
from toolkit.serve.log import Log
from toolkit.serve.metrics import Metrics
from toolkit.serve.model import Refused, ServedModel, prepare
from toolkit.serve.source import Current, Source

__all__ = ["Follower", "load_current"]


def load_current(
    source: Source, current: Current, *, policy: str, trusted_keys: Any, trusted: tuple[str, ...] = ()
) -> ServedModel:
    """Materialize ``current`` and run every check on it. Raises: Refused."""
    try:
        with source.materialize(current) as path:
            shown = f"{current.name} {current.version}" if current.name else str(path)
            return prepare(path, policy=policy, trusted_keys=trusted_keys, trusted=trusted, source=shown)
    except Refused:
        raise
    except SignatureError as e:  # an OCI pull checks the signature itself when trust is configured
        raise Refused("signature", f"{source.describe()}: {e}", exit_code=e.exit_code) from e
    except ToolkitError as e:
        raise Refused("resolve", f"{source.describe()}: {e}", exit_code=e.exit_code) from e


class Follower(threading.Thread):
    """Polls the stage every ``interval`` seconds until ``stop`` is set."""

    def __init__(
        self,
        source: Source,
        holder: Holder,
        metrics: Metrics,
        log: Log,
        *,
        interval: float,
        policy: str,
        trusted_keys: Any,
        trusted: tuple[str, ...] = (),
        where: str,
        serving: Current | None = None,
    ) -> None:
        super().__init__(name="toolkit-serve-follow", daemon=True)
        self.source = source
        self.holder = holder
        self.metrics = metrics
        self.log = log
        self.interval = interval
        self.policy = policy
        self.trusted_keys = trusted_keys
        self.trusted = trusted
        self.where = where
        self.stop = threading.Event()
        self.serving = serving  # what the stage named when the served model was loaded
        self.refused: set[Current] = set()  # what the stage named and was refused: not tried again
        self._unreachable = False
        self._failed: set[Current] = set()  # fetches that failed on the network: retried, said once

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """One look at the stage, and a swap if it moved."""
        try:
            current = self.source.current()
        except ToolkitError as e:
            if not self._unreachable:  # once per outage, not once per poll
                self.log.event("follow_error", f"cannot read the stage ({e}); still serving what was served")
                self.metrics.swaps.labels(result="error").inc()
            self._unreachable = True
            return
        self._unreachable = False
        served = self.holder.current
        if served is not None and current == self.serving:
            return
        key = current
        if key in self.refused:
            return
        old = served.version if served else None
        try:
            model = load_current(
                self.source, current, policy=self.policy, trusted_keys=self.trusted_keys, trusted=self.trusted
            )
        except Refused as e:
            if isinstance(e.__cause__, RemoteError):  # the network, not the version: try it again next poll
                if key not in self._failed:  # said once per version, not once per poll
                    self._failed.add(key)
                    self.metrics.swaps.labels(result="error").inc()
                    self.log.event(
                        "swap_error",
                        f"could not fetch {current.name} {current.version} ({e}); still serving {old}, trying again",
                        version=current.version,
                        serving=old,
                    )
                return
            self.refused.add(key)
            self.metrics.checked(str(current.version), e.step)
            self.metrics.swaps.labels(result="refused" if e.step != "resolve" else "error").inc()
            keep = f"; still serving {old}" if old else "; not ready"
            runtime = " (it needs its own runtime: toolkit image serve)" if e.step == "gate" and _runtime(e) else ""
            self.log.event(
                "swap_refused",
                f"refused {current.name} {current.version} at {e.step}: {e}{runtime}{keep}",
                version=current.version,
                serving=old,
                **e.to_dict(),
            )
            return
        except Exception as e:  # never let the follower die: the old model keeps serving
            self.refused.add(key)
            self.metrics.swaps.labels(result="error").inc()
            self.log.event("swap_error", f"could not load {current.name} {current.version}: {type(e).__name__}: {e}")
            return
        self.holder.swap(model)
        self.serving = current
        self._failed.discard(key)
        self.metrics.serving(model)
        self.metrics.checked(model.version, None)
        self.metrics.swaps.labels(result="swapped").inc()
        self.log.event(
            "swapped",
            f"now serving {model.name} {model.version} (sha256 {model.sha256[:12]}), was {old or 'nothing'}",
            version=model.version,
            previous=old,
            sha256=model.sha256,
        )
        record_served(self.source, model, self.log, where=self.where, reason=f"swap from {old}" if old else "ready")


def record_served(source: Source, model: ServedModel, log: Log, *, where: str, reason: str) -> None:
    """The ``served`` history event; a registry that refuses it is logged, never fatal to serving.

    An ``oci://`` reference has no history to write to: the server needs (and should have) only
    pull access to the OCI registry, and distribution 2.8 has no referrers API to hang an event
    on, so what was served when is the log's ``ready`` and ``swapped`` lines (said once, at ready).
    """
    if not source.keeps_history:
        if source.oci and reason == "ready":
            log.event(
                "history_none",
                f"{source.describe()} has no history index: served versions are recorded in this log only"
                " (serve the team registry's NAME@production to have them in its history)",
            )
        return
    try:
        source.record_served(model.name, model.version, where=where, reason=reason)
    except ReadOnlyRegistry:  # `image serve --follow` mounts a directory registry read-only
        log.event(
            "history_read_only",
            f"the registry is read-only here: {model.name} {model.version} is served, not recorded in its history",
            version=model.version,
        )
    except ToolkitError as e:
        log.event("history_error", f"could not record the served event in the registry: {e}")
    except Exception as e:  # a bug of ours or the database's: serving goes on, the line says what
        log.event("history_error", f"could not record the served event in the registry: {type(e).__name__}: {e}")


def _runtime(e: Refused) -> bool:
    """Whether the gate's differences are the runtime's (packages, interpreter, OS), not only user code."""
    return any(d.field != "local_module" for d in e.differences)
