"""What every webhook endpoint shares: `WebhookService`, the building blocks of a handler.

Each domain owns its endpoints in its own module (`webhooks/providers.py`, `webhooks/feedback.py`)
as a route provider, `routes(service: WebhookService) -> list[Route]`; `webhooks/app.py`
assembles them. The service gives every handler the same building blocks, so every endpoint
answers the same way (ARCHITECTURE.md, HTTP):

- hostile bodies cost little: JSON nested deeper than 64 levels is a 400 before it is decoded;
- input that was verified (signature, token) but can never be stored or read (content
  PostgreSQL `jsonb` cannot hold, a field of the wrong type, a message over the queue's 256 KiB)
  is refused for good with `reject_input`: 4xx at once, so the sender stops retrying, and the
  body is kept with the reason in `control.rejected_input` (`resources/rejected.py`);
- a database or queue that is down is a 503 with `Retry-After` within `pool_timeout_seconds`
  of the warehouse (a few seconds for the service), never a 500 after 30 s;
- log lines name the endpoint, the status and what failed (an exception type, a SQLSTATE),
  never a body, a field's value or a credential;
- concurrent requests share commits: what they enqueue (and Mailgun's token claims) is gathered
  by `Batched` while the previous write is in flight and written in one transaction, so a burst
  of N requests costs about one commit, not N, and each is still answered only after its own
  write committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from resources.messages import DedupKey
from resources.payloads import MessageTooLarge, PayloadError, encode_message, loads
from resources.queues import QueueResource, dedup_id_for
from resources.rejected import keep_rejected_input
from resources.settings import Settings
from resources.warehouse import WarehouseResource
from webhooks.verify import CertificateUnavailable

log = logging.getLogger("supportflow.webhooks")

MAX_BODY_BYTES = 1024 * 1024
# how long the service waits for a warehouse connection before answering 503
SERVICE_POOL_TIMEOUT_SECONDS = 3.0
RETRY_AFTER_SECONDS = 30


Item = TypeVar("Item")
Result = TypeVar("Result")


class _Waiting:
    """One event loop's items waiting for a flush, and how many flushes it has running."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, asyncio.Future]] = []
        self.flushing = 0


