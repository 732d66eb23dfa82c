"""What a pickle imports: recorded during the one dump, enforced on load, before any import."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import pytest
from typer.testing import CliRunner

import toolkit
from toolkit import pickle_audit
from toolkit.artifact import artifact_paths, read_card
from toolkit.card import card_from_dict
from toolkit.cli import app
from toolkit.errors import CardError, EnvironmentMismatch, IntegrityError, UsageError
from toolkit.fingerprint import canonical_name, installed_distributions
from toolkit.trust import Policy


def _object_array_pipeline(iris_frame: tuple[Any, Any]) -> Any:
    # A text column makes OneHotEncoder keep object arrays: joblib pickles those with a
    # separate, nested pickle stream, which must be recorded and restricted too.
    import numpy as np
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = iris_frame
    X = X.assign(size=np.where(X.iloc[:, 0] > 5.8, "big", "small"))
    transform = make_column_transformer((OneHotEncoder(), ["size"]), remainder=StandardScaler())
    return make_pipeline(transform, LogisticRegression(max_iter=500)).fit(X, y), X


def _policy(pairs: Any, **kw: Any) -> Policy:
    pairs = frozenset(pairs)
    return Policy(
        record=pairs,
        record_modules=frozenset(m for m, _ in pairs),
        distributions=frozenset({"scikit-learn", "numpy", "scipy", "joblib", "pandas"}),
        local_modules=frozenset(),
        **kw,
    )


class _Recording(pickle._Unpickler):
    """What a plain unpickler asks find_class for: the ground truth the audit must match."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.asked.add((module, name))
        return super().find_class(module, name)


def test_dump_records_exactly_what_loading_imports(iris_frame: tuple[Any, Any], monkeypatch: Any) -> None:
    pipeline, X = _object_array_pipeline(iris_frame)
    asked: set[tuple[str, str]] = set()
    original = pickle_audit._restricted_unpickler()

    class Spy(original):  # type: ignore[misc,valid-type]
        def find_class(self, module: str, name: str) -> Any:
            asked.add((module, name))
            return super().find_class(module, name)

    # No second pickling pass: save must not call pickle.dumps at all.
    monkeypatch.setattr(pickle, "dumps", lambda *a, **k: pytest.fail("pickled twice"))
    buffer = io.BytesIO()
    pairs = pickle_audit.dump(pipeline, buffer)  # type: ignore[arg-type]
    assert pairs == tuple(sorted(set(pairs)))
    assert ("sklearn.preprocessing._encoders", "OneHotEncoder") in pairs
    assert ("joblib.numpy_pickle", "NumpyArrayWrapper") in pairs
    loaded = Spy(io.BytesIO(buffer.getvalue()), _policy(pairs)).load()
    assert asked == set(pairs)  # every recorded pair is used, and nothing else is imported
    assert (loaded.predict(X) == pipeline.predict(X)).all()
    # The file is an ordinary joblib file.
    assert (joblib.load(io.BytesIO(buffer.getvalue())).predict(X) == pipeline.predict(X)).all()


