"""Every registry command on the team backend (real PostgreSQL + loopback OCI registry), migrate, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _registry_support import clone_artifact
from test_registry_team import audit
from typer.testing import CliRunner

from toolkit.artifact import read_card
from toolkit.cli import app
from toolkit.registry import Registry
from toolkit.registry.index.postgres import SCHEMA, SCHEMA_VERSION


def run(runner: CliRunner, team: Any, *args: str) -> Any:
    return runner.invoke(app, ["registry", *args, "--registry", team.url, "--store", team.store])


def as_json(runner: CliRunner, team: Any, *args: str) -> tuple[int, Any]:
    result = run(runner, team, *args, "--json")
    return result.exit_code, json.loads(result.stdout)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "registry", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


@pytest.fixture(scope="module")
def wine_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real wine models trained on the same data and split (for compare)."""
    from toolkit.training.config import TrainConfig
    from toolkit.training.train import train

    out = tmp_path_factory.mktemp("wine-team")
    paths = []
    for version, c in (("1.0.0", 0.01), ("1.1.0", 1.0)):
        cfg = TrainConfig(
            dataset="builtin:wine",
            model="logistic_regression",
            params={"C": c},
            name="wine",
            version=version,
            cv_folds=2,
            out=out,
            register=False,
        )
        paths.append(train(cfg).path)
    return paths[0], paths[1]


def test_every_command_works_on_the_team_backend(
    runner: CliRunner, team: Any, base_artifact: Path, tmp_path: Path, wine_pair: tuple[Path, Path]
) -> None:
    for v, auc in (("1.0.0", 0.7), ("1.1.0", 0.9), ("1.2.0", 0.8)):
        src = clone_artifact(base_artifact, tmp_path / "src", version=v, metrics={"test": {"roc_auc": auc}})
        result = run(runner, team, "add", str(src), "--reason", f"add {v}")
        assert result.exit_code == 0, result.output
        assert f"registered iris {v} as staging: {team.store}:iris-{v}@sha256:" in result.stdout
    code, names = as_json(runner, team, "list")
    assert code == 0 and names == [{"name": "iris", "versions": 3, "production": None, "latest": "1.2.0"}]
    code, versions = as_json(runner, team, "list", "iris")
    assert [v["version"] for v in versions] == ["1.2.0", "1.1.0", "1.0.0"]
    assert all(v["path"] is None and v["location"].startswith(team.store) for v in versions)
    assert run(runner, team, "promote", "iris", "1.0.0").exit_code == 0
    code, change = as_json(runner, team, "promote", "iris", "--best-by", "roc_auc")
    assert code == 0 and change["version"] == "1.1.0" and change["previous"] == "1.0.0"
    code, shown = as_json(runner, team, "show", "iris")
    assert code == 0 and shown["version"] == "1.1.0" and shown["status"] == "production"
    assert shown["card"]["version"] == "1.1.0" and shown["card_error"] is None
    assert shown["tag_disagreements"] == []  # the production tag followed the promote
    table = run(runner, team, "show", "iris", "1.0.0")
    assert table.exit_code == 0 and "location" in table.stdout and "warning" not in table.stdout
    code, change = as_json(runner, team, "rollback", "iris", "--reason", "bad")
    assert code == 0 and (change["version"], change["previous"]) == ("1.0.0", "1.1.0")
    code, events = as_json(runner, team, "history", "iris")
    assert [(e["event"], e["version"]) for e in events] == [
        ("register", "1.0.0"),
        ("register", "1.1.0"),
        ("register", "1.2.0"),
        ("promote", "1.0.0"),
        ("archive", "1.0.0"),
        ("promote", "1.1.0"),
        ("rolled_back", "1.1.0"),
        ("rollback", "1.0.0"),
    ]
    for p in wine_pair:
        assert run(runner, team, "add", str(p)).exit_code == 0
    code, compared = as_json(runner, team, "compare", "wine", "1.0.0", "1.1.0")
    assert code == 0, compared
    assert compared["data"]["rows"] == read_card(wine_pair[1]).data.n_test
    code, audited = as_json(runner, team, "recover")
    assert code == 0 and audited["checked"] == 5 and audited["failed"] == [] and audited["retagged"] == []
    audit(team)


