"""The HTTP API (Starlette): ingest, metric reads, series, live push, health and telemetry.

Every error is JSON ``{"error": message}`` with a message that says what was expected.
Documented in docs/API.md; the OpenAPI document is served at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from pulseboard import pipeline_stats, series
from pulseboard.adapters.base import StoreUnavailable
from pulseboard.adapters.sqlite import StoredDashboard, now_ms
from pulseboard.auth import AuthError, Authorizer
from pulseboard.config import Config
from pulseboard.dashboards import (
    PIPELINE_STATS,
    DashboardError,
    config_dashboard,
    dashboard_json,
    parse_dashboard,
    pipeline_stat,
    stored_dashboard,
)
from pulseboard.engine import aggregator_for
from pulseboard.errors import DecodeError
from pulseboard.live import Subscriber
from pulseboard.openapi import OPENAPI
from pulseboard.processor import current_payload
from pulseboard.service import Overloaded, TooLarge, gunzip
from pulseboard.service_port import ApiService
from pulseboard.telemetry import Telemetry
from pulseboard.web import StaticApp

JSON_TYPES = ("application/json", "")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson")
MAX_DASHBOARD_BYTES = 256 * 1024


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode({"error": message}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _json(body: bytes, *, max_age_s: int = 0, status: int = 200) -> Response:
    headers = {"Cache-Control": f"max-age={max_age_s}" if max_age_s else "no-store"}
    return Response(body, status_code=status, media_type="application/json", headers=headers)


class Api:
    """The routes of one service."""

    def __init__(self, service: ApiService, *, require_keys: bool) -> None:
        self.service = service
        self.auth = Authorizer(service.keys, required=require_keys)
        self.telemetry = Telemetry(service)
        # whole seconds only: a sub-second tick cannot be said in Cache-Control, so no-store
        self.max_age_s = service.config.pipeline.tick_ms // 1000
        self._cache: dict[str, tuple[float, bytes]] = {}

    def _authorize(self, request: Request | WebSocket, scope: str) -> None:
        header = request.headers.get("authorization")
        if "key" in request.query_params and not (header or "").startswith("Bearer "):
            header = f"Bearer {request.query_params['key']}"  # browsers cannot set WS headers
        self.auth.check(header, scope)

    # --- ingest ---------------------------------------------------------------------------

    async def post_events(self, request: Request) -> Response:
        started = time.perf_counter()
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in JSON_TYPES + NDJSON_TYPES:
            return error(
                415,
                f"Content-Type {media!r} is not accepted; send application/json "
                "(an array of events) or application/x-ndjson (one event per line)",
            )
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return error(415, f"Content-Encoding {encoding!r} is not accepted; use gzip or none")
        limit = self.service.config.limits.max_request_bytes
        try:
            body = await _read_body(request, limit)
            if encoding == "gzip":
                body = gunzip(body, limit)
            result = await self.service.ingest(body, ndjson=media in NDJSON_TYPES)
        except TooLarge as exc:
            return error(413, str(exc))
        except DecodeError as exc:
            return error(400, str(exc))
        except Overloaded as exc:
            return error(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
        self.telemetry.ingest_seconds.observe(time.perf_counter() - started)
        body = msgspec.json.encode(
            {"accepted": result.accepted, "rejected": result.rejected, "errors": result.errors}
        )
        return _json(body, status=202)

    # --- reads ----------------------------------------------------------------------------

    async def list_metrics(self, request: Request) -> Response:
        service = self.service
        out = []
        for spec in service.config.metrics:
            body = service.current_body(spec.name)
            out.append(
                {
                    "name": spec.name,
                    "event": spec.event,
                    "agg": spec.agg,
                    "field": spec.field,
                    "window_ms": spec.window_ms,
                    "every_ms": spec.every_ms,
                    "group_by": list(spec.group_by),
                    "where": spec.where.text if spec.where is not None else None,
                    "current": msgspec.Raw(body) if body is not None else None,
                }
            )
        return _json(msgspec.json.encode({"metrics": out}), max_age_s=self.max_age_s)

    async def get_metric(self, request: Request) -> Response:
        name = request.path_params["name"]
        spec = self.service.config.metric(name)
        if spec is None:
            return self._unknown_metric(name)
        body = self.service.current_body(name)
        if body is None:  # nothing computed yet
            empty = current_payload(spec, [], None, None)
            empty["stale"] = self.service.stale()
            body = msgspec.json.encode(empty)
        return _json(body, max_age_s=self.max_age_s)

    async def get_series(self, request: Request) -> Response:
        name = request.path_params["name"]
        spec = self.service.config.metric(name)
        if spec is None:
            return self._unknown_metric(name)
        key = f"{name}?{request.url.query}"
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now < hit[0]:
            return _json(hit[1], max_age_s=self.max_age_s)
        try:
            req = series.request(spec, dict(request.query_params), now_ms())
        except series.QueryError as exc:
            return error(400, str(exc))
        agg = aggregator_for(self.service.config, spec)
        result = await asyncio.to_thread(series.read_series, self.service.state, agg, req)
        result["stale"] = self.service.stale()
        body = msgspec.json.encode(result)
        if len(self._cache) > 1_000:
            self._cache.clear()
        self._cache[key] = (now + self.service.config.pipeline.tick_ms / 1000, body)
        return _json(body, max_age_s=self.max_age_s)

    def _unknown_metric(self, name: str) -> Response:
        known = ", ".join(m.name for m in self.service.config.metrics)
        return error(404, f"no metric named {name!r}; the config defines: {known}")

    # --- dashboards -----------------------------------------------------------------------

    def _dashboard(self, ident: str) -> dict[str, Any] | None:
        service = self.service
        spec = next((d for d in service.config.dashboards if d.id == ident), None)
        if spec is not None:
            return config_dashboard(spec)
        stored = service.dashboards.get(ident)
        if stored is None:
            return None
        return stored_dashboard(stored.id, stored.body, stored.updated_ms, service.config)

    def _unknown_dashboard(self, ident: str) -> Response:
        known = [d.id for d in self.service.config.dashboards]
        known += [d.id for d in self.service.dashboards.all()]
        return error(404, f"no dashboard {ident!r}; known: {', '.join(known) or 'none'}")

    async def list_dashboards(self, request: Request) -> Response:
        service = self.service
        out = [config_dashboard(spec) for spec in service.config.dashboards]
        stored = await asyncio.to_thread(service.dashboards.all)
        out += [stored_dashboard(d.id, d.body, d.updated_ms, service.config) for d in stored]
        return _json(msgspec.json.encode({"dashboards": out}))

    async def get_dashboard(self, request: Request) -> Response:
        ident = request.path_params["id"]
        found = await asyncio.to_thread(self._dashboard, ident)
        if found is None:
            return self._unknown_dashboard(ident)
        return _json(msgspec.json.encode(found))

    def _read_only(self, ident: str) -> Response | None:
        if any(d.id == ident for d in self.service.config.dashboards):
            return error(
                409,
                f"dashboard {ident!r} is defined in the config file and is read-only here; "
                "save a copy under another id, or change the config",
            )
        return None

    async def put_dashboard(self, request: Request) -> Response:
        ident = request.path_params["id"]
        refused = self._read_only(ident)
        if refused is not None:
            return refused
        try:
            body = await _read_body(request, MAX_DASHBOARD_BYTES)
            spec = parse_dashboard(ident, body, self.service.config)
        except TooLarge:
            return error(413, f"a dashboard body is at most {MAX_DASHBOARD_BYTES} bytes")
        except DashboardError as exc:
            return error(400, str(exc))
        stored = StoredDashboard(ident, msgspec.json.encode(dashboard_json(spec)), now_ms())
        create_only = request.headers.get("if-none-match", "").strip() == "*"
        created = await asyncio.to_thread(
            functools.partial(self.service.dashboards.put, stored, create_only=create_only)
        )
        if created is None:
            return error(
                412, f"dashboard {ident!r} exists already; choose another id, or open it to edit it"
            )
        out = stored_dashboard(stored.id, stored.body, stored.updated_ms, self.service.config)
        return _json(msgspec.json.encode(out), status=201 if created else 200)

    async def delete_dashboard(self, request: Request) -> Response:
        ident = request.path_params["id"]
        refused = self._read_only(ident)
        if refused is not None:
            return refused
        if not await asyncio.to_thread(self.service.dashboards.delete, ident):
            return self._unknown_dashboard(ident)
        return Response(status_code=204)

    async def pipeline(self, request: Request) -> Response:
        text = request.query_params.get("from", "-5m")
        try:
            from_ms = series.parse_time(text, now_ms(), "from")
        except series.QueryError as exc:
            return error(400, str(exc))
        sampler = self.service.sampler
        body = {
            "current": sampler.current(),
            "history": sampler.history(from_ms),
            "metrics": pipeline_stats.metric_stats(self.service.stats),
        }
        return _json(msgspec.json.encode(body))

    # --- live -----------------------------------------------------------------------------

    def _metrics_of(self, message: Any) -> list[str]:
        """The metric names a subscribe message asks for; ValueError says what is wrong."""
        config = self.service.config
        if isinstance(message, dict) and isinstance(message.get("subscribe"), list):
            names = message["subscribe"]
        elif isinstance(message, dict) and isinstance(message.get("dashboard"), str):
            board = self._dashboard(message["dashboard"])
            if board is None:
                known = ", ".join(d.id for d in config.dashboards)
                raise ValueError(f"no dashboard {message['dashboard']!r}; known: {known}")
            names = [p["metric"] for p in board["panels"]]
            names += [p["divide_by"] for p in board["panels"] if p.get("divide_by")]
        else:
            raise ValueError('expected {"subscribe": ["metric", ...]} or {"dashboard": "id"}')
        if not names:
            raise ValueError("no metrics given; name at least one")
        unknown = [n for n in names if not _known(config, n)]
        if unknown:
            raise ValueError(f"unknown metrics {unknown!r}")
        # every pipeline stat comes in one message per tick, on one channel
        return list(
            dict.fromkeys(
                pipeline_stats.CHANNEL if pipeline_stat(n) is not None else n for n in names
            )
        )

    def _subscribe(self, subscriber: Subscriber, names: list[str]) -> None:
        service = self.service
        service.hub.subscribe(subscriber, names)
        for name in names:
            if name == pipeline_stats.CHANNEL:
                sample = service.sampler.current()
                if sample is not None:
                    subscriber.offer(pipeline_stats.message(sample, service.stats).decode())
                continue
            body = service.current_body(name)
            if body is not None:
                subscriber.offer(body.decode())

    async def live_ws(self, ws: WebSocket) -> None:
        try:
            self._authorize(ws, "read")
        except AuthError as exc:
            await ws.send_denial_response(error(exc.status, str(exc)))
            return
        await ws.accept()
        hub = self.service.hub
        subscriber = hub.add()
        sender = asyncio.create_task(_send_loop(ws, subscriber))
        try:
            while True:
                receiver = asyncio.ensure_future(ws.receive_text())
                done, _ = await asyncio.wait(
                    {receiver, sender}, return_when=asyncio.FIRST_COMPLETED
                )
                if sender in done:
                    receiver.cancel()
                    break
                try:
                    names = self._metrics_of(msgspec.json.decode(receiver.result()))
                except (msgspec.DecodeError, ValueError) as exc:
                    subscriber.offer(msgspec.json.encode({"error": str(exc)}).decode())
                    continue
                self._subscribe(subscriber, names)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.remove(subscriber)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        if subscriber.slow:
            with contextlib.suppress(Exception):
                await ws.close(code=1013, reason="too slow: fell behind the live stream")

    async def live_sse(self, request: Request) -> Response:
        names_text = request.query_params.get("metrics", "")
        try:
            names = self._metrics_of(
                {"subscribe": [n.strip() for n in names_text.split(",") if n.strip()]}
            )
        except ValueError as exc:
            return error(400, f"metrics={names_text!r}: {exc}")
        hub = self.service.hub
        subscriber = hub.add()
        self._subscribe(subscriber, names)

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    message = await subscriber.queue.get()
                    if message is None:
                        return
                    yield f"data: {message}\n\n"
            finally:
                hub.remove(subscriber)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    # --- operations -----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return _json(b'{"status":"ok"}')

    async def readyz(self, request: Request) -> Response:
        checks = await asyncio.to_thread(self.service.readiness)
        ready = all(v == "ok" for v in checks.values())
        body = msgspec.json.encode({"ready": ready, "checks": checks})
        return _json(body, status=200 if ready else 503)

    async def prometheus(self, request: Request) -> Response:
        return Response(
            self.telemetry.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)

    def routes(self) -> list[Route | WebSocketRoute]:
        def guarded(
            scope: str, handler: Callable[[Request], Awaitable[Response]]
        ) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    self._authorize(request, scope)
                except AuthError as exc:
                    return error(exc.status, str(exc))
                return await handler(request)

            return endpoint

        return [
            Route("/v1/events", guarded("ingest", self.post_events), methods=["POST"]),
            Route("/v1/metrics", guarded("read", self.list_metrics), methods=["GET"]),
            Route("/v1/metrics/{name}", guarded("read", self.get_metric), methods=["GET"]),
            Route("/v1/metrics/{name}/series", guarded("read", self.get_series), methods=["GET"]),
            Route("/v1/live/sse", guarded("read", self.live_sse), methods=["GET"]),
            WebSocketRoute("/v1/live", self.live_ws),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", guarded("read", self.prometheus), methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/dashboards", guarded("read", self.list_dashboards), methods=["GET"]),
            Route("/v1/dashboards/{id}", guarded("read", self.get_dashboard), methods=["GET"]),
            Route(
                "/v1/dashboards/{id}",
                guarded("dashboards", self.put_dashboard),
                methods=["PUT"],
            ),
            Route(
                "/v1/dashboards/{id}",
                guarded("dashboards", self.delete_dashboard),
                methods=["DELETE"],
            ),
            Route("/v1/pipeline", guarded("read", self.pipeline), methods=["GET"]),
        ]


def _known(config: Config, name: object) -> bool:
    """A metric of the config, or a pipeline stat."""
    if not isinstance(name, str):
        return False
    stat = pipeline_stat(name)
    return config.metric(name) is not None if stat is None else stat in PIPELINE_STATS


async def _send_loop(ws: WebSocket, subscriber: Subscriber) -> None:
    while True:
        message = await subscriber.queue.get()
        if message is None:
            return
        await ws.send_text(message)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(
            f"the body is {declared} bytes; at most {limit} are accepted "
            "(limits.max_request_bytes); split it into smaller requests"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(
                f"the body is over {limit} bytes (limits.max_request_bytes); "
                "split it into smaller requests"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: ApiService, *, require_keys: bool) -> Starlette:
    """The ASGI app; starting it starts the service (and its processor), stopping stops it."""
    api = Api(service, require_keys=require_keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /openapi.json"
        elif exc.status_code == 405:
            allowed = ", ".join(sorted((exc.headers or {}).get("Allow", "").split(", ")))
            message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
        else:
            message = str(exc.detail)
        return error(exc.status_code, message, dict(exc.headers or {}))

    async def unavailable(request: Request, exc: Exception) -> Response:
        # a store down (PostgreSQL for dashboards or keys, Redis for series): retry later
        return error(503, str(exc), {"Retry-After": "5"})

    return Starlette(
        routes=[*api.routes(), *StaticApp().routes()],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, StoreUnavailable: unavailable},
        middleware=[Middleware(_Compress)],
    )


class _Compress:
    """gzip for answers of 1 KiB or more (series, metric lists) when the client accepts it;
    ingest bypasses it (its answers are small and its path is the hot one), and so do
    WebSockets; server-sent events are never compressed (they must flush per message)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/v1/events":
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)
