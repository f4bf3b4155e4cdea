"""The sandbox HTTP server: one Starlette app hosting every local SaaS stand-in.

Each stand-in contributes routes through a *route provider*: a function
`routes(config: SandboxConfig) -> list[starlette.routing.BaseRoute]`, listed in
`ROUTE_PROVIDERS`. Adding a stand-in is one entry there; the provider reads what it needs from
`config` (its own objects go in `config.extra`, e.g. `config.extra["zendesk_accounts"]`).

    config = SandboxConfig(seed=7, tickets=5000)
    base_url, stop = start_in_thread(build_app(config))   # uvicorn in a thread, free port
    ...
    stop()

`supportflow sandbox serve [--host H] [--port P] [--seed S] [--tickets N]` runs the same app
in the foreground (see `orchestration/commands/sandbox.py`).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from sandbox import discourse, zendesk


@dataclass
class SandboxConfig:
    """What every provider may read. Providers keep their own state objects in `extra`."""

    seed: int = 1
    tickets: int = 1000
    comments_per_ticket: float = 4.0
    # sandbox seconds per real second for rate-limit windows (60 -> a "minute" lasts 1 s)
    clock_scale: float = 1.0
    rate_limits: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


RouteProvider = Callable[[SandboxConfig], list[BaseRoute]]
# Each stand-in's routes: `routes(config) -> list[BaseRoute]`.
ROUTE_PROVIDERS: list[RouteProvider] = [zendesk.routes, discourse.routes]


async def _healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def build_app(
    config: SandboxConfig | None = None, providers: Sequence[RouteProvider] | None = None
) -> Starlette:
    """The sandbox app: `/healthz` plus the routes of every provider (default `ROUTE_PROVIDERS`)."""
    config = config or SandboxConfig()
    routes: list[BaseRoute] = [Route("/healthz", _healthz)]
    for provider in ROUTE_PROVIDERS if providers is None else providers:
        routes.extend(provider(config))
    app = Starlette(routes=routes)
    app.state.sandbox_config = config
    return app


def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound listening socket (port 0: the OS picks a free one), handed to uvicorn as is."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def start_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 15.0
) -> tuple[str, Callable[[], None]]:
    """Serve `app` with uvicorn in a daemon thread; returns `(base_url, stop)`.

    The socket is bound before the thread starts, so there is no race for the port.
    """
    sock = free_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sandbox-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"sandbox server did not start on {host}:{bound_port}")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return f"http://{host}:{bound_port}", stop


def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the sandbox in the foreground until interrupted."""
    uvicorn.run(build_app(config), host=host, port=port, log_level="info", lifespan="off")