def test_a_global_missing_from_the_card_is_refused_before_it_is_imported(
    iris_frame: tuple[Any, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    # A module that leaves a canary file when imported: refusal must come before the import.
    canary = tmp_path / "imported"
    (tmp_path / "tk_import_canary.py").write_text(
        f"open({str(canary)!r}, 'w').close()\ndef identity(x):\n    return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import tk_import_canary  # type: ignore[import-not-found]
    from sklearn.preprocessing import FunctionTransformer

    buffer = io.BytesIO()
    pairs = pickle_audit.dump(FunctionTransformer(func=tk_import_canary.identity), buffer)  # type: ignore[arg-type]
    assert ("tk_import_canary", "identity") in pairs
    canary.unlink()
    del sys.modules["tk_import_canary"]
    allowed = _policy(p for p in pairs if p[0] != "tk_import_canary")
    with pytest.raises(IntegrityError, match=r"imports tk_import_canary\.identity, which its card does not allow"):
        pickle_audit.load(buffer.getvalue(), allowed, where="x.joblib")
    assert not canary.exists() and "tk_import_canary" not in sys.modules


def _forge(artifact: Path, payload: Any, change: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Replace the artifact's pickle by ``payload`` and make the card's sha256 and size fit."""
    import hashlib

    buffer = io.BytesIO()
    joblib.dump(payload, buffer)
    blob = buffer.getvalue()
    paths = artifact_paths(artifact)
    paths.model.write_bytes(blob)
    d = json.loads(paths.card_json.read_text())
    d["artifact"].update(sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    if change is not None:
        change(d)
    paths.card_json.write_text(json.dumps(d, indent=2))
    paths.card_md.write_text(card_from_dict(d).to_markdown())


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class _Eval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, (self.code,))


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval"])
@pytest.mark.parametrize("schema", [1, 2])
def test_malicious_pickle_with_a_fitting_checksum_never_runs(
    artifact: Path, tmp_path: Path, runner: CliRunner, kind: str, schema: int
) -> None:
    canary = tmp_path / "pwned"
    payload = _System(f"touch {canary}") if kind == "os.system" else _Eval(f"open({str(canary)!r}, 'w')")
    _forge(artifact, payload, _as_schema1 if schema == 1 else None)
    assert toolkit.check_env(artifact).ok  # the checksum fits: the gate alone cannot tell
    with pytest.raises(IntegrityError, match="which its card does not allow; refused before importing it"):
        toolkit.load(artifact)
    result = runner.invoke(app, ["check-env", str(artifact), "--verify-predictions"])
    assert result.exit_code == 3, result.output
    assert "which its card does not allow" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not canary.exists()


@pytest.mark.parametrize("pair", [["os", "system"], ["posix", "system"], ["builtins", "eval"], ["subprocess", "Popen"]])
def test_a_card_listing_a_forbidden_callable_is_refused(artifact: Path, runner: CliRunner, pair: list[str]) -> None:
    paths = artifact_paths(artifact)
    d = json.loads(paths.card_json.read_text())
    pairs = sorted([*d["references"]["globals"], pair])
    d["references"]["globals"] = pairs
    d["references"]["modules"] = sorted({m for m, _ in pairs})
    paths.card_json.write_text(json.dumps(d))
    position = pairs.index(pair)
    with pytest.raises(CardError, match=rf"'references\.(globals\[{position}\]|modules\[\d+\])'.*only an attack needs"):
        read_card(artifact)
    result = runner.invoke(app, ["verify", str(artifact)])
    assert result.exit_code == 3 and "only an attack needs" in result.stderr


def test_save_refuses_a_callable_only_an_attack_needs(tmp_path: Path, iris_frame: tuple[Any, Any]) -> None:
    from sklearn.preprocessing import FunctionTransformer

    X, _ = iris_frame
    step = FunctionTransformer(func=eval).fit(X)
    with pytest.raises(UsageError, match=r"builtins\.eval, which only an attack needs"):
        pickle_audit.dump(step, io.BytesIO())  # type: ignore[arg-type]
    assert pickle_audit.denied("os", "system") and pickle_audit.denied("subprocess", "run")
    assert pickle_audit.denied("builtins", "getattr") and not pickle_audit.denied("builtins", "slice")


def _main_function(X: Any) -> Any:
    return X


def test_save_refuses_main_and_says_to_move_it_into_a_module(
    tmp_path: Path, iris_frame: tuple[Any, Any], monkeypatch: Any
) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    monkeypatch.setattr(_main_function, "__module__", "__main__")
    monkeypatch.setitem(sys.modules["__main__"].__dict__, "_main_function", _main_function)
    X, y = iris_frame
    pipeline = make_pipeline(FunctionTransformer(func=_main_function), LogisticRegression(max_iter=300)).fit(X, y)
    with pytest.raises(UsageError, match=r"references __main__\._main_function.*move it into a module"):
        toolkit.save(pipeline, tmp_path / "m-1.0.0.joblib", name="m", version="1.0.0", probe=X.head(4))
    assert list(tmp_path.iterdir()) == []


def _local_module_artifact(tmp_path: Path, iris_frame: tuple[Any, Any], monkeypatch: Any) -> tuple[Path, Path]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    code = tmp_path / "code"
    code.mkdir()
    source = code / "tk_local_steps.py"
    source.write_text("def double(X):\n    return X * 2\n")
    monkeypatch.syspath_prepend(str(code))
    sys.modules.pop("tk_local_steps", None)
    import tk_local_steps  # type: ignore[import-not-found]

    X, y = iris_frame
    pipeline = make_pipeline(FunctionTransformer(func=tk_local_steps.double), LogisticRegression(max_iter=300))
    path = tmp_path / "local-1.0.0.joblib"
    toolkit.save(pipeline.fit(X, y), path, name="local", version="1.0.0", probe=X.head(4))
    return path, source


def test_local_module_is_recorded_with_its_sha256(tmp_path: Path, iris_frame: Any, monkeypatch: Any) -> None:
    import hashlib

    path, source = _local_module_artifact(tmp_path, iris_frame, monkeypatch)
    card = read_card(path)
    assert card.references.local_modules is not None
    [local] = card.references.local_modules
    assert local.module == "tk_local_steps"
    assert local.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert "tk_local_steps" not in card.references.distributions
    for policy in ("strict", "compatible"):
        assert toolkit.check_env(path, policy=policy).ok


@pytest.mark.parametrize("what", ["changed", "missing"])
@pytest.mark.parametrize("policy", ["strict", "compatible"])
def test_changed_or_missing_local_module_is_a_difference_under_both_policies(
    tmp_path: Path, iris_frame: Any, monkeypatch: Any, runner: CliRunner, what: str, policy: str
) -> None:
    path, source = _local_module_artifact(tmp_path, iris_frame, monkeypatch)
    recorded = read_card(path).references.local_modules[0].sha256  # type: ignore[index]
    if what == "changed":
        source.write_text("def double(X):\n    return X * 3\n")
    else:
        source.unlink()
    result = runner.invoke(app, ["check-env", str(path), "--policy", policy, "--json"])
    assert result.exit_code == 1, result.output
    [diff] = json.loads(result.stdout)["differences"]
    assert diff["field"] == "local_module" and diff["name"] == "tk_local_steps"
    assert diff["expected"] == recorded and (diff["actual"] is None) == (what == "missing")
    text = runner.invoke(app, ["check-env", str(path), "--policy", policy])
    assert text.exit_code == 1 and "tk_local_steps" in text.stdout
    with pytest.raises(EnvironmentMismatch, match="tk_local_steps"):
        toolkit.load(path, policy=policy)


def _as_schema1(d: dict[str, Any]) -> None:
    d["schema_version"] = 1
    for key in ("image", "system_packages", "threads"):  # schema 3
        d["environment"].pop(key)
    d.pop("reference")
    del d["environment"]["lock"], d["references"]["globals"], d["references"]["local_modules"]
    del d["training"], d["lineage"]


def test_what_a_distributions_metadata_says_is_read_again_once_its_folder_changes(tmp_path: Path) -> None:
    # Import names and requirements are remembered per state of the metadata folder (pip
    # replaces the folder on every install, upgrade or removal); a new state is read afresh.
    from toolkit import trust

    folder = tmp_path / "demo-1.0.dist-info"

    def install(record: str, requires: str, mtime_ns: int) -> metadata.Distribution:
        folder.mkdir(exist_ok=True)
        (folder / "METADATA").write_text(f"Name: demo\nVersion: 1.0\nRequires-Dist: {requires}\n\nlong text\n")
        (folder / "RECORD").write_text(record)
        os.utime(folder, ns=(mtime_ns, mtime_ns))
        return metadata.PathDistribution(folder)

    first = install("demo/__init__.py,,\ndemo_ext.cpython-311-x86_64-linux-gnu.so,,\n", "numpy", 10**18)
    assert trust.provided_names(first, {"demo", "demo_ext", "other"}) == {"demo", "demo_ext"}
    assert trust.from_metadata(first, "requirements", pickle_audit._unconditional_requirements) == {"numpy"}
    second = install("other.py,,\n", "scipy; extra == 'fast'", 10**18 + 1)
    assert trust.provided_names(second, {"demo", "other"}) == {"other"}
    assert trust.from_metadata(second, "requirements", pickle_audit._unconditional_requirements) == set()


def test_distributions_agree_with_importlib_and_are_closed(tiny_pipeline: Any) -> None:
    pairs = pickle_audit.dump(tiny_pipeline, io.BytesIO())  # type: ignore[arg-type]
    modules = {m for m, _ in pairs}
    found, provided = pickle_audit.distributions_for(modules, installed_distributions())
    providers = metadata.packages_distributions()
    direct = {canonical_name(d) for m in modules for d in providers.get(m.split(".")[0], ())}
    assert direct <= set(found)
    assert {"sklearn", "numpy", "joblib"} <= provided
    # scikit-learn's own requirements come along: unpickling needs them too.
    assert {"scikit-learn", "scipy", "joblib", "threadpoolctl", "numpy"} <= set(found)
    assert "pytest" not in found
