"""The loaded-model holder: which version is served now, swapped atomically.

A request reads ``current`` once and answers wholly from that model (its version in the body,
its sha256 in the header), so a swap in the middle of a request never mixes two versions.
Replacing one reference is atomic in CPython; the lock only orders concurrent swaps.
"""

from __future__ import annotations

import threading

from toolkit.serve.model import ServedModel

__all__ = ["Holder"]


class Holder:
    """The served model (None until one passed every check) and why it is not ready otherwise."""

    def __init__(self) -> None:
        self.current: ServedModel | None = None
        self.reason = "starting: the model has not passed its checks yet"
        self._lock = threading.Lock()

    def swap(self, model: ServedModel) -> ServedModel | None:
        """Serve ``model`` from now on; returns the one it replaced."""
        with self._lock:
            old, self.current = self.current, model
            self.reason = ""
            return old

    def not_ready(self, reason: str) -> None:
        """Record why there is nothing to serve (only while nothing is served)."""
        with self._lock:
            if self.current is None:
                self.reason = reason
