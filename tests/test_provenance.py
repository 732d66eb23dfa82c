"""Provenance: the SLSA v1 statement a card makes, its DSSE signature, every tampering case, the gate's rule."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _provenance_support import BASE, pinned_artifact
from typer.testing import CliRunner

import toolkit
from toolkit import signing
from toolkit.artifact import artifact_paths, read_card, sign
from toolkit.cli import app
from toolkit.errors import ProvenanceError, UsageError
from toolkit.provenance.attest import attest, script_of
from toolkit.provenance.envelope import seal
from toolkit.provenance.statement import BUILD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE

ROOT = Path(__file__).resolve().parents[1]
OTHER_BASE = "127.0.0.1:5000/python-base@sha256:" + "cd" * 32


def _run(runner: CliRunner, *args: Any, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], env=env)


def _refused(result: Any, *phrases: str) -> str:
    """Exit 3, exactly one line on stderr, no traceback, saying what went wrong."""
    assert result.exit_code == 3, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return str(lines[0])


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    signing.keygen(d / "ours")
    signing.keygen(d / "theirs")
    return {"key": d / "ours.key", "pub": d / "ours.pub", "other_key": d / "theirs.key", "other_pub": d / "theirs.pub"}


@pytest.fixture
def recipe_model(make_artifact: Any, iris_frame: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A model with a recipe, trained 'in' a pinned image: a base image and the real lock in its card."""
    return pinned_artifact(make_artifact, iris_frame[0], monkeypatch, tmp_path / "recipe")


@pytest.fixture
def attested(recipe_model: Path, keys: dict[str, Path]) -> Path:
    attest(recipe_model, keys["key"])
    return recipe_model


def _envelope(artifact: Path) -> dict[str, Any]:
    return dict(json.loads(artifact_paths(artifact).provenance.read_bytes()))


def _statement(artifact: Path) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(_envelope(artifact)["payload"])))


def _resign(artifact: Path, statement: dict[str, Any], key: Path) -> None:
    """A statement changed and signed again with ``key`` (an insider with the trusted key, or not)."""
    raw = seal(signing.load_signing_key(key), json.dumps(statement).encode())
    artifact_paths(artifact).provenance.write_bytes(raw)


