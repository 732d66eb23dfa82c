"""`image train | check | predict | build` as a person sees them: host paths, one summary, exit codes.

No engine: the docker SDK seam is the fake client of test_docker_unit.py, whose containers here
also write what the real ones would (the staged artifact) and print what they would (with
container paths, which must never reach the user).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_docker_unit import PINNED, REPO, FakeClient, FakeContainer, use_client  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.docker.paths import PathMap, Rewriter

IMAGE_ID = "sha256:" + "c" * 64  # what FakeClient's images.get answers
CONTAINER_PATHS = ("/out/", "/artifact/", "/work/", "/input/", "/in/")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- PathMap and Rewriter ----------------------------------------------------------------------


def test_path_map_rewrites_only_where_a_path_starts() -> None:
    paths = PathMap(prefixes={"/artifact/": "models/m/1.0.0/", "/work/": ""})
    assert paths.rewrite(b"MATCH /artifact/m.joblib and '/work/data/x.csv'") == (
        b"MATCH models/m/1.0.0/m.joblib and 'data/x.csv'"
    )
    # Inside another path or word it is not a mount: left alone.
    assert paths.rewrite(b"/srv/artifact/x a/work/b") == b"/srv/artifact/x a/work/b"
    assert paths.rewrite_text("(/artifact/x)") == "(models/m/1.0.0/x)"


def test_path_map_escapes_for_json_and_for_terminals() -> None:
    host = 'we"ird\x1b[31m/'
    as_json = PathMap(prefixes={"/artifact/": host}, as_json=True)
    assert json.loads(as_json.rewrite(b'{"artifact": "/artifact/m.joblib"}'))["artifact"] == host + "m.joblib"
    as_text = PathMap(prefixes={"/artifact/": host})
    assert as_text.rewrite(b"/artifact/m") == b'we"ird\\x1b[31m/m'  # no control reaches the terminal


def test_rewriter_finds_a_path_split_across_chunks() -> None:
    seen: list[tuple[str, bytes]] = []
    rewriter = Rewriter(PathMap(prefixes={"/out/": ""}), lambda s, c: seen.append((s, c)), drop=frozenset({"stdout"}))
    for chunk in (b"saved /o", b"ut/m.jobl", b"ib\nspinner\r", b"tail /out/x"):
        rewriter("stderr", chunk)
    rewriter("stdout", b"dropped /out/m\n")
    rewriter.flush()
    assert b"".join(c for _, c in seen) == b"saved m.joblib\nspinner\rtail x"
    assert {s for s, _ in seen} == {"stderr"}


# --- image check --------------------------------------------------------------------------------


def _artifact(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(mode=0o755)
    artifact = folder / "m-1.0.0.joblib"
    artifact.write_bytes(b"x")
    (folder / "m-1.0.0.card.json").write_text("{}")
    for path in folder.iterdir():
        path.chmod(0o644)
    return artifact


@pytest.mark.parametrize("as_json", [False, True])
def test_image_check_of_a_missing_artifact_is_exit_3_like_check_env(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    tmp_path: Path,
    as_json: bool,
) -> None:
    fake = use_client(FakeClient())
    missing = tmp_path / "gone-1.0.0.joblib"
    args = ["image", "check", str(missing), "--image", "toolkit:fake"] + (["--json"] if as_json else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert _lines(result.stderr) == [f"error: {missing}: no such artifact file"]
    if as_json:
        report = json.loads(result.stdout)
        assert report["exit_code"] == 3 and report["ok"] is False
        assert report["image"] == {"tag": "toolkit:fake", "id": None}
    assert fake.calls == []  # no container for a file that is not there


@pytest.mark.parametrize("code", [0, 1])
def test_image_check_text_names_host_paths_and_the_image(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
) -> None:
    artifact = _artifact(tmp_path)
    monkeypatch.chdir(tmp_path)
    gate = (
        b"MISMATCH m 1.0.0 under policy 'strict'\n"
        b"what to do: run the gate there (toolkit image check /artifact/m-1.0.0.joblib)\n"
    )
    use_client(FakeClient(status={"StatusCode": code}, output=[(gate[:40], None), (gate[40:], b"warn /artifact/x\n")]))
    result = CliRunner().invoke(app, ["image", "check", "models/m-1.0.0.joblib", "--image", "toolkit:fake"])
    assert result.exit_code == code, result.output
    assert "toolkit image check models/m-1.0.0.joblib)" in result.stdout
    assert "warn models/x" in result.stderr
    assert not any(p in result.output for p in CONTAINER_PATHS), result.output
    assert _lines(result.stdout)[-1] == f"checked in image toolkit:fake ({IMAGE_ID})"
    assert artifact.exists()


def test_image_check_json_names_host_paths_and_the_image(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    tmp_path: Path,
) -> None:
    artifact = _artifact(tmp_path)
    report = {"ok": True, "exit_code": 0, "artifact": "/artifact/m-1.0.0.joblib", "remedies": []}
    data = json.dumps(report, indent=2).encode()
    use_client(FakeClient(output=[(data[:15], None), (data[15:], None)]))
    result = CliRunner().invoke(app, ["image", "check", str(artifact), "--image", "toolkit:fake", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # still one JSON object
    assert printed["artifact"] == str(artifact)
    assert printed["image"] == {"tag": "toolkit:fake", "id": IMAGE_ID}


# --- image train ----------------------------------------------------------------------------------


class _TrainingClient(FakeClient):
    """A container that 'trains': it stages the artifact's files in /out and prints as toolkit does."""

    def __init__(self, artifact: Path, **kwargs: Any) -> None:
        self.artifact = artifact
        super().__init__(
            output=[
                (None, b"\xe2\x9c\x93 data     /work/data/credit.csv: 2000 rows (0.1s)\n"),
                (None, b"\xe2\x9c\x93 save     /out/" + artifact.name.encode() + b" (0.2s)\n"),
                (b"  artifact  /out/" + artifact.name.encode() + b"\n  not registered (--no-register)\n", None),
            ],
            **kwargs,
        )

    def _create(self, image: str, **kwargs: Any) -> FakeContainer:
        staging = next(Path(src) for src, bind in kwargs["volumes"].items() if bind["bind"] == "/out")
        for path in self.artifact.parent.glob(self.artifact.name.removesuffix(".joblib") + ".*"):
            shutil.copy(path, staging / path.name)
        return super()._create(image, **kwargs)