class Batched(Generic[Item, Result]):
    """Calls of a blocking `flush(items) -> results` (one result per item, in order) made by
    concurrent requests, gathered: up to `concurrency` flushes run at once in worker threads (so
    one waiting on the disk does not hold the next back), and the items submitted while they all
    run wait and go together in the next. The flush is the unit of success: when it raises,
    every item in it gets the exception. A service served by several event loops (tests) gathers
    per loop."""

    def __init__(self, flush: Callable[[list[Item]], Sequence[Result]], concurrency: int = 2):
        self._flush = flush
        self._concurrency = concurrency
        self._waiting: dict[asyncio.AbstractEventLoop, _Waiting] = {}
        self._flushers: set[asyncio.Task] = set()  # held: the loop keeps only weak references

    async def submit(self, item: Item) -> Result:
        """The item's result, once the flush that took it has returned."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        waiting = self._waiting.setdefault(loop, _Waiting())
        waiting.items.append((item, future))
        if waiting.flushing < self._concurrency:
            waiting.flushing += 1
            flusher = loop.create_task(self._flush_waiting(loop, waiting))
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await future

    async def _flush_waiting(self, loop: asyncio.AbstractEventLoop, waiting: _Waiting) -> None:
        try:
            while batch := waiting.items:
                waiting.items = []
                try:
                    results = await run_in_threadpool(self._flush, [item for item, _ in batch])
                except Exception as exc:  # every waiter answers for itself (503, ...)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            waiting.flushing -= 1
            if not waiting.flushing:
                del self._waiting[loop]
                for _, future in waiting.items:  # cancelled: nobody is left to flush these
                    future.cancel()


class RejectedInput(HTTPException):
    """Verified input refused for good: answered with its status and kept with the reason."""

    def __init__(self, status_code: int, reason: str, queue: str | None = None):
        super().__init__(status_code=status_code, detail=reason)
        self.queue = queue


def describe_failure(exc: BaseException) -> str:
    """What failed, for a log line: the exception type and SQLSTATE, never its text (a database
    error's text quotes the offending data)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return type(exc).__name__ + (f" (SQLSTATE {sqlstate})" if sqlstate else "")


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
    # one gatherer of concurrent sends per (queue, idempotency key)
    _sends: dict[tuple[str, Any], Batched[list[dict[str, Any]], int]] = field(
        default_factory=dict, init=False, repr=False
    )

    @staticmethod
    def reject(status_code: int, reason: str) -> NoReturn:
        raise HTTPException(status_code=status_code, detail=reason)

    @staticmethod
    def reject_input(status_code: int, reason: str, queue: str | None = None) -> NoReturn:
        """Refuse verified input for good: the answer is `status_code` with the reason, and the
        request's body is kept with the reason in `control.rejected_input`."""
        raise RejectedInput(status_code, reason, queue)

    @staticmethod
    def unavailable(reason: str) -> NoReturn:
        """503 with Retry-After: a passing failure on our side, the sender retries."""
        raise HTTPException(503, reason, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

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
        raw = b"".join(chunks)
        request.state.raw_body = raw  # kept if the input is refused after verification
        return raw

    def parse_json(self, raw: bytes, *, verified: bool = False) -> Any:
        """The decoded document; 400 for malformed JSON or nesting deeper than 64 levels
        (refused before decoding). `verified`: the sender is already proven (a signature over
        the raw body, a bearer token), so a refused body is kept (`reject_input`). `NaN` and
        `Infinity` decode, so a verified body holding them is refused by `enqueue` for what it
        is, and kept."""
        try:
            return loads(raw)
        except PayloadError as exc:
            if verified:  # kept; the handler logs the one line
                self.reject_input(400, f"body is {exc}")
            log.warning("refused a request body: %s", str(exc).split(":", 1)[0])
            self.reject(400, f"body is {exc}")

    async def enqueue(
        self, queue: str, bodies: Sequence[dict[str, Any]], dedup_key: DedupKey | None = None
    ) -> int:
        """Send with the producer's idempotency key and return once stored. A message no queue
        can take (content `jsonb` cannot hold: 400; over 256 KiB: 413) is refused for good and
        kept; a queue that fails is a 503 with Retry-After (the sender retries). Concurrent
        requests' messages for the same queue go in one send (`Batched`); the checks above
        make sure one request's messages cannot fail another's."""
        for index, body in enumerate(bodies):
            try:
                encode_message(body, dedup_id_for(body, dedup_key))
            except MessageTooLarge as exc:
                self.reject_input(413, f"event {index}: the message {exc}", queue)
            except PayloadError as exc:
                self.reject_input(
                    400, f"event {index}: {exc}, which the platform cannot store", queue
                )
        sends = self._sends.get((queue, dedup_key))
        if sends is None:
            sends = self._sends[queue, dedup_key] = Batched(self._sender(queue, dedup_key))
        try:
            return await sends.submit(list(bodies))
        except Exception as exc:
            log.warning(
                "could not enqueue %d message(s) on %s: %s",
                len(bodies),
                queue,
                describe_failure(exc),
            )
            self.unavailable(f"could not enqueue on {queue}; retry later")

    def _sender(
        self, queue: str, dedup_key: DedupKey | None
    ) -> Callable[
        [
            list[list[dict[str, Any]]],
        ],
        list[int],
    ]:
        def send(requests: list[list[dict[str, Any]]]) -> list[int]:
            self.queues.send(queue, [b for bodies in requests for b in bodies], dedup_key=dedup_key)
            return [len(bodies) for bodies in requests]

        return send

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking work (database calls) off the event loop."""
        return await run_in_threadpool(fn, *args)

    # --- readiness and the answers every endpoint shares ---------------------------------------

    def _database_ready(self) -> None:
        with self.warehouse.connection() as conn:
            conn.execute("select 1")

    async def readiness(self) -> str | None:
        """None when the service can take requests (the warehouse answers), else why not."""
        try:
            await run_in_threadpool(self._database_ready)
        except Exception as exc:
            return f"database unavailable ({describe_failure(exc)})"
        return None

    def _keep(self, path: str, exc: RejectedInput, body: bytes) -> int:
        with self.warehouse.connection() as conn:
            return keep_rejected_input(
                conn, source=path, reason=str(exc.detail), body=body, queue=exc.queue
            )

    async def on_rejected_input(self, request: Request, exc: Exception) -> JSONResponse:
        """Keep the refused body with its reason, then answer; 503 when it cannot be kept (the
        sender retries, so it is not lost)."""
        assert isinstance(exc, RejectedInput)
        path = request.url.path
        body = getattr(request.state, "raw_body", b"")
        try:
            kept = await run_in_threadpool(self._keep, path, exc, body)
        except Exception as failure:
            log.warning("could not keep refused input on %s: %s", path, describe_failure(failure))
            return _unavailable_response("could not record the refused input; retry later")
        # no reason here: it may quote the sender's values; it is in the table with the body
        log.warning(
            "refused verified input on %s with %d; kept as control.rejected_input %d",
            path,
            exc.status_code,
            kept,
        )
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    async def on_unavailable(self, request: Request, exc: Exception) -> JSONResponse:
        """The database, or the SNS certificate host, is not there now: 503 with Retry-After."""
        log.warning("503 on %s: %s", request.url.path, describe_failure(exc))
        if isinstance(exc, CertificateUnavailable):
            return _unavailable_response(str(exc))
        return _unavailable_response("database unavailable; retry later")

    def exception_handlers(self) -> dict[Any, Callable[..., Any]]:
        """Handlers `webhooks.app` installs, so every endpoint answers these failures alike."""
        return {
            RejectedInput: self.on_rejected_input,
            psycopg.OperationalError: self.on_unavailable,  # includes the pool's timeout
            CertificateUnavailable: self.on_unavailable,
        }


def _unavailable_response(reason: str) -> JSONResponse:
    return JSONResponse(
        {"error": reason}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
    )