def _deps(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- what the statement says ---------------------------------------------------------------------


def test_recipe_model_statement_names_files_recipe_base_lock_dataset_builder(
    attested: Path, keys: dict[str, Path], runner: CliRunner
) -> None:
    paths = artifact_paths(attested)
    card = read_card(attested)
    envelope = _envelope(attested)
    assert set(envelope) == {"payloadType", "payload", "signatures"}
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = _statement(attested)
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == {
        p.name: _sha(p) for p in (paths.model, paths.card_json, paths.card_md)
    }
    build = statement["predicate"]["buildDefinition"]
    assert build["buildType"] == BUILD_TYPE
    assert build["externalParameters"] == {"recipe": card.training.to_dict()}  # type: ignore[union-attr]
    deps = _deps(statement)
    assert deps["base-image"] == {"name": "base-image", "uri": f"docker://{BASE}", "digest": {"sha256": "ab" * 32}}
    assert deps["requirements.lock"]["digest"] == {"sha256": _sha(ROOT / "requirements.lock")}
    assert deps["dataset"]["digest"] == {"sha256": hashlib.sha256(b"iris").hexdigest()}
    assert deps["dataset"]["annotations"] == {"source": "builtin:iris"}
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["version"] == {"toolkit": card.environment.packages.get("toolkit", toolkit.__version__)}
    assert run["metadata"]["startedOn"] == run["metadata"]["finishedOn"] == card.created_at
    # The CLI's verify accepts it, with every expectation met.
    result = _run(
        runner,
        "verify-provenance",
        attested,
        "--trusted-key",
        keys["pub"],
        "--expect-base",
        BASE,
        "--expect-lock",
        _sha(ROOT / "requirements.lock"),
        "--expect-dataset",
        hashlib.sha256(b"iris").hexdigest(),
    )
    assert result.exit_code == 0, result.output
    assert "3 subjects match" in result.stdout


@pytest.fixture(autouse=True)
def _no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_TRUSTED_KEYS", raising=False)
    monkeypatch.delenv("TOOLKIT_SIGNING_KEY", raising=False)


def test_cli_writes_it_beside_the_artifact_and_says_what_the_card_lacks(
    artifact: Path, keys: dict[str, Path], runner: CliRunner
) -> None:
    result = _run(runner, "provenance", artifact, "--key", keys["key"])
    assert result.exit_code == 0, result.output
    target = artifact_paths(artifact).provenance
    assert result.stdout.strip() == str(target)
    assert target.name == "iris-1.0.0.provenance.json"
    # One line per gap: an API save of schema 2 has no recipe, base, lock, dataset, image.
    notes = result.stderr.strip().splitlines()
    assert all(n.startswith("note: ") for n in notes)
    assert any("no training recipe" in n for n in notes)
    assert any("no base image" in n for n in notes)
    assert not [p for p in artifact.parent.iterdir() if p.name.endswith(".tmp")]
    assert _run(runner, "verify-provenance", artifact, "--trusted-key", keys["pub"]).exit_code == 0


def test_key_is_required_and_taken_from_the_environment(
    artifact: Path, keys: dict[str, Path], runner: CliRunner
) -> None:
    result = _run(runner, "provenance", artifact)
    assert result.exit_code == 2
    assert "--key" in result.stderr and not artifact_paths(artifact).provenance.exists()
    result = _run(runner, "provenance", artifact, env={"TOOLKIT_SIGNING_KEY": str(keys["key"])})
    assert result.exit_code == 0, result.output
    assert _run(runner, "verify-provenance", artifact, "--trusted-key", keys["pub"]).exit_code == 0


def test_out_file_and_a_tampered_artifact_is_never_attested(
    artifact: Path, keys: dict[str, Path], runner: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "elsewhere.intoto.json"
    assert _run(runner, "provenance", artifact, "--key", keys["key"], "--out", out).exit_code == 0
    assert out.is_file() and not artifact_paths(artifact).provenance.exists()
    result = _run(runner, "verify-provenance", artifact, "--trusted-key", keys["pub"], "--provenance", out)
    assert result.exit_code == 0, result.output
    artifact.chmod(0o644)
    artifact.write_bytes(artifact.read_bytes() + b"x")
    result = _run(runner, "provenance", artifact, "--key", keys["key"])
    assert result.exit_code == 3 and not artifact_paths(artifact).provenance.exists()


def test_script_model_names_the_script_and_its_local_modules(
    tmp_path: Path, keys: dict[str, Path], iris_frame: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model a user's script saved with toolkit.save, with a step from the script's own module.

    Saved here as the script does it (its folder first on sys.path, the step imported from
    there) rather than in a child Python, whose start and scikit-learn import were nearly all
    of this test's 3 s: `toolkit train --script` running a real script, local module included,
    is test_provenance_carry.py's."""
    work = tmp_path / "project"
    work.mkdir()
    (work / "tk_prov_steps.py").write_text(
        textwrap.dedent(
            """
            from sklearn.base import BaseEstimator, TransformerMixin

            class Double(BaseEstimator, TransformerMixin):
                def fit(self, X, y=None):
                    return self

                def transform(self, X):
                    return X * 2
            """
        )
    )
    (work / "train.py").write_text(
        textwrap.dedent(
            """
            import os
            from sklearn.datasets import load_iris
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            import toolkit
            from tk_prov_steps import Double

            X, y = load_iris(return_X_y=True, as_frame=True)
            pipe = make_pipeline(Double(), LogisticRegression(max_iter=500)).fit(X, y)
            toolkit.save(pipe, os.environ["TOOLKIT_OUT"] + "/scripted-1.0.0.joblib",
                         name="scripted", version="1.0.0", probe=X.head(4))
            """
        )
    )
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    monkeypatch.syspath_prepend(str(work))
    try:  # what train.py does, with $TOOLKIT_OUT = tmp_path / "out"
        from tk_prov_steps import Double  # type: ignore[import-not-found]

        X, y = iris_frame
        pipe = make_pipeline(Double(), LogisticRegression(max_iter=500)).fit(X, y)
        model = tmp_path / "out" / "scripted-1.0.0.joblib"
        toolkit.save(pipe, model, name="scripted", version="1.0.0", probe=X.head(4))
    finally:
        sys.modules.pop("tk_prov_steps", None)
    script = script_of(work / "train.py", "train.py", ("--fast",))
    written = attest(model, keys["key"], script=script)
    statement = _statement(model)
    assert statement["predicate"]["buildDefinition"]["externalParameters"] == {
        "script": {"path": "train.py", "sha256": _sha(work / "train.py"), "args": ["--fast"]}
    }
    assert _deps(statement)["local-module:tk_prov_steps"]["digest"] == {"sha256": _sha(work / "tk_prov_steps.py")}
    assert not any("no training recipe" in n for n in written.notes)  # the script is the recipe


def test_retrained_model_names_its_parent(make_artifact: Any, keys: dict[str, Path], runner: CliRunner) -> None:
    child = make_artifact(version="1.1.0", lineage={"parent": "iris@1.0.0", "reason": "new data"})
    attest(child, keys["key"])
    parent = _deps(_statement(child))["parent-model"]
    assert parent["uri"] == "toolkit-model:iris@1.0.0"
    assert parent["annotations"] == {"parent": "iris@1.0.0", "reason": "new data"}
    assert _run(runner, "verify-provenance", child, "--trusted-key", keys["pub"]).exit_code == 0


def test_schema1_card_still_attests(artifact: Path, keys: dict[str, Path], runner: CliRunner) -> None:
    card = json.loads(artifact_paths(artifact).card_json.read_bytes())
    card["schema_version"] = 1
    for key in ("training", "lineage"):
        del card[key]
    del card["environment"]["lock"]
    del card["references"]["globals"], card["references"]["local_modules"]
    for key in ("image", "system_packages", "threads"):  # card schema 3
        card["environment"].pop(key, None)
    if card.pop("reference", None) is not None:
        artifact_paths(artifact).reference.unlink()
    from toolkit.card import parse_card

    parsed = parse_card(json.dumps(card).encode())
    artifact_paths(artifact).card_json.write_bytes(parsed.to_json())
    artifact_paths(artifact).card_md.write_text(parsed.to_markdown())
    result = _run(runner, "provenance", artifact, "--key", keys["key"])
    assert result.exit_code == 0, result.output
    assert "card schema 1 has no training recipe" in result.stderr
    assert _run(runner, "verify-provenance", artifact, "--trusted-key", keys["pub"]).exit_code == 0


# -- every tampering case: its own line, exit 3 ------------------------------------------------


def _flip(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_tampering_case_is_refused_with_its_own_line(
    recipe_model: Path, keys: dict[str, Path], runner: CliRunner
) -> None:
    paths = artifact_paths(recipe_model)
    lines: dict[str, str] = {}

    def fresh() -> None:
        attest(recipe_model, keys["key"])

    def check(case: str, *phrases: str, extra: tuple[Any, ...] = ()) -> None:
        result = _run(runner, "verify-provenance", recipe_model, "--trusted-key", keys["pub"], *extra)
        lines[case] = _refused(result, *phrases)

    original = {p: p.read_bytes() for p in (paths.model, paths.card_json, paths.card_md)}

    def restore() -> None:
        for p, data in original.items():
            if p.exists():
                p.chmod(0o644)
            p.write_bytes(data)

    fresh()
    _flip(paths.model)
    check("model changed", "iris-1.0.0.joblib changed since its provenance was written")
    restore()

    card = json.loads(paths.card_json.read_bytes())
    card["environment"]["base_image"] = OTHER_BASE
    paths.card_json.write_text(json.dumps(card, indent=2))
    check("card's base digest changed", "iris-1.0.0.card.json changed since")
    restore()

    added = recipe_model.with_name("iris-1.0.0.reference.csv")
    added.write_text("a,b\n1,2\n")
    check("file added on disk", "iris-1.0.0.reference.csv is beside the artifact but not a subject")
    added.unlink()

    paths.card_md.unlink()
    check("file removed from disk", "iris-1.0.0.card.md", "not beside the artifact")
    restore()

    statement = _statement(recipe_model)
    statement["subject"].append({"name": "iris-1.0.0.extra.bin", "digest": {"sha256": "00" * 32}})
    _resign(recipe_model, statement, keys["key"])
    check("subject added", "'iris-1.0.0.extra.bin'", "not beside the artifact (a subject removed)")

    statement = _statement_fresh(recipe_model, keys)
    statement["subject"] = [s for s in statement["subject"] if not s["name"].endswith(".card.md")]
    _resign(recipe_model, statement, keys["key"])
    check("subject removed", "iris-1.0.0.card.md is beside the artifact but not a subject")

    fresh()
    envelope = _envelope(recipe_model)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    _deps(statement)["base-image"]["digest"]["sha256"] = "cd" * 32  # edited, not re-signed
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    paths.provenance.write_text(json.dumps(envelope))
    check("statement edited", "does not verify with any trusted key")

    fresh()
    _resign(recipe_model, _statement(recipe_model), keys["other_key"])
    check("another key", "signed by an untrusted key")

    envelope = _envelope(recipe_model)
    envelope["signatures"] = []
    paths.provenance.write_text(json.dumps(envelope))
    check("unsigned", "provenance is unsigned")

    paths.provenance.unlink()
    check("missing", "no provenance for iris-1.0.0.joblib")

    fresh()
    check("base expected", "base image is", extra=("--expect-base", OTHER_BASE))
    check("lock expected", "requirements.lock sha256 is", extra=("--expect-lock", "ee" * 32))
    check("dataset expected", "dataset sha256 is", extra=("--expect-dataset", "ee" * 32))

    paths.provenance.write_text("{not json")
    check("malformed", "malformed provenance")

    assert len(set(lines.values())) == len(lines), lines  # each kind of failure says its own thing


def _statement_fresh(artifact: Path, keys: dict[str, Path]) -> dict[str, Any]:
    attest(artifact, keys["key"])
    return _statement(artifact)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b'{"payloadType": "application/vnd.in-toto+json", "payloadType": "x", "payload": "", "signatures": []}',
        b'{"payloadType": "application/vnd.in-toto+json", "payload": NaN, "signatures": [{}]}',
        b'{"payloadType": "text/plain", "payload": "e30=", "signatures": [{"sig": "AA=="}]}',
        b'{"payloadType": "application/vnd.in-toto+json", "payload": "!!", "signatures": [{"sig": "AA=="}]}',
        b'{"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": [{"sig": 1}]}',
        b'{"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": "x"}',
        b'{"payloadType": "application/vnd.in-toto+json", "payload": "e30=", "signatures": [{"sig": "AA==", '
        b'"keyid": 5}]}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
        b'{"a": "' + b"x" * (3 * 1024 * 1024) + b'"}',
    ],
)
def test_hostile_envelopes_are_one_line(attested: Path, keys: dict[str, Path], runner: CliRunner, raw: bytes) -> None:
    artifact_paths(attested).provenance.write_bytes(raw)
    line = _refused(_run(runner, "verify-provenance", attested, "--trusted-key", keys["pub"]))
    assert "malformed provenance" in line, line


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.update({"_type": "https://in-toto.io/Statement/v0.1"}),
        lambda s: s.update({"predicateType": "https://slsa.dev/provenance/v0.2"}),
        lambda s: s.update({"subject": []}),
        lambda s: s["subject"].append(dict(s["subject"][0])),
        lambda s: s["subject"][0].update({"name": "../etc/passwd"}),
        lambda s: s["subject"][0].update({"name": "a\nb"}),
        lambda s: s["subject"][0]["digest"].update({"sha256": "XYZ"}),
        lambda s: s["predicate"].update({"buildDefinition": []}),
        lambda s: s["predicate"]["buildDefinition"].update({"resolvedDependencies": {}}),
        lambda s: s["predicate"]["buildDefinition"]["resolvedDependencies"].append({"name": "base-image"}),
    ],
)
def test_hostile_statements_signed_by_the_trusted_key_are_refused(
    attested: Path, keys: dict[str, Path], runner: CliRunner, change: Any
) -> None:
    statement = _statement(attested)
    change(statement)
    _resign(attested, statement, keys["key"])
    line = _refused(_run(runner, "verify-provenance", attested, "--trusted-key", keys["pub"]))
    assert "malformed provenance" in line, line


