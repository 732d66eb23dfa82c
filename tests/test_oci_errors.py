"""The OCI client's errors: the network's failures are exit 6, a bug of ours or a full disk is not."""

from __future__ import annotations

import errno
import hashlib
import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from toolkit import oci
from toolkit.errors import RemoteError
from toolkit.oci.manifest import Descriptor

BLOB = b"x" * 1000
DESCRIPTOR = Descriptor(
    media_type="application/octet-stream",
    digest="sha256:" + hashlib.sha256(BLOB).hexdigest(),
    size=len(BLOB),
    annotations={},
)


class _Response:
    """A 200 whose stream yields half the blob, then raises ``failure`` (or the rest)."""

    def __init__(self, failure: BaseException | None) -> None:
        self.status_code = 200
        self.headers: dict[str, str] = {}
        self.raw = None
        self._failure = failure

    def iter_content(self, size: int) -> Iterator[bytes]:
        del size
        yield BLOB[:500]
        if self._failure is not None:
            raise self._failure
        yield BLOB[500:]

    def close(self) -> None:
        pass

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Session:
    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure

    def request(self, *args: Any, **kwargs: Any) -> _Response:
        return _Response(self.failure)


def _fetch(failure: BaseException | None, dest: Any = None) -> bytes:
    out = dest if dest is not None else io.BytesIO()
    client = oci.Client("127.0.0.1:5000", session=_Session(failure), use_docker_config=False)
    client.fetch_blob("models/iris", DESCRIPTOR, out)
    return out.getvalue() if dest is None else b""


def test_a_whole_stream_is_the_blob() -> None:
    assert _fetch(None) == BLOB


@pytest.mark.parametrize(
    "failure",
    [
        requests.exceptions.ChunkedEncodingError("connection broken"),
        requests.exceptions.ReadTimeout("read timed out"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    ],
)
def test_a_network_failure_mid_stream_is_a_remote_error(failure: BaseException) -> None:
    with pytest.raises(RemoteError, match=re.escape("127.0.0.1:5000")):
        _fetch(failure)


def test_a_bug_of_ours_mid_stream_is_not_reported_as_the_network() -> None:
    with pytest.raises(TypeError, match="a bug"):
        _fetch(TypeError("a bug"))


def test_a_full_disk_while_writing_the_blob_is_not_reported_as_the_network() -> None:
    class Full(io.BytesIO):
        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as caught:
        _fetch(None, Full())
    assert not isinstance(caught.value, RemoteError) and caught.value.errno == errno.ENOSPC
