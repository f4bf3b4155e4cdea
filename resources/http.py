"""The one HTTP client every outside API uses (Zendesk, Discourse, and any later one).

`HttpClient` talks to one configured origin (scheme, host, port) and gives every caller the same
behaviour:

- a timeout on every call, and no redirects followed;
- retries for 429, 500, 502, 503, 504, timeouts and connection errors, at most `max_attempts`
  tries: a `Retry-After` header (seconds or an HTTP date, capped) says how long to wait,
  otherwise exponential backoff with full jitter (a uniform wait between 0 and
  `min(cap, base * 2**retry)`);
- request counters by endpoint, throttles, retries, errors and time waited (`RequestStats`);
- errors that name the source (a desk, a forum) and the endpoint, never a credential;
- the same-origin rule: a URL the client is asked to fetch, in particular a next-page link taken
  from a response, must be on the configured origin. Anything else fails with
  `ForeignOriginError` before a request is made, so the credentials in the client's headers
  never reach another host.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110).
    None when absent, unparseable or not finite; never negative (a past date is 0)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retry)] for the `retry`-th retry (0-based)."""
    return rng.uniform(0.0, min(cap, base * 2 ** max(retry, 0)))


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port of a URL, default ports made explicit."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL with a host: {_origin_text(url)!r}")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError as exc:  # a port out of range or not a number
            raise ValueError(f"URL has an invalid port: {_origin_text(url)!r}") from exc
        return cls(scheme, parts.hostname.lower(), port)

    def __str__(self) -> str:
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"


def _origin_text(url: str) -> str:
    """`scheme://host[:port]` of a URL for messages: no user info, path or query."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}"[:200]


def redact_url(url: str) -> str:
    """A URL for messages: scheme, host, port and path; no user info, query or fragment."""
    parts = urlsplit(url)
    return (_origin_text(url) + parts.path)[:300]


@dataclass
class RequestStats:
    """What a client did: requests by endpoint, 429s, retries, errors by status or kind."""

    requests: Counter[str] = field(default_factory=Counter)
    throttled: int = 0  # 429 responses
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # "503", "timeout", "connection" ...
    waited_seconds: float = 0.0  # backoff, Retry-After and pacing


class HttpError(RuntimeError):
    """A request failed. The message names the source and endpoint, never a credential."""

    def __init__(self, source: str, endpoint: str, detail: str, status: int | None = None):
        super().__init__(f"{source}: {endpoint}: {detail}")
        self.source, self.endpoint, self.detail, self.status = source, endpoint, detail, status


class ForeignOriginError(HttpError):
    """A URL (a next-page link from a response) is not on the configured origin: not fetched."""


class RetriesExhausted(HttpError):
    """Every attempt failed with a retryable status or a transport error."""

    def __init__(
        self,
        source: str,
        endpoint: str,
        attempts: int,
        problem: str,
        response: httpx.Response | None = None,
    ):
        status = response.status_code if response is not None else None
        super().__init__(source, endpoint, f"{problem} after {attempts} attempts", status)
        self.attempts, self.problem, self.response = attempts, problem, response


class HttpClient:
    """One origin's client: timeouts, retries, counters and the same-origin rule.

    `source` names what is being talked to in errors ("desk 'acme'"). `pace(endpoint)` runs
    before every attempt and returns the seconds it waited (a rate budget). Responses with a
    status that is not retried are returned as they are; the caller decides what they mean.
    """

    def __init__(
        self,
        *,
        source: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 30.0,
        max_attempts: int = 5,
        backoff_base_seconds: float = 1.0,
        backoff_cap_seconds: float = 60.0,
        retry_after_cap_seconds: float = 600.0,
        pace: Callable[[str], float] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ):
        self.source = source
        self.base_url = base_url.rstrip("/")
        try:
            self.origin = Origin.of(self.base_url)
        except ValueError as exc:
            raise HttpError(source, "configuration", f"base URL {exc}") from None
        if "@" in urlsplit(self.base_url).netloc:
            raise HttpError(
                source, "configuration", "the base URL must not carry credentials (user info)"
            )
        self.max_attempts = max(1, max_attempts)
        self.backoff_base, self.backoff_cap = backoff_base_seconds, backoff_cap_seconds
        self.retry_after_cap = retry_after_cap_seconds
        self.pace = pace
        self.sleep = sleep
        self.rng = random.Random(seed)
        self.stats = RequestStats()
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds),
            headers=dict(headers or {}),
            transport=transport,
            follow_redirects=False,  # a redirect could name any host
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """An absolute URL on the configured base URL."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def check_origin(self, endpoint: str, url: str) -> None:
        """ForeignOriginError unless `url` is on the configured origin, without user info."""
        try:
            origin = Origin.of(url)
        except ValueError:
            origin = None
        if origin != self.origin or "@" in urlsplit(url).netloc:
            raise ForeignOriginError(
                self.source,
                endpoint,
                f"refusing to follow a link to {_origin_text(url)!r}: it is not on the "
                f"configured origin {self.origin} (nothing was sent to it)",
            )

    def get(
        self, endpoint: str, url: str, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """GET with retries; the first response whose status is not retried, else
        RetriesExhausted. Counts every attempt under `endpoint`."""
        self.check_origin(endpoint, url)
        stats = self.stats
        for attempt in range(self.max_attempts):
            if self.pace is not None:
                stats.waited_seconds += self.pace(endpoint)
            stats.requests[endpoint] += 1
            last = attempt == self.max_attempts - 1
            try:
                response = self._http.get(url, params=params)
            except httpx.TransportError as exc:
                kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
                stats.errors[kind] += 1
                if last:
                    problem = f"{kind} error ({type(exc).__name__})"
                    raise RetriesExhausted(
                        self.source, endpoint, self.max_attempts, problem
                    ) from None
                self._wait(self._backoff(attempt))
                continue
            status = response.status_code
            if status < 400:
                return response
            stats.errors[str(status)] += 1
            if status == 429:
                stats.throttled += 1
            if status not in RETRYABLE_STATUS:
                return response
            if last:
                raise RetriesExhausted(
                    self.source, endpoint, self.max_attempts, f"HTTP {status}", response
                )
            hinted = parse_retry_after(response.headers.get("Retry-After"))
            delay = self._backoff(attempt) if hinted is None else min(hinted, self.retry_after_cap)
            self._wait(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.rng)

    def _wait(self, seconds: float) -> None:
        self.stats.retries += 1
        self.stats.waited_seconds += seconds
        self.sleep(seconds)
