"""Discourse forums: new posts found by `GET /search.json?q=<query> after:<date> order:latest`,
edits found by `GET /posts.json?before=<post id>`.

New posts. The cursor is `{"after": date, "last_post_id": N, "scan": {...}, "edits": {...}}`. A
pull walks the search newest first and keeps only posts with an id above `last_post_id`
(Discourse post ids grow with time); it stops at the first page that reaches already-seen posts.
Each page's items commit with a cursor that records the scan's progress, so a killed run resumes
at that page; the scan's end moves `last_post_id` and `after` forward. `after:` is day-granular,
so `after` trails the newest post by a day (time zones) and the id filter keeps re-read posts
from being written again.

Edits. Search sorts by creation and its results carry no `updated_at` or `version`, so an edit
is invisible there. `/posts.json` lists the forum's posts newest first with both, 50 a page.
After the search, a pull sweeps it back to the edit window (`edit-window-days`, default 7: edits
to older posts are not looked for) and re-reads the posts this source holds whose `updated_at`
is past the last finished sweep's start; the upsert writes only those whose text changed. A
sweep reads at most `MAX_EDIT_PAGES_PER_PULL` pages a pull and resumes where it stopped (its
progress is in the cursor), so a pull costs the new posts plus a bounded slice of the window,
never the forum's history.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
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
from assets.feedback.store import held_external_ids

MAX_PAGES_PER_PULL = 200
MAX_EDIT_PAGES_PER_PULL = 10
EDIT_WINDOW_DAYS = 7
MAX_EDIT_WINDOW_DAYS = 365
# edits stamped up to this long before a sweep started are looked at again by the next sweep:
# the forum's clock and ours may disagree a little
EDIT_CLOCK_SLACK = timedelta(minutes=10)


def post_to_item(
    source: SourceRef, post: Mapping[str, Any], topic: Mapping[str, Any] | None, base_url: str
) -> FeedbackItem | None:
    """The uniform item for one search result post (None when it has no text of its own)."""
    text = clean_html(str(post.get("cooked") or post.get("blurb") or ""))
    if not text:
        return None
    topic_id = post.get("topic_id")
    slug = post.get("topic_slug") or (topic or {}).get("slug") or "topic"
    # `raw` (a latest-posts field) is the markdown of the same text: not kept twice
    extras = {k: v for k, v in post.items() if k not in {"cooked", "raw", "avatar_template"}}
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
        SourceOption(
            "edit-window-days",
            f"look for edits to posts created this many days back (default {EDIT_WINDOW_DAYS}, "
            "0: never)",
        ),
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
        if config.get("edit_window_days") is not None:
            result["edit_window_days"] = edit_window_days(config["edit_window_days"])
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
        edits = source.cursor.get("edits") or {}
        search_cursor: dict[str, Any] | None = None
        for batch in self._search_new_posts(source, client, base_url, auth):
            search_cursor = batch.cursor  # the sweep's progress rides along unchanged
            yield PulledBatch(batch.items, {**search_cursor, "edits": edits}, batch.fetched)
        window = edit_window_days(source.config.get("edit_window_days", EDIT_WINDOW_DAYS))
        if search_cursor is None or search_cursor.get("scan") or not window:
            return  # the search scan goes on next pull; edits are swept once it is through
        yield from self._sweep_edits(source, context, base_url, auth, search_cursor, window)

    def _search_new_posts(
        self, source: SourceRef, client: Any, base_url: str, auth: dict[str, str]
    ) -> Iterator[PulledBatch]:
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

    def _sweep_edits(
        self,
        source: SourceRef,
        context: PullContext,
        base_url: str,
        auth: dict[str, str],
        search_cursor: dict[str, Any],
        window_days: int,
    ) -> Iterator[PulledBatch]:
        """Walk `/posts.json` from where the sweep stopped back to the edit window's start;
        re-read the held posts edited since the last finished sweep began."""
        now = datetime.now(UTC)
        sweep = EditSweep.from_cursor(source.cursor.get("edits") or {}, now)
        horizon = now - timedelta(days=window_days)
        for _ in range(MAX_EDIT_PAGES_PER_PULL):
            page = context.discourse_client.latest_posts(base_url, sweep.before, **auth)
            candidates = [
                post
                for post in page.posts
                if parse_timestamp(post.get("created_at"), "created_at") >= horizon
                and sweep.is_new_edit(post)
            ]
            held: set[str] = set()
            if candidates:
                with context.connection() as conn:
                    held = held_external_ids(
                        conn, source.source_id, [str(post["id"]) for post in candidates]
                    )
            items = [
                item
                for post in candidates
                if str(post["id"]) in held
                and (item := post_to_item(source, post, topic_of(post), base_url)) is not None
            ]
            sweep = sweep.after_page(page.posts, horizon)
            yield PulledBatch(
                items, {**search_cursor, "edits": sweep.as_cursor()}, fetched=len(page.posts)
            )
            if sweep.before is None:
                return


def topic_of(post: Mapping[str, Any]) -> dict[str, Any]:
    """The topic fields a latest-posts post carries itself (search gives topics separately)."""
    return {"title": post.get("topic_title"), "slug": post.get("topic_slug")}


def edit_window_days(value: Any) -> int:
    try:
        days = int(value)
    except (TypeError, ValueError):
        raise SourceConfigError(
            f"--edit-window-days must be a whole number, not {value!r}"
        ) from None
    if not 0 <= days <= MAX_EDIT_WINDOW_DAYS:
        raise SourceConfigError(
            f"--edit-window-days must be between 0 and {MAX_EDIT_WINDOW_DAYS}, not {days}"
        )
    return days


@dataclass(frozen=True)
class EditSweep:
    """Where the edit sweep over `/posts.json` stands (stored in the cursor under "edits").

    `checked_until`: every edit stamped up to then was seen by a finished sweep (None before the
    first one). `before`: the post id the unfinished sweep goes on below (None: start at the
    newest). `started`: when the unfinished sweep began, less the clock slack; it becomes
    `checked_until` when the sweep reaches the window's start.
    """

    checked_until: datetime | None
    before: int | None
    started: datetime

    @classmethod
    def from_cursor(cls, state: Mapping[str, Any], now: datetime) -> EditSweep:
        checked = state.get("checked_until")
        started = state.get("started") if state.get("before") else None
        return cls(
            checked_until=parse_timestamp(checked, "checked_until") if checked else None,
            before=int(state["before"]) if state.get("before") else None,
            started=parse_timestamp(started, "started") if started else now - EDIT_CLOCK_SLACK,
        )

    def is_new_edit(self, post: Mapping[str, Any]) -> bool:
        """Whether the post may have changed since the last finished sweep: its `updated_at`
        is later (before any sweep finished, every post may have)."""
        if self.checked_until is None:
            return True
        updated = post.get("updated_at")
        return updated is None or parse_timestamp(updated, "updated_at") > self.checked_until

    def after_page(self, posts: list[Mapping[str, Any]], horizon: datetime) -> EditSweep:
        """The sweep once this page is read: finished at the window's start (or the forum's
        first post), otherwise going on below the page's oldest post."""
        oldest = min(posts, key=lambda post: int(post["id"]), default=None)
        if oldest is None or parse_timestamp(oldest.get("created_at"), "created_at") < horizon:
            return EditSweep(checked_until=self.started, before=None, started=self.started)
        return EditSweep(self.checked_until, int(oldest["id"]), self.started)

    def as_cursor(self) -> dict[str, Any]:
        return {
            "checked_until": self.checked_until.isoformat() if self.checked_until else None,
            "before": self.before,
            "started": self.started.isoformat() if self.before else None,
        }


KIND = DiscourseKind()
