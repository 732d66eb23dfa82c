"""A team registry a user may read but not write: refused before anything is pushed (issue 21).

Real PostgreSQL roles (GRANT SELECT only; default_transaction_read_only) and the real loopback
OCI registry: after the refusal the registry holds no new tag, repository or blob.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _registry_support import clone_artifact
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.registry import Registry
from toolkit.registry.index.postgres import SCHEMA

# What a writer needs, granted one by one (never ALL): the check must not ask for more than this.
_WRITER_GRANTS = (
    f"GRANT SELECT, INSERT, UPDATE ON {SCHEMA}.versions, {SCHEMA}.names TO {{role}}",
    f"GRANT SELECT, INSERT ON {SCHEMA}.history TO {{role}}",
)


def _url_as(url: str, role: str) -> str:
    return url.replace("postgresql://toolkit@", f"postgresql://{role}@", 1)


@pytest.fixture
def role(team: Any) -> Iterator[str]:
    """A fresh login role on the session's server, allowed to read the team's index; dropped after."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(team.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        yield name
    finally:
        with psycopg.connect(team.url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {name}")
            conn.execute(f"DROP ROLE {name}")


def _grant_read(team: Any, role: str) -> None:
    with psycopg.connect(team.url, autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {SCHEMA} TO {role}")


def _store_state(team: Any) -> tuple[list[str], list[str], int]:
    """The OCI registry as any client sees it (catalog, this repository's tags) and its blob count on disk."""
    repo = team.store.split("/", 3)[3]

    def get(path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://{team.oci.host}{path}", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code != 404:  # a repository never pushed to has no tag list
                raise
            return {"tags": []}

    blobs = team.oci.storage / "docker/registry/v2/blobs/sha256"
    count = sum(1 for _ in blobs.glob("*/*/data")) if blobs.is_dir() else 0
    return sorted(get("/v2/_catalog?n=1000")["repositories"]), sorted(get(f"/v2/{repo}/tags/list")["tags"]), count


def _register_first(team: Any, base_artifact: Path) -> None:
    with Registry(team.url, store=team.store) as reg:
        reg.add(base_artifact)  # 1.0.0, by the owner: the schema exists, one version, one tag


@pytest.mark.parametrize("how", ["select only", "read-only transactions"])
def test_a_read_only_user_is_refused_before_anything_is_pushed(
    team: Any, role: str, base_artifact: Path, tmp_path: Path, how: str
) -> None:
    _register_first(team, base_artifact)
    _grant_read(team, role)
    with psycopg.connect(team.url, autocommit=True) as conn:
        if how == "read-only transactions":
            for grant in _WRITER_GRANTS:
                conn.execute(grant.format(role=role))
            conn.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
    url = _url_as(team.url, role)
    before = _store_state(team)
    new = clone_artifact(base_artifact, tmp_path / "new", version="1.1.0")

    runner = CliRunner()
    result = runner.invoke(app, ["registry", "add", str(new), "--registry", url, "--store", team.store])
    assert result.exit_code == 4, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    why = (
        f"user {role} lacks INSERT on {SCHEMA}.versions, UPDATE on {SCHEMA}.versions"
        if how == "select only"
        else f"user {role}'s transactions are read-only (default_transaction_read_only)"
    )
    assert f"is read-only here ({why}" in lines[0], lines[0]
    assert lines[0].endswith("reading works, writing does not"), lines[0]
    assert _store_state(team) == before  # no tag, no repository, not one blob

    # Reading works; a stage change is refused the same way.
    listed = runner.invoke(app, ["registry", "list", "--registry", url, "--store", team.store])
    assert listed.exit_code == 0 and "iris" in listed.stdout, listed.output
    promoted = runner.invoke(app, ["registry", "promote", "iris", "1.0.0", "--registry", url, "--store", team.store])
    assert promoted.exit_code == 4 and "read-only here" in promoted.stderr, promoted.output
    with Registry(team.url, store=team.store) as reg:
        assert [e.version for e in reg.list_versions("iris")] == ["1.0.0"]
        assert reg.get("iris", "1.0.0").status == "staging"


def test_a_user_granted_exactly_the_write_rights_registers(
    team: Any, role: str, base_artifact: Path, tmp_path: Path
) -> None:
    # The control: the check asks for what writing needs and nothing more (not ownership, not ALL).
    _register_first(team, base_artifact)
    _grant_read(team, role)
    with psycopg.connect(team.url, autocommit=True) as conn:
        for grant in _WRITER_GRANTS:
            conn.execute(grant.format(role=role))
    new = clone_artifact(base_artifact, tmp_path / "new", version="1.1.0")
    with Registry(_url_as(team.url, role), store=team.store) as reg:
        reg.add(new)
        reg.promote("iris", "1.1.0", policy="compatible")
    assert "iris-1.1.0" in _store_state(team)[1]


def test_a_user_who_may_not_create_the_schema_is_refused_before_pushing(
    team: Any, role: str, base_artifact: Path
) -> None:
    # A fresh database: the first write creates the schema, which this role may not.
    before = _store_state(team)
    with Registry(_url_as(team.url, role), store=team.store) as reg:
        from toolkit.errors import ReadOnlyRegistry

        with pytest.raises(ReadOnlyRegistry, match=f"user {role} may not create the schema {SCHEMA} in t_") as e:
            reg.add(base_artifact)
    assert e.value.exit_code == 4
    assert _store_state(team) == before
