"""The Zendesk Support API client: a desk's credentials, its request budget and its endpoints.

`ZendeskApi` talks to one desk through the platform's HTTP client (`resources/http.py`: timeouts,
retries for 429/5xx/timeouts honouring `Retry-After`, backoff with full jitter, counters by
endpoint, and the same-origin rule). Every request first takes a token from the desk's budget
(incremental exports and the rest of the API have separate per-minute limits, set from the
plan), so a sync paces itself below Zendesk's limits instead of provoking a 429 storm. 401/403
fail at once. Next-page links Zendesk returns (`after_url`, `links.next`) are followed only on
the desk's own origin (scheme, host, port): a link anywhere else fails the sync naming the desk,
and the desk's credentials go nowhere. Errors name the desk and the endpoint, never the token.

`ZendeskClient` is the Dagster resource that opens a `ZendeskApi` for a desk.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import httpx
import msgspec
import orjson

from resources.http import (
    HttpClient,
    HttpError,
    RequestStats,
    RetriesExhausted,
)
from resources.secrets import SecretBox

TICKETS_EXPORT = "tickets_export"
TICKET_EVENTS_EXPORT = "ticket_events_export"
TICKET_COMMENTS = "ticket_comments"
EXPORT_ENDPOINTS = frozenset({TICKETS_EXPORT, TICKET_EVENTS_EXPORT})
TICKET_SIDELOADS = ("users", "groups", "organizations", "metric_sets")
T = TypeVar("T")


class MetricSet(msgspec.Struct):
    ticket_id: int
    solved_at: str | None = None


class TicketPage(msgspec.Struct):
    """One page of the ticket export. Tickets, users and groups stay raw JSON (`msgspec.Raw`):
    the loader reads the few fields it indexes and stores the exact bytes Zendesk sent, so the
    hot path never builds a Python object per field of every ticket."""

    tickets: list[msgspec.Raw] = []
    users: list[msgspec.Raw] = []
    groups: list[msgspec.Raw] = []
    metric_sets: list[msgspec.Raw] = []  # kept whole for raw.zendesk_tickets.metric_set
    after_cursor: str | None = None
    after_url: str | None = None
    end_of_stream: bool = False


decode_ticket_page = msgspec.json.Decoder(TicketPage).decode
# Plain JSON (dicts and lists), as orjson.loads returns it, but without orjson's transient
# working buffer of about 15 times the body: an export page of one busy second (thousands of
# events, a few MB) would otherwise lift the sync's peak memory by tens of MB.
decode_json = msgspec.json.Decoder().decode


class ZendeskError(RuntimeError):
    """A Zendesk request failed; the message names the desk and endpoint, never the token."""

    def __init__(self, desk: str, endpoint: str, message: str, status: int | None = None):
        super().__init__(f"desk {desk!r}: {endpoint}: {message}")
        self.desk, self.endpoint, self.status = desk, endpoint, status


class ZendeskAuthError(ZendeskError):
    """Zendesk refused the credentials (401/403)."""


class StartTimeTooRecent(ZendeskError):
    """An incremental export's start_time is within the last minute: nothing to fetch yet."""


@dataclass(frozen=True)
class Credentials:
    """`kind` "token" (email + API token, Basic auth) or "oauth" (Bearer)."""

    kind: str
    secret: str = field(repr=False)
    email: str | None = None

    def header(self) -> str:
        if self.kind == "oauth":
            return f"Bearer {self.secret}"
        if self.kind == "token" and self.email:
            raw = f"{self.email}/token:{self.secret}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        raise ValueError("credentials need kind 'oauth', or kind 'token' with an email")


class TokenBucket:
    """At most `rate_per_minute` requests a minute, with a burst of `capacity`; thread-safe."""

    def __init__(
        self,
        rate_per_minute: float,
        capacity: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate_per_minute <= 0:
            raise ValueError("rate_per_minute must be positive")
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, capacity)
        self.tokens = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self.lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds waited."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= 1.0
            wait = 0.0 if self.tokens >= 0 else -self.tokens / self.rate
        if wait:
            self.sleep(wait)
        return wait


def budget_rate(plan_per_minute: int) -> float:
    """The rate we allow ourselves: 90% of the plan's limit leaves room for other API users."""
    return max(0.9 * plan_per_minute, 1.0)


