"""``toolkit lock``: a project's requirements.in plus the toolkit's own runtime, hash-locked by pip-tools.

The image runs the project's packages *and* the toolkit (the gate, ``toolkit.save``, ``toolkit
serve``), so its lock is compiled from both: the project's ``requirements.in`` and the toolkit
distribution's own runtime requirements (its ``Requires-Dist`` without extras, plus the ``serve``
extra: ``toolkit image serve`` runs the server in the image, and its cards record the server's
packages as the pinned image's do). pip-compile does the resolving, as
``make lock`` does in this repository; it keeps every pin of an existing output file that still
resolves unless ``--upgrade``/``--upgrade-package`` says otherwise. The result is written
atomically and must be data: pins with hashes and comments, no pip options.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit import _files
from toolkit import env as envvars
from toolkit.errors import UsageError

__all__ = ["LockChanges", "LockResult", "check_lock_is_data", "compile_lock", "lock_changes", "toolkit_requirements"]

_TIMEOUT = 1800
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")
_RUNTIME_IN = "toolkit-runtime.in"
# The extras that run in a project's image, not only on its host.
IMAGE_EXTRAS = ("serve",)


@dataclass(frozen=True, kw_only=True, slots=True)
class LockChanges:
    """What a new lock changed against the old one: canonical names, versions as written."""

    added: tuple[tuple[str, str], ...]
    removed: tuple[tuple[str, str], ...]
    moved: tuple[tuple[str, str, str], ...]  # (name, old, new)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.moved)


@dataclass(frozen=True, kw_only=True, slots=True)
class LockResult:
    path: Path
    pins: int
    changes: LockChanges
    seconds: float


def toolkit_requirements() -> list[str]:
    """The toolkit distribution's runtime requirements (no extras but ``IMAGE_EXTRAS``), as requirement strings."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        declared = importlib.metadata.requires("toolkit") or []
    except importlib.metadata.PackageNotFoundError:
        raise UsageError("the toolkit is not installed as a distribution (pip install it): cannot lock") from None
    found = []
    for text in declared:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is not None and "extra" in str(req.marker):
            if not any(req.marker.evaluate({"extra": extra}) for extra in IMAGE_EXTRAS):
                continue
            req.marker = None  # an image extra is simply required in the image
        found.append(str(req))
    return found


def compile_lock(
    requirements: Path,
    out: Path,
    *,
    previous: Path | None = None,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
) -> LockResult:
    """Compile ``requirements`` + the toolkit's runtime into ``out`` (atomically), hash-locked.

    ``previous`` (default ``out``) is the lock whose pins are kept. Raises: UsageError (no
    requirements.in, no pip-tools, a conflict naming both sides, a resolution failure).
    """
    started = time.monotonic()
    if not requirements.is_file():
        raise UsageError(f"{requirements}: no such file; `toolkit init` writes one")
    needs = toolkit_requirements()
    _check_conflicts(requirements, needs)
    for item in upgrade_packages:
        _check_upgrade_package(item)
    previous = previous if previous is not None else out
    old_text = previous.read_text(encoding="utf-8") if previous.is_file() else ""
    command = _pip_compile()
    with _files.scratch("toolkit-lock") as tmp:
        runtime_in = Path(tmp) / _RUNTIME_IN
        runtime_in.write_text("# what the toolkit itself needs in the image\n" + "\n".join(needs) + "\n")
        target = Path(tmp) / "requirements.lock"
        if old_text:
            target.write_text(old_text, encoding="utf-8")  # pip-compile keeps what it finds there
        command += ["--generate-hashes", "--allow-unsafe", "--strip-extras", "--no-emit-index-url"]
        command += ["--no-emit-find-links", "--no-emit-trusted-host", "-o", str(target)]
        if upgrade:
            command.append("--upgrade")
        for item in upgrade_packages:
            command += ["--upgrade-package", item]
        command += [requirements.name, str(runtime_in)]  # run in its folder: annotations name it so
        text = _run(command, cwd=requirements.parent, on_line=on_line, needs=needs, requirements=requirements)
        # Annotations name the temporary file: say what it stands for.
        text = text.replace(f"-r {runtime_in}", "toolkit").replace(str(runtime_in), "toolkit-runtime")
        text = text.replace(str(target), out.name)
        check_lock_is_data(text, where=str(out))
        _check_needs_met(text, needs, out)
        _publish(out, text)
    changes = lock_changes(old_text, text)
    return LockResult(path=out, pins=len(_pins(text)), changes=changes, seconds=time.monotonic() - started)


def lock_changes(old: str, new: str) -> LockChanges:
    """Added, removed and moved pins between two lock texts."""
    a, b = _pins(old), _pins(new)
    return LockChanges(
        added=tuple(sorted((n, v) for n, v in b.items() if n not in a)),
        removed=tuple(sorted((n, v) for n, v in a.items() if n not in b)),
        moved=tuple(sorted((n, a[n], v) for n, v in b.items() if n in a and a[n] != v)),
    )


