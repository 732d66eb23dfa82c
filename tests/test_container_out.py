"""Containers never touch the host outside what they were given: --out checks, staging, and the
copy back of regular files only (toolkit.docker.outdir), with a real engine for image run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolkit import docker as tdocker
from toolkit.docker.outdir import check_out_dir, collect, place
from toolkit.docker.usercode import run_command
from toolkit.errors import DockerError, UsageError

REPO = Path(__file__).resolve().parents[1]


def _snapshot(*roots: Path) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    """Every path under ``roots`` (links not followed): owner, group, mode, and content or target."""
    seen: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [".", *dirnames, *filenames]:
                path = os.path.normpath(os.path.join(dirpath, name))
                st = os.lstat(path)
                if os.path.islink(path):
                    content: bytes | str | None = os.readlink(path)
                elif os.path.isfile(path):
                    content = Path(path).read_bytes()
                else:
                    content = None
                seen[path] = (st.st_uid, st.st_gid, st.st_mode, content)
    return seen


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A throwaway filesystem root with the folders a real one has (never the real /)."""
    root = tmp_path / "root"
    for name in ("etc", "boot", "usr/bin", "home/alice/proj", "var/lib", "tmp"):
        (root / name).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    return root


@pytest.mark.parametrize(
    ("target", "why"),
    [
        (".", "the filesystem root"),
        ("etc", "a system folder"),
        ("etc/ssh", "a system folder"),
        ("boot", "a system folder"),
        ("usr/bin", "a system folder"),
        ("home", "a system folder"),
        ("var", "a system folder"),
    ],
)
def test_out_may_not_be_a_root_like_or_system_folder(fake_root: Path, target: str, why: str) -> None:
    before = _snapshot(fake_root)
    with pytest.raises(UsageError, match=why):
        check_out_dir(fake_root / target, project=fake_root / "home" / "alice" / "proj", root=fake_root)
    assert _snapshot(fake_root) == before  # nothing created, nothing chowned


def test_out_may_not_be_a_symlink_the_project_or_its_parent(fake_root: Path, tmp_path: Path) -> None:
    project = fake_root / "home" / "alice" / "proj"
    link = tmp_path / "etcl"
    link.symlink_to(fake_root / "etc")
    with pytest.raises(UsageError, match="symbolic link"):
        check_out_dir(link, project=project, root=fake_root)
    with pytest.raises(UsageError, match="project folder or a parent"):
        check_out_dir(project, project=project, root=fake_root)
    with pytest.raises(UsageError, match="project folder or a parent"):
        check_out_dir(fake_root / "home" / "alice", project=project, root=fake_root)
    # A folder under a symlinked parent resolves to the system folder it lands in.
    with pytest.raises(UsageError, match="a system folder"):
        check_out_dir(link / "ssh", project=project, root=fake_root)
    ok = check_out_dir(project / "out" / "run1", project=project, root=fake_root)
    assert ok.is_dir() and not ok.is_symlink()


def test_collect_copies_regular_files_only_and_never_follows_a_link(tmp_path: Path, fake_root: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "sub").mkdir(parents=True)
    (staging / "model.txt").write_text("model")
    (staging / "sub" / "notes.txt").write_text("notes")
    (staging / "etcl").symlink_to(fake_root / "etc")  # what a container may leave
    (staging / "passwd").symlink_to(fake_root / "etc" / "passwd")
    os.mkfifo(staging / "fifo")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(fake_root / "etc")  # left by an earlier run: not written through
    (out / "model.txt").symlink_to(fake_root / "etc" / "passwd")
    before = _snapshot(fake_root)
    with pytest.raises(UsageError, match="not a real folder"):
        collect(staging, out)
    (out / "sub").unlink()
    got = collect(staging, out)
    assert got.files == ("model.txt", "sub/notes.txt")
    assert set(got.skipped) == {"etcl", "passwd", "fifo"}
    assert (out / "model.txt").read_text() == "model" and not (out / "model.txt").is_symlink()
    assert not os.path.lexists(out / "etcl") and not os.path.lexists(out / "passwd")
    assert _snapshot(fake_root) == before
    with pytest.raises(UsageError, match="already exists"):
        place([staging / "model.txt"], out)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    try:
        client = tdocker.connect()
    except DockerError as e:
        pytest.fail(f"these tests need a Docker engine: {e}", pytrace=False)
    yield client
    client.close()


@pytest.fixture(scope="module")
def base_image(engine: Any) -> str:
    done = subprocess.run(["scripts/base.sh"], cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


# Runs in the container: writes a file, a nested file, and the links an attacker would leave.
_LEAVE = (
    "cp /out/previous.txt /out/copy.txt && echo hi > /out/hello.txt && mkdir -p /out/d && echo deep > /out/d/f.txt "
    "&& ln -s /etc /out/etcl && ln -s /etc/passwd /out/pw && touch /out/../pwned 2>/dev/null; "
    "ls -ld /out >/out/seen.txt; exit 0"
)


@pytest.mark.docker
def test_image_run_hands_back_regular_files_only(base_image: str, engine: Any, tmp_path: Path, fake_root: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    os.chmod(project, 0o755)
    out = project / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    before = _snapshot(outside, fake_root)
    out.mkdir()
    (out / "previous.txt").write_text("from an earlier run")  # the container still sees it
    inode = (out / "previous.txt").stat().st_ino
    code = run_command(base_image, ["sh", "-c", _LEAVE], out=out, workdir=project, client=engine)
    assert code == 0
    assert (out / "copy.txt").read_text() == "from an earlier run"
    assert (out / "previous.txt").stat().st_ino == inode  # unchanged: not copied back
    assert (out / "hello.txt").read_text() == "hi\n" and (out / "d" / "f.txt").read_text() == "deep\n"
    assert not os.path.lexists(out / "etcl") and not os.path.lexists(out / "pw")
    assert not (tmp_path / "pwned").exists() and not (project / "pwned").exists()
    mine = (os.getuid(), os.getgid())
    for path in (out, out / "hello.txt", out / "d", out / "d" / "f.txt"):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == mine, path  # the caller's, not the image user's
    assert _snapshot(outside, fake_root) == before
    # Refused before any container starts: a symlinked --out, the project, --out . and a
    # root-like target in a throwaway root.
    (project / "etcl").symlink_to(fake_root / "etc")
    for bad, why in (
        (project / "etcl", "symbolic link"),
        (project, "project folder or a parent"),
        (Path("."), "project folder or a parent"),
        (fake_root, "filesystem root"),
    ):
        cwd = os.getcwd()
        os.chdir(project)
        try:
            with pytest.raises(UsageError, match=why):
                run_command(
                    base_image, ["sh", "-c", "touch /out/x"], out=bad, workdir=project, root=fake_root, client=engine
                )
        finally:
            os.chdir(cwd)
    assert _snapshot(outside, fake_root) == before
    assert not (fake_root / "etc" / "x").exists()
    # docker.client.run's attach stream leaves its socket to the garbage collector (the SDK's
    # CancellableStream.close does not close the upgraded socket): collect it here, where it
    # was made, instead of as a ResourceWarning in whichever test runs next.
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
