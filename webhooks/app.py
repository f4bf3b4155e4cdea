"""The webhook service: one ASGI (Starlette) app that receives provider webhooks and pushed events
and writes them to durable queues.

The app is assembled from *route providers*, so each domain owns its endpoints in its own module.
A route provider is a function `routes(service: WebhookService) -> list[starlette.routing.Route]`
(`webhooks/service.py`); to add endpoints, write one in your module and add it to
`ROUTE_PROVIDERS`. The `service` gives every handler the same building blocks, so every endpoint
answers the same way (ARCHITECTURE.md, HTTP):

- `await service.read_body(request, content_types)`: the raw body; 415 for another content type,
  413 for a body over `max_body_bytes` (1 MiB), counted while the stream is read, not only from
  Content-Length;
- `service.parse_json(raw)`: the decoded JSON document, 400 when malformed;
- `await service.enqueue(queue, bodies, dedup_key)`: send to a queue with the producer's
  idempotency key (the domain's `rules.py` declares it) and return only once the messages are
  durably stored (503 when the queue cannot take them), so a 2xx always means "enqueued";
- `service.reject(status, reason)`: raise the error response (`{"error": reason}`);
- `service.settings`, `service.queues` (QueueResource), `service.warehouse` (WarehouseResource),
  `service.extras` (optional collaborators by name, e.g. an injected fetcher in tests).

Handlers verify (401 for a bad or missing signature or a stale timestamp) before anything is
enqueued; verified input that can never be stored is refused with `service.reject_input` (4xx,
kept in `control.rejected_input`); a database that is down is a 503 with `Retry-After` on every
endpoint (`WebhookService.exception_handlers`). `GET /healthz` is readiness: 200
`{"status": "ok"}` while the warehouse answers, else 503 (a load balancer stops sending);
`GET /livez` is liveness: 200 while the process serves at all (restart it only when that
fails). `serve_in_thread(app)` runs the app with uvicorn in a background thread on a free port
(tests, demo, benchmarks); `supportflow webhooks serve` runs it in the foreground.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resources.runtime import build_resources, warehouse_url
from resources.settings import Settings
from webhooks.api import routes as api_routes
from webhooks.feedback import routes as feedback_routes
from webhooks.providers import routes as email_routes
from webhooks.service import (
    MAX_BODY_BYTES,
    RETRY_AFTER_SECONDS,
    SERVICE_POOL_TIMEOUT_SECONDS,
    WebhookService,
)

__all__ = ["MAX_BODY_BYTES", "WebhookService", "create_app", "serve", "serve_in_thread"]

RouteProvider = Callable[[WebhookService], list[Route]]
# Each domain's endpoints: email providers, pushed feedback.
ROUTE_PROVIDERS: list[RouteProvider] = [email_routes, feedback_routes, api_routes]


async def livez(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def build_service(settings: Settings | None = None) -> WebhookService:
    """The service over the configured queues and warehouse (embedded server started if needed)."""
    settings = settings or Settings.from_env()
    warehouse_url(settings)  # start + migrate before the first request, not during it
    resources = build_resources(
        settings, for_dagster=False, pool_timeout_seconds=SERVICE_POOL_TIMEOUT_SECONDS
    )
    return WebhookService(
        settings=settings, queues=resources["queues"], warehouse=resources["warehouse"]
    )


def create_app(
    service: WebhookService | None = None, providers: Sequence[RouteProvider] | None = None
) -> Starlette:
    """The Starlette app: `/healthz`, `/livez` plus every route provider's routes."""
    service = service or build_service()

    async def healthz(request: Request) -> JSONResponse:
        problem = await service.readiness()
        if problem is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"status": "unavailable", "reason": problem},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    routes: list[Route] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
    ]
    for provider in ROUTE_PROVIDERS if providers is None else providers:
        routes.extend(provider(service))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, **service.exception_handlers()},
    )
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
