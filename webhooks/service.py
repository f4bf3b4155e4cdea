"""What every webhook endpoint shares: `WebhookService`, the building blocks of a handler.

Each domain owns its endpoints in its own module (`webhooks/providers.py`, `webhooks/feedback.py`)
as a route provider, `routes(service: WebhookService) -> list[Route]`; `webhooks/app.py`
assembles them. The service gives every handler the same building blocks, so every endpoint
answers the same way (ARCHITECTURE.md, HTTP).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from resources.queues import QueueResource
from resources.settings import Settings
from resources.warehouse import WarehouseResource

log = logging.getLogger("supportflow.webhooks")

MAX_BODY_BYTES = 1024 * 1024


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