def test_image_train_tells_one_story_with_host_paths(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work = tmp_path / "project"  # not "work": that is a container path the output must not show
    work.mkdir()
    monkeypatch.chdir(work)
    fake = use_client(_TrainingClient(artifact))
    registry = work / "reg"
    args = ["image", "train", "--image", "toolkit:fake", "--dataset", "builtin:wine", "--registry", str(registry)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not any(p in result.output for p in CONTAINER_PATHS), result.output
    assert "not registered" not in result.output
    assert "✓ save     iris-1.0.0.joblib" in result.stderr and "✓ data     data/credit.csv" in result.stderr
    lines = _lines(result.stdout)
    assert f"  artifact  {registry}/iris/1.0.0/iris-1.0.0.joblib" in lines
    assert lines[-1] == f"registered iris 1.0.0 (staging) in {registry}"
    assert (registry / "iris" / "1.0.0" / "iris-1.0.0.joblib").is_file()
    (_, _, kwargs) = fake.calls[0]
    assert kwargs["tty"] is False  # CliRunner's stdout is no terminal
    assert kwargs["environment"]["TOOLKIT_TRAIN_SUMMARY"] == "0"
    quiet = CliRunner().invoke(app, [*args[:-2], "--registry", str(work / "reg2"), "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert _lines(quiet.output) == [f"{work}/reg2/iris/1.0.0/iris-1.0.0.joblib"]


def test_image_train_with_a_key_ends_with_registered_and_signed(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from toolkit import signing

    signing.keygen(tmp_path / "ours")
    monkeypatch.chdir(tmp_path)
    use_client(_TrainingClient(artifact))
    registry = tmp_path / "reg"
    args = ["image", "train", "--image", "toolkit:fake", "--dataset", "builtin:wine", "--registry", str(registry)]
    result = CliRunner().invoke(app, [*args, "--sign-key", str(tmp_path / "ours.key")])
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    version_dir = registry / "iris" / "1.0.0"
    assert f"  signed    {version_dir}/iris-1.0.0.sig (key {tmp_path / 'ours.key'})" in lines
    assert lines[-1] == f"registered iris 1.0.0 (staging, signed) in {registry}"
    assert (version_dir / "iris-1.0.0.sig").is_file()


def test_make_check_env_uses_the_image_there_is() -> None:
    dry = subprocess.run(
        ["make", "-n", "-o", ".venv/.stamp", "check-env", "MODEL=m.joblib", "IMAGE=toolkit:imageux-none"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        # As a user runs it: not as a sub-make of `make test` (no MAKELEVEL, no inherited flags).
        env={k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")},
    )
    # The gate runs in the image that exists; a build only when there is none, and it says so.
    guard = dry.stdout.index("docker image inspect toolkit:imageux-none")
    assert "no image toolkit:imageux-none here: building it first (make image)" in dry.stdout[guard:]
    assert (
        dry.stdout.rstrip().splitlines()[-1] == ".venv/bin/toolkit image check --image toolkit:imageux-none 'm.joblib'"
    )
    assert "image build" not in dry.stdout[:guard]


# --- image predict -----------------------------------------------------------------------------------


def _input(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    path = data / "in.csv"
    path.write_text("id,x\na,1\n")
    path.chmod(0o644)
    return path


def test_image_predict_writes_the_containers_csv_on_the_host(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    tmp_path: Path,
) -> None:
    artifact, source = _artifact(tmp_path), _input(tmp_path)
    csv = b"id,prediction\na,1\n"
    fake = use_client(FakeClient(output=[(csv[:5], b"note: ignoring /input/in.csv's x\n"), (csv[5:], None)]))
    out = tmp_path / "scores.csv"
    args = ["image", "predict", str(artifact), str(source), "--id", "id", "--out", str(out), "--image", "toolkit:fake"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == csv
    assert f"note: ignoring {source}'s x" in result.stderr
    assert _lines(result.stderr)[-1] == f"wrote 1 predictions to {out} (in image toolkit:fake, {IMAGE_ID})"
    (_, _, kwargs) = fake.calls[0]
    assert kwargs["command"] == [
        "predict", "/artifact/m-1.0.0.joblib", "/input/in.csv", "--policy", "strict", "--id", "id"
    ]  # fmt: skip
    assert kwargs["network_mode"] == "none" and kwargs["read_only"] is True
    assert kwargs["volumes"] == {
        str(artifact.parent): {"bind": "/artifact", "mode": "ro"},
        str(source.parent): {"bind": "/input", "mode": "ro"},
    }
    to_stdout = CliRunner().invoke(app, [*args[:-4], "--image", "toolkit:fake"])
    assert to_stdout.exit_code == 0 and to_stdout.stdout == csv.decode()


@pytest.mark.parametrize(("code", "exit_code"), [(2, 2), (1, 1), (3, 3), (137, 5)])
def test_image_predict_failure_keeps_the_code_and_writes_nothing(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    tmp_path: Path,
    code: int,
    exit_code: int,
) -> None:
    artifact, source = _artifact(tmp_path), _input(tmp_path)
    message = b"error: --id 'nope': no such column in /input/in.csv\n"
    use_client(FakeClient(status={"StatusCode": code}, output=[(b"partial,csv\n", message)]))
    out = tmp_path / "scores.csv"
    args = ["image", "predict", str(artifact), str(source), "--out", str(out), "--image", "toolkit:fake"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == exit_code, result.output
    lines = _lines(result.stderr)
    if code == 137:
        assert lines[-1] == "error: predict in toolkit:fake ended with exit code 137 (killed or crashed)"
    else:
        assert lines == [f"error: --id 'nope': no such column in {source}"]  # the container's one line
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data", "models"]


def test_image_predict_missing_files(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    tmp_path: Path,
) -> None:
    fake = use_client(FakeClient())
    artifact, source = _artifact(tmp_path), _input(tmp_path)
    gone = CliRunner().invoke(app, ["image", "predict", str(tmp_path / "x.joblib"), str(source)])
    assert gone.exit_code == 3 and _lines(gone.stderr) == [f"error: {tmp_path / 'x.joblib'}: no such artifact file"]
    no_input = CliRunner().invoke(app, ["image", "predict", str(artifact), str(tmp_path / "none.csv")])
    assert no_input.exit_code == 2 and _lines(no_input.stderr) == [
        f"error: {tmp_path / 'none.csv'}: no such input file"
    ]
    over_input = CliRunner().invoke(app, ["image", "predict", str(artifact), str(source), "--out", str(source)])
    assert over_input.exit_code == 2 and "is the input file" in over_input.stderr
    assert fake.calls == []


# --- image build: steps only with -v -------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [False, True])
def test_image_build_shows_steps_only_with_verbose(
    use_client: Callable[[FakeClient], FakeClient],  # noqa: F811
    tmp_path: Path,
    verbose: bool,
) -> None:
    wheels = tmp_path / "wheelhouse"
    wheels.mkdir()
    (wheels / "typing_extensions-4.16.0-py3-none-any.whl").write_bytes(b"w")
    lock = tmp_path / "requirements.lock"
    lock.write_text("typing-extensions==4.16.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    use_client(FakeClient(build_log=[{"stream": "Step 1/20 : FROM base\n"}, {"aux": {"ID": IMAGE_ID}}]))
    args = ["image", "build", "--base-image", PINNED, "--context", str(REPO), "--lock", str(lock)]
    args += ["--wheelhouse", str(wheels), "--tag", "toolkit:fake"] + (["-v"] if verbose else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert ("Step 1/20" in result.output) is verbose
    assert _lines(result.stdout)[-1].startswith("built toolkit:fake (sha256:cccccccccccc) in ")
