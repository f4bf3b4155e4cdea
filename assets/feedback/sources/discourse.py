"""Discourse forums: posts found by `GET /search.json?q=<query> after:<date> order:latest&page=N`.

The cursor is `{"after": date, "last_post_id": N, "scan": {...}}`. A pull walks the search
newest first and keeps only posts with an id above `last_post_id` (Discourse post ids grow with
time); it stops at the first page that reaches already-seen posts. Each page's items commit with
a cursor that records the scan's progress, so a killed run resumes at that page; the scan's end
moves `last_post_id` and `after` forward. `after:` is day-granular, so `after` trails the newest
post by a day (time zones) and the id filter keeps re-read posts from being written again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from typing import Any

from assets.feedback.rules import (
    FeedbackItem,
    PulledBatch,
    SourceConfigError,
    SourceRef,
    clean_html,
    parse_timestamp,
)
from assets.feedback.sources.base import ConfigContext, PullContext, SourceKind, SourceOption

MAX_PAGES_PER_PULL = 200


def post_to_item(
    source: SourceRef, post: Mapping[str, Any], topic: Mapping[str, Any] | None, base_url: str
) -> FeedbackItem | None:
    """The uniform item for one search result post (None when it has no text of its own)."""
    text = clean_html(str(post.get("cooked") or post.get("blurb") or ""))
    if not text:
        return None
    topic_id = post.get("topic_id")
    slug = post.get("topic_slug") or (topic or {}).get("slug") or "topic"
    extras = {k: v for k, v in post.items() if k not in {"cooked", "avatar_template"}}
    extras["topic_title"] = (topic or {}).get("title")
    extras["url"] = f"{base_url.rstrip('/')}/t/{slug}/{topic_id}/{post.get('post_number')}"
    return FeedbackItem(
        workspace_id=source.workspace_id,
        tenant_id=source.tenant_id,
        source=source.kind,
        source_id=source.source_id,
        external_id=str(post["id"]),
        author=post.get("username"),
        text=text,
        created_at=parse_timestamp(post.get("created_at"), "created_at"),
        rating=None,
        raw_data=extras,
    )


def search_query(query: str, after: str) -> str:
    return " ".join(part for part in (query.strip(), f"after:{after}", "order:latest") if part)


class DiscourseKind(SourceKind):
    name = "discourse"
    description = "posts from a Discourse forum's search API"
    options = (
        SourceOption("base-url", "forum URL, e.g. https://meta.discourse.org", required=True),
        SourceOption("query", "search terms (default: every post)"),
        SourceOption("since", "first day to fetch, YYYY-MM-DD (default: 30 days ago)"),
        SourceOption("api-key-env", "environment variable holding an API key (private forums)"),
        SourceOption("api-username", "the user the API key acts as (default: system)"),
    )

    def build_config(
        self, options: Mapping[str, Any], context: ConfigContext | None = None
    ) -> dict[str, Any]:
        config = super().build_config(options)
        base_url = str(config["base_url"]).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise SourceConfigError(f"--base-url must be an http(s) URL, not {base_url!r}")
        since = config.get("since") or (date.today() - timedelta(days=30)).isoformat()
        try:
            date.fromisoformat(since)
        except ValueError as exc:
            raise SourceConfigError(f"--since must be YYYY-MM-DD, not {since!r}") from exc
        result = {"base_url": base_url, "query": config.get("query") or "", "since": since}
        if config.get("api_key_env"):
            variable = config["api_key_env"]
            key = (context.environ if context else {}).get(variable)
            if not key:
                raise SourceConfigError(f"environment variable {variable} is not set")
            if context is None or context.box is None:
                raise SourceConfigError("an API key is stored encrypted: no secret box given")
            result["api_key_encrypted"] = context.box.encrypt(key).decode()
            result["api_username"] = config.get("api_username") or "system"
        elif config.get("api_username"):
            raise SourceConfigError("--api-username needs --api-key-env")
        return result

    def pull(self, source: SourceRef, context: PullContext) -> Iterator[PulledBatch]:
        client = context.discourse_client
        base_url = source.config["base_url"]
        auth = {}
        if source.config.get("api_key_encrypted"):
            auth = {
                "api_key": context.secret_box.decrypt(source.config["api_key_encrypted"].encode()),
                "api_username": source.config.get("api_username") or "system",
            }
        last_post_id = int(source.cursor.get("last_post_id") or 0)
        after = source.cursor.get("after") or source.config.get("since")
        scan = dict(source.cursor.get("scan") or {})
        page = int(scan.get("page") or 1)
        max_id = int(scan.get("max_post_id") or last_post_id)
        newest = scan.get("newest_day")
        query = search_query(source.config.get("query", ""), after)
        for _ in range(MAX_PAGES_PER_PULL):
            result = client.search(base_url, query, page, **auth)
            items = []
            for post in result.posts:
                if int(post["id"]) <= last_post_id:
                    continue
                item = post_to_item(source, post, result.topics.get(post.get("topic_id")), base_url)
                max_id = max(max_id, int(post["id"]))
                if item is not None:
                    items.append(item)
                    day = item.created_at.date().isoformat()
                    newest = max(newest or day, day)
            reached_seen = any(int(p["id"]) <= last_post_id for p in result.posts)
            if result.more and not reached_seen:
                cursor = {
                    "after": after,
                    "last_post_id": last_post_id,
                    "scan": {"page": page + 1, "max_post_id": max_id, "newest_day": newest},
                }
                yield PulledBatch(items, cursor, fetched=len(result.posts))
                page += 1
                continue
            next_after = after
            if newest:
                next_after = max(
                    after, (date.fromisoformat(newest) - timedelta(days=1)).isoformat()
                )
            cursor = {"after": next_after, "last_post_id": max_id, "scan": None}
            yield PulledBatch(items, cursor, fetched=len(result.posts))
            return


KIND = DiscourseKind()