def check_lock_is_data(text: str, *, where: str) -> None:
    """A lock holds pins (``name==version``, hashes on continuation lines) and comments, nothing else.

    Raises: UsageError naming the first line that is anything else (a pip option, a URL, a path).
    """
    continued = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continued = False
            continue
        body = line.removesuffix("\\").strip()
        if continued:
            ok = bool(_HASH.match(body))
        else:
            ok = bool(_PIN.match(body)) and " " not in body.split(";", 1)[0].strip()
        if not ok:
            raise UsageError(f"{where}:{number}: not a pinned requirement or hash ({line[:60]!r}); a lock is data")
        continued = line.endswith("\\")


# --- helpers -------------------------------------------------------------------------------


def _pins(text: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in text.splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _requirements_in(path: Path) -> list[tuple[int, object]]:
    from packaging.requirements import InvalidRequirement, Requirement

    found: list[tuple[int, object]] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        with contextlib.suppress(InvalidRequirement):
            found.append((number, Requirement(line)))
    return found


def _check_conflicts(requirements: Path, needs: Sequence[str]) -> None:
    """A project pin the toolkit cannot run with: exit 2 naming both, before minutes of resolving."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = {canonicalize_name(r.name): r for r in map(Requirement, needs)}
    for number, req in _requirements_in(requirements):
        assert isinstance(req, Requirement)
        need = wanted.get(canonicalize_name(req.name))
        if need is None or not need.specifier:
            continue
        exact = [s.version for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        for version in exact:
            if not need.specifier.contains(version, prereleases=True):
                raise UsageError(
                    f"{requirements}:{number}: {req} conflicts with the toolkit's own requirement {need} "
                    "(the image runs both)"
                )


def _check_needs_met(text: str, needs: Sequence[str], out: Path) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _pins(text)
    for need in map(Requirement, needs):
        pinned = pins.get(canonicalize_name(need.name))
        if need.marker is not None and not need.marker.evaluate():
            continue
        if pinned is None or not need.specifier.contains(pinned, prereleases=True):
            raise UsageError(f"{out}: pip-compile pinned {need.name}=={pinned}, the toolkit needs {need}")


def _check_upgrade_package(item: str) -> None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(item)
    except InvalidRequirement as e:
        raise UsageError(f"--upgrade-package {item!r}: use NAME or NAME==VERSION") from e


def _pip_compile() -> list[str]:
    if importlib.util.find_spec("piptools") is not None:
        # pip-compile with the index's sha256 for each file, not a download of each (toolkit/_pip_compile.py)
        return [sys.executable, "-m", "toolkit._pip_compile", "compile"]
    found = shutil.which("pip-compile")
    if found is not None:
        return [found]
    raise UsageError("toolkit lock needs pip-tools on this host: pip install 'toolkit[lock]'")


def _run(
    command: list[str], *, cwd: Path, on_line: Callable[[str], None] | None, needs: Sequence[str], requirements: Path
) -> str:
    env = {**os.environ, envvars.PIP_CONFIG_FILE: os.devnull, envvars.PIP_DISABLE_PIP_VERSION_CHECK: "1"}
    env["CUSTOM_COMPILE_COMMAND"] = "toolkit lock"
    env.pop(envvars.PIP_FIND_LINKS, None)
    lines: list[str] = []
    try:
        with subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            env=env,
        ) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line.rstrip())
                if on_line is not None and line.strip():
                    on_line(line.strip())
            code = proc.wait(timeout=_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as e:
        raise UsageError(f"pip-compile could not run: {e}") from e
    output = Path(command[command.index("-o") + 1])
    if code != 0 or not output.is_file():
        raise UsageError(_failure_line(lines, needs, requirements, code))
    return output.read_text(encoding="utf-8")


def _failure_line(lines: Sequence[str], needs: Sequence[str], requirements: Path, code: int) -> str:
    text = [line.strip() for line in lines if line.strip()]
    # pip names the requirement it could not satisfy; if it is one of the toolkit's, say both sides.
    for line in text:
        m = re.search(r"Could not find a version that matches ([^\s(]+)", line)
        if m:
            return (
                f"cannot lock {requirements}: no version of {m.group(1)} satisfies every requirement on it "
                + (
                    "(the toolkit needs " + ", ".join(n for n in needs if _same_name(n, m.group(1))) + ")"
                    if any(_same_name(n, m.group(1)) for n in needs)
                    else ""
                ).rstrip()
            )
    detail = next((line for line in reversed(text) if not line.startswith(("Traceback", "File "))), f"exit {code}")
    return f"cannot lock {requirements}: pip-compile failed: {detail}"


def _same_name(requirement: str, spec: str) -> bool:
    from packaging.utils import canonicalize_name

    name = re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0]
    other = re.split(r"[<>=!~\[;,\s]", spec, maxsplit=1)[0]
    return canonicalize_name(name) == canonicalize_name(other)


def _publish(out: Path, text: str) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _files.write_failed(out, e) from e
    _files.save(out, text.encode("utf-8"))
