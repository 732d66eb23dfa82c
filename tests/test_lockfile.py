"""A lock is data, not pip options: one rule (toolkit.lockfile) for every lock the toolkit runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from toolkit.artifact import artifact_paths, read_card
from toolkit.card import parse_card
from toolkit.cli import app
from toolkit.errors import UsageError
from toolkit.lockfile import parse_lock
from toolkit.registry import Registry
from toolkit.upgrade.runtime_image import ensure_wheels, rebuild_source

ROOT = Path(__file__).resolve().parents[1]
H = "--hash=sha256:" + "a" * 64
H2 = "--hash=sha256:" + "b" * 64
GOOD = (
    f"# a comment\n\nnumpy==2.0.0 \\\n    {H} \\\n    {H2}\n    # via x\n"
    f"rich[jupyter]==13.0 ; python_version >= '3.9' {H}\n"
)

BASE = ["--base-image", "b@sha256:" + "0" * 64]
BAD = {
    "index-url with credentials": (f"--index-url http://user:pw@127.0.0.1:9/simple\nnumpy==2.0 {H}\n", "--index-url"),
    "extra-index-url": (f"numpy==2.0 {H}\n--extra-index-url=http://127.0.0.1:9/\n", "--extra-index-url"),
    "find-links": (f"--find-links /tmp\nnumpy==2.0 {H}\n", "--find-links"),
    "trusted-host": (f"--trusted-host evil\nnumpy==2.0 {H}\n", "--trusted-host"),
    "requirement file": (f"-r /etc/hostname\nnumpy==2.0 {H}\n", "-r is a pip option"),
    "constraint file": (f"-c /etc/hostname\nnumpy==2.0 {H}\n", "-c is a pip option"),
    "editable": (f"-e .\nnumpy==2.0 {H}\n", "-e is a pip option"),
    "option in a continuation": (f"numpy==2.0 \\\n    {H} \\\n    --index-url http://x/\n", "line 1"),
    "url": (f"https://127.0.0.1:9/numpy-2.0-py3-none-any.whl {H}\n", "a URL"),
    "direct reference": (f"numpy @ https://127.0.0.1:9/n.whl {H}\n", "a URL"),
    "path": (f"./numpy-2.0-py3-none-any.whl {H}\n", "a path"),
    "no hash": ("numpy==2.0\n", "without --hash"),
    "range": (f"numpy>=2.0 {H}\n", "not a name==version"),
    "nothing": ("# only comments\n", "no pinned requirements"),
}


def test_the_repository_locks_are_data() -> None:
    for name in ("requirements.lock", "requirements-dev.lock"):
        pins = parse_lock((ROOT / name).read_text(), where=name)
        assert pins and all(p.hashes for p in pins)
    numpy, rich = parse_lock(GOOD, where="x")
    assert (numpy.name, numpy.version, len(numpy.hashes), numpy.line) == ("numpy", "2.0.0", 2, 3)
    assert rich.marker == "python_version >= '3.9'"


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_anything_but_hashed_pins_is_one_usage_error(case: str) -> None:
    text, phrase = BAD[case]
    with pytest.raises(UsageError, match=r"^c\.lock: ") as e:
        parse_lock(text, where="c.lock")
    message = str(e.value)
    assert phrase in message and "\n" not in message
    assert "pw" not in message and "/etc/hostname" not in message  # never echoed


def test_upgrade_check_refuses_a_lock_with_options_before_anything_runs(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"ran {a}"))
    lock = tmp_path / "candidate.lock"
    lock.write_text(f"--index-url http://user:pw@127.0.0.1:9/simple\nnumpy==2.0 {H}\n")
    with Registry(tmp_path / "reg") as reg:
        reg.add(artifact)
    result = CliRunner().invoke(
        app,
        ["upgrade-check", "--lock", str(lock), "--registry", str(tmp_path / "reg"), "--stage", "staging", *BASE],
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {lock}: line 1: --index-url is a pip option (not passed on); " + (
        "a lock holds only name==version lines with --hash"
    )
    with pytest.raises(UsageError, match="-r is a pip option"):
        lock.write_text(f"-r /etc/hostname\nnumpy==2.0 {H}\n")
        ensure_wheels(lock, tmp_path / "wheels")  # never reaches pip download


def test_image_rebuild_refuses_a_cards_lock_with_options(artifact: Path) -> None:
    paths = artifact_paths(artifact)
    d = json.loads(paths.card_json.read_text())
    lock = f"--extra-index-url http://127.0.0.1:9/\nnumpy==2.0 {H}\n"
    d["environment"].update(
        base_image="127.0.0.1:5000/base@sha256:" + "1" * 64,
        lock=lock,
        lock_sha256=hashlib.sha256(lock.encode()).hexdigest(),
    )
    paths.card_json.write_text(json.dumps(d, indent=2))
    paths.card_md.write_text(parse_card(paths.card_json.read_bytes()).to_markdown())
    with pytest.raises(UsageError, match=r"the card's lock: line 1: --extra-index-url is a pip option"):
        rebuild_source(read_card(artifact))
    result = CliRunner().invoke(app, ["image", "rebuild", str(artifact)])
    assert result.exit_code == 2 and "--extra-index-url is a pip option" in result.output, result.output
