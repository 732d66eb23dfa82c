"""Long steps' progress: one line per stage in a log, n/N redrawn on one line on a terminal.

The seams: the process whose lines are counted (a stand-in printing pip's ``Collecting`` lines)
and stderr's isatty; what is asserted is what a log or a terminal receives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from toolkit.cli._output import BuildProgress
from toolkit.upgrade import runtime_image

BUILD_TEXT = [
    "downloading the 3 wheels of requirements.lock into /cache/wheels\n",
    "wheel 1/3 numpy==2.3.5\n",
    "wheel 2/3 scipy==1.16.3\n",
    "wheel 3/3 lightgbm==4.6.0\n",
    "system package 1/1: apt-get download libgomp1=12.2.0-14\n",
    "Step 1/12 : FROM 127.0.0.1:5000/python-base@sha256:abc\n",
    " ---> Running in 1234\n",
    "Step 2/12 : COPY requirements.lock /tmp/\n",
]


def _feed(progress: BuildProgress) -> None:
    for text in BUILD_TEXT:
        progress(text)
    progress.done()


def test_in_a_log_a_build_is_one_line_per_stage(capsys: pytest.CaptureFixture[str]) -> None:
    _feed(BuildProgress(quiet=False, verbose=False))
    assert capsys.readouterr().err.splitlines() == [
        "  downloading the 3 wheels of requirements.lock into /cache/wheels",
        "  system package 1/1: apt-get download libgomp1=12.2.0-14",
    ]


def test_on_a_terminal_the_wheel_and_the_step_are_one_redrawn_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _feed(BuildProgress(quiet=False, verbose=False))
    err = capsys.readouterr().err
    assert "\r\x1b[2K  wheel 1/3 numpy==2.3.5" in err and "\r\x1b[2K  wheel 3/3 lightgbm==4.6.0" in err
    assert "\r\x1b[2K  Step 2/12 : COPY requirements.lock /tmp/" in err
    assert "Running in" not in err
    # What the terminal finally shows: every redrawn line erased, the stage lines kept.
    shown = [line.rsplit("\x1b[2K", 1)[-1] for line in err.split("\n")]
    assert [line for line in shown if line.strip()] == [
        "  downloading the 3 wheels of requirements.lock into /cache/wheels",
        "  system package 1/1: apt-get download libgomp1=12.2.0-14",
    ]
    assert err.endswith("\r\x1b[2K")  # done() leaves no half line behind


def test_verbose_shows_everything_and_quiet_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _feed(BuildProgress(quiet=False, verbose=True))
    assert capsys.readouterr().err == "".join(BUILD_TEXT)
    _feed(BuildProgress(quiet=True, verbose=True))
    assert capsys.readouterr().err == ""


def test_the_download_counts_the_pins_pip_takes(tmp_path: Path) -> None:
    script = (
        "print('Looking in indexes: https://pypi.org/simple');"
        "print('Collecting numpy==2.3.5 (from -r requirements.lock (line 3))');"
        "print('  Downloading numpy-2.3.5-cp311-cp311-manylinux_2_28_x86_64.whl (16.6 MB)');"
        "print('Collecting scipy==1.16.3 (from -r requirements.lock (line 9))');"
        "print('  File was already downloaded /cache/scipy-1.16.3.whl');"
        "import sys; sys.exit(3)"
    )
    seen: list[tuple[int, str]] = []
    done = runtime_image._pip_lines([sys.executable, "-c", script], {}, lambda n, what: seen.append((n, what)))
    assert seen == [(1, "numpy==2.3.5"), (2, "scipy==1.16.3")]
    assert done.returncode == 3 and done.tail[-1] == "  File was already downloaded /cache/scipy-1.16.3.whl"
