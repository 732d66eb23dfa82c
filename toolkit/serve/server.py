"""``toolkit serve``: the start-up order, then uvicorn until SIGTERM.

Start-up: resolve MODEL, then signature, integrity, the gate for this process, the guarded
load and the probe (``toolkit.serve.model.prepare``); only then does ``/v2/health/ready``
say 200. A refusal is one log line (with the differences in JSON logs) and exit 1, or with
``on_mismatch="hold"`` a server that is live and never ready (with ``follow``, until a
version that passes is promoted). The socket is bound before the checks, so a busy port fails
at once, but it listens only once uvicorn runs.

SIGTERM (and SIGINT) stop accepting, let in-flight requests finish (up to
``drain_timeout``), and the process exits 0: uvicorn re-raises the signal after its
shutdown, which lands in a handler of ours that only notes it.
"""

from __future__ import annotations

import os
import signal
import socket
import socket as socketlib
from dataclasses import dataclass
from typing import Any

from toolkit.errors import ToolkitError, UsageError
from toolkit.policy import validate_policy
from toolkit.serve.log import FORMATS, Log

__all__ = ["ON_MISMATCH", "ServeOptions", "run"]

ON_MISMATCH = ("exit", "hold")


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeOptions:
    model: str
    host: str = "127.0.0.1"
    port: int = 8080
    policy: str = "strict"
    on_mismatch: str = "exit"
    follow: bool = False
    poll_interval: float = 5.0
    max_rows: int = 10_000
    max_body: int = 1 << 20
    body_timeout: float = 10.0
    drain_timeout: int = 30
    max_connections: int = 256
    log_format: str = "text"
    registry: str | None = None
    store: str | None = None
    insecure: bool = False
    trusted_keys: Any = None
    trusted: tuple[str, ...] = ()  # --trust: callables the guarded load may resolve


def run(options: ServeOptions, log: Log | None = None) -> int:
    """Serve until stopped; the exit code. Raises: UsageError before anything starts."""
    _validate(options)
    out = log or Log(options.log_format)
    return _run(options, out)


def _run(options: ServeOptions, log: Log) -> int:
    try:
        import uvicorn
    except ImportError as e:  # pragma: no cover - the runtime lock has it; an old stack may not
        raise UsageError(f"toolkit serve needs the 'serve' extra (uvicorn, starlette, prometheus-client): {e}") from e

    def stop_early(sig: int, frame: Any) -> None:
        # Told to stop before serving (a rollout replaced this pod mid-load): nothing to drain.
        log.event("stopped", f"stopped on {signal.Signals(sig).name} before ready")
        raise SystemExit(0)

    early = {s: signal.signal(s, stop_early) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _serve(options, log, uvicorn)
    finally:
        for s, handler in early.items():
            signal.signal(s, handler)


def _serve(options: ServeOptions, log: Log, uvicorn: Any) -> int:
    from toolkit.serve.app import Limits, create_app
    from toolkit.serve.follow import Follower, load_current, record_served
    from toolkit.serve.holder import Holder
    from toolkit.serve.metrics import Metrics
    from toolkit.serve.model import Refused
    from toolkit.serve.source import Source, check_follow

    source = Source(options.model, registry=options.registry, store=options.store, insecure=options.insecure)
    if options.follow:
        check_follow(source)
    sock = _bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    where = f"{_url_host(host)}:{port} (pid {os.getpid()} on {socketlib.gethostname()})"
    holder, metrics = Holder(), Metrics()
    current = None
    refused_key = None
    try:
        current = source.current()
        model = load_current(
            source, current, policy=options.policy, trusted_keys=options.trusted_keys, trusted=options.trusted
        )
    except (Refused, ToolkitError) as e:
        refused = e if isinstance(e, Refused) else Refused("resolve", str(e), exit_code=e.exit_code)
        extra = refused.to_dict()
        log.event("refused", f"not serving {options.model}: {refused.step}: {refused}", **extra)
        metrics.checked(str(current.version if current else None), refused.step)
        if current is not None:
            refused_key = current
        if options.on_mismatch == "exit":
            sock.close()
            return 1
        holder.not_ready(f"{refused.step}: {refused}")
        model = None
    if model is not None:
        holder.swap(model)
        metrics.serving(model)
        metrics.checked(model.version, None)
    limits = Limits(max_body=options.max_body, max_rows=options.max_rows, body_timeout=options.body_timeout)
    app = create_app(holder, metrics, limits)
    follower = None
    if options.follow:
        follower = Follower(
            source,
            holder,
            metrics,
            log,
            interval=options.poll_interval,
            policy=options.policy,
            trusted_keys=options.trusted_keys,
            trusted=options.trusted,
            where=where,
            serving=current if model is not None else None,
        )
        if refused_key is not None:  # already said why at start-up: not again on the first poll
            follower.refused.add(refused_key)

    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=options.drain_timeout,
        limit_concurrency=options.max_connections,
        # Headers larger than this are refused by h11 itself (431-like close), bounding memory.
        h11_max_incomplete_event_size=64 * 1024,
        server_header=False,
    )
    url = f"http://{_url_host(host)}:{port}"

    class _Server(uvicorn.Server):  # type: ignore[misc]
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.started:
                return
            served = holder.current
            if served is not None:
                log.event(
                    "ready",
                    f"ready: serving {served.name} {served.version} (sha256 {served.sha256[:12]}) on {url}"
                    + (f"; runtime accepted by certification {served.certification}" if served.certification else ""),
                    url=url,
                    version=served.version,
                    sha256=served.sha256,
                )
                record_served(source, served, log, where=where, reason="ready")
            else:
                log.event("not_ready", f"live on {url}, not ready: {holder.reason}", url=url)
            if follower is not None:
                follower.start()

    server = _Server(config)
    stopped: list[int] = []
    previous = {s: signal.signal(s, lambda sig, frame: stopped.append(sig)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        if follower is not None:
            follower.stop.set()
            if follower.ident is not None:  # started (uvicorn's startup may fail before it is)
                follower.join(timeout=2)  # a poll in flight ends within its deadline; a pull may take longer
        if follower is None or not follower.is_alive():
            source.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    log.event("stopped", f"stopped{' on ' + signal.Signals(stopped[0]).name if stopped else ''}: drained")
    return 0 if server.started else 1


def _validate(options: ServeOptions) -> None:
    validate_policy(options.policy)
    if options.on_mismatch not in ON_MISMATCH:
        raise UsageError(f"--on-mismatch {options.on_mismatch!r}: choose exit or hold")
    if options.log_format not in FORMATS:
        raise UsageError(f"--log-format {options.log_format!r}: choose text or json")
    if not 0 <= options.port <= 65535:
        raise UsageError(f"--port {options.port}: not a TCP port")
    if options.max_rows < 1 or options.max_body < 1:
        raise UsageError("--max-rows and --max-body must be at least 1")
    if options.poll_interval <= 0:
        raise UsageError("--poll-interval must be positive")


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: {e.strerror}") from e
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
