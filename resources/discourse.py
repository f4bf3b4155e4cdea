"""HTTP client for a Discourse forum's search API (`GET /search.json`).

Timeouts on every call; 429 and 5xx are retried, honouring `Retry-After` (seconds or an HTTP
date), otherwise with exponential backoff and full jitter; the error says what failed.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import httpx

from resources.secrets import SecretBox

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_SECONDS = 120.0


class DiscourseError(RuntimeError):
    """A Discourse request failed for good (after retries, or a non-retryable status)."""


@dataclass(frozen=True)
class SearchPage:
    """One page of `/search.json`: posts, topics by id, and whether more pages follow."""

    posts: list[dict[str, Any]]
    topics: dict[int, dict[str, Any]]
    more: bool
    page: int


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER_SECONDS))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, min(delta, MAX_RETRY_AFTER_SECONDS))


def backoff_seconds(attempt: int, base: float, cap: float = 60.0) -> float:
    """Full-jitter exponential backoff for the n-th retry (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


class DiscourseClient(dg.ConfigurableResource):
    """Searches Discourse forums. One resource serves every forum: the base URL is per call."""

    timeout_seconds: float = 30.0
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    user_agent: str = "supportflow-feedback/0.1"
    # where the key that decrypts stored API keys comes from (as for the Zendesk resource)
    home: str = ".supportflow"
    secret_key: str = ""

    def secret_box(self) -> SecretBox:
        return SecretBox.from_settings(self.secret_key or None, Path(self.home))

    def search(
        self,
        base_url: str,
        query: str,
        page: int = 1,
        *,
        api_key: str | None = None,
        api_username: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> SearchPage:
        """`GET {base_url}/search.json?q=...&page=N`, retried as the module says. With an API
        key (private forums) it goes in the `Api-Key` / `Api-Username` headers, never in URLs,
        logs or errors."""
        url = base_url.rstrip("/") + "/search.json"
        params = {"q": query, "page": str(page)}
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if api_key:
            headers |= {"Api-Key": api_key, "Api-Username": api_username or "system"}
        last_problem = ""
        with httpx.Client(timeout=self.timeout_seconds, headers=headers) as http:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    response = http.get(url, params=params)
                except httpx.TransportError as exc:
                    last_problem = f"{type(exc).__name__}: {exc}"
                    wait = backoff_seconds(attempt, self.backoff_base_seconds)
                else:
                    if response.status_code == 200:
                        return _parse_search(response, url, page)
                    last_problem = f"HTTP {response.status_code}"
                    if response.status_code not in RETRY_STATUSES:
                        raise DiscourseError(
                            f"Discourse search {url} page {page} failed: {last_problem} "
                            f"{response.text[:200]!r}"
                        )
                    hinted = retry_after_seconds(response.headers.get("Retry-After"))
                    wait = (
                        hinted
                        if hinted is not None
                        else backoff_seconds(attempt, self.backoff_base_seconds)
                    )
                if attempt < self.max_attempts:
                    sleep(wait)
        raise DiscourseError(
            f"Discourse search {url} page {page} failed after {self.max_attempts} attempts: "
            f"{last_problem}"
        )


def _parse_search(response: httpx.Response, url: str, page: int) -> SearchPage:
    try:
        body = response.json()
    except ValueError as exc:
        raise DiscourseError(f"Discourse search {url} page {page}: response is not JSON") from exc
    if not isinstance(body, dict):
        raise DiscourseError(f"Discourse search {url} page {page}: expected a JSON object")
    posts = body.get("posts") or []
    topics = {int(t["id"]): t for t in body.get("topics") or [] if "id" in t}
    grouped = body.get("grouped_search_result") or {}
    return SearchPage(
        posts=list(posts),
        topics=topics,
        more=bool(grouped.get("more_full_page_results")),
        page=page,
    )
