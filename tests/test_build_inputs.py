"""What a warm image build does not redo: the toolkit's own wheel is built once per set of package
files, and the context streams to the engine without a temporary copy of every wheel."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO

import pytest

from toolkit.docker import selfwheel
from toolkit.docker.context import ContextStream
from toolkit.errors import UsageError


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """A stand-in for the installed package's files (the seam: package_files)."""
    src = tmp_path / "src"
    src.mkdir()
    listed = []
    for name in ("__init__.py", "cli.py"):
        (src / name).write_text(f"# {name}\n")
        listed.append((f"toolkit/{name}", src / name))
    monkeypatch.setattr(selfwheel, "package_files", lambda: listed)
    return listed


def test_the_cached_wheel_is_reused_until_a_file_changes(files: list[tuple[str, Path]], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = selfwheel.cached_self_wheel(cache)
    fresh = selfwheel.build_self_wheel(tmp_path / "fresh")
    assert first.read_bytes() == fresh.read_bytes()  # the same bytes a build makes: the layer cache holds
    built_at = first.stat().st_mtime_ns
    assert selfwheel.cached_self_wheel(cache) == first and first.stat().st_mtime_ns == built_at  # reused
    path = files[1][1]
    path.write_text("# cli.py, changed\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = selfwheel.cached_self_wheel(cache)
    assert second != first and second.read_bytes() != first.read_bytes()


def test_a_damaged_cached_wheel_is_built_again(files: list[tuple[str, Path]], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wheel = selfwheel.cached_self_wheel(cache)
    good = wheel.read_bytes()
    wheel.write_bytes(good[: len(good) // 2])  # truncated
    assert selfwheel.cached_self_wheel(cache).read_bytes() == good
    (wheel.parent / "sha256").unlink()  # a wheel without its stamp (a build killed in between)
    assert selfwheel.cached_self_wheel(cache).read_bytes() == good and (wheel.parent / "sha256").is_file()


def test_the_streamed_context_is_the_bytes_the_writer_wrote() -> None:
    data = os.urandom(3 * (1 << 20) + 12345)  # several chunks and a partial one

    def write(f: IO[bytes]) -> None:
        for i in range(0, len(data), 4096):
            f.write(data[i : i + 4096])
        assert f.tell() == len(data)

    assert b"".join(ContextStream(write)) == data


def test_a_writer_error_comes_out_of_the_stream_and_is_kept() -> None:
    def write(f: IO[bytes]) -> None:
        f.write(b"x" * (2 << 20))
        raise UsageError("wheelhouse/x.whl: cannot read it for the build context (Permission denied)")

    stream = ContextStream(write)
    with pytest.raises(UsageError, match="cannot read it for the build context"):
        b"".join(stream)
    assert isinstance(stream.error, UsageError)


def test_a_reader_that_goes_away_stops_the_writer() -> None:
    stopped = threading.Event()

    def write(f: IO[bytes]) -> None:
        try:
            while True:  # an endless context: only the reader leaving ends it
                f.write(b"y" * 65536)
        finally:
            stopped.set()

    chunks = iter(ContextStream(write))
    assert len(next(chunks)) >= 1 << 20
    chunks.close()  # what the SDK's body iteration does when the engine stops reading
    assert stopped.wait(5)
