"""The webhook service: one ASGI (Starlette) app that receives provider webhooks and pushed events
and writes them to durable queues.

The app is assembled from *route providers*, so each domain owns its endpoints in its own module:

    ROUTE_PROVIDERS = ["webhooks.providers:routes", ...]

A route provider is a function `routes(service: WebhookService) -> list[starlette.routing.Route]`.
To add endpoints, write such a function in your module (e.g. `webhooks/feedback.py`) and add its
`"module:function"` string to `ROUTE_PROVIDERS` (one str_replace edit). The `service` gives every
handler the same building blocks, so every endpoint answers the same way (ARCHITECTURE.md, HTTP):

- `await service.read_body(request, content_types)`: the raw body; 415 for another content type,
  413 for a body over `max_body_bytes` (1 MiB), counted while the stream is read, not only from
  Content-Length;
- `service.parse_json(raw)`: the decoded JSON document, 400 when malformed;
- `await service.enqueue(queue, bodies)`: send to a queue and return only once the messages are
  durably stored (503 when the queue cannot take them), so a 2xx always means "enqueued";
- `service.reject(status, reason)`: raise the error response (`{"error": reason}`);
- `service.settings`, `service.queues` (QueueResource), `service.warehouse` (WarehouseResource),
  `service.extras` (optional collaborators by name, e.g. an injected fetcher in tests).

Handlers verify (401 for a bad or missing signature or a stale timestamp) before anything is
enqueued. `GET /healthz` answers 200 while the service is up. `serve_in_thread(app)` runs the app
with uvicorn in a background thread on a free port (tests, demo, benchmarks);
`supportflow webhooks serve` runs it in the foreground.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orchestration.settings import Settings
from resources.queues import QueueResource
from resources.warehouse import WarehouseResource

log = logging.getLogger("supportflow.webhooks")

MAX_BODY_BYTES = 1024 * 1024
ROUTE_PROVIDERS: list[str] = ["webhooks.providers:routes", "webhooks.feedback:routes"]

RouteProvider = Callable[["WebhookService"], list[Route]]


@dataclass
class WebhookService:
    """What every route provider's handlers share: settings, queues, warehouse, body helpers."""

    settings: Settings
    queues: QueueResource
    warehouse: WarehouseResource
    max_body_bytes: int = MAX_BODY_BYTES
    # Per-provider collaborators a route provider may take instead of its defaults (tests inject
    # e.g. the fetcher for AWS-hosted URLs here); keys are documented by each provider module.
    extras: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def reject(status_code: int, reason: str) -> NoReturn:
        raise HTTPException(status_code=status_code, detail=reason)

    async def read_body(self, request: Request, content_types: Sequence[str]) -> bytes:
        """The raw body, after checking its media type (415) and size (413) while streaming."""
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in content_types:
            self.reject(
                415,
                f"content type {media_type or '(none)'!r} not accepted; "
                f"expected {' or '.join(content_types)}",
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            self.reject(413, f"body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                self.reject(413, f"body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse_json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.reject(400, f"body is not valid JSON: {exc}")

    async def enqueue(self, queue: str, bodies: Sequence[dict[str, Any]]) -> int:
        """Send and return once stored; 503 (the sender retries) when the queue fails."""
        try:
            return await run_in_threadpool(self.queues.send, queue, list(bodies))
        except Exception as exc:
            log.warning("could not enqueue %d message(s) on %s: %s", len(bodies), queue, exc)
            self.reject(503, f"could not enqueue on {queue}; retry later")

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (database calls) off the event loop."""
        return await run_in_threadpool(fn, *args)


def load_route_provider(spec: str) -> RouteProvider:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "routes")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


def build_service(settings: Settings | None = None) -> WebhookService:
    """The service over the configured queues and warehouse (embedded server started if needed)."""
    from orchestration.runtime import build_resources, warehouse_url

    settings = settings or Settings.from_env()
    warehouse_url(settings)  # start + migrate before the first request, not during it
    resources = build_resources(settings, for_dagster=False)
    return WebhookService(
        settings=settings, queues=resources["queues"], warehouse=resources["warehouse"]
    )


def create_app(
    service: WebhookService | None = None, providers: Sequence[str] | None = None
) -> Starlette:
    """The Starlette app: `/healthz` plus every route provider's routes."""
    service = service or build_service()
    routes: list[Route] = [Route("/healthz", healthz, methods=["GET"])]
    for spec in ROUTE_PROVIDERS if providers is None else providers:
        routes.extend(load_route_provider(spec)(service))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.service = service
    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", timeout: float = 20.0) -> Iterator[str]:
    """Run `app` with uvicorn in a daemon thread on a free port; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"webhooks:{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the webhook service did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        sock.close()


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Run the service in the foreground until interrupted."""
    uvicorn.run(create_app(build_service(settings)), host=host, port=port, log_level="info")