def test_show_says_when_a_tag_disagrees_and_recover_repoints_it(
    runner: CliRunner, team: Any, base_artifact: Path, tmp_path: Path
) -> None:
    from toolkit.oci import Client, parse_reference

    with Registry(team.url, store=team.store) as reg:
        for v in ("1.0.0", "1.1.0"):
            reg.add(clone_artifact(base_artifact, tmp_path / "src", version=v))
        reg.promote("iris", "1.0.0")
        reg.promote("iris", "1.1.0")
    # Someone with push rights moves the production tag behind the index's back.
    host, repo = team.store.removeprefix("oci://").split("/", 1)
    with Client(host) as client:
        old = client.get_manifest(parse_reference(f"{team.store}:iris-1.0.0"))
        client.put_manifest(repo, "iris-production", old.raw)
    table = run(runner, team, "show", "iris")
    assert table.exit_code == 0
    assert "tag iris-production points at " + old.digest in table.stdout.replace("\n", "")
    code, shown = as_json(runner, team, "show", "iris")
    assert shown["version"] == "1.1.0" and len(shown["tag_disagreements"]) == 1  # the index is the truth
    code, audited = as_json(runner, team, "recover")
    assert code == 0 and len(audited["retagged"]) == 1
    code, shown = as_json(runner, team, "show", "iris")
    assert shown["tag_disagreements"] == []


def test_a_team_registry_needs_a_store(runner: CliRunner, team: Any) -> None:
    result = runner.invoke(app, ["registry", "list", "--registry", team.url], env={"TOOLKIT_STORE": ""})
    assert result.exit_code == 2
    assert "give --store oci://HOST[:PORT]/REPO" in result.output and result.output.count("\n") == 1


def test_a_server_that_is_down_exits_6_in_seconds_with_one_line_naming_it(team: Any) -> None:
    from _postgres import free_port

    port = free_port()
    started = time.monotonic()
    proc = _cli("list", "--registry", f"postgresql://ci:secret@127.0.0.1:{port}/models", "--store", team.store)
    assert time.monotonic() - started < 15
    assert proc.returncode == 6
    assert proc.stderr.startswith(f"error: PostgreSQL at postgresql://ci@127.0.0.1:{port}/models cannot be reached")
    assert proc.stderr.count("\n") == 1 and "secret" not in proc.stderr


def test_a_server_with_a_newer_schema_is_refused_with_exit_4(team: Any, base_artifact: Path) -> None:
    with Registry(team.url, store=team.store) as reg:
        reg.add(base_artifact)
    with psycopg.connect(team.url, autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.meta SET value = '{SCHEMA_VERSION + 1}'")  # type: ignore[arg-type]
    proc = _cli("list", "--registry", team.url, "--store", team.store)
    assert proc.returncode == 4 and f"schema version {SCHEMA_VERSION + 1}" in proc.stderr
    assert proc.stderr.count("\n") == 1


# -- migrate --------------------------------------------------------------------------------------


def _local_registry(root: Path, base: Path, src: Path) -> None:
    """A local registry with promotes and a rollback on two names."""
    with Registry(root) as reg:
        for v, auc in (("1.0.0", 0.7), ("1.1.0", 0.9), ("1.2.0", 0.8)):
            reg.add(clone_artifact(base, src, version=v, metrics={"test": {"roc_auc": auc}}), reason=f"r{v}")
        reg.add(clone_artifact(base, src, version="0.1.0", name="other"))
        reg.promote("iris", "1.0.0", reason="first")
        reg.promote("iris", "1.1.0")
        reg.promote("iris", "1.2.0")
        reg.rollback("iris", reason="oops")
        reg.promote("other", "0.1.0")


def _strip(events: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.to_dict().items() if k != "id"} for e in events]


