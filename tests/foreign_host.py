"""A tiny HTTP server on another local port that records every connection made to it: the
"foreign host" a hostile upstream names in a next-page link. A test asserts it saw nothing."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ForeignHost:
    """Counts connections and requests (with their headers) made to it; answers with `status`,
    `headers` and `body`."""

    def __init__(
        self,
        body: bytes = b'{"tickets": [], "end_of_stream": true}',
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.body, self.status, self.headers = body, status, headers or {}
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self) -> None:
                host.connections += 1
                super().setup()

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                host.requests.append((self.path, dict(self.headers)))
                self.send_response(host.status)
                for name, value in host.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(host.body)))
                self.end_headers()
                self.wfile.write(host.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def untouched(self) -> bool:
        return self.connections == 0 and not self.requests


@contextmanager
def foreign_host(**kwargs: object) -> Iterator[ForeignHost]:
    """A `ForeignHost` serving in a thread for the block."""
    host = ForeignHost(**kwargs)  # type: ignore[arg-type]
    host._thread.start()
    try:
        yield host
    finally:
        host._server.shutdown()
        host._server.server_close()