class ZendeskApi:
    """One desk's view of the Zendesk API."""

    def __init__(
        self,
        *,
        desk: str,
        base_url: str,
        credentials: Credentials,
        export_rate_per_minute: int = 10,
        api_rate_per_minute: int = 200,
        timeout_seconds: float = 30.0,
        max_attempts: int = 8,
        backoff_base_seconds: float = 1.0,
        backoff_cap_seconds: float = 60.0,
        retry_after_cap_seconds: float = 600.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.desk = desk
        self._export_budget = TokenBucket(
            budget_rate(export_rate_per_minute), clock=clock, sleep=sleep
        )
        self._api_budget = TokenBucket(budget_rate(api_rate_per_minute), clock=clock, sleep=sleep)
        try:
            self._http = HttpClient(
                source=f"desk {desk!r}",
                base_url=base_url,
                headers={
                    "Authorization": credentials.header(),
                    "Accept": "application/json",
                    "User-Agent": "supportflow",
                },
                timeout_seconds=timeout_seconds,
                max_attempts=max_attempts,
                backoff_base_seconds=backoff_base_seconds,
                backoff_cap_seconds=backoff_cap_seconds,
                retry_after_cap_seconds=retry_after_cap_seconds,
                pace=self._pace,
                transport=transport,
                sleep=sleep,
                seed=seed,
            )
        except HttpError as exc:
            raise ZendeskError(desk, exc.endpoint, exc.detail) from None
        self.base_url = self._http.base_url
        self.stats: RequestStats = self._http.stats

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ZendeskApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        return self._http.url(path)

    def _pace(self, endpoint: str) -> float:
        budget = self._export_budget if endpoint in EXPORT_ENDPOINTS else self._api_budget
        return budget.acquire()

    def get(
        self,
        endpoint: str,
        url: str,
        params: dict[str, Any] | None = None,
        decode: Callable[[bytes], Any] = decode_json,
    ) -> Any:
        """GET with the desk's budget, retries and error naming; returns `decode(body)`.
        `url` must be on the desk's origin (ZendeskError otherwise, nothing sent)."""
        try:
            response = self._http.get(endpoint, url, params)
        except RetriesExhausted as exc:
            suffix = f": {_error_description(exc.response)}" if exc.response is not None else ""
            raise ZendeskError(self.desk, endpoint, exc.detail + suffix, exc.status) from None
        except HttpError as exc:  # a link off the desk's origin
            raise ZendeskError(self.desk, endpoint, exc.detail, exc.status) from None
        status = response.status_code
        if status == 200:
            try:
                return decode(response.content)
            except (orjson.JSONDecodeError, msgspec.DecodeError) as exc:
                raise ZendeskError(
                    self.desk, endpoint, f"unexpected response body: {exc}", status
                ) from None
        if status in (401, 403):
            raise ZendeskAuthError(
                self.desk,
                endpoint,
                f"HTTP {status}: Zendesk refused the credentials; check the desk's email and token",
                status,
            )
        description = _error_description(response)
        if status == 400 and "start_time" in description:
            raise StartTimeTooRecent(self.desk, endpoint, description, status)
        if 300 <= status < 400:
            description = "redirects are not followed; check the desk's base URL"
        raise ZendeskError(self.desk, endpoint, f"HTTP {status}: {description}", status)

    # --- endpoints ------------------------------------------------------------------------

    def export_tickets(
        self,
        *,
        cursor: str | None = None,
        start_time: int = 0,
        per_page: int = 1000,
        include: tuple[str, ...] = TICKET_SIDELOADS,
    ) -> Iterator[TicketPage]:
        """Pages of the cursor-based incremental ticket export, from `cursor` (or `start_time`
        on the very first sync) to the end of the stream; each page carries `after_cursor`."""
        params: dict[str, Any] = {"per_page": per_page}
        if include:
            params["include"] = ",".join(include)
        if cursor:
            params["cursor"] = cursor
        else:
            params["start_time"] = start_time
        url: str | None = self.url("/api/v2/incremental/tickets/cursor.json")
        while url:
            page = self.get(TICKETS_EXPORT, url, params, decode_ticket_page)
            yield page
            if page.end_of_stream or not page.after_url:
                return
            # after_url is absolute and already carries cursor, per_page and include; `get`
            # follows it only on the desk's origin
            url, params = page.after_url, None

    def ticket_events(self, start_time: int, per_page: int = 1000) -> dict:
        """One page of the incremental ticket events export with comment events."""
        return self.get(
            TICKET_EVENTS_EXPORT,
            self.url("/api/v2/incremental/ticket_events.json"),
            {"start_time": start_time, "include": "comment_events", "per_page": per_page},
        )

    def ticket_comments(self, ticket_id: int, page_size: int = 100) -> list[dict]:
        """Every comment of one ticket (the repair path); a deleted ticket is a ZendeskError 404."""
        comments: list[dict] = []
        url: str | None = self.url(f"/api/v2/tickets/{int(ticket_id)}/comments.json")
        params: dict[str, Any] | None = {"page[size]": page_size}
        while url:
            page = self.get(TICKET_COMMENTS, url, params)
            comments.extend(page.get("comments") or [])
            has_more = (page.get("meta") or {}).get("has_more")
            url, params = ((page.get("links") or {}).get("next") if has_more else None), None
        return comments


def _error_description(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.reason_phrase or "error"
    if isinstance(body, dict):
        parts = [str(body.get(k)) for k in ("error", "description") if body.get(k)]
        if parts:
            return ": ".join(parts)[:300]
    return response.reason_phrase or "error"


def default_base_url(subdomain: str) -> str:
    return f"https://{subdomain}.zendesk.com"


class ZendeskClient(dg.ConfigurableResource):
    """Opens `ZendeskApi` sessions for desks and decrypts their stored tokens."""

    timeout_seconds: float = 30.0
    max_attempts: int = 8
    backoff_base_seconds: float = 1.0
    page_size: int = 1000
    events_page_size: int = 1000
    # a desk's first comment sync: tickets read per ticket at once, and the estimated export
    # requests below which the export alone reads everything
    comment_workers: int = 8
    split_min_export_pages: int = 10
    home: str = ".supportflow"
    secret_key: str = ""

    def secret_box(self) -> SecretBox:
        return SecretBox.from_settings(self.secret_key or None, Path(self.home))

    def open(
        self,
        *,
        desk: str,
        base_url: str,
        credentials: Credentials,
        export_rate_per_minute: int,
        api_rate_per_minute: int,
    ) -> ZendeskApi:
        return ZendeskApi(
            desk=desk,
            base_url=base_url,
            credentials=credentials,
            export_rate_per_minute=export_rate_per_minute,
            api_rate_per_minute=api_rate_per_minute,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            backoff_base_seconds=self.backoff_base_seconds,
        )
