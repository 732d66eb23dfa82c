"""toolkit._pip_compile: pip-compile's hashes are the sha256 the index states; files without one are still
hashed by pip-tools (pip-tools' own repository object, its session refusing every request: no network)."""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pip._internal.models.candidate import InstallationCandidate
from pip._internal.models.link import Link
from pip._internal.req.constructors import install_req_from_line
from pip._internal.utils.urls import path_to_url
from piptools.repositories.pypi import PyPIRepository

from toolkit import _pip_compile
from toolkit.lock import _pip_compile as lock_command

PAGE = "https://pypi.org/simple/demo/"
FILES = "https://files.pythonhosted.org/packages/ab/cd/"
WHEEL, SDIST = "a" * 64, "b" * 64


class Offline(Exception):
    """What the repository's session raises instead of going on the network."""


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # patch() rebinds two methods of pip-tools' class: put them back after each test.
    for name in ("_get_file_hash", "_get_hashes_from_pypi"):
        monkeypatch.setattr(PyPIRepository, name, getattr(PyPIRepository, name))
    yield


def _repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: list[Link]) -> PyPIRepository:
    repo = PyPIRepository(["--index-url", "https://pypi.org/simple"], cache_dir=str(tmp_path / "cache"))

    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise Offline(url)

    monkeypatch.setattr(repo.session, "get", offline)
    candidates = [InstallationCandidate("demo", "1.0", link) for link in links]
    monkeypatch.setattr(repo, "find_all_candidates", lambda name: candidates)
    return repo


def _index_link(name: str, digest: str | None) -> Link:
    return Link(FILES + name, comes_from=PAGE, hashes=None if digest is None else {"sha256": digest})


def test_every_file_the_index_states_a_sha256_for_is_hashed_without_a_request(
    restored: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _pip_compile.patch()
    links = [_index_link("demo-1.0-py3-none-any.whl", WHEEL), _index_link("demo-1.0.tar.gz", SDIST)]
    repo = _repository(tmp_path, monkeypatch, links)
    # Neither the JSON API nor a download is asked: the session would raise Offline.
    assert repo.get_hashes(install_req_from_line("demo==1.0")) == {f"sha256:{WHEEL}", f"sha256:{SDIST}"}


def test_a_file_without_a_stated_sha256_is_still_asked_for(
    restored: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _pip_compile.patch()
    unstated = _index_link("demo-1.0.tar.gz", None)
    repo = _repository(tmp_path, monkeypatch, [_index_link("demo-1.0-py3-none-any.whl", WHEEL), unstated])
    with pytest.raises(Offline):  # pip-tools' own path: the JSON API, then the download
        repo.get_hashes(install_req_from_line("demo==1.0"))
    with pytest.raises(Offline, match=re.escape(FILES + "demo-1.0.tar.gz")):
        repo._get_file_hash(unstated)


def test_a_local_file_is_hashed_from_its_bytes_not_from_what_its_url_says(
    restored: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _pip_compile.patch()
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not what the fragment says")
    link = Link(path_to_url(str(wheel)) + "#sha256=" + WHEEL, comes_from=PAGE)
    repo = _repository(tmp_path, monkeypatch, [link])
    assert repo._get_file_hash(link) == "sha256:" + hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_only_an_index_pages_well_formed_sha256_is_taken() -> None:
    assert _pip_compile.index_sha256(_index_link("x.whl", WHEEL.upper())) == f"sha256:{WHEEL}"
    assert _pip_compile.index_sha256(_index_link("x.whl", "a" * 63)) is None
    assert _pip_compile.index_sha256(_index_link("x.whl", "g" * 64)) is None
    assert _pip_compile.index_sha256(Link(FILES + "x.whl", comes_from=PAGE, hashes={"md5": "a" * 32})) is None
    # A URL requirement's fragment is the user's claim, not the index's: pip-tools downloads it.
    assert _pip_compile.index_sha256(Link(FILES + "x.whl#sha256=" + WHEEL)) is None


def test_where_pip_tools_internals_differ_nothing_is_patched(restored: None, monkeypatch: pytest.MonkeyPatch) -> None:
    before = PyPIRepository._get_file_hash
    monkeypatch.delattr(PyPIRepository, "_get_hashes_from_pypi")
    assert not _pip_compile.patch()
    assert PyPIRepository._get_file_hash is before


def test_toolkit_lock_runs_pip_compile_through_it(
    restored: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert lock_command()[:3] == [sys.executable, "-m", "toolkit._pip_compile"]
    monkeypatch.setattr(sys, "argv", ["_pip_compile.py", "compile", "--help"])
    with pytest.raises(SystemExit) as exited:
        _pip_compile.main()
    assert exited.value.code == 0
    assert "--generate-hashes" in capsys.readouterr().out
