"""A lost or emptied index never costs a registered version; ``recover`` rebuilds it; read-only registries read."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _registry_support import clone_artifact, registry_rows, snapshot, tamper
from typer.testing import CliRunner

from toolkit.artifact import verify
from toolkit.cli import app
from toolkit.errors import RegistryError
from toolkit.registry import Registry


def run(runner: CliRunner, root: Path, *args: str):
    return runner.invoke(app, ["registry", *args, "--registry", str(root)])


@pytest.fixture
def populated(base_artifact: Path, tmp_path: Path) -> Path:
    """iris 1.0.0 (archived), 1.1.0 (production), 1.2.0 (staging)."""
    root = tmp_path / "models"
    with Registry(root) as reg:
        for v in ("1.0.0", "1.1.0", "1.2.0"):
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v))
        reg.promote("iris", "1.0.0")
        reg.promote("iris", "1.1.0")
    return root


def _lose_index(root: Path, how: str) -> None:
    for side in ("registry.db", "registry.db-wal", "registry.db-shm"):
        if (root / side).exists():
            (root / side).unlink()
    if how == "empty":
        (root / "registry.db").write_bytes(b"")


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("how", ["deleted", "empty"])
def test_a_lost_index_is_refused_and_nothing_is_deleted(
    runner: CliRunner, populated: Path, base_artifact: Path, tmp_path: Path, how: str
) -> None:
    before = snapshot(populated)
    _lose_index(populated, how)
    state = "missing" if how == "deleted" else "empty"
    new = clone_artifact(base_artifact, tmp_path / "new", version="1.3.0")
    same = clone_artifact(base_artifact, tmp_path / "same", version="1.1.0")  # the production version
    for args in (
        ["list"],
        ["list", "iris"],
        ["show", "iris"],
        ["history", "iris"],
        ["add", str(new)],
        ["add", str(same)],
    ):
        result = run(runner, populated, *args)
        assert result.exit_code == 4, (args, result.output)
        line = _one_line(result)
        assert f"the registry index {populated / 'registry.db'} is {state}" in line
        assert "holds 3 registered version directories (e.g. iris/1.0.0)" in line
        assert f"run `toolkit registry recover --registry {populated}`" in line
    assert snapshot(populated) == before  # no version dir deleted, no byte replaced
    assert sorted(p.name for p in (populated / "iris").iterdir()) == ["1.0.0", "1.1.0", "1.2.0"]


def test_recover_rebuilds_every_version_as_staging_and_says_history_is_gone(
    runner: CliRunner, populated: Path, base_artifact: Path, tmp_path: Path
) -> None:
    before = snapshot(populated)
    _lose_index(populated, "deleted")
    result = run(runner, populated, "recover")
    assert result.exit_code == 0, result.output
    assert "3 versions back as staging" in result.stdout
    assert "The old history (statuses, promotions, rollbacks) is gone" in result.stdout
    assert snapshot(populated) == before
    rows = registry_rows(populated)
    assert sorted((r["version"], r["status"]) for r in rows) == [
        ("1.0.0", "staging"),
        ("1.1.0", "staging"),
        ("1.2.0", "staging"),
    ]
    with Registry(populated) as reg:
        events = reg.history("iris")
        assert [(e.event, e.to_status) for e in events] == [("recovered", "staging")] * 3
        assert all("history are lost" in (e.detail or "") for e in events)
        # ... and the registry works again: a new version, a promotion, a refused duplicate.
        reg.add(clone_artifact(base_artifact, tmp_path / "new", version="1.3.0"))
        assert reg.promote("iris", "1.1.0").changed
        with pytest.raises(RegistryError, match="already registered"):
            reg.add(clone_artifact(base_artifact, tmp_path / "dup", version="1.2.0"))
    # recover again on a working index: refused, nothing touched.
    result = run(runner, populated, "recover")
    assert result.exit_code == 4
    assert "lists 4 version(s); recover only rebuilds a missing or empty index" in _one_line(result)


def test_recover_reports_a_version_that_fails_its_checksum_and_leaves_it(
    runner: CliRunner, populated: Path, tmp_path: Path
) -> None:
    tamper(populated / "iris" / "1.0.0" / "iris-1.0.0.joblib")
    before = snapshot(populated)
    _lose_index(populated, "empty")
    result = runner.invoke(app, ["registry", "recover", "--registry", str(populated), "--json"])
    assert result.exit_code == 3, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["history_lost"] is True
    assert [(r["name"], r["version"]) for r in report["recovered"]] == [("iris", "1.1.0"), ("iris", "1.2.0")]
    [failed] = report["failed"]
    assert failed["path"] == str(populated / "iris" / "1.0.0") and "does not match the card" in failed["error"]
    assert snapshot(populated) == before  # reported, not deleted
    assert sorted(r["version"] for r in registry_rows(populated)) == ["1.1.0", "1.2.0"]
    result = run(runner, populated, "recover")  # the index is no longer empty
    assert result.exit_code == 4


def test_a_registered_directory_without_its_row_is_never_replaced(
    runner: CliRunner, populated: Path, base_artifact: Path, tmp_path: Path
) -> None:
    # An index restored from an older backup: 1.2.0's row is gone, its directory and card are not.
    import shutil

    backup = tmp_path / "backup"
    backup.mkdir()
    with Registry(tmp_path / "old") as old:
        for v in ("1.0.0", "1.1.0"):
            old.add(clone_artifact(base_artifact, tmp_path / "src", version=v))
    for side in ("registry.db", "registry.db-wal", "registry.db-shm"):
        if (populated / side).exists():
            (populated / side).unlink()
    shutil.copyfile(tmp_path / "old" / "registry.db", populated / "registry.db")
    before = snapshot(populated)
    again = clone_artifact(base_artifact, tmp_path / "again", version="1.2.0")
    result = run(runner, populated, "add", str(again))
    assert result.exit_code == 4
    line = _one_line(result)
    assert f"{populated / 'iris' / '1.2.0'} holds files the index does not list" in line
    assert "not replacing them" in line
    # Adding another version runs the orphan sweep: 1.2.0 has a valid card, so it is not an orphan.
    result = run(runner, populated, "add", str(clone_artifact(base_artifact, tmp_path / "n", version="1.3.0")))
    assert result.exit_code == 0, result.output
    after = snapshot(populated)
    assert {k: v for k, v in after.items() if "1.3.0" not in k} == before
    verify(populated / "iris" / "1.2.0" / "iris-1.2.0.joblib")


@pytest.fixture
def read_only(populated: Path, tmp_path: Path) -> Iterator[Path]:
    """``populated`` seen through a read-only bind mount (a real EROFS, which stops root too)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(populated), str(mount)], check=True, capture_output=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        with pytest.raises(OSError):  # the mount really is read-only, or this test proves nothing
            (mount / "probe").write_bytes(b"")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, capture_output=True)


