"""The registry's Python API: add, list, show, promote, rollback, history, validation."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _registry_support import clone_artifact, registry_rows, tamper

from toolkit.artifact import artifact_paths, read_card, verify
from toolkit.card import card_from_dict
from toolkit.errors import EnvironmentMismatch, IntegrityError, InvalidVersion, RegistryError, UsageError
from toolkit.registry import Registry, parse_metric, parse_version, resolve_root, validate_name

INVALID_NAMES = [
    "",
    ".",
    "..",
    "../x",
    "x/../../etc",
    "/abs",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "a\x00b",
    "\x00",
    "Iris",
    "-iris",
    ".iris",
    "_iris",
    "iris model",
    "iris\n",
    "iris\t",
    "iris:1",
    "ïris",
    "x" * 65,
    "x" * 10_000,
    "registry.db",
    "registry.db-wal",
]
INVALID_VERSIONS = [
    "",
    "1",
    "1.0",
    "1.0.0.0",
    "01.0.0",
    "1.00.0",
    "v1.0.0",
    "1.0.0\n",
    "../1.0.0",
    "1.0.0/..",
    "1.0.0-rc.1",
    "1.0.0+build",
    "-1.0.0",
    "1.0.x",
    "1234567890.0.0",
    "1.0.0\x00",
]


# The team half needs PostgreSQL and a loopback registry, fetched by name below: marked here,
# since conftest's marking sees only the fixtures a test names.
@pytest.fixture(params=["directory", pytest.param("team", marks=[pytest.mark.team, pytest.mark.oci])])
def reg(request: pytest.FixtureRequest, tmp_path: Path) -> Registry:
    """The same tests on both backends: a directory, and a team registry (real PostgreSQL + OCI registry)."""
    if request.param == "directory":
        with Registry(tmp_path / "models") as r:
            yield r
        return
    # Tests that tamper with blobs on the registry's disk get an OCI registry of their own.
    team = request.getfixturevalue("own_team" if "tamper" in request.node.name else "team")
    with Registry(team.url, store=team.store) as r:
        r._test_oci = team.oci  # type: ignore[attr-defined]
        yield r


@pytest.fixture
def dir_reg(tmp_path: Path) -> Registry:
    """A directory registry, for what only a directory has (its files, its SQLite index)."""
    with Registry(tmp_path / "models") as r:
        yield r


def _versions(reg: Registry) -> list[tuple[str, str]]:
    """Every registered (name, version), through the API (either backend)."""
    return [(e.name, e.version) for n in reg.list_names() for e in reg.list_versions(n.name)]


def _tamper_registered(reg: Registry, version: str) -> None:
    """Flip a byte of a registered model where the backend keeps it (the file, or the OCI blob)."""
    entry = reg.get("iris", version)
    if entry.path is not None:
        tamper(entry.path)
        return
    blob = reg._test_oci.blob_data("sha256:" + entry.sha256)  # type: ignore[attr-defined]
    if not blob.with_suffix(".tampered").exists():  # clones share one pickle blob: flip it once
        tamper(blob)
        blob.with_suffix(".tampered").write_bytes(b"")


def _add(reg: Registry, base: Path, tmp: Path, version: str, **kw) -> None:
    reg.add(clone_artifact(base, tmp / "src", version=version, **kw))


# -- add ------------------------------------------------------------------------------------


def test_add_copies_the_three_files_byte_for_byte_as_staging(dir_reg: Registry, base_artifact: Path) -> None:
    reg = dir_reg
    entry = reg.add(base_artifact, reason="first cut")
    assert (entry.name, entry.version, entry.status) == ("iris", "1.0.0", "staging")
    assert entry.path == reg.root / "iris" / "1.0.0" / "iris-1.0.0.joblib"
    src, dst = artifact_paths(base_artifact), artifact_paths(entry.path)
    for a, b in ((src.model, dst.model), (src.card_json, dst.card_json), (src.card_md, dst.card_md)):
        assert a.read_bytes() == b.read_bytes()
        assert b.stat().st_mode & 0o222 == 0  # registered files are read-only
    assert verify(entry.path).artifact.sha256 == entry.sha256  # the registered copy is a full artifact
    assert reg.has("iris", "1.0.0") and not reg.has("iris", "1.0.1")
    [event] = reg.history("iris")
    assert (event.event, event.from_status, event.to_status, event.reason) == ("register", None, "staging", "first cut")
    assert event.user and event.at.endswith("Z")
    assert not list((reg.root / ".tmp").iterdir())  # nothing left in flight


def test_a_version_registers_once(reg: Registry, base_artifact: Path) -> None:
    reg.add(base_artifact)
    with pytest.raises(RegistryError, match="already registered") as exc:
        reg.add(base_artifact)
    assert exc.value.exit_code == 4
    assert reg.add(base_artifact, name="iris-copy").name == "iris-copy"  # another name is another model
    assert len(_versions(reg)) == 2


def test_add_refuses_bytes_that_do_not_match_the_card(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    src = clone_artifact(base_artifact, tmp_path / "src", version="1.0.1")
    tamper(src)
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        reg.add(src)
    assert _versions(reg) == []
    if reg.root is not None:
        assert not (reg.root / "iris").exists() or not list((reg.root / "iris").iterdir())
        assert not list((reg.root / ".tmp").iterdir())


def test_add_refuses_a_card_that_describes_another_file(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    src = clone_artifact(base_artifact, tmp_path / "src", version="1.0.1")
    renamed = tmp_path / "src" / "other-1.0.1.joblib"
    for a, b in zip(artifact_paths(src).__slots__, artifact_paths(renamed).__slots__, strict=True):
        getattr(artifact_paths(src), a).rename(getattr(artifact_paths(renamed), b))
    with pytest.raises(IntegrityError, match=re.escape("describes 'iris-1.0.1.joblib'")):
        reg.add(renamed)


def test_add_refuses_missing_files(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    src = clone_artifact(base_artifact, tmp_path / "src", version="1.0.1")
    artifact_paths(src).card_md.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        reg.add(src)


def test_a_prerelease_version_is_refused_everywhere_with_one_rule(
    reg: Registry, base_artifact: Path, tmp_path: Path
) -> None:
    # identifiers: versions are X.Y.Z everywhere, so the card refuses what the registry would.
    with pytest.raises(InvalidVersion, match=re.escape("invalid version '2.0.0-rc.1'")) as exc:
        parse_version("2.0.0-rc.1")
    assert exc.value.exit_code == 4
    src = clone_artifact(base_artifact, tmp_path / "src", version="2.0.0")
    paths = artifact_paths(src)
    raw = json.loads(paths.card_json.read_bytes())
    raw["version"] = "2.0.0-rc.1"
    paths.card_json.write_text(json.dumps(raw))
    with pytest.raises(IntegrityError, match=re.escape("'version' is not a semantic version X.Y.Z: '2.0.0-rc.1'")):
        reg.add(src)
    assert _versions(reg) == []


def test_a_leftover_of_a_killed_add_is_replaced(dir_reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    reg = dir_reg
    # What a kill between "directory renamed into place" and "row committed" leaves behind:
    # the registry's own marked copy, which no row points at.
    reg.add(base_artifact)
    orphan = reg.root / "iris" / "1.0.1"
    orphan.mkdir()
    (orphan / "junk.joblib").write_bytes(b"half")
    (orphan / ".uncommitted").write_bytes(b"")
    stray = reg.root / ".tmp" / "add-stray"
    stray.mkdir()
    assert [e.version for e in reg.list_versions("iris")] == ["1.0.0"]  # neither is visible
    _add(reg, base_artifact, tmp_path, "1.0.1")
    assert sorted(p.name for p in orphan.iterdir()) == [
        "iris-1.0.1.card.json",
        "iris-1.0.1.card.md",
        "iris-1.0.1.joblib",
    ]
    verify(orphan / "iris-1.0.1.joblib")


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_every_invalid_name_is_refused_everywhere(reg: Registry, base_artifact: Path, name: str) -> None:
    reg.add(base_artifact)
    calls = [
        lambda: validate_name(name),
        lambda: reg.add(base_artifact, name=name),
        lambda: reg.get(name),
        lambda: reg.has(name, "1.0.0"),
        lambda: reg.list_versions(name),
        lambda: reg.history(name),
        lambda: reg.promote(name, "1.0.0"),
        lambda: reg.rollback(name),
    ]
    for call in calls:
        with pytest.raises(RegistryError, match="invalid model name") as exc:
            call()
        assert exc.value.exit_code == 4
    assert _versions(reg) == [("iris", "1.0.0")]
    if reg.root is None:
        return
    assert sorted(p.name for p in reg.root.iterdir()) == [
        ".tmp",
        "iris",
        "registry.db",
        "registry.db-shm",
        "registry.db-wal",
    ]


def test_a_name_from_the_card_is_validated_too(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    # The core refuses such names on save, so forge a card by hand: the registry must not trust it.
    src = clone_artifact(base_artifact, tmp_path / "src", version="1.0.0")
    paths = artifact_paths(src)
    raw = json.loads(paths.card_json.read_bytes())
    raw["name"] = "../../escape"
    paths.card_json.chmod(0o644)
    paths.card_json.write_text(json.dumps(raw))
    with pytest.raises((RegistryError, IntegrityError)):
        reg.add(src)
    assert not (tmp_path / "escape").exists() and _versions(reg) == []


@pytest.mark.parametrize("version", INVALID_VERSIONS)
def test_every_invalid_version_is_refused(reg: Registry, base_artifact: Path, version: str) -> None:
    reg.add(base_artifact)
    for call in (
        lambda: parse_version(version),
        lambda: reg.get("iris", version),
        lambda: reg.has("iris", version),
        lambda: reg.promote("iris", version),
    ):
        with pytest.raises(RegistryError, match="invalid version"):
            call()


def test_valid_names_and_versions() -> None:
    for name in ("iris", "a", "credit-v2", "x.y_z-0", "0" * 64):
        assert validate_name(name) == name
    assert parse_version("1.10.0") > parse_version("1.9.0") > parse_version("1.2.3")
    assert parse_version("0.0.0") == (0, 0, 0)


def test_metrics_parse_with_test_as_the_default_section() -> None:
    assert parse_metric("roc_auc") == ("test", "roc_auc")
    assert parse_metric("cv.accuracy") == ("cv", "accuracy")
    for bad in ("", "a.b.c", "Roc", "cv.", "roc_auc_std", "cv.roc_auc_std"):
        with pytest.raises(UsageError):
            parse_metric(bad)


def test_resolve_root_prefers_flag_then_env_then_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOOLKIT_REGISTRY", str(tmp_path / "env"))
    assert resolve_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_root(None) == tmp_path / "env"
    monkeypatch.delenv("TOOLKIT_REGISTRY")
    assert resolve_root(None) == Path("models")


# -- reading ------------------------------------------------------------------------------------


def test_versions_sort_semantically_and_show_defaults_to_production_else_latest(
    reg: Registry, base_artifact: Path, tmp_path: Path
) -> None:
    for v in ("1.2.0", "1.10.0", "1.9.0", "0.9.9"):
        _add(reg, base_artifact, tmp_path, v)
    assert [e.version for e in reg.list_versions("iris")] == ["1.10.0", "1.9.0", "1.2.0", "0.9.9"]
    assert [e.version for e in reg.list_versions("iris", limit=2)] == ["1.10.0", "1.9.0"]
    assert reg.get("iris").version == "1.10.0"
    reg.promote("iris", "1.2.0")
    assert reg.get("iris").version == "1.2.0"
    [summary] = reg.list_names()
    assert (summary.name, summary.versions, summary.production, summary.latest) == ("iris", 4, "1.2.0", "1.10.0")
    assert reg.count("iris") == 4


def test_reading_an_absent_registry_creates_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "nowhere")
    assert reg.list_names() == []
    assert reg.count("iris") == 0
    for call in (lambda: reg.get("iris"), lambda: reg.history("iris"), lambda: reg.list_versions("iris")):
        with pytest.raises(RegistryError, match="no model named 'iris'"):
            call()
    assert not (tmp_path / "nowhere").exists()


def test_unknown_version_is_exit_4(reg: Registry, base_artifact: Path) -> None:
    reg.add(base_artifact)
    with pytest.raises(RegistryError, match=re.escape("iris has no version 9.9.9")) as exc:
        reg.get("iris", "9.9.9")
    assert exc.value.exit_code == 4


def test_an_unreadable_index_is_a_registry_error(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "registry.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match="unreadable"):
        Registry(tmp_path / "models").list_names()


def test_an_index_from_a_newer_toolkit_is_refused(dir_reg: Registry, base_artifact: Path) -> None:
    reg = dir_reg
    reg.add(base_artifact)
    reg.close()
    conn = sqlite3.connect(reg.root / "registry.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RegistryError, match="schema version 99"):
        reg.list_names()


# -- promote and rollback -----------------------------------------------------------------------


def test_promote_archives_the_old_production_and_logs_both(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    for v in ("1.0.0", "1.1.0"):
        _add(reg, base_artifact, tmp_path, v)
    first = reg.promote("iris", "1.0.0", reason="initial")
    assert (first.version, first.previous, first.changed) == ("1.0.0", None, True)
    second = reg.promote("iris", "1.1.0", reason="better")
    assert (second.version, second.previous) == ("1.1.0", "1.0.0")
    assert {e.version: e.status for e in reg.list_versions("iris")} == {"1.1.0": "production", "1.0.0": "archived"}
    again = reg.promote("iris", "1.1.0")
    assert not again.changed
    events = [(e.event, e.version, e.from_status, e.to_status, e.reason) for e in reg.history("iris")]
    assert events[2:] == [
        ("promote", "1.0.0", "staging", "production", "initial"),
        ("archive", "1.0.0", "production", "archived", "better"),
        ("promote", "1.1.0", "staging", "production", "better"),
    ]


def test_promote_best_by_a_card_metric(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    scores = {"1.0.0": (0.80, 0.95), "1.1.0": (0.93, 0.70), "1.2.0": (0.91, 0.99), "1.3.0": (0.93, 0.10)}
    for v, (auc, cv_acc) in scores.items():
        _add(reg, base_artifact, tmp_path, v, metrics={"test": {"roc_auc": auc}, "cv": {"accuracy": cv_acc}})
    change = reg.promote("iris", best_by="roc_auc")
    assert change.version == "1.3.0"  # a tie goes to the higher version
    assert "test.roc_auc = 0.93" in (change.detail or "")
    assert reg.promote("iris", best_by="cv.accuracy").version == "1.2.0"
    with pytest.raises(RegistryError, match=re.escape("records metric test.f1")):
        reg.promote("iris", best_by="f1")
    with pytest.raises(UsageError):
        reg.promote("iris", "1.0.0", best_by="roc_auc")
    with pytest.raises(UsageError):
        reg.promote("iris")
    with pytest.raises(UsageError, match="unknown policy"):
        reg.promote("iris", "1.0.0", policy="lenient")


def test_rollback_walks_back_through_previous_productions(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        _add(reg, base_artifact, tmp_path, v, metrics={"test": {"roc_auc": float(v.split(".")[1])}})
        reg.promote("iris", v)
    change = reg.rollback("iris", reason="latency regression")
    assert (change.version, change.previous) == ("1.1.0", "1.2.0")
    rolled = reg.get("iris", "1.2.0")
    assert (rolled.status, rolled.rolled_back) == ("archived", True)
    # --best-by must not quietly undo the rollback.
    assert reg.promote("iris", best_by="roc_auc").changed is False
    assert reg.rollback("iris").version == "1.0.0"
    with pytest.raises(RegistryError, match="no earlier production version"):
        reg.rollback("iris")
    assert reg.get("iris").version == "1.0.0"
    last = [(e.event, e.version, e.from_status, e.to_status) for e in reg.history("iris")][-4:]
    assert last == [
        ("rolled_back", "1.2.0", "production", "archived"),
        ("rollback", "1.1.0", "archived", "production"),
        ("rolled_back", "1.1.0", "production", "archived"),
        ("rollback", "1.0.0", "archived", "production"),
    ]
    # An explicit promote clears the mark.
    assert reg.promote("iris", "1.2.0").changed and not reg.get("iris", "1.2.0").rolled_back


def test_rollback_without_production_is_refused(reg: Registry, base_artifact: Path) -> None:
    reg.add(base_artifact)
    with pytest.raises(RegistryError, match="no production version"):
        reg.rollback("iris")


def test_a_tampered_artifact_is_refused_by_promote_and_rollback(
    reg: Registry, base_artifact: Path, tmp_path: Path
) -> None:
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        _add(reg, base_artifact, tmp_path, v)
    reg.promote("iris", "1.0.0")
    reg.promote("iris", "1.1.0")
    _tamper_registered(reg, "1.2.0")
    with pytest.raises(IntegrityError, match="does not match") as exc:
        reg.promote("iris", "1.2.0")
    assert exc.value.exit_code == 3
    _tamper_registered(reg, "1.0.0")
    with pytest.raises(IntegrityError):
        reg.rollback("iris")
    assert reg.get("iris").version == "1.1.0"  # production as it was
    assert [e.event for e in reg.history("iris")][-1] == "promote"


def test_swapping_in_another_consistent_artifact_is_refused(
    dir_reg: Registry, base_artifact: Path, tmp_path: Path, tiny_pipeline, iris_frame
) -> None:
    # A new joblib with a card to match passes `verify`, but it is not what was registered.
    from sklearn.base import clone

    from toolkit.artifact import save

    reg = dir_reg
    reg.add(base_artifact)
    entry = reg.get("iris", "1.0.0")
    tiny_pipeline_2 = clone(tiny_pipeline).set_params(logisticregression__C=0.5).fit(*iris_frame)
    for p in artifact_paths(entry.path).__slots__:
        getattr(artifact_paths(entry.path), p).chmod(0o644)
    save(tiny_pipeline_2, entry.path, name="iris", version="1.0.0", probe=iris_frame[0].head(4), overwrite=True)
    with pytest.raises(IntegrityError, match="differs from the registered"):
        reg.promote("iris", "1.0.0")


def test_promote_checks_the_environment_under_the_policy(reg: Registry, base_artifact: Path, tmp_path: Path) -> None:
    src = clone_artifact(base_artifact, tmp_path / "src", version="2.0.0")
    paths = artifact_paths(src)
    card = read_card(src).to_dict()
    card["environment"]["python_version"] = "2.7.18"  # a runtime no policy accepts
    paths.card_json.write_bytes(card_from_dict(card).to_json())
    paths.card_md.write_text(card_from_dict(card).to_markdown())  # else refused as an edited .card.md
    reg.add(base_artifact)
    reg.promote("iris", "1.0.0")
    reg.add(src)
    for policy in ("compatible", "strict"):
        with pytest.raises(EnvironmentMismatch, match="production unchanged") as exc:
            reg.promote("iris", "2.0.0", policy=policy)
        assert exc.value.exit_code == 1
    assert reg.get("iris").version == "1.0.0"


# -- the index's own guarantees ----------------------------------------------------------------


def test_history_is_append_only_for_any_writer(dir_reg: Registry, base_artifact: Path) -> None:
    reg = dir_reg
    reg.add(base_artifact, reason="r")
    reg.promote("iris", "1.0.0")
    reg.close()
    # Another process, talking SQL straight to the file: the triggers still say no.
    attempts = [
        "UPDATE history SET reason = 'rewritten'",
        "DELETE FROM history",
        "DELETE FROM versions",
        "UPDATE versions SET sha256 = 'x'",
        "INSERT INTO versions SELECT name, '1.0.1', major, minor, 1, 'production', 0, model_file, sha256, size,"
        " metrics, data_sha256, registered_at, registered_by FROM versions",
    ]
    script = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "failures = []\n"
        "for sql in sys.argv[2:]:\n"
        "    try:\n"
        "        conn.execute(sql)\n"
        "    except sqlite3.DatabaseError as e:\n"
        "        failures.append(str(e))\n"
        "print('\\n'.join(failures))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(reg.root / "registry.db"), *attempts],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.splitlines() == [
        "history is append-only",
        "history is append-only",
        "a registered version is never removed",
        "a registered version is never overwritten",
        "UNIQUE constraint failed: versions.name",  # at most one production per name
    ]
    assert [e.reason for e in reg.history("iris")] == ["r", None]
    assert registry_rows(reg.root)[0]["status"] == "production"


# -- identifiers: one rule for names, versions and the user ---------------------------------


def test_current_user_is_the_override_else_the_login_else_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    from toolkit.identifiers import current_user

    monkeypatch.setenv("TOOLKIT_AUTHOR", "ada")
    assert current_user() == "ada"
    monkeypatch.setenv("TOOLKIT_AUTHOR", "  ")  # blank is not a name
    monkeypatch.setattr(getpass, "getuser", lambda: "login")
    assert current_user() == "login"

    def no_passwd_entry() -> str:
        raise KeyError("getpwuid(): uid not found: 12345")

    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    assert current_user() == "unknown"


def test_the_registry_records_the_same_user_as_the_card(
    reg: Registry, base_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLKIT_AUTHOR", "grace")
    entry = reg.add(base_artifact)
    assert entry.registered_by == "grace"
    assert [e.user for e in reg.history("iris")] == ["grace"]


def test_one_bad_name_is_one_error_class_and_exit_4_from_save_and_the_registry(
    reg: Registry, tiny_pipeline, iris_frame, tmp_path: Path
) -> None:
    import toolkit
    from toolkit.errors import InvalidName

    errors = []
    for call in (
        lambda: toolkit.save(
            tiny_pipeline, tmp_path / "x.joblib", name="Bad Name", version="1.0.0", probe=iris_frame[0].head(4)
        ),
        lambda: reg.get("Bad Name"),
        lambda: validate_name("Bad Name"),
    ):
        with pytest.raises(InvalidName) as exc:
            call()
        errors.append(exc.value)
    assert {type(e) for e in errors} == {InvalidName}
    assert all(e.exit_code == 4 and isinstance(e, UsageError) and isinstance(e, RegistryError) for e in errors)
    assert all(str(e) == "invalid model name 'Bad Name': must match ^[a-z0-9][a-z0-9._-]{0,63}$" for e in errors)
    assert list(tmp_path.glob("x*")) == []


def test_add_copies_the_reference_set_and_refuses_one_that_fails_its_card(
    make_artifact: Any, iris_frame: Any, tmp_path: Path
) -> None:
    X, _ = iris_frame
    artifact = make_artifact(name="ref", directory=tmp_path / "src", reference=X)
    with Registry(tmp_path / "reg") as reg:
        entry = reg.add(artifact)
        assert entry.path is not None
        stored = artifact_paths(entry.path).reference
        assert stored.read_bytes() == artifact_paths(artifact).reference.read_bytes()
        verify(entry.path)
        other = make_artifact(name="ref", version="1.0.1", directory=tmp_path / "src2", reference=X)
        ref = artifact_paths(other).reference
        data = bytearray(ref.read_bytes())
        data[-3] ^= 1
        ref.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=r"checksum mismatch for .*reference\.json\.gz"):
            reg.add(other)
        assert [e.version for e in reg.list_versions("ref")] == ["1.0.0"]
