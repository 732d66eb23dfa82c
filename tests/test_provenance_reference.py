"""Reference parsers accept our provenance: the in-toto project's DSSE verifier (securesystemslib) checks
the envelope with our public key, and the in-toto attestation bindings parse the Statement and the SLSA
provenance v1 predicate strictly (protobuf JSON: an unknown or mistyped field is an error).

cosign (key mode, no transparency log) would be the other reference, but it is on neither PyPI nor
Debian bookworm, so it cannot be installed here.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from toolkit import signing
from toolkit.artifact import artifact_paths
from toolkit.provenance.attest import attest


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    signing.keygen(d / "ours")
    signing.keygen(d / "theirs")
    return {"key": d / "ours.key", "pub": d / "ours.pub", "other_pub": d / "theirs.pub"}


@pytest.fixture
def retrained(make_artifact: Any, keys: dict[str, Path]) -> Path:
    """A model with lineage and a recipe: the statement's every kind of dependency but the base."""
    import hashlib

    sha = hashlib.sha256(b"iris").hexdigest()
    recipe = {
        "dataset": {"source": "builtin:iris", "sha256": sha},
        "target": "target",
        "model": "logistic_regression",
        "params": {},
        "preprocessing": {},
        "test_size": 0.2,
        "seed": 1,
        "cv_folds": 3,
    }
    path = Path(make_artifact(version="1.1.0", training=recipe, lineage={"parent": "iris@1.0.0", "reason": "drift"}))
    attest(path, keys["key"])
    return path


def _envelope(artifact: Path) -> dict[str, Any]:
    return dict(json.loads(artifact_paths(artifact).provenance.read_bytes()))


def _reference_key(pub: Path) -> Any:
    """Our public key as securesystemslib's SSlibKey, under the key id our envelopes name it by."""
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import SSlibKey

    public = serialization.load_pem_public_key(pub.read_bytes())
    key = SSlibKey.from_crypto(public, scheme="ecdsa-sha2-nistp256")  # type: ignore[arg-type]
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SSlibKey(hashlib.sha256(pem).hexdigest(), key.keytype, key.scheme, key.keyval)


def test_securesystemslib_verifies_our_dsse_envelope(retrained: Path, keys: dict[str, Path]) -> None:
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    envelope = Envelope.from_dict(_envelope(retrained))
    accepted = envelope.verify([_reference_key(keys["pub"])], 1)
    assert len(accepted) == 1
    assert envelope.payload_type == "application/vnd.in-toto+json"
    with pytest.raises(VerificationError):  # another key: the reference refuses it too
        Envelope.from_dict(_envelope(retrained)).verify([_reference_key(keys["other_pub"])], 1)
    edited = _envelope(retrained)
    statement = json.loads(base64.b64decode(edited["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "00" * 32
    edited["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    with pytest.raises(VerificationError):
        Envelope.from_dict(edited).verify([_reference_key(keys["pub"])], 1)


def test_in_toto_attestation_bindings_parse_statement_and_slsa_predicate(retrained: Path) -> None:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    payload = base64.b64decode(_envelope(retrained)["payload"])
    statement = Statement.copy_from_pb(json_format.Parse(payload, statement_pb2.Statement()))
    statement.validate()
    assert statement.pb.predicate_type == "https://slsa.dev/provenance/v1"
    assert len(statement.pb.subject) == 3
    predicate = json_format.ParseDict(json.loads(payload)["predicate"], provenance_pb2.Provenance())
    deps = predicate.build_definition.resolved_dependencies
    for dep in deps:
        ResourceDescriptor.copy_from_pb(dep).validate()
    assert {d.name for d in deps} >= {"dataset", "parent-model"}
    assert predicate.build_definition.build_type == "urn:toolkit:build-type:train:v1"
    assert predicate.run_details.builder.id.startswith("urn:toolkit:builder")
    assert predicate.run_details.metadata.started_on.seconds > 0
    assert predicate.build_definition.external_parameters["recipe"]["model"] == "logistic_regression"


def test_the_bindings_refuse_what_slsa_does_not_allow(retrained: Path) -> None:
    """The check above could fail: a predicate with a field SLSA v1 lacks, or a bad time, is refused."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2

    predicate = json.loads(base64.b64decode(_envelope(retrained)["payload"]))["predicate"]
    for broken in (
        {**predicate, "buildConfig": {}},
        {**predicate, "runDetails": {**predicate["runDetails"], "metadata": {"startedOn": "yesterday"}}},
    ):
        with pytest.raises(json_format.ParseError):
            json_format.ParseDict(broken, provenance_pb2.Provenance())
