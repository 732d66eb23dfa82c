"""The follower's bookkeeping, on a stub source (a seam): a version the network failed to fetch is
retried at the next poll and said once; a refused one is never tried again until the stage moves."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from toolkit.errors import IntegrityError, RemoteError
from toolkit.serve.follow import Follower
from toolkit.serve.holder import Holder
from toolkit.serve.log import Log
from toolkit.serve.metrics import Metrics
from toolkit.serve.source import Current


class _Source:
    oci, keeps_history = True, False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.now = Current(name="iris", version="1.0.0", sha256="a" * 64, digest="sha256:" + "1" * 64)
        self.failures: list[Exception] = []
        self.fetched = 0

    def describe(self) -> str:
        return "oci://127.0.0.1:1/r:production"

    def current(self) -> Current:
        return self.now

    @contextmanager
    def materialize(self, current: Current) -> Iterator[Path]:
        self.fetched += 1
        if self.failures:
            raise self.failures.pop(0)
        yield self.path


def _follower(source: _Source) -> tuple[Follower, Metrics, io.StringIO]:
    out = io.StringIO()
    metrics = Metrics()
    follower = Follower(
        source,  # type: ignore[arg-type]
        Holder(),
        metrics,
        Log("json", out),
        interval=1.0,
        policy="strict",
        trusted_keys=None,
        where="here",
    )
    return follower, metrics, out


def _count(metrics: Metrics, result: str) -> float:
    return float(metrics.swaps.labels(result=result)._value.get())


def _events(out: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in out.getvalue().splitlines()]


def test_a_network_failure_is_retried_and_said_once(base_artifact: Path) -> None:
    source = _Source(base_artifact)
    source.failures = [RemoteError("127.0.0.1:1: registry error HTTP 503")] * 3
    follower, metrics, out = _follower(source)
    for _ in range(3):
        follower.poll()
    assert follower.holder.current is None and source.fetched == 3  # tried at every poll
    assert _count(metrics, "error") == 1.0 and _events(out) == ["swap_error"]
    follower.poll()  # the network is back
    assert follower.holder.current is not None and follower.holder.current.version == "1.0.0"
    assert _count(metrics, "swapped") == 1.0 and _events(out)[-2:] == ["swapped", "history_none"]
    follower.poll()  # the stage did not move: nothing fetched
    assert source.fetched == 4


def test_a_refused_version_is_not_fetched_again_until_the_stage_moves(base_artifact: Path) -> None:
    source = _Source(base_artifact)
    source.failures = [IntegrityError("a blob does not match its digest")]
    follower, metrics, out = _follower(source)
    follower.poll()
    follower.poll()
    assert source.fetched == 1 and _count(metrics, "error") == 1.0 and _events(out) == ["swap_refused"]
    source.now = Current(name="iris", version="1.0.0", sha256="a" * 64, digest="sha256:" + "2" * 64)
    follower.poll()  # another manifest: checked afresh
    assert source.fetched == 2 and follower.holder.current is not None
