"""A project's Debian packages (``system_packages``): exact versions resolved and ``.deb`` files
fetched on the host, for the base image's Debian release, so the build installs them with no network.

``apt-cache policy NAME`` gives the candidate version; ``apt-get download NAME=VERSION`` fetches
that exact file (apt checks it against the signed archive's hashes). The host's apt serves the
host's release, so the base's release (its ``/etc/os-release``) must be the host's: a different
one is one line saying so, never a .deb from the wrong release. Nothing here talks to Docker.

A package's own dependencies: what the base lacks is resolved by apt's own resolver, against the
base's dpkg status (``apt-get install --simulate -o Dir::State::status=BASE``: what apt would
install on *that* system, from this host's sources of the same release), at exact versions, and
fetched and installed with the packages asked for. The image records them all: a dependency's
version is as much the runtime as the package that pulled it in (libopenblas0 runs libgfortran5's
code), so ``strict`` compares every .deb the base did not have.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit import _files
from toolkit.errors import DockerError, UsageError
from toolkit.project import DEBIAN_NAME_RE

__all__ = [
    "RECORD_PATH",
    "SystemPackage",
    "closure",
    "fetch",
    "host_release",
    "manifest",
    "release_of",
    "resolve",
]

RECORD_PATH = "/opt/toolkit/system-packages.json"  # in the image; card schema 3 reads it
_TIMEOUT = 300
# apt-get --simulate: "Inst NAME [INSTALLED] (VERSION ARCHIVE [ARCH])"; [INSTALLED] when it upgrades one.
_INST = re.compile(r"^Inst (?P<name>[a-z0-9][a-z0-9.+-]*)(?::[a-z0-9-]+)? (?:\[[^\]]*\] )?\((?P<version>\S+) ")
_VERSION_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.+~:-")


@dataclass(frozen=True, kw_only=True, slots=True)
class SystemPackage:
    """A Debian package at an exact version, as the image records it."""

    name: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def release_of(os_release: str) -> str | None:
    """``VERSION_CODENAME`` from the text of an ``/etc/os-release`` (``bookworm``), or None."""
    for line in os_release.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME":
            return value.strip().strip("\"'") or None
    return None


def host_release() -> str | None:
    """This host's Debian release, or None when it is not Debian-like or says nothing."""
    try:
        return release_of(Path("/etc/os-release").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def resolve(names: Sequence[str], *, release: str | None) -> list[SystemPackage]:
    """Each name at the exact version this host's apt has for ``release``.

    Raises: UsageError (an unknown package, a release this host's apt does not serve, no apt),
    one line, before any build.
    """
    if not names:
        return []
    for name in names:
        if not DEBIAN_NAME_RE.match(name):
            raise UsageError(f"system_packages: {name!r} is not a Debian package name")
    host = host_release()
    if release is not None and host != release:
        raise UsageError(
            f"system_packages: the base image is Debian {release}, "
            f"this host's apt serves {host or 'no Debian release'}; fetch on a {release} host, or use a {host} base"
        )
    apt_cache = _tool("apt-cache")
    resolved = []
    for name in names:
        done = _run([apt_cache, "policy", name])
        version = _candidate(done.stdout)
        if version is None:
            raise UsageError(
                f"system_packages: unknown Debian package {name!r} for {release or host} "
                "(apt-cache policy has no candidate; is the name right, has apt-get update run?)"
            )
        resolved.append(SystemPackage(name=name, version=version))
    return resolved


def closure(packages: Sequence[SystemPackage], *, base_status: str) -> list[SystemPackage]:
    """``packages`` and every package they depend on that the base lacks (or has too old), at the
    versions apt would install on the base: its resolver run against ``base_status`` (the text of
    the base's ``/var/lib/dpkg/status``), recommends left out as the base's own installs do.

    Raises: UsageError (apt cannot satisfy them on this base: its reason, one line), DockerError.
    """
    if not packages:
        return []
    apt_get = _tool("apt-get")
    with _files.scratch("toolkit-apt") as tmp:
        status = Path(tmp) / "status"
        status.write_text(base_status, encoding="utf-8")
        command = [
            apt_get,
            "install",
            "--simulate",
            "-q",
            "--no-install-recommends",
            "-o",
            f"Dir::State::status={status}",
        ]
        done = _run([*command, *(f"{p.name}={p.version}" for p in packages)], check=False)
    found = parse_simulation(done.stdout)
    if done.returncode != 0 or not found:
        reasons = [
            line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines() if line.startswith(("E:", " "))
        ]
        raise UsageError(
            "system_packages: apt cannot install "
            + ", ".join(f"{p.name}={p.version}" for p in packages)
            + f" on the base: {reasons[-1] if reasons else f'exit {done.returncode}'}"
        )
    # One the base already has at that version is not added (nor recorded): the base digest pins it.
    return sorted(found, key=lambda p: p.name)


def parse_simulation(output: str) -> list[SystemPackage]:
    """Every ``Inst`` line of ``apt-get install --simulate`` as the package and version it installs."""
    found: dict[str, SystemPackage] = {}
    for line in output.splitlines():
        m = _INST.match(line)
        if m and set(m["version"]) <= _VERSION_CHARS:
            found[m["name"]] = SystemPackage(name=m["name"], version=m["version"])
    return list(found.values())


def fetch(
    packages: Sequence[SystemPackage], cache: Path, *, on_progress: Callable[[str], None] | None = None
) -> list[Path]:
    """The ``.deb`` of each package, downloaded into ``cache`` once (reused after). Raises: DockerError."""
    if not packages:
        return []
    apt_get = _tool("apt-get")
    cache.mkdir(parents=True, exist_ok=True)
    files = []
    for n, package in enumerate(packages, 1):
        found = _cached(cache, package)
        if found is None:
            if on_progress is not None:
                on_progress(f"system package {n}/{len(packages)}: apt-get download {package.name}={package.version}\n")
            # A fresh folder per download: only what this call fetched is taken from it.
            _files.sweep_stale_temps(cache)  # a download that was killed
            work = _files.make_temp_dir(cache, "download")
            try:
                done = _run([apt_get, "download", "-q", f"{package.name}={package.version}"], cwd=work, check=False)
                debs = sorted(work.glob("*.deb"))
                if done.returncode != 0 or len(debs) != 1:
                    last = [line for line in (done.stderr or "").splitlines() if line.strip()]
                    raise DockerError(
                        f"apt-get download {package.name}={package.version} failed: "
                        + (last[-1].strip() if last else f"exit {done.returncode}")
                    )
                found = cache / debs[0].name
                os.replace(debs[0], found)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        files.append(found)
    return files


def manifest(packages: Sequence[SystemPackage]) -> bytes:
    """The JSON list the image holds at :data:`RECORD_PATH`: ``[{"name", "version"}, ...]``, sorted."""
    items = [p.to_dict() for p in sorted(packages, key=lambda p: p.name)]
    return (json.dumps(items, indent=1) + "\n").encode()


# --- helpers -------------------------------------------------------------------------------


def _candidate(policy_output: str) -> str | None:
    for line in policy_output.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate":
            version = value.strip()
            if version and version != "(none)" and set(version) <= _VERSION_CHARS:
                return version
    return None


def _cached(cache: Path, package: SystemPackage) -> Path | None:
    # apt names a .deb NAME_VERSION_ARCH.deb, with the epoch's ':' written as %3a.
    version = package.version.replace(":", "%3a")
    for path in sorted(cache.glob(f"{package.name}_{version}_*.deb")):
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise UsageError(f"system_packages need Debian's {name} on this host (it fetches the .deb files)")
    return found


def _run(command: list[str], *, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT, env=env, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise DockerError(f"{' '.join(command[:2])}: {e}") from e
    if check and done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()]
        raise UsageError(f"{' '.join(command)}: " + (last[-1].strip() if last else f"exit {done.returncode}"))
    return done
