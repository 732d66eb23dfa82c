"""Checksum-valid pickles that ask for memory their file does not hold: refused before allocating.

Each case sits behind an honest card (every global listed, the right sha256). They are loaded
in one child process whose address space is capped (RLIMIT_AS): had the loader allocated what
a case asks for, the child would hit a MemoryError (or worse) instead of the one-line refusal;
its peak RSS is checked too. Every legitimate model still loads (tests/test_trust_compat.py,
tests/test_train.py).
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_pickle_attacks import Call, G, _Crafter, craft, forge
from typer.testing import CliRunner

from toolkit.cli import app

_GIB = 1 << 30
# The child's address-space cap: what importing the stack and loading a small model needs,
# far below any case's claim (numpy's and OpenBLAS' threads are pinned to one).
_AS_LIMIT = 6 * _GIB


class NewObj:
    """``cls.__new__(cls, *args)`` when unpickled (the NEWOBJ opcode)."""

    def __init__(self, cls: G, args: tuple[Any, ...]) -> None:
        self.cls, self.args = cls, args


class _NewObjCrafter(_Crafter):
    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, NewObj):
            self.save(obj.cls)
            self.save(obj.args)
            self.write(pickle.NEWOBJ)
            return
        super().save(obj, save_persistent_id)


def _craft_newobj(payload: Any) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    buffer = io.BytesIO()
    crafter = _NewObjCrafter(buffer, 4)
    crafter.dump(payload)
    return buffer.getvalue(), tuple(sorted(crafter.named))


def _globals_of(blob: bytes) -> tuple[tuple[str, str], ...]:
    """Every (module, name) a protocol-2 pickle's GLOBAL opcodes name."""
    found = set()
    try:
        for op, arg, _ in pickletools.genops(blob):
            if op.name == "GLOBAL":
                module, name = str(arg).split(" ", 1)
                found.add((module, name))
    except ValueError:  # the array's raw bytes follow its wrapper: no opcodes there
        pass
    return tuple(sorted(found))


def _joblib_wrapper_with_huge_shape() -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """A real joblib file of a (3, 7) float array whose header says (10**6, 10**6): 8 TB
    claimed, 168 bytes present. Protocol 2 (no frames), so the shape can be patched in place."""
    import joblib
    import numpy as np

    buffer = io.BytesIO()
    joblib.dump(np.arange(21, dtype="f8").reshape(3, 7), buffer, protocol=2)
    blob = buffer.getvalue()
    small = b"K\x03K\x07\x86"  # BININT1 3, BININT1 7, TUPLE2
    assert blob.count(small) == 1
    huge = b"J\x40\x42\x0f\x00" * 2 + b"\x86"  # BININT 1_000_000 twice, TUPLE2
    patched = blob.replace(small, huge)
    return patched, _globals_of(patched)


_NDARRAY = G("numpy", "ndarray")
CASES: dict[str, Any] = {
    "bytearray(10**12)": lambda: craft(Call(G("builtins", "bytearray"), (10**12,))),
    "bytes(10**10)": lambda: craft(Call(G("builtins", "bytes"), (10**10,))),
    "list(range(10**11))": lambda: craft(Call(G("builtins", "list"), (Call(G("builtins", "range"), (10**11,)),))),
    "numpy _reconstruct huge shape": lambda: craft(
        Call(G("numpy._core.multiarray", "_reconstruct"), (_NDARRAY, (10**6, 10**6), b"b"))
    ),
    "ndarray.__new__ via copyreg.__newobj__": lambda: craft(
        Call(G("copyreg", "__newobj__"), (_NDARRAY, (10**5, 10**5)))
    ),
    "ndarray.__new__ via NEWOBJ": lambda: _craft_newobj(NewObj(_NDARRAY, ((10**5, 10**5),))),
    "ndarray((10**5, 10**5)) called": lambda: craft(Call(_NDARRAY, ((10**5, 10**5),))),
    "numpy ma _mareconstruct huge shape": lambda: craft(
        Call(G("numpy.ma.core", "_mareconstruct"), (G("numpy.ma.core", "MaskedArray"), _NDARRAY, (10**6, 10**6), b"b"))
    ),
    "numpy.void(10**10)": lambda: craft(Call(G("numpy", "void"), (10**10,))),
    "SeedSequence pool_size 10**11": lambda: craft(
        Call(G("numpy.random.bit_generator", "SeedSequence"), (0, (), 10**11, 0))
    ),
    "lil_matrix((10**10, 1))": lambda: craft(Call(G("scipy.sparse", "lil_matrix"), ((10**10, 1),))),
    "pandas Series(range(10**11))": lambda: craft(
        Call(G("pandas", "Series"), (Call(G("builtins", "range"), (10**11,)),))
    ),
    "joblib NumpyArrayWrapper with a huge shape": _joblib_wrapper_with_huge_shape,
    "a ufunc called (numpy.add)": lambda: craft(Call(G("numpy", "add"), (1, 2))),
    "numpy.mean called": lambda: craft(Call(G("numpy", "mean"), ((1, 2),))),
}
_CALLED = {"a ufunc called (numpy.add)": "calls add(1, 2) while loading", "numpy.mean called": "calls mean("}

