"""A project's Debian packages and their own dependencies, resolved for the base (no Docker, no apt).

The seams: the apt-get run (toolkit.docker.system._run) answering as apt does, and the container
run that reads the base's files (toolkit.docker.jobs.run). What is asserted is what apt is asked
(against the base's dpkg status, exact versions) and what the image would record.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from toolkit.docker import jobs, system
from toolkit.docker.client import RunResult
from toolkit.docker.system import SystemPackage
from toolkit.errors import UsageError

BASE = "127.0.0.1:5000/python-base@sha256:" + "7" * 64
STATUS = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u13\n\n"
# What `apt-get install --simulate` printed on a bookworm host against a minbase's status.
SIMULATION = """\
NOTE: This is only a simulation!
Reading package lists...
The following additional packages will be installed:
  libgfortran5 libquadmath0
The following NEW packages will be installed:
  libgfortran5 libopenblas0-pthread libquadmath0
Inst libquadmath0 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libgfortran5:amd64 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Inst libc6 [2.36-9+deb12u10] (2.36-9+deb12u13 Debian:12.15/oldstable [amd64])
Inst libopenblas0-pthread (0.3.21+ds-4 Debian:12.15/oldstable [amd64])
Conf libquadmath0 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
Conf libopenblas0-pthread (0.3.21+ds-4 Debian:12.15/oldstable [amd64])
"""
OPENBLAS = SystemPackage(name="libopenblas0-pthread", version="0.3.21+ds-4")


class FakeApt:
    def __init__(self, stdout: str, returncode: int = 0, stderr: str = "") -> None:
        self.stdout, self.returncode, self.stderr = stdout, returncode, stderr
        self.commands: list[list[str]] = []
        self.status_seen = ""

    def __call__(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.commands.append(command)
        option = next(c for c in command if c.startswith("Dir::State::status="))
        self.status_seen = Path(option.partition("=")[2]).read_text()  # the file exists while apt runs
        return subprocess.CompletedProcess(command, self.returncode, self.stdout, self.stderr)


@pytest.fixture
def apt(monkeypatch: pytest.MonkeyPatch) -> FakeApt:
    fake = FakeApt(SIMULATION)
    monkeypatch.setattr(system, "_run", fake)
    monkeypatch.setattr(system.shutil, "which", lambda name: f"/usr/bin/{name}")
    return fake


def test_apt_resolves_against_the_bases_status_and_every_install_is_recorded(apt: FakeApt) -> None:
    found = system.closure([OPENBLAS], base_status=STATUS)
    (command,) = apt.commands
    assert command[:5] == ["/usr/bin/apt-get", "install", "--simulate", "-q", "--no-install-recommends"]
    assert command[-1] == "libopenblas0-pthread=0.3.21+ds-4"  # the exact version asked for
    assert apt.status_seen == STATUS  # the base's installed packages, not this host's
    # Sorted by name; the dependencies the base lacks and the one it has too old, at apt's versions.
    assert found == [
        SystemPackage(name="libc6", version="2.36-9+deb12u13"),
        SystemPackage(name="libgfortran5", version="12.2.0-14+deb12u1"),
        OPENBLAS,
        SystemPackage(name="libquadmath0", version="12.2.0-14+deb12u1"),
    ]
    assert [p["name"] for p in json.loads(system.manifest(found))] == [p.name for p in found]


def test_a_package_whose_dependencies_the_base_has_adds_only_itself(apt: FakeApt) -> None:
    apt.stdout = "Inst libgomp1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n"
    gomp = SystemPackage(name="libgomp1", version="12.2.0-14+deb12u1")
    assert system.closure([gomp], base_status=STATUS) == [gomp]
    assert system.closure([], base_status=STATUS) == [] and len(apt.commands) == 1  # nothing asked: apt not run


def test_what_apt_cannot_install_on_the_base_is_one_line(apt: FakeApt) -> None:
    apt.returncode, apt.stdout = 100, "Reading package lists...\n"
    apt.stderr = "E: Unable to correct problems, you have held broken packages.\n"
    with pytest.raises(UsageError) as e:
        system.closure([OPENBLAS], base_status=STATUS)
    assert str(e.value) == (
        "system_packages: apt cannot install libopenblas0-pthread=0.3.21+ds-4 on the base: "
        "E: Unable to correct problems, you have held broken packages."
    )


def test_hostile_simulation_lines_are_not_packages() -> None:
    text = "Inst ../../etc (1.0 x)\nInst ok (1.0;rm x)\nInst UPPER (1 x)\nInst fine (1:2.0-1 x)\n"
    assert system.parse_simulation(text) == [SystemPackage(name="fine", version="1:2.0-1")]


def test_the_bases_release_and_status_are_read_once_per_digest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runs: list[list[str]] = []

    def fake_run(client: Any, image: str, command: list[str], **kwargs: Any) -> RunResult:
        runs.append(command)
        os_release = b'PRETTY_NAME="Debian GNU/Linux 12"\nVERSION_CODENAME=bookworm\n'
        kwargs["on_output"]("stdout", os_release + STATUS.encode())
        return RunResult(exit_code=0, image_id="sha256:" + "1" * 64, seconds=0.1)

    monkeypatch.setattr(jobs, "run", fake_run)
    first = jobs.base_state(object(), BASE, cache=tmp_path)
    assert first == jobs.BaseState(release="bookworm", status=STATUS)
    assert runs == [["/etc/os-release", "/var/lib/dpkg/status"]]
    assert jobs.base_state(object(), BASE, cache=tmp_path) == first and len(runs) == 1  # a digest never changes
    (tmp_path / f"base-{'7' * 64}.json").write_text("{not json")  # a damaged cache is read again, not trusted
    assert jobs.base_state(object(), BASE, cache=tmp_path) == first and len(runs) == 2
