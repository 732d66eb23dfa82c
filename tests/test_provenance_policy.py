"""The README's Kyverno-style policy example parses, and reads fields our provenance really has."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from toolkit import signing
from toolkit.artifact import artifact_paths
from toolkit.provenance.attest import attest
from toolkit.provenance.statement import BUILD_TYPE, PREDICATE_TYPE

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "docs" / "policies" / "kyverno-model-provenance.yaml"
# The one JMESPath shape the example uses: a dependency by name, then its sha256.
_DEP = re.compile(r"^\{\{ buildDefinition\.resolvedDependencies\[\?name=='([^']+)'\]\.digest\.sha256 \| \[0\] \}\}$")


def _conditions() -> list[dict[str, Any]]:
    import yaml

    policy = yaml.safe_load(POLICY.read_text())
    assert policy["apiVersion"] == "kyverno.io/v1" and policy["kind"] == "ClusterPolicy"
    [rule] = policy["spec"]["rules"]
    [verify] = rule["verifyImages"]
    [attestation] = verify["attestations"]
    assert attestation["type"] == PREDICATE_TYPE
    keys = attestation["attestors"][0]["entries"][0]["keys"]
    assert "BEGIN PUBLIC KEY" in keys["publicKeys"] and keys["rekor"]["ignoreTlog"] is True
    [block] = attestation["conditions"]
    return list(block["all"])


def test_the_policy_parses_and_names_our_predicate_type_and_build_type() -> None:
    conditions = _conditions()
    assert {"key": "{{ buildDefinition.buildType }}", "operator": "Equals", "value": BUILD_TYPE} in conditions
    names = [m.group(1) for c in conditions if (m := _DEP.match(c["key"]))]
    assert names == ["base-image", "requirements.lock", "dataset"]


def test_every_condition_finds_a_digest_in_a_real_provenance(
    make_artifact: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLKIT_BASE_IMAGE", "127.0.0.1:5000/python-base@sha256:" + "ab" * 32)
    monkeypatch.setenv("TOOLKIT_LOCK_FILE", str(ROOT / "requirements.lock"))
    monkeypatch.delenv("TOOLKIT_LOCK_SHA256", raising=False)
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
    model = Path(make_artifact(training=recipe))
    signing.keygen(tmp_path / "k")
    attest(model, tmp_path / "k.key")
    envelope = json.loads(artifact_paths(model).provenance.read_bytes())
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]  # what `cosign attest` would carry
    found = {}
    for condition in _conditions():
        m = _DEP.match(condition["key"])
        if m is None:
            assert condition["key"] == "{{ buildDefinition.buildType }}"
            assert predicate["buildDefinition"]["buildType"] == condition["value"]
            continue
        [dep] = [d for d in predicate["buildDefinition"]["resolvedDependencies"] if d["name"] == m.group(1)]
        found[m.group(1)] = dep["digest"]["sha256"]
        assert re.fullmatch(r"[0-9a-f]{64}", condition["value"])  # a placeholder of the right shape
    assert found == {
        "base-image": "ab" * 32,
        "requirements.lock": hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest(),
        "dataset": sha,
    }
