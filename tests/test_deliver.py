"""The delivery workflow, written once: sign, then register or move into --out (toolkit.workflows.deliver)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from toolkit import signing
from toolkit.artifact import artifact_paths
from toolkit.errors import IntegrityError, RegistryError, UsageError
from toolkit.registry import Registry
from toolkit.workflows.deliver import deliver, deliver_all, destination, move_into


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_moving_takes_the_signature_along_and_is_a_no_op_in_place(artifact: Path, tmp_path: Path) -> None:
    key, _ = signing.keygen(tmp_path / "k")
    dest = destination(register=False, registry=None, out=tmp_path / "out", sign_key=key)
    done = deliver(artifact, dest)
    assert done.entry is None and done.signed and done.path == tmp_path / "out" / artifact.name
    assert _files(tmp_path / "out") == [
        "iris-1.0.0.card.json",
        "iris-1.0.0.card.md",
        "iris-1.0.0.joblib",
        "iris-1.0.0.provenance.json",  # a signing key also attests (toolkit.provenance)
        "iris-1.0.0.sig",
    ]
    assert done.note() == f"wrote iris 1.0.0 to {tmp_path / 'out'} (not registered, signed)"
    assert move_into(done.path, tmp_path / "out") == done.path  # already there: nothing moves, nothing refused


def test_moving_onto_an_existing_file_moves_nothing(artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / artifact_paths(artifact).card_md.name).write_text("mine")
    with pytest.raises(UsageError, match="already exists; not overwriting it"):
        move_into(artifact, out)
    assert _files(out) == ["iris-1.0.0.card.md"] and (out / "iris-1.0.0.card.md").read_text() == "mine"
    assert artifact.exists()  # the staged files stay where they were


def test_registering_says_where_and_refuses_a_registered_version_before_any_work(
    artifact: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    done = deliver(artifact, destination(register=True, registry=root, out=tmp_path / "out"), reason="why")
    assert done.entry is not None and done.path == root / "iris" / "1.0.0" / "iris-1.0.0.joblib"
    assert done.note() == f"registered iris 1.0.0 (staging) in {root}"
    assert not (tmp_path / "out").exists()
    with pytest.raises(RegistryError, match="already registered"):
        destination(register=True, registry=root, out=tmp_path / "out", unregistered=("iris", "1.0.0"))


def test_a_bad_signing_key_fails_when_the_destination_is_made(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.key"
    bogus.write_text("not a key")
    with pytest.raises(UsageError, match="not an unencrypted PEM private key"):
        destination(register=True, registry=tmp_path / "models", out=tmp_path, sign_key=bogus)
    assert not (tmp_path / "models").exists()


def test_every_artifact_is_signed_before_the_first_is_registered(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    good = make_artifact("iris", "1.0.0", directory=tmp_path / "a")
    bad = make_artifact("iris", "1.1.0", directory=tmp_path / "b")
    with bad.open("ab") as f:
        f.write(b"tampered")
    key, _ = signing.keygen(tmp_path / "k")
    root = tmp_path / "models"
    dest = destination(register=True, registry=root, out=tmp_path / "out", sign_key=key)
    with pytest.raises(IntegrityError, match="refusing to sign it"):
        list(deliver_all([good, bad], dest))
    with Registry(root) as registry:
        assert registry.list_names() == []  # nothing half delivered
