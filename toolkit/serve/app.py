"""The HTTP surface: Open Inference Protocol v2 REST (as KServe and MLServer speak it), plus
``POST /predict`` for records or CSV, the card, and ``/metrics``.

No endpoint changes state: every route reads the holder and answers. Every answer is JSON
(but ``/metrics`` and a CSV ``/predict`` when asked for one), names ``model_version`` and
carries ``X-Model-Version`` and ``X-Model-Sha256`` headers (empty when nothing is served).
A refused request gets one line in ``{"error": ...}`` and its 4xx; a model that raises, a
500 with one line; never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from toolkit.serve.holder import Holder
from toolkit.serve.inputs import (
    BadRequest,
    TooLarge,
    frame_from_csv,
    frame_from_oip,
    frame_from_records,
    oip_datatype,
    parse_json,
)
from toolkit.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from toolkit.serve.model import ServedModel

__all__ = ["Limits", "create_app"]

_JSON = "application/json"
Handler = Callable[[Request, "ServedModel | None"], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """What one request may cost."""

    max_body: int = 1 << 20  # bytes
    max_rows: int = 10_000
    body_timeout: float = 10.0  # seconds to receive the whole body (a slow client gets 408)


def create_app(holder: Holder, metrics: Metrics, limits: Limits) -> Starlette:
    """The ASGI app answering from ``holder``."""
    from toolkit import __version__

    def route(path: str, handler: Handler, methods: list[str], *, needs_model: bool = True) -> Route:
        async def endpoint(request: Request) -> Response:
            model = holder.current  # read once: the whole answer comes from this one model
            metrics.in_flight.inc()
            started = time.perf_counter()
            try:
                if needs_model and model is None:
                    response = _error(503, f"not ready: {holder.reason}", None)
                else:
                    _check_model(request, model)
                    response = await handler(request, model)
            except BadRequest as e:
                response = _error(e.status, str(e), model)
            except _ModelError as e:
                response = _error(500, str(e), model)
            finally:
                metrics.in_flight.dec()
            metrics.latency.labels(route=path).observe(time.perf_counter() - started)
            metrics.requests.labels(
                model=model.name if model else "",
                version=model.version if model else "",
                route=path,
                status=str(response.status_code),
            ).inc()
            _headers(response, model)
            return response

        return Route(path, endpoint, methods=methods)

    async def live(request: Request, model: ServedModel | None) -> Response:
        return _json({"live": True, "model_version": model.version if model else None})

    async def ready(request: Request, model: ServedModel | None) -> Response:
        if model is None:
            return _json({"ready": False, "model_version": None, "reason": holder.reason}, 503)
        return _json({"ready": True, "model_name": model.name, "model_version": model.version})

    async def server_metadata(request: Request, model: ServedModel | None) -> Response:
        return _json(
            {
                "name": "toolkit",
                "version": __version__,
                "extensions": [],
                "model_version": model.version if model else None,
            }
        )

    async def model_metadata(request: Request, model: ServedModel | None) -> Response:
        assert model is not None
        return _json(_metadata(model))

    async def model_ready(request: Request, model: ServedModel | None) -> Response:
        assert model is not None
        return _json({"name": model.name, "ready": True, "model_version": model.version})

    async def card(request: Request, model: ServedModel | None) -> Response:
        assert model is not None
        return Response(model.card.to_json(), media_type=_JSON)

    async def infer(request: Request, model: ServedModel | None) -> Response:
        assert model is not None
        body = await _body(request, limits)
        answer = _raise(await run_in_threadpool(_guarded, _infer, model, body, limits))
        metrics.rows.labels(model=model.name, version=model.version).inc(answer.rows)
        return Response(answer.body, media_type=_JSON)

    async def predict(request: Request, model: ServedModel | None) -> Response:
        assert model is not None
        body = await _body(request, limits)
        kind = request.headers.get("content-type", _JSON).split(";")[0].strip().lower()
        as_csv = "text/csv" in request.headers.get("accept", "")
        answer = _raise(await run_in_threadpool(_guarded, _predict, model, body, kind, as_csv, limits))
        metrics.rows.labels(model=model.name, version=model.version).inc(answer.rows)
        return Response(answer.body, media_type="text/csv" if as_csv else _JSON)

    async def metrics_route(request: Request, model: ServedModel | None) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        route("/v2", server_metadata, ["GET"], needs_model=False),
        route("/v2/health/live", live, ["GET"], needs_model=False),
        route("/v2/health/ready", ready, ["GET"], needs_model=False),
        route("/v2/models/{name}", model_metadata, ["GET"]),
        route("/v2/models/{name}/versions/{version}", model_metadata, ["GET"]),
        route("/v2/models/{name}/ready", model_ready, ["GET"]),
        route("/v2/models/{name}/versions/{version}/ready", model_ready, ["GET"]),
        route("/v2/models/{name}/card", card, ["GET"]),
        route("/v2/models/{name}/infer", infer, ["POST"]),
        route("/v2/models/{name}/versions/{version}/infer", infer, ["POST"]),
        route("/predict", predict, ["POST"]),
        route("/metrics", metrics_route, ["GET"], needs_model=False),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = {404: "no such route", 405: "method not allowed on this route"}.get(status, "request refused")
        response = _error(status, f"{detail}: {request.method} {request.url.path[:200]}", holder.current)
        _headers(response, holder.current)
        return response

    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


# --- answers -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class _Answer:
    body: bytes
    rows: int


class _ModelError(Exception):
    """The pipeline raised while predicting (500, one line)."""


def _guarded(fn: Callable[..., _Answer], *args: Any) -> _Answer | BadRequest | _ModelError:
    """``fn(*args)``, with a refusal returned rather than raised across the thread boundary: a
    raised one carries a traceback whose frames hold the parsed body, and the exception chain
    through the thread pool is a reference cycle that only the cyclic collector frees, so a burst
    of large refused bodies piled up hundreds of MB before a collection."""
    try:
        return fn(*args)
    except BadRequest as e:
        return BadRequest(str(e), status=e.status)
    except _ModelError as e:
        return _ModelError(str(e))


def _raise(answer: _Answer | BadRequest | _ModelError) -> _Answer:
    if isinstance(answer, Exception):
        raise answer
    return answer


def _check_model(request: Request, model: ServedModel | None) -> None:
    if model is None:
        return
    name = request.path_params.get("name")
    if name is not None and name != model.name:
        raise BadRequest(f"no model {name[:80]!r} here: this server serves {model.name}", status=404)
    version = request.path_params.get("version")
    if version is not None and version != model.version:
        raise BadRequest(
            f"{model.name} version {version[:40]!r} is not served here (serving {model.version})", status=404
        )


def _infer(model: ServedModel, body: bytes, limits: Limits) -> _Answer:
    data = parse_json(body)
    frame = frame_from_oip(data, model.features, max_rows=limits.max_rows)
    wanted = _requested_outputs(data, model)
    labels, proba = _run(model, frame)
    outputs: list[dict[str, Any]] = []
    if "predict" in wanted:
        outputs.append(
            {"name": "predict", "shape": [len(labels)], "datatype": _label_datatype(model, labels), "data": labels}
        )
    if "predict_proba" in wanted and proba is not None:
        width = len(model.classes or ())
        outputs.append(
            {
                "name": "predict_proba",
                "shape": [len(labels), width],
                "datatype": "FP64",
                "data": [v for row in proba for v in row],
                "parameters": {"classes": list(_jsonable(model.classes or ()))},
            }
        )
    answer: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if isinstance(data.get("id"), str):
        answer["id"] = data["id"][:200]
    answer["outputs"] = outputs
    return _Answer(body=_dumps(answer), rows=len(labels))


def _predict(model: ServedModel, body: bytes, kind: str, as_csv: bool, limits: Limits) -> _Answer:
    if kind in ("text/csv", "application/csv"):
        frame = frame_from_csv(body, model.features, max_rows=limits.max_rows)
    elif kind in (_JSON, ""):
        frame = frame_from_records(parse_json(body), model.features, max_rows=limits.max_rows)
    else:
        raise BadRequest(f"unsupported content type {kind[:60]!r}: send application/json or text/csv", status=415)
    labels, proba = _run(model, frame)
    if as_csv:
        from toolkit.prediction import Predictions

        result = Predictions(predictions=labels, classes=model.classes, probabilities=_array(proba), ignored=())
        return _Answer(body=result.to_csv(), rows=len(labels))
    rows: list[dict[str, Any]] = []
    classes = list(_jsonable(model.classes or ()))
    for i, label in enumerate(labels):
        row: dict[str, Any] = {"prediction": label}
        if proba is not None:
            row.update({f"proba_{c}": p for c, p in zip(classes, proba[i], strict=True)})
        rows.append(row)
    answer = {"model_name": model.name, "model_version": model.version, "predictions": rows}
    return _Answer(body=_dumps(answer), rows=len(labels))


def _run(model: ServedModel, frame: Any) -> tuple[list[Any], list[list[float]] | None]:
    try:
        labels = _jsonable(model.pipeline.predict(frame))
        proba = model.pipeline.predict_proba(frame).tolist() if model.is_classifier else None
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:300]
        raise _ModelError(f"the model failed to predict: {type(e).__name__}: {first}") from None
    return labels, proba


def _requested_outputs(data: dict[str, Any], model: ServedModel) -> set[str]:
    available = {"predict", "predict_proba"} if model.is_classifier else {"predict"}
    requested = data.get("outputs")
    if requested is None:
        return available
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise BadRequest('"outputs" must be a list of {"name": ...}')
    names = {o["name"] for o in requested}
    unknown = sorted(names - available)
    if unknown:
        raise BadRequest(
            f"unknown output(s) {', '.join(repr(u[:40]) for u in unknown[:3])}: "
            f"this model has {', '.join(sorted(available))}"
        )
    return names


def _metadata(model: ServedModel) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = [{"name": "predict", "datatype": _label_datatype(model, None), "shape": [-1]}]
    if model.is_classifier:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(model.classes or ())]})
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "sklearn",
        "model_version": model.version,
        "inputs": [{"name": n, "datatype": oip_datatype(d), "shape": [-1]} for n, d in model.features],
        "outputs": outputs,
        "parameters": {
            "sha256": model.sha256,
            "lock_sha256": model.lock_sha256,
            "algorithm": model.card.algorithm,
            "classes": None if model.classes is None else list(_jsonable(model.classes)),
        },
    }


def _label_datatype(model: ServedModel, labels: list[Any] | None) -> str:
    values = list(model.classes) if model.classes is not None else labels
    if model.classes is None:
        return "FP64"
    if values and all(isinstance(v, str) for v in _jsonable(values)):
        return "BYTES"
    if values and all(isinstance(v, bool) for v in _jsonable(values)):
        return "BOOL"
    if values and all(isinstance(v, int) for v in _jsonable(values)):
        return "INT64"
    return "BYTES"


async def _body(request: Request, limits: Limits) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("invalid Content-Length")
        if int(declared) > limits.max_body:
            raise TooLarge(f"body of {declared} bytes is over this server's limit of {limits.max_body} (--max-body)")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body:
                raise TooLarge(f"body over this server's limit of {limits.max_body} bytes (--max-body)")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout=limits.body_timeout)
    except asyncio.TimeoutError:
        raise BadRequest(f"the body did not arrive within {limits.body_timeout:g} s", status=408) from None
    return b"".join(chunks)


def _error(status: int, message: str, model: ServedModel | None) -> Response:
    line = (message.splitlines() or [""])[0]
    body = {"error": line, "model_version": model.version if model else None}
    return Response(_dumps(body), status_code=status, media_type=_JSON)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(_dumps(obj), status_code=status, media_type=_JSON)


def _headers(response: Response, model: ServedModel | None) -> None:
    response.headers["X-Model-Version"] = model.version if model else ""
    response.headers["X-Model-Sha256"] = model.sha256 if model else ""


def _dumps(obj: Any) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:  # NaN has no JSON spelling: a model that outputs one is answered with null
        return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False).encode()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    return obj


def _jsonable(values: Any) -> list[Any]:
    from toolkit.card import jsonable

    items = values.tolist() if hasattr(values, "tolist") else list(values)
    return [jsonable(v) for v in items]


def _array(proba: list[list[float]] | None) -> Any:
    if proba is None:
        return None
    import numpy as np

    return np.asarray(proba)
