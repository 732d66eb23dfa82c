"""The provenance file travels like the .sig: train and image train write it, registry add, push and pull carry it."""

from __future__ import annotations

import base64
import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _oci_support import LoopbackRegistry
from typer.testing import CliRunner

from toolkit import oci, signing
from toolkit.artifact import artifact_paths, sign
from toolkit.cli import app
from toolkit.provenance.attest import attest
from toolkit.provenance.envelope import seal
from toolkit.registry import Registry


def _run(runner: CliRunner, *args: Any, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], env=env)


def _statement(artifact: Path) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(json.loads(artifact_paths(artifact).provenance.read_bytes())["payload"])))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    signing.keygen(d / "ours")
    signing.keygen(d / "theirs")
    return {"key": d / "ours.key", "pub": d / "ours.pub", "other_key": d / "theirs.key", "other_pub": d / "theirs.pub"}


@pytest.fixture(autouse=True)
def _no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TOOLKIT_TRUSTED_KEYS", "TOOLKIT_SIGNING_KEY", "TOOLKIT_REGISTRY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def attested(artifact: Path, keys: dict[str, Path]) -> Path:
    sign(artifact, keys["key"])
    attest(artifact, keys["key"])
    return artifact


def test_train_with_a_sign_key_writes_the_provenance_of_its_recipe(
    runner: CliRunner, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    args = (
        "--dataset",
        "builtin:wine",
        "--model",
        "logistic_regression",
        "--cv-folds",  # the recipe is what is attested, not its cross-validation: 2 folds, not 5
        "2",
        "--no-register",
        "--out",
        out,
        "--sign-key",
        keys["key"],
        "--quiet",
    )
    result = _run(runner, "train", *args)
    assert result.exit_code == 0, result.output
    model = Path(result.stdout.strip().splitlines()[-1])
    assert artifact_paths(model).provenance.is_file()
    recipe = _statement(model)["predicate"]["buildDefinition"]["externalParameters"]["recipe"]
    assert recipe["dataset"]["source"] == "builtin:wine" and recipe["cv_folds"] == 2
    assert _run(runner, "verify-provenance", model, "--trusted-key", keys["pub"]).exit_code == 0


def test_train_with_a_script_and_a_sign_key_names_the_script(
    runner: CliRunner, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A step from the script's own folder: the one real script run of the provenance tests
    # (test_provenance.py saves its script model in-process) shows the local module named too.
    steps = tmp_path / "tk_carry_steps.py"
    steps.write_text(
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
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from sklearn.datasets import load_iris
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            import toolkit
            from tk_carry_steps import Double

            X, y = load_iris(return_X_y=True, as_frame=True)
            pipe = make_pipeline(Double(), LogisticRegression(max_iter=500)).fit(X, y)
            toolkit.save(pipe, os.environ["TOOLKIT_OUT"] + "/scripted-2.0.0.joblib",
                         name="scripted", version="2.0.0", probe=X.head(4))
            """
        )
    )
    out = tmp_path / "out"
    result = _run(runner, "train", "--script", "train.py", "--no-register", "--out", out, "--sign-key", keys["key"])
    assert result.exit_code == 0, result.output
    model = out / "scripted-2.0.0.joblib"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"scripted-2.0.0{s}" for s in (".joblib", ".card.json", ".card.md", ".sig", ".provenance.json")
    )
    import hashlib

    statement = _statement(model)
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert external == {
        "script": {"path": "train.py", "sha256": hashlib.sha256(script.read_bytes()).hexdigest(), "args": []}
    }
    deps = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert deps["local-module:tk_carry_steps"]["digest"] == {"sha256": hashlib.sha256(steps.read_bytes()).hexdigest()}
    assert _run(runner, "verify-provenance", model, "--trusted-key", keys["pub"]).exit_code == 0


def _stub_training(monkeypatch: pytest.MonkeyPatch, artifact: Path) -> None:
    """The container's part, stubbed (its own e2e tests run it for real): the three files land in staging."""
    from toolkit import docker

    def train_in_container(tag: str, args: list[str], *, staging: Path, **_: Any) -> Path:
        paths = artifact_paths(artifact)
        for p in (paths.model, paths.card_json, paths.card_md):
            shutil.copy(p, staging / p.name)
        return staging / artifact.name

    monkeypatch.setattr(docker, "train_in_container", train_in_container)


def test_image_train_sign_key_attests_and_the_registry_keeps_it_under_trust(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_training(monkeypatch, artifact)
    monkeypatch.chdir(tmp_path)
    env = {"TOOLKIT_SIGNING_KEY": str(keys["key"]), "TOOLKIT_TRUSTED_KEYS": str(keys["pub"])}
    result = _run(runner, "image", "train", "--dataset", "builtin:wine", "--registry", tmp_path / "reg", env=env)
    assert result.exit_code == 0, result.output
    registered = tmp_path / "reg" / "iris" / "1.0.0" / "iris-1.0.0.joblib"
    assert artifact_paths(registered).provenance.is_file()
    result = _run(
        runner, "check-env", registered, "--require-provenance", "--trusted-key", keys["pub"], "--policy", "compatible"
    )
    assert result.exit_code == 0, result.output


def test_registry_add_copies_it_and_refuses_a_bad_one_under_trust(
    attested: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    with Registry(tmp_path / "reg") as reg:
        entry = reg.add(attested)
    assert entry.path is not None
    kept = artifact_paths(Path(entry.path)).provenance
    assert kept.read_bytes() == artifact_paths(attested).provenance.read_bytes()

    # Signed by a key nobody trusts: with trust configured, add refuses, and registers nothing.
    statement = _statement(attested)
    artifact_paths(attested).provenance.write_bytes(
        seal(signing.load_signing_key(keys["other_key"]), json.dumps(statement).encode())
    )
    with Registry(tmp_path / "reg2", trusted_keys=[keys["pub"]]) as reg:
        with pytest.raises(signing.SignatureError, match="untrusted key"):
            reg.add(attested)
        assert not reg.list_names()


@pytest.fixture
def loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackRegistry]:
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    reg = LoopbackRegistry(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.mark.oci
def test_push_adds_it_as_a_layer_and_pull_verifies_and_writes_it(
    attested: Path, keys: dict[str, Path], loopback: LoopbackRegistry, tmp_path: Path
) -> None:
    ref = f"oci://{loopback.host}/models/attested:1.0.0"
    oci.push(attested, ref)
    with oci.Client(loopback.host) as client:
        layout = oci.layout_of(client.get_manifest(oci.parse_reference(ref)), where=ref)
    assert layout.provenance is not None
    assert layout.provenance.media_type == "application/vnd.dsse.envelope.v1+json"
    assert layout.provenance.file_name == "iris-1.0.0.provenance.json"
    out = tmp_path / "out"
    oci.pull(ref, out, trusted_keys=[keys["pub"]])
    pulled = out / attested.name
    assert artifact_paths(pulled).provenance.read_bytes() == artifact_paths(attested).provenance.read_bytes()

    # The remote gate checks it with the model still in the registry.
    runner = CliRunner()
    gate = ("check-env", ref, "--require-provenance", "--trusted-key", keys["pub"])
    result = _run(runner, *gate)
    assert result.exit_code == 0, result.output
    result = _run(runner, "check-env", ref, "--require-provenance")
    assert result.exit_code == 2  # no trusted key: the rule cannot be checked

    # A provenance by another key travels too, but a pull with trust refuses it: nothing lands.
    statement = _statement(attested)
    artifact_paths(attested).provenance.write_bytes(
        seal(signing.load_signing_key(keys["other_key"]), json.dumps(statement).encode())
    )
    bad = f"oci://{loopback.host}/models/attested:bad"
    oci.push(attested, bad)
    refused = tmp_path / "refused"
    with pytest.raises(signing.SignatureError, match="untrusted key"):
        oci.pull(bad, refused, trusted_keys=[keys["pub"]])
    assert not refused.exists() or not list(refused.iterdir())
    result = _run(runner, "check-env", bad, "--require-provenance", "--trusted-key", keys["pub"])
    assert result.exit_code == 3 and "untrusted key" in result.stderr, result.output
    oci.pull(bad, tmp_path / "untrusting")  # without trust it is carried as it is, like the .sig
    assert (tmp_path / "untrusting" / "iris-1.0.0.provenance.json").is_file()
