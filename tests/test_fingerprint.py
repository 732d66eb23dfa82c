"""The runtime fingerprint and the policies that compare two of them."""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from toolkit.errors import UsageError
from toolkit.fingerprint import Fingerprint, capture, installed_distributions
from toolkit.policy import differences

DIGEST = "127.0.0.1:5000/python-base@sha256:" + "a" * 64


def test_installed_distributions_read_a_replaced_metadata_folder_afresh(tmp_path: Path) -> None:
    # Headers are remembered per state of their folder; pip replaces the folder on every install.
    def install(folder_version: str, declared: str, mtime_ns: int) -> None:
        for old in tmp_path.glob("demo-*.dist-info"):
            shutil.rmtree(old)
        folder = tmp_path / f"demo-{folder_version}.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: Demo\nVersion: {declared}\n\n")
        os.utime(folder, ns=(mtime_ns, mtime_ns))

    install("1.0", "1.0", 10**18)
    assert installed_distributions([str(tmp_path)]) == {"demo": "1.0"}
    install("2.0", "2.0", 10**18)  # an upgrade: another folder
    assert installed_distributions([str(tmp_path)]) == {"demo": "2.0"}
    install("2.0", "2.0.post1", 10**18 + 1)  # a reinstall under the same folder name
    assert installed_distributions([str(tmp_path)]) == {"demo": "2.0.post1"}


def test_installed_distributions_match_importlib_metadata() -> None:
    expected = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for excluded in ("pip", "setuptools", "wheel"):
        expected.pop(excluded, None)
    assert installed_distributions() == dict(sorted(expected.items()))


def test_capture_reads_the_image_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_BASE_IMAGE", DIGEST)
    monkeypatch.setenv("TOOLKIT_LOCK_SHA256", "b" * 64)
    monkeypatch.setenv("TOOLKIT_IN_CONTAINER", "1")
    fp = capture(blas=False)
    assert (fp.base_image, fp.lock_sha256, fp.in_container, fp.blas) == (DIGEST, "b" * 64, True, None)
    assert fp.python_version == platform.python_version()


def test_capture_with_blas_reports_a_library() -> None:
    blas = capture(blas=True).blas
    assert blas and all("internal_api" in lib for lib in blas)


def _fp(**changes: object) -> Fingerprint:
    base = Fingerprint(
        python_implementation="CPython",
        python_version="3.11.7",
        os="Linux",
        os_release="6.1",
        machine="x86_64",
        libc="glibc 2.36",
        packages={"numpy": "2.4.6", "scikit-learn": "1.9.1", "rich": "15.0.0"},
        base_image=DIGEST,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_identical_runtimes_match_under_both_policies() -> None:
    assert differences(_fp(), _fp(os_release="6.18"), policy="strict") == ()
    assert differences(_fp(), _fp(), policy="compatible", referenced=["numpy"]) == ()


def test_strict_names_every_difference() -> None:
    runtime = _fp(python_version="3.11.2", base_image=None, packages={"numpy": "2.4.6", "scikit-learn": "1.8.0"})
    found = {(d.name, d.expected, d.actual) for d in differences(_fp(), runtime, policy="strict")}
    assert found == {
        ("python_version", "3.11.7", "3.11.2"),
        ("scikit-learn", "1.9.1", "1.8.0"),
        ("rich", "15.0.0", None),
        ("base_image", DIGEST, None),
    }


def test_compatible_checks_minor_python_and_referenced_packages_only() -> None:
    runtime = _fp(python_version="3.11.2", base_image=None, packages={"numpy": "2.4.6", "scikit-learn": "1.8.0"})
    assert differences(_fp(), runtime, policy="compatible", referenced=["numpy"]) == ()
    found = differences(_fp(), runtime, policy="compatible", referenced=["numpy", "scikit-learn"])
    assert [(d.name, d.expected, d.actual) for d in found] == [("scikit-learn", "1.9.1", "1.8.0")]
    found = differences(_fp(), _fp(python_version="3.12.1"), policy="compatible")
    assert [(d.name, d.expected, d.actual) for d in found] == [("python_version", "3.11", "3.12")]


def test_unknown_policy() -> None:
    with pytest.raises(UsageError):
        differences(_fp(), _fp(), policy="yolo")


def test_the_lock_text_is_captured_from_the_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from toolkit.errors import IntegrityError
    from toolkit.fingerprint import ENV_LOCK_FILE, ENV_LOCK_SHA256, capture

    lock = tmp_path / "requirements.lock"
    lock.write_text("numpy==2.4.6 \\\n    --hash=sha256:" + "a" * 64 + "\n")
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    monkeypatch.setenv(ENV_LOCK_FILE, str(lock))
    monkeypatch.setenv(ENV_LOCK_SHA256, digest)
    fp = capture(blas=False, lock=True)
    assert fp.lock == lock.read_text() and fp.lock_sha256 == digest
    assert capture(blas=False).lock is None  # the gate's fast path never reads it
    monkeypatch.setenv(ENV_LOCK_SHA256, "b" * 64)  # the image says one lock, the file is another
    with pytest.raises(IntegrityError, match=r"sha256 .* is not the runtime's TOOLKIT_LOCK_SHA256"):
        capture(blas=False, lock=True)
    monkeypatch.delenv(ENV_LOCK_SHA256)
    assert capture(blas=False, lock=True).lock_sha256 == digest  # a lock file alone: its hash is computed
