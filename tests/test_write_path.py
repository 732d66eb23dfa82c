"""One write path (toolkit/_files.py): one temp scheme the sweeper knows, and one line on a full disk.

A full disk is simulated at the seam (os.fsync, or _files.write_all, the one call every copied
byte goes through): the point is what the toolkit does when the kernel says ENOSPC.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import traceback
from pathlib import Path

import pytest
from _oci_support import LoopbackRegistry
from typer.testing import CliRunner

from toolkit import _files, oci, project, signing
from toolkit import docker as tdocker
from toolkit.artifact import artifact_paths
from toolkit.cli import app
from toolkit.docker import outdir
from toolkit.errors import UsageError
from toolkit.registry import Registry
from toolkit.registry.index import sqlite_db

FULL = "No space left on device"


def _leave_behind(code: str, *, tmpdir: Path | None = None) -> None:
    """Run ``code`` in a process that then dies, as a killed pull or index creation would.

    The process is forked from this one (a fresh interpreter costs ~0.3 s to import the toolkit):
    what the sweeper judges is the same, a temp named by a pid that is dead (reaped here, so not
    even a zombie) on this host. ``tmpdir``: the child's system temp folder ($TMPDIR)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read)
            if tmpdir is not None:
                os.environ["TMPDIR"] = str(tmpdir)
                tempfile.tempdir = None  # gettempdir() looks again, at $TMPDIR
            exec(code, {})
            status = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        error = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, error


def _full(*args: object) -> None:
    raise OSError(errno.ENOSPC, FULL)


def _everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_a_killed_pulls_staging_folder_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    _leave_behind(
        "from pathlib import Path; from toolkit import _files\n"
        f"d = _files.make_temp_dir(Path({str(tmp_path)!r}), 'toolkit-pull')\n"
        "(d / 'iris-1.0.0.joblib').write_bytes(b'half a model')\n"
    )
    mine = _files.make_temp_dir(tmp_path, "toolkit-pull")  # this process is alive: never swept
    (tmp_path / ".toolkit-pull-not-ours").mkdir()  # not the scheme: never swept
    assert len(_everything_under(tmp_path)) == 4
    removed = _files.sweep_stale_temps(tmp_path)
    assert len(removed) == 1 and removed[0] != mine and not removed[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, ".toolkit-pull-not-ours"])