def test_a_read_only_registry_reads_and_refuses_writes_in_one_line(
    runner: CliRunner, read_only: Path, populated: Path, base_artifact: Path, tmp_path: Path
) -> None:
    before = snapshot(populated)
    listing = sorted(os.listdir(populated))
    for args, needle in (
        (["list"], "iris"),
        (["list", "iris"], "1.2.0"),
        (["show", "iris"], "production"),
        (["history", "iris"], "promote"),
    ):
        result = run(runner, read_only, *args)
        assert result.exit_code == 0, (args, result.output)
        assert needle in result.stdout
    new = clone_artifact(base_artifact, tmp_path / "new", version="1.3.0")
    for args in (["add", str(new)], ["promote", "iris", "1.2.0"], ["rollback", "iris"]):
        result = run(runner, read_only, *args)
        assert result.exit_code == 4, (args, result.output)
        line = _one_line(result)
        assert f"the registry {read_only} is read-only here" in line, line
    assert snapshot(populated) == before
    assert sorted(os.listdir(populated)) == listing  # no lock, -shm or temp file appeared


def test_what_recover_tells_is_the_records_own_a_line_each_and_one_closing_error() -> None:
    from toolkit.registry.registry import Audit, Recovery

    audit = Audit(
        location="postgresql://db/models",
        store="oci://127.0.0.1:5000/models",
        checked=3,
        failed=(("iris", "1.1.0", "sha256 mismatch"),),
        retagged=("tag iris:production was at 1.0.0, now at 1.1.0",),
    )
    assert audit.lines() == [
        "checked 3 versions of postgresql://db/models: 2 pulled from oci://127.0.0.1:5000/models and verified",
        "re-pointed: tag iris:production was at 1.0.0, now at 1.1.0",
        "FAILED iris 1.1.0: sha256 mismatch",
    ]
    failure = audit.error()
    assert failure is not None and failure.exit_code == 3
    assert str(failure) == "1 registered version(s) failed verification in the store"
    one = Audit(location="L", store="S", checked=1, failed=(), retagged=())
    assert one.lines() == ["checked 1 version of L: 1 pulled from S and verified"] and one.error() is None

    recovery = Recovery(root=Path("/r"), recovered=(("iris", "1.0.0"),), failed=((Path("/r/iris/2.0.0"), "bad card"),))
    assert recovery.lines() == [
        "rebuilt the index of /r from the cards on disk: 1 version back as staging. The old history "
        "(statuses, promotions, rollbacks) is gone: promote the production version again.",
        "not recovered (left in place): /r/iris/2.0.0: bad card",
    ]
    failure = recovery.error()
    assert failure is not None
    assert (
        str(failure) == "1 version directory failed verification and were left out of the index (nothing was deleted)"
    )
    assert Recovery(root=Path("/r"), recovered=(), failed=()).error() is None


def test_a_write_sqlite_refuses_mid_transaction_is_read_only_not_an_internal_error(populated: Path) -> None:
    """SQLite opens a file its user may not write read-only without a word (a container's non-root
    user on a host-owned registry.db) and refuses only at the first write, after BEGIN IMMEDIATE
    succeeded: that refusal is ReadOnlyRegistry (exit 4), and the transaction is rolled back."""
    import sqlite3

    from toolkit.errors import ReadOnlyRegistry
    from toolkit.registry.index.sqlite_db import write_transaction

    db = populated / "registry.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        said = rf"the registry {populated} is read-only here \(attempt to write"
        refused = pytest.raises(ReadOnlyRegistry, match=said)
        with refused, write_transaction(conn, path=db):
            conn.execute("UPDATE versions SET status = 'archived' WHERE version = '1.1.0'")
        assert not conn.in_transaction
    finally:
        conn.close()
