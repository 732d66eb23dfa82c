"""The HTTP side: one registry host, its session, credentials and tokens, bounded timeouts.

Written on ``requests`` rather than oras-py: oras-py sets no request timeout (a silent
registry hangs it), retries with sleeps of up to minutes (a stopped registry must fail in
seconds), switches every request to plain HTTP with one ``insecure`` flag, and neither
checks a downloaded blob's digest nor takes an ``artifactType``. Credentials come from the
docker SDK's reader of the Docker client's config (``auths``, ``credsStore``, ``credHelpers``,
``DOCKER_CONFIG``), as ``docker login`` stores them.

Every network or registry failure becomes a ``RemoteError`` (exit 6) naming the host, an
unknown repository or tag a ``RegistryError`` (exit 4), and a digest or size failure an
``IntegrityError`` (exit 3).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from toolkit import _files, _json
from toolkit.errors import IntegrityError, RegistryError, RemoteError, UsageError
from toolkit.oci.manifest import (
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    digest_of,
    parse_manifest,
)
from toolkit.oci.reference import Reference, is_loopback, split_host

__all__ = ["DEFAULT_TIMEOUT", "Client", "Progress", "docker_credentials"]

# Everything a tag may point at: a registry that cannot serve what a client accepts tries to
# convert it (distribution 2.8 to schema 1, which fails with HTTP 400); we would rather see
# what is there and refuse it by name.
_ACCEPT = ", ".join(
    (
        MANIFEST_MEDIA_TYPE,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_MAX_ERROR_BODY = 64 * 1024
_CHUNK = 1 << 20
# Blobs this large are hashed in a second thread, overlapping the download.
_THREADED_HASH_BYTES = 8 * _CHUNK
_HASH_QUEUE = 16
# Connect within 3 s (an address that never answers), then at most 30 s between two reads.
DEFAULT_TIMEOUT = (3.0, 30.0)
# And an overall deadline per exchange, from connecting to the body's last byte, however it
# trickles in (a registry sending one byte every 29 s, of its headers or its body, never hits
# the read timeout): 120 s for a manifest, a card or a token; a blob, up or down, gets that
# plus its size at 256 KiB/s.
DEFAULT_DEADLINE = 120.0
_BLOB_MIN_RATE = 256 * 1024

Progress = Callable[[str, int, int], None]
"""Called as ``progress(file_name, bytes_done, bytes_total)`` while a blob moves."""

"""Called as ``progress(file_name, bytes_done, bytes_total)`` while a blob moves."""


class Client:
    """One registry host: a session, its credentials and tokens, bounded timeouts.

    TLS unless the host is loopback or ``insecure`` is set. Credentials default to the
    Docker client's config for this host; pass ``credentials=(user, password)`` to override
    or ``use_docker_config=False`` for anonymous access. Not thread-safe: one per thread.
    """

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        credentials: tuple[str, str] | None = None,
        use_docker_config: bool = True,
        session: Any = None,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        try:
            import requests
        except ImportError as e:  # pragma: no cover - in the lock; only a bare install lacks it
            raise UsageError("the OCI commands need the 'oci' extra: pip install 'toolkit[oci]'") from e

        self.host = host
        self.scheme = "http" if insecure or is_loopback(split_host(host)[0]) else "https"
        self.base = f"{self.scheme}://{host}"
        self.timeout = timeout
        self.deadline = deadline
        self._credentials = credentials
        self._credentials_loaded = credentials is not None or not use_docker_config
        self._session = session if session is not None else requests.Session()
        _watch_exchanges(self._session)
        self._authorization: str | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # -- blobs --

    def blob_size(self, repository: str, digest: str) -> int | None:
        """HEAD a blob: its size when the registry has it, else None."""
        with self._request("HEAD", f"/v2/{repository}/blobs/{digest}", what=f"blob {digest[:19]}") as r:
            if r.status_code == 404:
                return None
            self._check(r, f"blob {digest[:19]}", ok=(200,))
            length = r.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def push_blob(
        self,
        repository: str,
        descriptor: Descriptor,
        source: Path | bytes,
        *,
        chunk_size: int | None = None,
        progress: Progress | None = None,
    ) -> bool:
        """Upload a blob unless the registry has it; True when it was uploaded.

        Monolithic (POST, then one streamed PUT) by default; with ``chunk_size``, PATCHes of at
        most that many bytes, for registries or proxies that cap a request's body.
        """
        what = f"blob {descriptor.file_name or descriptor.digest[:19]}"
        if self.blob_size(repository, descriptor.digest) == descriptor.size:
            return False
        with self._request(
            "POST", f"/v2/{repository}/blobs/uploads/", headers={"Content-Length": "0"}, what=f"upload of {what}"
        ) as r:
            self._check(r, f"upload of {what}", ok=(202,))
            location = self._location(r, what)
        name = descriptor.file_name or descriptor.digest[:19]
        with _open_source(source) as f:
            if chunk_size is not None and descriptor.size > chunk_size:
                location = self._patch_chunks(location, f, descriptor, chunk_size, what, progress)
                body: Callable[[], Any] = lambda: b""  # noqa: E731
                length = 0
            else:

                def body() -> Any:
                    f.seek(0)  # a retry after an authentication challenge sends it again
                    return _ProgressReader(f, name, descriptor.size, progress)

                length = descriptor.size
            with self._request(
                "PUT",
                _with_query(location, digest=descriptor.digest),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
                body=body,
                what=f"upload of {what}",
                deadline=self.deadline + length / _BLOB_MIN_RATE,
            ) as r:
                self._check(r, f"upload of {what}", ok=(201,))
        return True

    def _patch_chunks(
        self, location: str, f: BinaryIO, descriptor: Descriptor, chunk_size: int, what: str, progress: Progress | None
    ) -> str:
        name = descriptor.file_name or descriptor.digest[:19]
        offset = 0
        while offset < descriptor.size:
            chunk = f.read(min(chunk_size, descriptor.size - offset))
            if not chunk:
                raise IntegrityError(f"{name}: shorter than its {descriptor.size} bytes while uploading")
            end = offset + len(chunk) - 1
            with self._request(
                "PATCH",
                location,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{end}",
                    "Content-Length": str(len(chunk)),
                },
                body=lambda c=chunk: c,  # type: ignore[misc]
                what=f"upload of {what}",
                deadline=self.deadline + len(chunk) / _BLOB_MIN_RATE,
            ) as r:
                self._check(r, f"upload of {what}", ok=(202,))
                location = self._location(r, what)
            offset = end + 1
            if progress:
                progress(name, offset, descriptor.size)
        return location

    def fetch_blob(
        self, repository: str, descriptor: Descriptor, dest: BinaryIO, *, progress: Progress | None = None
    ) -> None:
        """Stream a blob into ``dest`` while hashing; memory stays at one chunk.

        Raises: IntegrityError (missing blob, wrong size or digest, larger than declared).
        """
        name = descriptor.file_name or descriptor.digest[:19]
        r = self._request(
            "GET",
            f"/v2/{repository}/blobs/{descriptor.digest}",
            what=f"blob {name}",
            deadline=self.deadline + descriptor.size / _BLOB_MIN_RATE,
        )
        with r:
            if r.status_code == 404:
                raise IntegrityError(f"{self.host}/{repository}: blob {name} ({descriptor.digest[:19]}…) is missing")
            self._check(r, f"blob {name}", ok=(200,))
            digest = _Hasher(threaded=descriptor.size >= _THREADED_HASH_BYTES)
            done = 0
            try:
                # Only reading the stream is the network's; a write to ``dest`` that fails (a full
                # disk) is the caller's OSError, and a bug of ours is not a remote failure.
                for chunk in _network_read(r.iter_content(_CHUNK), self.host, f"blob {name}", r):
                    done += len(chunk)
                    if done > descriptor.size:
                        raise IntegrityError(f"{name}: blob is larger than its declared {descriptor.size} bytes")
                    digest.update(chunk)
                    dest.write(chunk)
                    if progress:
                        progress(name, done, descriptor.size)
            finally:
                digest.close()
        if done != descriptor.size:
            raise IntegrityError(f"{name}: blob is {done} bytes, the manifest says {descriptor.size}")
        actual = "sha256:" + digest.hexdigest()
        if actual != descriptor.digest:
            raise IntegrityError(
                f"{name}: blob digest {actual[:19]}… does not match the manifest's {descriptor.digest[:19]}…; refused"
            )

    def fetch_blob_bytes(self, repository: str, descriptor: Descriptor, *, limit: int) -> bytes:
        """A small blob in memory, refused before download when it declares over ``limit`` bytes."""
        if descriptor.size > limit:
            name = descriptor.file_name or descriptor.digest[:19]
            raise IntegrityError(f"{name}: {descriptor.size} bytes is over the {limit}-byte limit; refused")
        buffer = io.BytesIO()
        self.fetch_blob(repository, descriptor, buffer)
        return buffer.getvalue()

    # -- manifests --

    def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch and parse a manifest (size-capped, digest-checked).

        Raises: RegistryError (unknown repository or tag), IntegrityError, RemoteError.
        """
        r = self._request(
            "GET",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            headers={"Accept": _ACCEPT},
            what=f"manifest {ref.reference}",
        )
        with r:
            if r.status_code == 404:
                code = _error_codes(r)
                raise RegistryError(f"{ref}: unknown repository or tag{f' ({code})' if code else ''}")
            self._check(r, f"manifest {ref.reference}", ok=(200,))
            media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
            if media_type != MANIFEST_MEDIA_TYPE:
                raise IntegrityError(f"{ref}: media type {media_type!r} is not an OCI image manifest; refused")
            length = r.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > MAX_MANIFEST_BYTES:
                raise IntegrityError(f"{ref}: manifest of {length} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
            raw = _read_capped(r, MAX_MANIFEST_BYTES, self.host, f"{ref}: manifest")
            header_digest = r.headers.get("Docker-Content-Digest")
        manifest = parse_manifest(raw, where=str(ref))
        for expected in (ref.digest, header_digest):
            if expected and expected != manifest.digest:
                raise IntegrityError(
                    f"{ref}: manifest digest {manifest.digest[:19]}… does not match {expected[:19]}…; refused"
                )
        return manifest

    def put_manifest(self, repository: str, tag: str, raw: bytes) -> str:
        """Store a manifest under a tag; returns its digest (checked against the registry's)."""
        digest = digest_of(raw)
        with self._request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            headers={"Content-Type": MANIFEST_MEDIA_TYPE},
            body=lambda: raw,
            what=f"manifest {tag}",
        ) as r:
            self._check(r, f"manifest {tag}", ok=(201,))
            stored = r.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise IntegrityError(f"{self.host}/{repository}:{tag}: the registry stored digest {stored}, not {digest}")
        return digest

    # -- HTTP, authentication, errors --

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        what: str,
        deadline: float | None = None,
    ) -> Any:
        """One request, authenticated on a 401 challenge. Always streamed: no response body,
        an error page included, is read into memory unless its reader caps it. The whole
        exchange (connect, send, status line, headers, body) must be over within ``deadline``
        seconds (default ``self.deadline``; an upload adds its size at 256 KiB/s), or its
        connection is shut and the call or the read fails with a RemoteError saying so."""
        url = path if "://" in path else self.base + path
        challenged: set[str] = set()
        while True:
            sent = dict(headers or {})
            if self._authorization:
                sent["Authorization"] = self._authorization
            exchange = _Exchange(self.deadline if deadline is None else deadline)
            try:
                with exchange.current():
                    r = self._session.request(
                        method,
                        url,
                        headers=sent,
                        data=body() if body else None,
                        stream=True,
                        timeout=self.timeout,
                        allow_redirects=method in ("GET", "HEAD"),
                    )
            except _network_errors() as e:
                exchange.end()
                raise _network_error(self.host, e, what, exchange) from e
            except BaseException:
                exchange.end()
                raise
            exchange.hand_to(r)  # the body is read under the same deadline; closing r ends it
            _refuse_if_cut(r, self.host, what)
            if r.status_code != 401:
                return r
            challenge = r.headers.get("WWW-Authenticate", "")
            r.close()
            # One try per distinct challenge: a second 401 for the same one means "refused".
            if challenge in challenged or not self._authenticate(challenge, what):
                return r
            challenged.add(challenge)

    def _authenticate(self, challenge: str, what: str) -> bool:
        scheme, params = _parse_challenge(challenge)
        credentials = self._get_credentials()
        if scheme == "basic":
            if credentials is None:
                raise RemoteError(
                    f"{self.host} requires credentials for {what}; none for it in the Docker config"
                    f" (docker login {self.host})"
                )
            import base64

            token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
            new = f"Basic {token}"
        elif scheme == "bearer" and "realm" in params:
            new = f"Bearer {self._fetch_token(params, credentials, what)}"
        else:
            return False
        if new == self._authorization:
            return False
        self._authorization = new
        return True

    def _fetch_token(self, params: Mapping[str, str], credentials: tuple[str, str] | None, what: str) -> str:
        realm = params["realm"]
        realm_host = urlsplit(realm).hostname or ""
        if urlsplit(realm).scheme != "https" and not (is_loopback(realm_host) or self.scheme == "http"):
            raise RemoteError(f"{self.host}: token realm {realm} is not HTTPS; refused")
        query = {k: params[k] for k in ("service", "scope") if k in params}
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        exchange = _Exchange(self.deadline)
        try:
            with exchange.current():
                r = self._session.get(url, auth=credentials, timeout=self.timeout, stream=True)
        except _network_errors() as e:
            exchange.end()
            raise _network_error(self.host, e, f"token for {what}", exchange) from e
        except BaseException:
            exchange.end()
            raise
        exchange.hand_to(r)
        _refuse_if_cut(r, self.host, f"token for {what}")
        with r:
            if r.status_code in (401, 403):
                if credentials is None:
                    raise RemoteError(
                        f"{self.host} requires credentials for {what}; none for it in the Docker config"
                        f" (docker login {self.host})"
                    )
                raise RemoteError(f"{self.host} refused the credentials (token service {realm_host})")
            self._check(r, f"token for {what}", ok=(200,))
            try:
                doc = _json.loads(_read_capped(r, _MAX_ERROR_BODY, self.host, "token"))
                token = doc.get("token") or doc.get("access_token")
            except (ValueError, AttributeError):
                token = None
        if not isinstance(token, str) or not token:
            raise RemoteError(f"{self.host}: the token service {realm_host} answered without a token")
        return token

    def _get_credentials(self) -> tuple[str, str] | None:
        if not self._credentials_loaded:
            self._credentials = docker_credentials(self.host)
            self._credentials_loaded = True
        return self._credentials

    def _check(self, r: Any, what: str, *, ok: tuple[int, ...]) -> None:
        code = r.status_code
        if code in ok:
            return
        detail = _error_codes(r)
        suffix = f" ({detail})" if detail else ""
        if code in (401, 403):
            if self._get_credentials() is None:
                raise RemoteError(
                    f"{self.host} denied {what} without credentials; none for it in the Docker config{suffix}"
                )
            raise RemoteError(f"{self.host} refused the credentials for {what}{suffix}")
        if "DIGEST_INVALID" in detail:
            raise IntegrityError(f"{self.host}: the registry refused {what}: its content does not match its digest")
        if code >= 500:
            raise RemoteError(f"{self.host}: registry error HTTP {code} on {what}{suffix}")
        raise RemoteError(f"{self.host}: HTTP {code} on {what}{suffix}")

    def _location(self, r: Any, what: str) -> str:
        location = r.headers.get("Location")
        if not location:
            raise RemoteError(f"{self.host}: upload of {what} answered without a Location")
        absolute = urljoin(self.base + "/", str(location))
        if urlsplit(absolute).netloc != urlsplit(self.base).netloc:
            # An upload sent elsewhere would carry our credentials to another host.
            raise RemoteError(f"{self.host}: upload of {what} redirected to another host; refused")
        return absolute