_CHILD = """
import json, resource, sys
import toolkit
from toolkit.errors import ToolkitError
out = {}
for name, path in json.loads(sys.argv[1]).items():
    try:
        toolkit.load(path)
        out[name] = [0, "loaded"]
    except ToolkitError as e:
        out[name] = [e.exit_code, str(e)]
    except BaseException as e:  # what an allocation would end in: never what we want
        out[name] = [-1, f"{type(e).__name__}: {e}"]
print(json.dumps({"results": out, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _forge_listing_pandas(artifact: Path, blob: bytes, pairs: tuple[tuple[str, str], ...]) -> None:
    """``forge``, with pandas among the card's distributions too (the iris card lists none of it)."""
    from toolkit.artifact import artifact_paths, read_card

    forge(artifact, blob, pairs)
    files = artifact_paths(artifact)
    d = json.loads(files.card_json.read_text())
    d["references"]["distributions"] = sorted({*d["references"]["distributions"], "pandas"})
    files.card_json.write_text(json.dumps(d, indent=2))
    files.card_md.write_text(read_card(artifact).to_markdown())


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_AS_LIMIT, _AS_LIMIT))


@pytest.mark.process  # one child process under RLIMIT_AS
def test_allocation_vectors_are_refused_before_allocating(base_artifact: Path, tmp_path: Path) -> None:
    paths = {}
    for i, (name, build) in enumerate(CASES.items()):
        blob, pairs = build()
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        stem = base_artifact.name.removesuffix(".joblib")
        for suffix in (".joblib", ".card.json", ".card.md"):
            shutil.copy(base_artifact.with_name(stem + suffix), folder / (stem + suffix))
        artifact = folder / base_artifact.name
        _forge_listing_pandas(artifact, blob, pairs)
        paths[name] = str(artifact)
    env_threads = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_cap_address_space,
        env={**__import__("os").environ, **env_threads},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (code, message) in report["results"].items():
        assert code == 3, f"{name}: {message}"
        assert "\n" not in message, f"{name}: {message}"
        expected = _CALLED.get(name, "refused before allocating")
        assert expected in message, f"{name}: {message}"
    # Nothing was allocated: the child's peak stays what importing the stack takes.
    assert report["maxrss_kib"] < 1024 * 1024, report["maxrss_kib"]


def test_the_refusal_is_exit_3_and_one_line_from_the_cli(
    artifact: Path, tmp_path: Path, iris_frame: tuple[Any, Any]
) -> None:
    blob, pairs = craft(Call(G("builtins", "bytearray"), (10**12,)))
    forge(artifact, blob, pairs)
    rows = tmp_path / "rows.csv"
    iris_frame[0].head(3).to_csv(rows, index=False)
    result = CliRunner().invoke(app, ["predict", str(artifact), str(rows)])
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "asks for 1,000,000,000,000 bytes (bytearray(1000000000000))" in lines[0], lines[0]
    assert "refused before allocating" in lines[0], lines[0]


@pytest.mark.parametrize("shape", [(3, 7), (21,)])
def test_a_joblib_array_whose_bytes_are_in_the_file_loads(shape: tuple[int, ...], tmp_path: Path) -> None:
    # The control for the wrapper bound: exactly the bytes present is enough.
    import numpy as np

    from toolkit import pickle_audit, trust

    buffer = io.BytesIO()
    array = np.arange(21, dtype="f8").reshape(shape)
    pairs = pickle_audit.dump(array, buffer)  # type: ignore[arg-type]
    blob = buffer.getvalue()
    policy = trust.Policy(
        record=frozenset(pairs),
        record_modules=frozenset(m for m, _ in pairs),
        distributions=frozenset({"numpy", "joblib"}),
        local_modules=frozenset(),
    )
    loaded = pickle_audit.load(blob, policy, where="ok.joblib")
    assert (loaded == array).all() and loaded.shape == shape