def test_verify_needs_a_trusted_key_and_good_expectations(
    attested: Path, keys: dict[str, Path], runner: CliRunner
) -> None:
    result = _run(runner, "verify-provenance", attested)
    assert result.exit_code == 2 and "trusted key" in result.stderr
    pub = keys["pub"]
    for flag, value in (("--expect-base", "latest"), ("--expect-lock", "abc"), ("--expect-dataset", "AB" * 32)):
        result = _run(runner, "verify-provenance", attested, "--trusted-key", pub, flag, value)
        assert result.exit_code == 2, (flag, result.output)


def test_trusted_keys_from_the_environment_count(attested: Path, keys: dict[str, Path], runner: CliRunner) -> None:
    result = _run(runner, "verify-provenance", attested, env={"TOOLKIT_TRUSTED_KEYS": str(keys["pub"])})
    assert result.exit_code == 0, result.output


# -- the gate: check-env --require-provenance ----------------------------------------------------


@pytest.fixture
def gated(artifact: Path, keys: dict[str, Path]) -> Path:
    """A signed (.sig) and attested artifact of this runtime: the gate passes it."""
    sign(artifact, keys["key"])
    attest(artifact, keys["key"])
    return artifact


def test_gate_passes_a_signed_attested_artifact(gated: Path, keys: dict[str, Path], runner: CliRunner) -> None:
    result = _run(runner, "check-env", gated, "--require-provenance", "--trusted-key", keys["pub"])
    assert result.exit_code == 0, result.output
    assert toolkit.check_env(gated, trusted_keys=[keys["pub"]], require_provenance=True).ok