def docker_credentials(host: str) -> tuple[str, str] | None:
    """(user, password) for ``host`` from the Docker client's config, as ``docker login`` stores them.

    Reads ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``: ``auths`` entries
    (base64 ``user:pass``), and ``credsStore``/``credHelpers`` through their helper programs.
    Raises: UsageError (an unreadable config), RemoteError (a credential helper failed).
    """
    try:
        from docker import auth as docker_auth
        from docker import errors as docker_errors
    except ImportError:  # pragma: no cover - the docker SDK is in the lock
        return None
    try:
        config = docker_auth.load_config()
        entry = config.resolve_authconfig(host)
    except docker_errors.InvalidConfigFile as e:
        raise UsageError(f"the Docker config is invalid: {e}") from e
    except docker_errors.DockerException as e:
        raise RemoteError(f"{host}: the Docker credential helper failed: {e}") from e
    if not entry:
        return None
    user = entry.get("username") or entry.get("Username")
    password = entry.get("password") or entry.get("Password")
    if isinstance(user, str) and isinstance(password, str) and user:
        return user, password
    return None


class _Exchange:
    """One request and its answer under an overall deadline: connecting, sending, the status
    line, the headers and the body. When it passes, every socket the exchange used is shut
    down, so whatever read or write is blocked on it fails at once (closing a socket from
    another thread does not wake a blocked call; shutdown does), however slowly a server drips.

    The sockets are watched through their own duplicated descriptors, taken as each connection
    is made (before TLS wraps it) or reused: a shutdown reaches the connection whatever object
    wraps it, and never a descriptor number the system has since given to something else.
    """

    _local = threading.local()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._ended = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @classmethod
    def active(cls) -> _Exchange | None:
        found: _Exchange | None = getattr(cls._local, "exchange", None)
        return found

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """While inside, connections this thread opens or reuses are watched by this exchange."""
        previous = _Exchange.active()
        _Exchange._local.exchange = self
        try:
            yield
        finally:
            _Exchange._local.exchange = previous

    def watch(self, sock: Any) -> None:
        try:
            dup = socket.socket(fileno=os.dup(sock.fileno()))
        except (OSError, AttributeError, ValueError):
            return  # a socket already closed: nothing left to bound
        with self._lock:
            if self._ended:
                dup.close()
                return
            self._watched.append(dup)
            expired = self.expired
        if expired:
            _shutdown(dup)

    def hand_to(self, r: Any) -> None:
        """The body of ``r`` is read under this exchange; ``r.close()`` ends it."""
        r._toolkit_exchange = self
        close = r.close

        def closing() -> None:
            try:
                close()
            finally:
                self.end()

        r.close = closing

    def end(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._ended = True
            watched, self._watched = self._watched, []
        for dup in watched:
            dup.close()

    def _expire(self) -> None:
        with self._lock:
            if self._ended:
                return
            self.expired = True
            watched = list(self._watched)
        for dup in watched:
            _shutdown(dup)


def _refuse_if_cut(r: Any, host: str, what: str) -> None:
    """A deadline that passed while the headers came in: http.client takes the shut socket's
    end as the end of the headers, so the answer looks whole. It is not."""
    exchange = getattr(r, "_toolkit_exchange", None)
    if exchange is not None and exchange.expired:
        r.close()
        raise _network_error(host, TimeoutError(), what, r)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_ADAPTER: Any = None


def _watch_exchanges(session: Any) -> None:
    """Mount, on ``session``, connection pools whose connections report their sockets to the
    thread's current ``_Exchange`` (made once; a session given by the caller gets them too)."""
    global _ADAPTER
    if not hasattr(session, "mount"):
        return
    if _ADAPTER is None:
        _ADAPTER = _deadline_adapter_class()
    session.mount("https://", _ADAPTER())
    session.mount("http://", _ADAPTER())


def _deadline_adapter_class() -> Any:
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def _new_conn(base: Any, self: Any) -> Any:
        sock = base._new_conn(self)  # connected, not yet wrapped in TLS
        exchange = _Exchange.active()
        if exchange is not None:
            exchange.watch(sock)
        return sock

    def _request(base: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
        exchange = _Exchange.active()
        if exchange is not None and self.sock is not None:  # a kept-alive connection, reused
            exchange.watch(self.sock)
        return base.request(self, *args, **kwargs)

    class _HTTPConnection(HTTPConnection):
        def _new_conn(self) -> Any:
            return _new_conn(HTTPConnection, self)

        def request(self, *args: Any, **kwargs: Any) -> Any:
            return _request(HTTPConnection, self, *args, **kwargs)

    class _HTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> Any:
            return _new_conn(HTTPSConnection, self)

        def request(self, *args: Any, **kwargs: Any) -> Any:
            return _request(HTTPSConnection, self, *args, **kwargs)

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    pools = {"http": _HTTPPool, "https": _HTTPSPool}

    class DeadlineAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if hasattr(manager, "pool_classes_by_scheme"):
                manager.pool_classes_by_scheme = pools
            return manager

    return DeadlineAdapter


def _read_capped(r: Any, limit: int, host: str, what: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for chunk in _network_read(r.iter_content(64 * 1024), host, what, r):
        total += len(chunk)
        if total > limit:
            raise IntegrityError(f"{what}: over the {limit}-byte limit; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a request or a read of its stream raises when the network or the server fails.

    requests wraps most of urllib3's errors, but not all of them mid-stream, and a socket's
    OSError can pass through both. Anything else is a bug of ours and must not read as exit 6.
    """
    import requests
    import urllib3

    return (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)


def _network_read(chunks: Iterator[bytes], host: str, what: str, r: Any = None) -> Iterator[bytes]:
    """The chunks of a response ``r``, with a network failure while reading (its overall deadline
    passed included) as the one RemoteError line."""
    while True:
        try:
            chunk = next(chunks, None)
        except _network_errors() as e:
            raise _network_error(host, e, what, r) from e
        if chunk is None:
            exchange = getattr(r, "_toolkit_exchange", None)
            if exchange is not None and exchange.expired:  # an answer without a length, cut short
                raise _network_error(host, TimeoutError(), what, r)
            return
        yield chunk


def _error_codes(r: Any) -> str:
    """The registry's error codes (``MANIFEST_UNKNOWN``...), read from a bounded body."""
    unreadable: tuple[type[BaseException], ...] = (ValueError, RecursionError, *_network_errors())
    try:
        body = r.raw.read(_MAX_ERROR_BODY, decode_content=True) if r.raw is not None else b""
        doc = _json.loads(body or b"{}")
        errors = doc.get("errors") if isinstance(doc, dict) else None
        codes = [str(e.get("code")) for e in errors or [] if isinstance(e, dict) and e.get("code")]
        return ", ".join(codes[:3])
    except unreadable:  # an error body is only a hint; never let it mask the status
        return ""


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) for m in re.finditer(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


def _network_error(host: str, e: BaseException, what: str, r: Any = None) -> RemoteError:
    import requests

    exchange = r if isinstance(r, _Exchange) else getattr(r, "_toolkit_exchange", None)
    if exchange is not None and exchange.expired:
        return RemoteError(
            f"{host}: no complete answer for {what} within {exchange.seconds:.0f} s (the overall deadline)"
        )

    if isinstance(e, requests.exceptions.SSLError):
        return RemoteError(f"{host}: TLS failed for {what} (use --insecure only for a registry without TLS)")
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return RemoteError(f"{host}: unreachable (no connection within the timeout)")
    if isinstance(e, requests.exceptions.ConnectionError) and "Read timed out" not in str(e):
        reason = _root_reason(e)
        return RemoteError(f"{host}: unreachable ({reason})")
    if isinstance(e, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        return RemoteError(f"{host}: stopped answering during {what}")
    if isinstance(e, requests.exceptions.RequestException):
        return RemoteError(f"{host}: {what} failed: {_root_reason(e)}")
    return RemoteError(f"{host}: {what} failed: {type(e).__name__}: {e}")


def _root_reason(e: BaseException) -> str:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror.lower()
        seen = seen.__cause__ or seen.__context__
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "No route to host", "timed out"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if urlsplit(url).query else "?") + urlencode(params)


def _open_source(source: Path | bytes) -> BinaryIO:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    fd, _ = _files.open_regular(source, "artifact file")
    return os.fdopen(fd, "rb")


class _Hasher:
    """sha256 of a stream; for big blobs in a second thread, so hashing overlaps receiving
    and writing (hashlib releases the GIL on large updates). The queue holds at most
    ``_HASH_QUEUE`` chunks, so memory stays bounded when the network outruns the hash."""

    def __init__(self, *, threaded: bool) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=_HASH_QUEUE)
            self._thread = threading.Thread(target=self._run, name="toolkit-oci-sha256", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._queue is None:
            self._hash.update(chunk)
        else:
            self._queue.put(chunk)

    def close(self) -> None:
        """Finish (or abandon) the hashing thread; idempotent."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()


class _ProgressReader:
    """A file wrapper that reports progress while requests streams it into an upload.

    Deliberately not an io.IOBase: requests would call its tell(), take the failure for
    "at the end", and send a chunked body instead of the Content-Length we declare.
    """

    def __init__(self, f: BinaryIO, name: str, total: int, progress: Progress | None) -> None:
        self._f, self._name, self._total, self._progress, self._done = f, name, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        # Never past the declared length (a file that grew would corrupt the request); a file
        # that changed is caught by the registry, which checks the digest of what it received.
        left = self._total - self._done
        data = self._f.read(left if size is None or size < 0 else min(size, left))
        self._done += len(data)
        if self._progress and data:
            self._progress(self._name, self._done, self._total)
        return data

    def __len__(self) -> int:
        return self._total
