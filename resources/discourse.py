"""HTTP client for a Discourse forum: its search (`GET /search.json`) and its latest posts
(`GET /posts.json?before=<post id>`, newest first, 50 a page, each post with `updated_at` and
`version`: the one public listing that shows edits; search results carry neither).

Requests go through the platform's HTTP client (`resources/http.py`): a timeout on every call,
429 and 5xx retried honouring `Retry-After` (seconds or an HTTP date, at most 120 s here),
otherwise exponential backoff with full jitter, requests counted by endpoint, and only the
forum's own origin is ever asked (pages are numbers on the configured URL; redirects are not
followed). An API key goes in headers, never in URLs, logs or errors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
from pydantic import PrivateAttr

from resources.http import HttpClient, HttpError, RequestStats, RetriesExhausted, redact_url
from resources.secrets import SecretBox

MAX_RETRY_AFTER_SECONDS = 120.0
SEARCH = "search"
LATEST_POSTS = "latest_posts"


class DiscourseError(RuntimeError):
    """A Discourse request failed for good (after retries, or a non-retryable status)."""


@dataclass(frozen=True)
class SearchPage:
    """One page of `/search.json`: posts, topics by id, and whether more pages follow."""

    posts: list[dict[str, Any]]
    topics: dict[int, dict[str, Any]]
    more: bool
    page: int


@dataclass(frozen=True)
class LatestPostsPage:
    """One page of `/posts.json`: the forum's posts with ids below `before`, newest first."""

    posts: list[dict[str, Any]]
    before: int | None


class DiscourseClient(dg.ConfigurableResource):
    """Searches Discourse forums. One resource serves every forum: the base URL is per call.
    `stats` counts the requests this resource made (by endpoint, retries, errors)."""

    timeout_seconds: float = 30.0
    max_attempts: int = 5
    backoff_base_seconds: float = 1.0
    user_agent: str = "supportflow-feedback/0.1"
    # where the key that decrypts stored API keys comes from (as for the Zendesk resource)
    home: str = ".supportflow"
    secret_key: str = ""
    _stats: RequestStats = PrivateAttr(default_factory=RequestStats)
    _stats_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def stats(self) -> RequestStats:
        return self._stats

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
        key (private forums) it goes in the `Api-Key` / `Api-Username` headers."""
        response, url = self._get(
            base_url,
            SEARCH,
            "/search.json",
            {"q": query, "page": str(page)},
            f"search {{url}} page {page}",
            api_key=api_key,
            api_username=api_username,
            sleep=sleep,
        )
        return _parse_search(response, url, page)

    def latest_posts(
        self,
        base_url: str,
        before: int | None = None,
        *,
        api_key: str | None = None,
        api_username: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> LatestPostsPage:
        """`GET {base_url}/posts.json[?before=<post id>]`: the newest posts (below `before`),
        with `updated_at`, `version` and `cooked`; retried and authenticated as `search`."""
        params = {"before": str(before)} if before else {}
        what = f"latest posts {{url}} before {before}" if before else "latest posts {url}"
        response, url = self._get(
            base_url,
            LATEST_POSTS,
            "/posts.json",
            params,
            what,
            api_key=api_key,
            api_username=api_username,
            sleep=sleep,
        )
        body = _json_object(response, f"Discourse {what.format(url=url)}")
        return LatestPostsPage(posts=list(body.get("latest_posts") or []), before=before)

    def _get(
        self,
        base_url: str,
        endpoint: str,
        path: str,
        params: dict[str, str],
        what: str,
        *,
        api_key: str | None,
        api_username: str | None,
        sleep: Callable[[float], None],
    ) -> tuple[httpx.Response, str]:
        """One GET on the forum, retried; `what` names it in errors (`{url}` is filled in)."""
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if api_key:
            headers |= {"Api-Key": api_key, "Api-Username": api_username or "system"}
        try:
            http = HttpClient(
                source=f"Discourse forum {redact_url(base_url.rstrip('/'))}",
                base_url=base_url,
                headers=headers,
                timeout_seconds=self.timeout_seconds,
                max_attempts=self.max_attempts,
                backoff_base_seconds=self.backoff_base_seconds,
                retry_after_cap_seconds=MAX_RETRY_AFTER_SECONDS,
                sleep=sleep,
            )
        except HttpError as exc:
            raise DiscourseError(str(exc)) from None
        url = redact_url(http.url(path))
        named = "Discourse " + what.format(url=url)
        try:
            with http:
                response = http.get(endpoint, http.url(path), params)
        except RetriesExhausted as exc:
            raise DiscourseError(
                f"{named} failed after {exc.attempts} attempts: {exc.problem}"
            ) from None
        except HttpError as exc:
            raise DiscourseError(f"{named}: {exc.detail}") from None
        finally:
            self._count(http.stats)
        if response.status_code != 200:
            raise DiscourseError(
                f"{named} failed: HTTP {response.status_code} {response.text[:200]!r}"
            )
        return response, url

    def _count(self, stats: RequestStats) -> None:
        with self._stats_lock:
            self._stats.requests.update(stats.requests)
            self._stats.errors.update(stats.errors)
            self._stats.throttled += stats.throttled
            self._stats.retries += stats.retries
            self._stats.waited_seconds += stats.waited_seconds


def _json_object(response: httpx.Response, named: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise DiscourseError(f"{named}: response is not JSON") from exc
    if not isinstance(body, dict):
        raise DiscourseError(f"{named}: expected a JSON object")
    return body


def _parse_search(response: httpx.Response, url: str, page: int) -> SearchPage:
    body = _json_object(response, f"Discourse search {url} page {page}")
    posts = body.get("posts") or []
    topics = {int(t["id"]): t for t in body.get("topics") or [] if "id" in t}
    grouped = body.get("grouped_search_result") or {}
    return SearchPage(
        posts=list(posts),
        topics=topics,
        more=bool(grouped.get("more_full_page_results")),
        page=page,
    )
