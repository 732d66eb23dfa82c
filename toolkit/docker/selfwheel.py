"""A wheel of the running toolkit, for the image: built from its installed distribution, no clone needed.

The toolkit in the image is the toolkit on the host, so a project image needs no checkout of
this repository: the package's own files (``toolkit/``, package data included) and the
distribution's metadata (``METADATA``, ``entry_points.txt``) are zipped as a pure-Python wheel.
Reproducible: sorted entries, a fixed timestamp and fixed modes, so an unchanged toolkit gives the
same bytes and the image build's cache holds.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import zipfile
from pathlib import Path

from toolkit import _files
from toolkit.errors import UsageError

__all__ = ["build_self_wheel", "cached_self_wheel", "package_files"]

_DIST = "toolkit"
# 1980-01-01, the earliest time a zip can hold: no build's clock gets into the wheel.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_WHEEL = "Wheel-Version: 1.0\nGenerator: toolkit selfwheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def package_files() -> list[tuple[str, Path]]:
    """``(name in the wheel, file)`` for every file of the installed ``toolkit`` package, sorted."""
    import toolkit

    root = Path(toolkit.__file__).resolve().parent
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            files.append((f"toolkit/{path.relative_to(root).as_posix()}", path))
    return files


def build_self_wheel(dest: Path) -> Path:
    """Write ``toolkit-<version>-py3-none-any.whl`` into ``dest`` (a directory); return its path.

    Raises: UsageError (the toolkit is not installed as a distribution, or ``dest`` is unwritable).
    """
    import toolkit

    metadata, entry_points = _metadata(toolkit.__version__)
    version = toolkit.__version__
    info = f"{_DIST}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for name, path in package_files():
        try:
            entries.append((name, path.read_bytes()))
        except OSError as e:
            raise UsageError(f"{path}: cannot read it for the toolkit's wheel ({e.strerror or e})") from e
    entries += [(f"{info}/METADATA", metadata), (f"{info}/WHEEL", _WHEEL.encode())]
    if entry_points:
        entries.append((f"{info}/entry_points.txt", entry_points))
    record = "".join(f"{name},sha256={_b64(data)},{len(data)}\n" for name, data in entries) + f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    target = dest / f"{_DIST}-{version}-py3-none-any.whl"
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _files.write_failed(target, e) from e
    with _files.writing(target) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        for name, data in entries:
            zinfo = zipfile.ZipInfo(name, date_time=_EPOCH)
            zinfo.external_attr = (0o755 if name.endswith(".sh") else 0o644) << 16
            zinfo.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(zinfo, data)
    return target


def cached_self_wheel(cache: Path) -> Path:
    """The toolkit's wheel from ``cache``, built there first when the installed toolkit changed.

    The key is every package file's name, size and modification time plus the distribution's
    metadata: reading that is a stat per file, where building is reading and deflating every
    file (most of a warm image build's own time). A changed file changes its mtime, so the key.
    Raises: UsageError (as :func:`build_self_wheel`).
    """
    import toolkit

    metadata, entry_points = _metadata(toolkit.__version__)
    digest = hashlib.sha256(metadata + b"\0" + entry_points + b"\0" + _WHEEL.encode())
    for name, path in package_files():
        try:
            st = path.stat()
        except OSError as e:
            raise UsageError(f"{path}: cannot read it for the toolkit's wheel ({e.strerror or e})") from e
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    folder = cache / digest.hexdigest()[:32]
    found = folder / f"{_DIST}-{toolkit.__version__}-py3-none-any.whl"
    stamp = folder / "sha256"
    # The stamp is written after the wheel: a wheel without it, or whose bytes no longer hash to it
    # (a truncated or damaged file), is built again.
    try:
        if found.is_file() and stamp.read_text(encoding="ascii").strip() == _sha256(found):
            return found
    except (OSError, UnicodeDecodeError):
        pass
    built = build_self_wheel(folder)
    with contextlib.suppress(UsageError):  # no stamp: the next build builds it again, nothing worse
        _files.save(stamp, (_sha256(built) + "\n").encode("ascii"))
    return built


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metadata(version: str) -> tuple[bytes, bytes]:
    try:
        dist = importlib.metadata.distribution(_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UsageError("the toolkit is not installed as a distribution (pip install it): no wheel of it") from None
    # A wheel's or an editable install's METADATA; an egg-info (a source tree's build) calls it PKG-INFO.
    metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if metadata is None:
        raise UsageError(f"the installed toolkit ({dist.version}) has no metadata; reinstall it")
    if dist.version != version:
        # An editable install whose metadata is older than the code: the image would lie about itself.
        raise UsageError(
            f"the installed toolkit's metadata ({dist.version}) does not match its code ({version}); reinstall it"
        )
    return metadata.encode(), (dist.read_text("entry_points.txt") or "").encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