def test_gate_refuses_missing_unsigned_or_another_base_lock_dataset(
    gated: Path, keys: dict[str, Path], runner: CliRunner
) -> None:
    paths = artifact_paths(gated)

    def gate() -> Any:
        return _run(runner, "check-env", gated, "--require-provenance", "--trusted-key", keys["pub"])

    statement = _statement(gated)
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    for dep, phrase in (
        ({"name": "base-image", "uri": f"docker://{OTHER_BASE}", "digest": {"sha256": "cd" * 32}}, "base image"),
        ({"name": "requirements.lock", "digest": {"sha256": "ee" * 32}}, "requirements.lock"),
        ({"name": "dataset", "digest": {"sha256": "ee" * 32}}, "dataset"),
    ):
        changed = json.loads(json.dumps(statement))
        changed["predicate"]["buildDefinition"]["resolvedDependencies"] = [*deps, dep]
        _resign(gated, changed, keys["key"])
        _refused(gate(), f"names {phrase}", "its card none")
    envelope = json.loads(seal(signing.load_signing_key(keys["key"]), json.dumps(statement).encode()))
    envelope["signatures"] = []
    paths.provenance.write_text(json.dumps(envelope))
    _refused(gate(), "unsigned")
    paths.provenance.unlink()
    _refused(gate(), "no provenance")
    result = _run(runner, "check-env", gated, "--require-provenance")
    assert result.exit_code == 2 and "trusted key" in result.stderr


