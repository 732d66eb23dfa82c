"""Signatures: keygen, sign, trusted keys at every read point, hostile bundles, and the reference verifier."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import toolkit
from toolkit import pickle_audit, signing
from toolkit.artifact import artifact_paths, read_card, sign
from toolkit.cli import app
from toolkit.errors import IntegrityError, UsageError
from toolkit.pickle_audit import LocalModule, local_module_sha256

ROOT = Path(__file__).resolve().parents[1]


def _run(runner: CliRunner, *args: Any, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], env=env)


def _one_error_line(result: Any, *phrases: str) -> str:
    """Exit 3, exactly one line on stderr, no traceback, and it says what went wrong."""
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
def signed(artifact: Path, keys: dict[str, Path]) -> Path:
    sign(artifact, keys["key"])
    return artifact


def _sig(artifact: Path) -> Path:
    return artifact_paths(artifact).signature


def _flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _bundle(artifact: Path) -> dict[str, Any]:
    return dict(json.loads(_sig(artifact).read_bytes()))


def _statement(artifact: Path) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(_bundle(artifact)["dsseEnvelope"]["payload"])))


def _write_bundle(artifact: Path, bundle: dict[str, Any]) -> None:
    _sig(artifact).write_text(json.dumps(bundle))


# -- keygen and sign ------------------------------------------------------------------------


def test_keygen_writes_a_0600_private_key_and_never_overwrites(runner: CliRunner, tmp_path: Path) -> None:
    result = _run(runner, "keygen", "--out", tmp_path / "k")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "k.key").read_bytes()
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()
    before = (tmp_path / "k.key").read_bytes()
    again = _run(runner, "keygen", "--out", tmp_path / "k")
    assert again.exit_code == 2
    assert "already exists" in again.stderr
    assert (tmp_path / "k.key").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key", "k.pub"]  # no temp files left


def test_sign_then_verify(runner: CliRunner, artifact: Path, keys: dict[str, Path]) -> None:
    result = _run(runner, "sign", artifact, "--key", keys["key"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(_sig(artifact))
    ok = _run(runner, "verify", artifact, "--trusted-key", keys["pub"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("OK iris 1.0.0")
    gate = _run(runner, "check-env", artifact, "--trusted-key", keys["pub"])
    assert gate.exit_code == 0, gate.output
    statement = _statement(artifact)
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == ["iris-1.0.0.card.json", "iris-1.0.0.card.md", "iris-1.0.0.joblib"]
    for r in statement["predicate"]["resources"]:
        assert r["digest"] == hashlib.sha256((artifact.parent / r["name"]).read_bytes()).hexdigest()
    bundle = _bundle(artifact)
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": hashlib.sha256(keys["pub"].read_bytes()).hexdigest()},
        "tlogEntries": [],
    }


def test_sign_refuses_an_artifact_that_fails_its_card(runner: CliRunner, artifact: Path, keys: dict[str, Path]) -> None:
    _flip(artifact, 100)
    result = _run(runner, "sign", artifact, "--key", keys["key"])
    _one_error_line(result, "refusing to sign")
    assert not _sig(artifact).exists()


def test_sign_with_a_public_key_is_a_usage_error(runner: CliRunner, artifact: Path, keys: dict[str, Path]) -> None:
    result = _run(runner, "sign", artifact, "--key", keys["pub"])
    assert result.exit_code == 2
    assert "not an unencrypted PEM private key" in result.stderr
    assert not _sig(artifact).exists()


def test_without_trust_nothing_is_required(runner: CliRunner, artifact: Path) -> None:
    assert _run(runner, "verify", artifact).exit_code == 0
    toolkit.load(artifact)


# -- each failure, one line saying which ----------------------------------------------------


@pytest.mark.parametrize("suffix", [".joblib", ".card.json", ".card.md"])
def test_a_byte_flipped_in_each_covered_file(
    runner: CliRunner, signed: Path, keys: dict[str, Path], suffix: str
) -> None:
    target = signed.with_name("iris-1.0.0" + suffix)
    if suffix == ".card.json":
        # Inside the author string, so the card still parses and the signature is what catches it.
        text = target.read_bytes()
        offset = text.index(b'"author": "') + len(b'"author": "')
    else:
        offset = 200
    _flip(target, offset)
    result = _run(runner, "verify", signed, "--trusted-key", keys["pub"])
    _one_error_line(result, f"iris-1.0.0{suffix} changed since it was signed")


def test_joblib_changed_is_named_when_the_card_was_rewritten_too(
    runner: CliRunner, signed: Path, keys: dict[str, Path]
) -> None:
    _rewrite_pickle(signed, b"not the signed pickle")
    result = _run(runner, "check-env", signed, "--trusted-key", keys["pub"])
    _one_error_line(result, "iris-1.0.0.card.json, iris-1.0.0.card.md, iris-1.0.0.joblib changed since it was signed")


def test_a_signature_from_another_key(runner: CliRunner, artifact: Path, keys: dict[str, Path]) -> None:
    sign(artifact, keys["other_key"])
    result = _run(runner, "verify", artifact, "--trusted-key", keys["pub"])
    _one_error_line(result, "signed by an untrusted key")
    # Either trusted key is enough.
    both = _run(runner, "verify", artifact, "--trusted-key", keys["pub"], "--trusted-key", keys["other_pub"])
    assert both.exit_code == 0, both.output


def test_trust_configured_and_the_artifact_unsigned(runner: CliRunner, artifact: Path, keys: dict[str, Path]) -> None:
    result = _run(runner, "check-env", artifact, env={"TOOLKIT_TRUSTED_KEYS": str(keys["pub"])})
    _one_error_line(result, "no signature")
    with pytest.raises(signing.SignatureError, match="no signature"):
        toolkit.load(artifact, trusted_keys=[keys["pub"]])


def test_a_hint_that_lies_does_not_help(runner: CliRunner, artifact: Path, keys: dict[str, Path]) -> None:
    sign(artifact, keys["other_key"])
    bundle = _bundle(artifact)
    bundle["verificationMaterial"]["publicKey"]["hint"] = hashlib.sha256(keys["pub"].read_bytes()).hexdigest()
    _write_bundle(artifact, bundle)
    _one_error_line(_run(runner, "verify", artifact, "--trusted-key", keys["pub"]), "does not verify")


def _replace_payload(bundle: dict[str, Any], statement: dict[str, Any]) -> None:
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


def _signed_over(artifact: Path, key: Path, digests: dict[str, str]) -> None:
    private = signing.load_signing_key(key)
    payload = signing._bundle.statement("iris-1.0.0", digests, _sig(artifact).name)
    _sig(artifact).write_bytes(signing._bundle.envelope(private, payload))


def _digests(artifact: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in artifact.parent.iterdir()
        if p.name.startswith("iris-1.0.0.") and not p.name.endswith(".sig")
    }


HOSTILE: dict[str, tuple[Any, str]] = {
    "truncated": (lambda a: _sig(a).write_bytes(_sig(a).read_bytes()[:100]), "malformed signature bundle"),
    "empty": (lambda a: _sig(a).write_bytes(b""), "malformed signature bundle"),
    "huge": (lambda a: _sig(a).write_bytes(b" " * (signing.MAX_BUNDLE_BYTES + 1)), "malformed signature bundle"),
    "not utf-8": (lambda a: _sig(a).write_bytes(b"\xff\xfe{}"), "malformed signature bundle"),
    "a list": (lambda a: _sig(a).write_text("[]"), "not a Sigstore bundle"),
    "NaN": (
        lambda a: _sig(a).write_text(_sig(a).read_text().replace('"tlogEntries":[]', '"tlogEntries":[],"x":NaN')),
        "NaN is not JSON",
    ),
    "duplicate key": (
        lambda a: _sig(a).write_text(_sig(a).read_text().replace('{"mediaType"', '{"mediaType":1,"mediaType"')),
        "duplicate key",
    ),
    "deep nesting": (lambda a: _sig(a).write_text("[" * 100000), "malformed signature bundle"),
    "wrong media type": (
        lambda a: _sig(a).write_text(_sig(a).read_text().replace("bundle.v0.3", "bundle.v9")),
        "mediaType",
    ),
    "payload type changed": (
        lambda a: _sig(a).write_text(_sig(a).read_text().replace("vnd.in-toto+json", "json")),
        "payloadType 'application/json'",
    ),
    "bad base64": (
        lambda a: _sig(a).write_text(_sig(a).read_text().replace('"payload":"', '"payload":"!!')),
        "payload is not valid base64",
    ),
    "no signatures": (
        lambda a: _sig(a).write_text(
            json.dumps({**_bundle(a), "dsseEnvelope": {**_bundle(a)["dsseEnvelope"], "signatures": []}})
        ),
        "signatures",
    ),
    "tlog entries": (
        lambda a: _sig(a).write_text(_sig(a).read_text().replace('"tlogEntries":[]', '"tlogEntries":[{}]')),
        "key-mode",
    ),
    "extra resource, signature kept": (
        lambda a: _write_bundle(a, _with_extra_resource(a)),
        "does not verify",
    ),
    "extra resource, validly signed": (
        lambda a: _signed_over(a, a.parent / "key", {**_digests(a), "extra.bin": "0" * 64}),
        "signed set has extra.bin",
    ),
    "resource missing, validly signed": (
        lambda a: _signed_over(
            a, a.parent / "key", {k: v for k, v in _digests(a).items() if not k.endswith(".card.md")}
        ),
        "iris-1.0.0.card.md is not in the signed set",
    ),
    "a newline in a signed name": (
        lambda a: _signed_over(a, a.parent / "key", {**_digests(a), "x\nerror: fake": "0" * 64}),
        "signed set has 'x\\nerror: fake'",
    ),
    "a newline in the hint of an untrusted signature": (
        lambda a: (
            _signed_over(a, a.parent / "other.key", _digests(a)),
            _sig(a).write_text(re.sub(r'"hint":"[0-9a-f]*"', lambda _: '"hint":"a\\nb"', _sig(a).read_text())),
        ),
        "signed by an untrusted key (key sha256 'a\\nb')",
    ),
    "a hint that is not the signing key's": (
        lambda a: _sig(a).write_text(
            re.sub(r'"hint":"[0-9a-f]*"', lambda _: '"hint":"' + "f" * 64 + '"', _sig(a).read_text())
        ),
        "hint does not match",
    ),
    "a directory": (lambda a: (_sig(a).unlink(), _sig(a).mkdir()), "malformed signature bundle"),
    "a symlink": (
        lambda a: (_sig(a).rename(a.parent / "real.sig"), _sig(a).symlink_to(a.parent / "real.sig")),
        "symlink",
    ),
}


def _with_extra_resource(artifact: Path) -> dict[str, Any]:
    bundle, statement = _bundle(artifact), _statement(artifact)
    statement["predicate"]["resources"].append({"algorithm": "sha256", "name": "extra.bin", "digest": "0" * 64})
    _replace_payload(bundle, statement)
    return bundle


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_bundles_exit_3_with_one_line(
    runner: CliRunner, signed: Path, keys: dict[str, Path], case: str
) -> None:
    shutil.copy(keys["key"], signed.parent / "key")
    shutil.copy(keys["other_key"], signed.parent / "other.key")
    corrupt, phrase = HOSTILE[case]
    corrupt(signed)
    _one_error_line(_run(runner, "verify", signed, "--trusted-key", keys["pub"]), phrase)


def test_a_bad_trusted_key_file_is_a_usage_error(runner: CliRunner, signed: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("not a key")
    result = _run(runner, "verify", signed, "--trusted-key", bogus)
    assert result.exit_code == 2
    assert "not a PEM public key" in result.stderr
    missing = _run(runner, "verify", signed, env={"TOOLKIT_TRUSTED_KEYS": str(tmp_path / "gone.pub")})
    assert missing.exit_code == 2 and "not found" in missing.stderr


# -- the attacker's case: a malicious pickle, the card rewritten to match, the old signature kept -----


class _Evil:
    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        import _signing_gadget

        return (_signing_gadget.touch, (str(self.canary),))


def _rewrite_pickle(artifact: Path, blob: bytes, pairs: tuple[tuple[str, str], ...] | None = None) -> None:
    """What whoever can write the store does: a new pickle, and the card rewritten to match it
    (checksum, the globals the pickle imports, their local module's hash, the rendered card)."""
    paths = artifact_paths(artifact)
    card = read_card(artifact)
    info = dataclasses.replace(card.artifact, sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    card = dataclasses.replace(card, artifact=info)
    if pairs is not None:
        modules = sorted({m for m, _ in pairs})
        local = tuple(
            LocalModule(module=m, sha256=sha)
            for m in modules
            if m.startswith("_signing") and (sha := local_module_sha256(m)) is not None
        )
        references = dataclasses.replace(card.references, modules=tuple(modules), globals=pairs, local_modules=local)
        card = dataclasses.replace(card, references=references)
    for p in (paths.model, paths.card_json, paths.card_md):
        os.chmod(p, 0o644)
    paths.model.write_bytes(blob)
    paths.card_json.write_bytes(card.to_json())
    paths.card_md.write_text(card.to_markdown())


def _attack(artifact: Path, canary: Path) -> None:
    import io

    buffer = io.BytesIO()
    pairs = pickle_audit.dump(_Evil(canary), buffer)
    _rewrite_pickle(artifact, buffer.getvalue(), pairs)


def test_without_trust_the_card_passes_and_the_loader_refuses_by_type(signed: Path, tmp_path: Path) -> None:
    # Without trusted keys the rewritten card passes verify (it is honest about what the
    # pickle imports); the loader still refuses the callable, which is no trusted kind.
    canary = tmp_path / "control-canary"
    _attack(signed, canary)
    toolkit.artifact.verify(signed)
    with pytest.raises(toolkit.IntegrityError, match=r"_signing_gadget\.touch, refused: a callable"):
        toolkit.load(signed)
    assert not canary.exists()


def test_the_attackers_pickle_never_runs_with_trust(
    runner: CliRunner, signed: Path, keys: dict[str, Path], tmp_path: Path, iris_csv: Path
) -> None:
    canary = tmp_path / "canary"
    _attack(signed, canary)
    features = tmp_path / "features.csv"
    features.write_text("\n".join(iris_csv.read_text().splitlines()[:6]) + "\n")  # extra target column is ignored
    pub = ["--trusted-key", keys["pub"]]
    changed = "changed since it was signed"
    for args in (
        ("verify", signed, *pub),
        ("check-env", signed, *pub),
        ("check-env", signed, "--verify-predictions", *pub),
        ("predict", signed, features, *pub),
        ("registry", "add", signed, "--registry", tmp_path / "reg", *pub),
    ):
        _one_error_line(_run(runner, *args), changed)
        assert not canary.exists(), args
    env = {"TOOLKIT_TRUSTED_KEYS": str(keys["pub"])}
    _one_error_line(_run(runner, "check-env", signed, "--verify-predictions", env=env), changed)
    with pytest.raises(signing.SignatureError, match=changed):
        toolkit.load(signed, trusted_keys=[keys["pub"]])
    assert not canary.exists()
    assert not (tmp_path / "reg" / "iris").exists() or not any((tmp_path / "reg" / "iris").iterdir())


@pytest.fixture
def iris_csv(iris_frame: tuple[Any, Any], tmp_path: Path) -> Path:
    path = tmp_path / "iris.csv"
    X, y = iris_frame
    X.head(60).assign(target=y.head(60)).to_csv(path, index=False)
    return path


def test_the_attack_inside_the_registry_is_refused_by_promote_rollback_and_compare(
    runner: CliRunner, make_artifact: Any, keys: dict[str, Path], tmp_path: Path, iris_csv: Path
) -> None:
    reg = tmp_path / "reg"
    pub = ["--trusted-key", keys["pub"], "--registry", reg]
    for version in ("1.0.0", "1.1.0"):
        path = make_artifact(version=version, directory=tmp_path / version)
        sign(path, keys["key"])
        assert _run(runner, "registry", "add", path, *pub).exit_code == 0
        registered = reg / "iris" / version
        assert sorted(p.name for p in registered.iterdir())[-1] == f"iris-{version}.sig"  # kept with the version
    assert _run(runner, "registry", "promote", "iris", "1.0.0", *pub).exit_code == 0
    assert _run(runner, "registry", "promote", "iris", "1.1.0", *pub).exit_code == 0
    canary = tmp_path / "canary"
    # 1.0.0 (the rollback target) is rewritten in place, with its card; its signature kept.
    _attack(reg / "iris" / "1.0.0" / "iris-1.0.0.joblib", canary)
    _one_error_line(_run(runner, "registry", "rollback", "iris", *pub), "changed since it was signed")
    _one_error_line(_run(runner, "registry", "promote", "iris", "1.0.0", *pub), "changed since it was signed")
    # compare refuses even earlier: the rewritten card's sha256 is not the one registered.
    compare = _run(
        runner, "registry", "compare", "iris", "1.0.0", "1.1.0", "--dataset", iris_csv, "--target", "target", *pub
    )
    _one_error_line(compare, "differs from the one registered")
    assert not canary.exists()
    listed = json.loads(_run(runner, "registry", "list", "iris", "--json", "--registry", reg).stdout)
    assert {e["version"]: e["status"] for e in listed} == {"1.1.0": "production", "1.0.0": "archived"}


def test_promote_and_compare_refuse_unsigned_versions_when_trust_is_configured(
    runner: CliRunner, make_artifact: Any, keys: dict[str, Path], tmp_path: Path, iris_csv: Path
) -> None:
    reg = tmp_path / "reg"
    for version in ("1.0.0", "1.1.0"):  # registered without trust: accepted, unsigned
        path = make_artifact(version=version, directory=tmp_path / version)
        assert _run(runner, "registry", "add", path, "--registry", reg).exit_code == 0
    pub = ["--registry", reg, "--trusted-key", keys["pub"]]
    _one_error_line(_run(runner, "registry", "promote", "iris", "1.0.0", *pub), "no signature")
    compare = _run(
        runner, "registry", "compare", "iris", "1.0.0", "1.1.0", "--dataset", iris_csv, "--target", "target", *pub
    )
    _one_error_line(compare, "no signature")
    listed = json.loads(_run(runner, "registry", "list", "iris", "--json", "--registry", reg).stdout)
    assert {e["status"] for e in listed} == {"staging"}


def test_registry_add_refuses_a_wrong_signature_and_registers_nothing(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], tmp_path: Path
) -> None:
    sign(artifact, keys["other_key"])
    reg = tmp_path / "reg"
    result = _run(runner, "registry", "add", artifact, "--registry", reg, "--trusted-key", keys["pub"])
    _one_error_line(result, "untrusted key")
    assert not (reg / "iris").exists() or not any((reg / "iris").iterdir())
    assert [p.name for p in (reg / ".tmp").iterdir()] == []


def test_the_api_checks_before_unpickling(signed: Path, keys: dict[str, Path]) -> None:
    assert toolkit.load(signed, trusted_keys=[keys["pub"]]) is not None
    with pytest.raises(signing.SignatureError, match="untrusted key"):
        toolkit.load(signed, trusted_keys=[keys["other_pub"]])
    with pytest.raises(IntegrityError):
        toolkit.check_env(signed, trusted_keys=[keys["other_pub"]])
    with pytest.raises(UsageError):
        toolkit.load(signed, trusted_keys=[signed])


def test_the_environment_adds_to_the_callers_keys(
    signed: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLKIT_TRUSTED_KEYS", f"{keys['other_pub']}:{keys['pub']}")
    assert len(signing.trusted_keys_from_env([keys["pub"]])) == 2
    assert toolkit.load(signed) is not None  # trust from the environment alone
    monkeypatch.setenv("TOOLKIT_TRUSTED_KEYS", str(keys["other_pub"]))
    with pytest.raises(signing.SignatureError):
        toolkit.load(signed, trusted_keys=[])


def test_verify_with_trust_hashes_the_pickle_once(
    signed: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit import _files

    hashed: list[str] = []
    real = _files.sha256_file

    def counting(path: Path, what: str) -> tuple[str, int]:
        hashed.append(Path(path).name)
        return real(path, what)

    monkeypatch.setattr(_files, "sha256_file", counting)
    toolkit.artifact.verify(signed, trusted_keys=[keys["pub"]])
    assert hashed == ["iris-1.0.0.joblib"]  # the cards are hashed from the bytes parsed
    hashed.clear()
    sign(signed, keys["key"])
    assert sorted(hashed) == ["iris-1.0.0.card.json", "iris-1.0.0.card.md", "iris-1.0.0.joblib"]


# -- interoperability with the reference implementation (model-signing 1.1.1) -------------------

REFERENCE = "model-signing==1.1.1"


@pytest.fixture(scope="session")
def reference_cli() -> Path:
    """``model_signing`` from PyPI in its own venv under .cache/ (built once, then reused)."""
    venv = ROOT / ".cache" / "model-signing-1.1.1"
    exe = venv / "bin" / "model_signing"
    if not (venv / ".stamp").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # pyopenssl: the reference imports OpenSSL without declaring it.
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", REFERENCE, "pyopenssl"],
            check=True,
        )
        (venv / ".stamp").touch()
    return exe


def _model_dir(artifact: Path) -> Path:
    # The format's "model directory": exactly the three files (and the signature, which it ignores).
    names = {p.name for p in artifact.parent.iterdir()} - {_sig(artifact).name}
    assert names == {"iris-1.0.0.card.json", "iris-1.0.0.card.md", "iris-1.0.0.joblib"}
    return artifact.parent


@pytest.mark.slow
def test_the_reference_verifier_accepts_our_bundle(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], reference_cli: Path
) -> None:
    assert _run(runner, "sign", artifact, "--key", keys["key"]).exit_code == 0
    ok = subprocess.run(
        [str(reference_cli), "verify", "key", str(_model_dir(artifact)), "--signature", str(_sig(artifact)),
         "--public_key", str(keys["pub"])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Verification succeeded" in ok.stdout
    # ... and it is a real check: another key, or a changed card, fails there too.
    for pub, tamper in ((keys["other_pub"], False), (keys["pub"], True)):
        if tamper:
            _flip(artifact_paths(artifact).card_md, 10)
        bad = subprocess.run(
            [str(reference_cli), "verify", "key", str(artifact.parent), "--signature", str(_sig(artifact)),
             "--public_key", str(pub)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert bad.returncode == 1, bad.stdout


@pytest.mark.slow
def test_we_accept_a_bundle_the_reference_signer_wrote(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], reference_cli: Path
) -> None:
    made = subprocess.run(
        [str(reference_cli), "sign", "key", str(_model_dir(artifact)), "--signature", str(_sig(artifact)),
         "--private_key", str(keys["key"])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    assert _statement(artifact)["predicate"]["serialization"]["method"] == "files"
    ok = _run(runner, "check-env", artifact, "--trusted-key", keys["pub"])
    assert ok.exit_code == 0, ok.output
    assert toolkit.load(artifact, trusted_keys=[keys["pub"]]) is not None
    _flip(artifact_paths(artifact).card_md, 10)
    _one_error_line(_run(runner, "verify", artifact, "--trusted-key", keys["pub"]), "iris-1.0.0.card.md changed")


# -- make train / image train: signed on the host, before registering -------------------------


def _stub_training(monkeypatch: pytest.MonkeyPatch, artifact: Path, calls: list[str]) -> None:
    """The container's part, stubbed: it leaves the three files in the staging folder."""
    from toolkit import docker

    def train_in_container(tag: str, args: list[str], *, staging: Path, **_: Any) -> Path:
        calls.append(tag)
        for p in (artifact_paths(artifact).model, artifact_paths(artifact).card_json, artifact_paths(artifact).card_md):
            shutil.copy(p, staging / p.name)
        return staging / artifact.name

    monkeypatch.setattr(docker, "train_in_container", train_in_container)


def test_image_train_signs_on_the_host_before_registering(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    _stub_training(monkeypatch, artifact, calls)
    monkeypatch.chdir(tmp_path)
    env = {"TOOLKIT_SIGNING_KEY": str(keys["key"]), "TOOLKIT_TRUSTED_KEYS": str(keys["pub"])}
    result = _run(runner, "image", "train", "--dataset", "builtin:wine", "--registry", tmp_path / "reg", env=env)
    assert result.exit_code == 0, result.output
    assert calls == ["toolkit:latest"]
    version_dir = tmp_path / "reg" / "iris" / "1.0.0"
    assert (version_dir / "iris-1.0.0.sig").exists()  # registry add (trust on) accepted the signature
    assert toolkit.load(version_dir / "iris-1.0.0.joblib", trusted_keys=[keys["pub"]]) is not None


def test_image_train_without_registering_moves_the_signature_too(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_training(monkeypatch, artifact, [])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = _run(
        runner, "image", "train", "--dataset", "builtin:wine", "--no-register", "--out", out, "--sign-key", keys["key"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "iris-1.0.0.card.json",
        "iris-1.0.0.card.md",
        "iris-1.0.0.joblib",
        "iris-1.0.0.provenance.json",
        "iris-1.0.0.sig",
    ]
    assert _run(runner, "verify", out / "iris-1.0.0.joblib", "--trusted-key", keys["pub"]).exit_code == 0


def test_a_bad_signing_key_fails_before_training(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    _stub_training(monkeypatch, artifact, calls)
    monkeypatch.chdir(tmp_path)
    args = ("--dataset", "builtin:wine", "--no-register", "--out", tmp_path / "out", "--sign-key", keys["pub"])
    result = _run(runner, "image", "train", *args)
    assert result.exit_code == 2
    assert "not an unencrypted PEM private key" in result.stderr
    assert calls == []
    host = _run(runner, "train", *args)
    assert host.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_make_train_passes_the_signing_key_to_the_host_side() -> None:
    dry = subprocess.run(
        ["make", "-n", "train", "SIGNING_KEY=/secrets/ci.key"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    train_line = dry.stdout.split("image train", 1)[1]
    assert "--sign-key '/secrets/ci.key'" in train_line
    plain = subprocess.run(["make", "-n", "train"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "--sign-key" not in plain.stdout


def test_host_train_signs_before_registering(
    runner: CliRunner, keys: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOOLKIT_TRUSTED_KEYS", str(keys["pub"]))
    args = (
        "--dataset",
        "builtin:wine",
        "--model",
        "logistic_regression",
        "--cv-folds",
        2,
        "--registry",
        tmp_path / "reg",
    )
    unsigned = _run(runner, "train", *args, "--quiet")
    _one_error_line(unsigned, "no signature")  # trust on: the registry refuses what is not signed
    signed_run = _run(runner, "train", *args, "--version", "1.0.1", "--sign-key", keys["key"], "--quiet")
    assert signed_run.exit_code == 0, signed_run.output
    assert (tmp_path / "reg" / "wine" / "1.0.1" / "wine-1.0.1.sig").exists()


def test_image_check_requires_the_signature_on_the_host_first(
    runner: CliRunner, artifact: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit import docker

    gated: list[Path] = []
    monkeypatch.setattr(docker, "check_in_container", lambda image, path, **_: gated.append(path) or 0)
    _one_error_line(_run(runner, "image", "check", artifact, "--trusted-key", keys["pub"]), "no signature")
    assert gated == []  # the container never ran
    sign(artifact, keys["key"])
    ok = _run(runner, "image", "check", artifact, env={"TOOLKIT_TRUSTED_KEYS": str(keys["pub"])})
    assert ok.exit_code == 0, ok.output
    assert gated == [artifact]


def test_without_cryptography_the_gate_works_and_trust_is_one_clear_line(signed: Path, keys: dict[str, Path]) -> None:
    # An image built from a lock without `cryptography`: no trust still gates; trust says why it cannot.
    code = (
        "import sys; sys.modules['cryptography'] = None; from toolkit.cli import main; sys.argv[0] = 'toolkit'; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain = subprocess.run(
        [sys.executable, "-c", code, "check-env", str(signed)], capture_output=True, text=True, env=env
    )
    assert plain.returncode == 0, plain.stderr
    trust = [sys.executable, "-c", code, "check-env", str(signed), "--trusted-key", str(keys["pub"])]
    refused = subprocess.run(trust, capture_output=True, text=True, env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: signatures need the `cryptography` package, which is not installed here"


def test_the_card_checked_against_the_signature_is_the_card_parsed(
    signed: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race of renames between reading the cards and hashing them, made deterministic:
    # the reads see an unsigned card (and its own rendering), the files on disk are the
    # signed ones again afterwards. Hashing a second read would pass the signature and
    # trust the unsigned card.
    import dataclasses

    from toolkit import _files

    paths = toolkit.artifact.artifact_paths(signed)
    card = toolkit.artifact.read_card(signed)
    unsigned = dataclasses.replace(card, intended_use="whatever the attacker says")
    forged = {paths.card_json: unsigned.to_json(), paths.card_md: unsigned.to_markdown().encode()}
    real = _files.read_regular

    def racing(path: Path, *a: Any, **k: Any) -> bytes:
        return forged.get(Path(path)) or real(path, *a, **k)

    monkeypatch.setattr(_files, "read_regular", racing)
    for run in (
        lambda: toolkit.artifact.verify(signed, trusted_keys=[keys["pub"]]),
        lambda: toolkit.check_env(signed, trusted_keys=[keys["pub"]]),
        lambda: toolkit.load(signed, trusted_keys=[keys["pub"]]),
    ):
        with pytest.raises(signing.SignatureError, match="changed since it was signed"):
            run()