def test_a_killed_index_creations_temp_is_swept_when_the_index_is_made(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    _leave_behind(
        "from pathlib import Path; from toolkit import _files\n"
        f"t = _files.temp_path(Path({str(root)!r}) / 'registry.db')\n"
        "t.write_bytes(b'SQLite format 3'); Path(str(t) + '-wal').write_bytes(b'')\n"
    )
    assert len(list(root.iterdir())) == 2
    conn = sqlite_db.connect(root, create=True)
    assert conn is not None
    conn.close()
    assert sorted(p.name for p in root.iterdir()) == ["registry.db"]


def test_a_full_disk_while_signing_is_one_line_and_leaves_no_signature(
    artifact: Path, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = signing.keygen(tmp_path / "keys")
    before = _everything_under(artifact.parent)
    monkeypatch.setattr(os, "fsync", _full)
    result = runner.invoke(app, ["sign", str(artifact), "--key", str(key)])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: cannot save {artifact_paths(artifact).signature}: {FULL}\n"
    assert _everything_under(artifact.parent) == before


def test_a_full_disk_while_registering_is_one_line_and_leaves_no_version(
    artifact: Path, runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "models"
    with Registry(root) as registry:
        registry.list_names()  # the index exists before the disk fills
    monkeypatch.setattr(_files, "write_all", _full)
    result = runner.invoke(app, ["registry", "add", str(artifact), "--registry", str(root)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot save ") and lines[0].endswith(f": {FULL}")
    monkeypatch.undo()
    with Registry(root) as registry:
        assert registry.list_names() == []
    assert [p for p in _everything_under(root) if not p.startswith("registry.db") and p != ".tmp"] == []
    retry = runner.invoke(app, ["registry", "add", str(artifact), "--registry", str(root)])
    assert retry.exit_code == 0, retry.output  # nothing half-made blocks the retry


@pytest.mark.oci
def test_a_full_disk_while_pulling_is_one_line_and_leaves_nothing(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    registry = LoopbackRegistry(tmp_path / "oci")
    try:
        ref = f"oci://{registry.host}/models/iris:1.0.0"
        oci.push(artifact, ref)
        out = tmp_path / "pulled"
        with monkeypatch.context() as patch:
            patch.setattr(os, "fsync", _full)
            with pytest.raises(UsageError) as caught:
                oci.pull(ref, out)
        assert str(caught.value) == f"cannot save {out / artifact.name}: {FULL}"
        assert _everything_under(out) == []
        oci.pull(ref, out)  # the retry finds nothing in its way
        files = artifact_paths(artifact)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            p.name for p in (files.card_json, files.card_md, files.model)
        )
    finally:
        registry.stop()


# -- every writer that publishes beside a final name: the one scheme, swept; the one line --------


def _write_key(folder: Path) -> Path:
    signing.keygen(folder / "k")
    return folder / "k.key"


def _write_pin(folder: Path) -> Path:
    tdocker.write_pin(PINNED, folder / "base-image")
    return folder / "base-image"


def _write_project(folder: Path) -> Path:
    project.init(folder)
    project.record(folder / project.FILE_NAME, "base_image", PINNED)
    return folder / project.FILE_NAME


def _write_out(folder: Path) -> Path:
    staging = folder.parent / "staging"
    staging.mkdir()
    (staging / "model.joblib").write_bytes(b"what the container wrote")
    outdir.collect(staging, folder)
    return folder / "model.joblib"


def _write_data(folder: Path) -> Path:
    result = CliRunner().invoke(app, ["data", "export", "builtin:wine", "--out", str(folder / "wine.csv")])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if result.exit_code != 0:  # the CLI's one line, as the library raised it
        raise UsageError(result.stderr.removeprefix("error: ").rstrip("\n"))
    return folder / "wine.csv"


WRITERS = {
    "key": _write_key,
    "base pin": _write_pin,
    "toolkit.toml": _write_project,
    "image --out": _write_out,
    "data export --out": _write_data,
}
PINNED = "python:3.11-slim@sha256:" + "a" * 64


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_killed_writers_temp_is_swept_by_the_next_write_there(writer: str, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    final = {
        "key": "k.key",
        "base pin": "base-image",
        "toolkit.toml": "toolkit.toml",
        "image --out": "model.joblib",
        "data export --out": "wine.csv",
    }
    _leave_behind(
        "from pathlib import Path; from toolkit import _files\n"
        f"_files.temp_path(Path({str(folder / final[writer])!r})).write_bytes(b'half of it')\n"
    )
    (folder / ".k.key.not-ours.tmp").write_bytes(b"")  # not the scheme: never swept
    assert len(list(folder.iterdir())) == 2
    written = WRITERS[writer](folder)
    left = sorted(p.name for p in folder.iterdir() if p != written and not p.name.startswith(("k.", "requirements")))
    assert left == [".k.key.not-ours.tmp"]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_full_disk_in_any_writer_is_the_one_line_and_leaves_nothing(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.setattr(os, "fsync", _full)
    with pytest.raises(UsageError) as caught:
        WRITERS[writer](folder)
    assert re.fullmatch(rf"cannot save {re.escape(str(folder))}/[^/\n]+: {FULL}", str(caught.value)), caught.value
    assert _everything_under(folder) == []


def test_a_full_disk_during_keygen_is_one_line_and_leaves_no_half_pair(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []

    def full_on_the_second(f: object, data: object) -> None:  # the .key is written, the .pub is not
        writes.append(1)
        if len(writes) == 2:
            _full()
        f.write(data)  # type: ignore[attr-defined]

    monkeypatch.setattr(_files, "write_all", full_on_the_second)
    result = runner.invoke(app, ["keygen", "--out", str(tmp_path / "k")])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: cannot save {tmp_path / 'k.pub'}: {FULL}\n"
    assert _everything_under(tmp_path) == []


def test_a_killed_recoverys_index_temp_is_swept(artifact: Path, runner: CliRunner, tmp_path: Path) -> None:
    root = tmp_path / "models"
    assert runner.invoke(app, ["registry", "add", str(artifact), "--registry", str(root)]).exit_code == 0
    for side in ("registry.db", "registry.db-wal", "registry.db-shm"):
        (root / side).unlink(missing_ok=True)  # the index is lost: recover rebuilds it
    _leave_behind(
        "from pathlib import Path; from toolkit import _files\n"
        f"t = _files.temp_path(Path({str(root)!r}) / 'registry.db')\n"
        "t.write_bytes(b'SQLite format 3'); Path(str(t) + '-journal').write_bytes(b'')\n"
    )
    result = runner.invoke(app, ["registry", "recover", "--registry", str(root)])
    assert result.exit_code == 0, result.output
    assert "1 version" in result.stdout
    assert not [p.name for p in root.iterdir() if p.name.startswith(".registry.db")]


def test_a_killed_jobs_scratch_folder_in_tmpdir_is_swept_by_the_next_job(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    code = "from toolkit import _files\n(_files.scratch_dir('toolkit-script') / 'm.joblib').write_bytes(b'model')\n"
    _leave_behind(code, tmpdir=tmpdir)
    (tmpdir / "someone-elses").mkdir()
    assert len(list(tmpdir.iterdir())) == 2
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # gettempdir() caches what it found
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("pass\n")  # saves nothing: refused, after its staging was made
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["train", "--script", "train.py", "--no-register", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "saved no artifact" in result.stderr, result.output
    assert sorted(p.name for p in tmpdir.iterdir()) == ["someone-elses"]  # the dead one swept, ours removed