def test_gate_refuses_a_provenance_for_another_base_than_the_card(
    recipe_model: Path, keys: dict[str, Path], runner: CliRunner
) -> None:
    sign(recipe_model, keys["key"])
    attest(recipe_model, keys["key"])
    statement = _statement(recipe_model)
    base = _deps(statement)["base-image"]
    base["uri"], base["digest"]["sha256"] = f"docker://{OTHER_BASE}", "cd" * 32
    _resign(recipe_model, statement, keys["key"])
    result = _run(runner, "check-env", recipe_model, "--require-provenance", "--trusted-key", keys["pub"])
    _refused(result, "names base image cdcdcdcdcdcd…, its card abababababab…")


def test_load_refuses_before_unpickling(gated: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit import pickle_audit

    artifact_paths(gated).provenance.unlink()

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickled before the provenance check")

    monkeypatch.setattr(pickle_audit, "load", never)
    with pytest.raises(ProvenanceError, match="no provenance"):
        toolkit.load(gated, trusted_keys=[keys["pub"]], require_provenance=True)
    with pytest.raises(UsageError, match="trusted key"):
        toolkit.load(gated, require_provenance=True)


def test_gate_with_provenance_stays_lean(gated: Path, keys: dict[str, Path]) -> None:
    """Never scikit-learn, joblib, pandas or rich on the gate's provenance path."""
    code = textwrap.dedent(
        f"""
        import sys
        from toolkit.cli import main
        pub = {str(keys["pub"])!r}
        sys.argv = ["toolkit", "check-env", {str(gated)!r}, "--require-provenance", "--trusted-key", pub]
        try:
            main()
        except SystemExit as e:
            code = e.code
        heavy = sorted(m for m in ("sklearn", "joblib", "pandas", "rich", "numpy") if m in sys.modules)
        print("EXIT", code, "HEAVY", ",".join(heavy))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "EXIT 0 HEAVY \n" in done.stdout + "\n", done.stdout + done.stderr


def test_schema3_fields_are_read_when_present(artifact: Path) -> None:
    import dataclasses

    from toolkit.fingerprint import ImageInfo, SystemPackage
    from toolkit.provenance.sbom import build_sbom
    from toolkit.provenance.statement import build_statement

    card = read_card(artifact)
    image_id = "sha256:" + "12" * 32
    environment = dataclasses.replace(
        card.environment,
        image=ImageInfo(ref="toolkit:latest", id=image_id),
        system_packages=(SystemPackage(name="libgomp1", version="12.2.0-14"),),
    )
    newer = dataclasses.replace(card, environment=environment)
    statement = build_statement(newer, {"a.joblib": "00" * 32}, toolkit_version="9.9.9")
    run = statement.document["predicate"]["runDetails"]
    assert run["builder"]["id"] == f"urn:toolkit:builder:image:{image_id}"
    assert not any("names no training image" in n for n in statement.notes)
    deps = {d["name"]: d for d in statement.document["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["deb:libgomp1"]["uri"] == "pkg:deb/debian/libgomp1@12.2.0-14"
    bom = build_sbom(newer, card_sha256="00" * 32)
    [training_image] = [c for c in bom["components"] if c["bom-ref"] == "training-image"]
    assert training_image["hashes"] == [{"alg": "SHA-256", "content": "12" * 32}]
    # And a card that names no image says so in one line.
    older = build_statement(
        dataclasses.replace(card, environment=dataclasses.replace(card.environment, image=None)),
        {"a.joblib": "00" * 32},
        toolkit_version="9.9.9",
    )
    assert older.document["predicate"]["runDetails"]["builder"]["id"] == "urn:toolkit:builder"
    assert f"card schema {card.schema_version} names no training image: the builder is the toolkit alone" in older.notes


def test_a_reference_companion_is_a_subject(artifact: Path, keys: dict[str, Path], runner: CliRunner) -> None:
    """A `<stem>.reference.*` file (card schema 3) beside the artifact is covered like the three."""
    reference = artifact.with_name("iris-1.0.0.reference.parquet")
    reference.write_bytes(b"PAR1 rows")
    attest(artifact, keys["key"])
    assert "iris-1.0.0.reference.parquet" in {s["name"] for s in _statement(artifact)["subject"]}
    assert _run(runner, "verify-provenance", artifact, "--trusted-key", keys["pub"]).exit_code == 0
    reference.write_bytes(b"PAR1 other rows")
    _refused(
        _run(runner, "verify-provenance", artifact, "--trusted-key", keys["pub"]),
        "iris-1.0.0.reference.parquet changed since",
    )