def test_migrate_round_trip_keeps_history_event_for_event_and_is_idempotent(
    runner: CliRunner, team: Any, base_artifact: Path, tmp_path: Path
) -> None:
    local = tmp_path / "models"
    _local_registry(local, base_artifact, tmp_path / "src")
    args = ["registry", "migrate", "--from", str(local), "--to", team.url, "--store", team.store, "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    moved = json.loads(result.stdout)
    assert moved["migrated"] == ["iris", "other"] and moved["versions"] == 4 and moved["unchanged"] == []
    with Registry(local) as a, Registry(team.url, store=team.store) as b:
        for name in ("iris", "other"):
            assert _strip(a.history(name)) == _strip(b.history(name))  # event for event
            assert [
                (e.version, e.status, e.rolled_back, e.sha256, e.registered_at, e.registered_by)
                for e in a.list_versions(name)
            ] == [
                (e.version, e.status, e.rolled_back, e.sha256, e.registered_at, e.registered_by)
                for e in b.list_versions(name)
            ]
        assert b.get("iris").version == "1.1.0"
        # Rollback still walks the migrated history: back to 1.0.0.
        assert b.rollback("iris").version == "1.0.0"
    rows = audit(team)
    assert len(rows) == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["unchanged"] == ["iris", "other"]  # continued history: still a prefix
    assert len(audit(team)) == 4


def test_migrate_refuses_a_version_with_different_bytes_and_writes_nothing(
    runner: CliRunner, team: Any, base_artifact: Path, tmp_path: Path, tiny_pipeline: Any, iris_frame: Any
) -> None:
    import toolkit

    with Registry(team.url, store=team.store) as reg:
        reg.add(clone_artifact(base_artifact, tmp_path / "team-src", version="1.0.0"))
        before = _strip(reg.history("iris"))
    local = tmp_path / "models"
    other = tmp_path / "other" / "iris-1.0.0.joblib"
    from sklearn.base import clone

    refit = clone(tiny_pipeline).set_params(logisticregression__C=0.3).fit(*iris_frame)
    toolkit.save(refit, other, name="iris", version="1.0.0", probe=iris_frame[0].head(4))
    with Registry(local) as reg:
        reg.add(other)
        reg.add(clone_artifact(base_artifact, tmp_path / "src", version="0.5.0", name="wine"))
    result = runner.invoke(app, ["registry", "migrate", "--from", str(local), "--to", team.url, "--store", team.store])
    assert result.exit_code == 4
    assert "iris 1.0.0 exists in both registries with different bytes" in result.output
    with Registry(team.url, store=team.store) as reg:
        assert [n.name for n in reg.list_names()] == ["iris"]  # wine was not migrated either
        assert _strip(reg.history("iris")) == before


def test_migrate_needs_a_team_registry_and_a_directory(runner: CliRunner, team: Any, tmp_path: Path) -> None:
    result = runner.invoke(app, ["registry", "migrate", "--from", str(tmp_path), "--to", str(tmp_path / "dir")])
    assert result.exit_code == 2 and "into a team registry" in result.output
    result = runner.invoke(
        app, ["registry", "migrate", "--from", str(tmp_path / "nope"), "--to", team.url, "--store", team.store]
    )
    assert result.exit_code == 2 and "local registry directory" in result.output


# -- kill -9 at each critical point ---------------------------------------------------------------

_KILL_AT = """
import os, signal, sys
import toolkit._files, toolkit.registry.index.postgres
import toolkit.registry as R
point, url, store, arg = sys.argv[1:5]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
reg = R.Registry(url, store=store)
if point == "add-before-push":
    toolkit._files.fsync_dir = die  # the staged copy is complete; nothing pushed yet
    reg.add(arg)
elif point == "add-after-push-before-commit":
    toolkit.registry.index.postgres._PgWriter.log = die  # manifest pushed, row inserted, not committed
    reg.add(arg)
elif point == "promote-mid-transaction":
    toolkit.registry.index.postgres._PgWriter.log = die  # old production archived, new one not yet production
    reg.promote("iris", arg)
elif point == "rollback-mid-transaction":
    toolkit.registry.index.postgres._PgWriter.log = die
    reg.rollback("iris")
"""


@pytest.mark.parametrize(
    "point", ["add-before-push", "add-after-push-before-commit", "promote-mid-transaction", "rollback-mid-transaction"]
)
def test_a_kill_at_each_critical_point_leaves_the_old_state(
    team: Any, base_artifact: Path, tmp_path: Path, point: str
) -> None:
    src = {v: clone_artifact(base_artifact, tmp_path / "src", version=v) for v in ("5.0.0", "5.1.0", "5.2.0")}
    with Registry(team.url, store=team.store) as reg:
        for v in ("5.0.0", "5.1.0"):
            reg.add(src[v])
            reg.promote("iris", v)
        before = [(e.version, e.status) for e in reg.list_versions("iris")]
        events_before = len(reg.history("iris"))
    arg = str(src["5.2.0"]) if point.startswith("add") else "5.0.0"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT, point, team.url, team.store, arg], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    audit(team)
    with Registry(team.url, store=team.store) as reg:
        assert [(e.version, e.status) for e in reg.list_versions("iris")] == before
        assert len(reg.history("iris")) == events_before
        if point.startswith("add"):
            assert reg.add(src["5.2.0"]).version == "5.2.0"  # the unreferenced manifest is simply pushed over
        elif point.startswith("promote"):
            assert reg.promote("iris", "5.0.0").changed
        else:
            assert reg.rollback("iris").version == "5.0.0"
    audit(team)
