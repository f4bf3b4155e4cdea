"""A local stand-in for a Discourse forum's search API: deterministic posts, real HTTP.

`GET /search.json?q=<terms> after:<YYYY-MM-DD> before:<date> order:latest&page=N` answers like
Discourse: up to 50 posts a page with `id`, `username`, `created_at`, `cooked` HTML, `blurb`,
`topic_id`, `post_number` ..., the topics they belong to, and `grouped_search_result` with
`more_full_page_results`. `after:D` keeps posts created after the start of day D (UTC), as
Discourse does; `order:latest` sorts by creation, so an edit does not move a post.

`GET /posts.json?before=<post id>` lists the forum's posts newest id first, a page at a time
(`latest_posts`), serialized as Discourse's PostSerializer does: with `updated_at`, `version`,
`raw`, `topic_title` and `topic_slug`. Search results carry neither `updated_at` nor `version`
(Discourse's SearchPostSerializer does not), so edits show only here.

Tests can add posts while it runs, edit posts (`edit_post`: new text, version + 1, `updated_at`
now) and make the next responses fail (429/5xx).
"""

from __future__ import annotations

import html
import random
import re
import threading
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.feedback_text import NEW_TOPICS, TOPICS, feedback_text, username

PAGE_SIZE = 50
FIRST_POST_ID = 870_000
# what Discourse's search serializer leaves out of a post (PostSerializer has them)
NOT_IN_SEARCH = frozenset({"updated_at", "version", "raw", "topic_title"})
_TOKEN = re.compile(r"(\w+):(\S+)")


@dataclass(frozen=True)
class Fault:
    status: int
    retry_after: str | None = None


class DiscourseForum:
    """An in-memory forum whose posts come from a seed; safe to read while tests add posts."""

    def __init__(
        self,
        seed: int = 1,
        posts: int = 400,
        days: int = 30,
        end: datetime | None = None,
        page_size: int = PAGE_SIZE,
        api_key: str | None = None,
    ):
        self.rng = random.Random(seed)
        self.api_key = api_key  # when set, requests need it in `Api-Key` (a private forum)
        self.page_size = page_size
        self.posts: list[dict[str, Any]] = []
        self.topics: dict[int, dict[str, Any]] = {}
        self.faults: deque[Fault] = deque()
        self.requests = 0
        self.requests_by_path: Counter[str] = Counter()
        self._lock = threading.Lock()
        end = end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=days)
        span = (end - start).total_seconds()
        times = sorted(start + timedelta(seconds=self.rng.uniform(0, span)) for _ in range(posts))
        for created_at in times:
            self._append(created_at)

    # --- building posts --------------------------------------------------------------------

    def _topic_for(self, theme: str) -> dict[str, Any]:
        open_topics = [t for t in self.topics.values() if t["theme"] == theme and t["posts"] < 12]
        if open_topics and self.rng.random() < 0.7:
            return self.rng.choice(open_topics)
        topic_id = 45_000 + len(self.topics) * 7 + 1
        title = f"{theme.replace('_', ' ').capitalize()} problems and questions #{topic_id % 1000}"
        topic = {
            "id": topic_id,
            "title": title,
            "fancy_title": html.escape(title),
            "slug": re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
            "category_id": 5 + sorted(_themes()).index(theme) if theme in _themes() else 4,
            "theme": theme,
            "posts": 0,
        }
        self.topics[topic_id] = topic
        return topic

    def _append(self, created_at: datetime, text: str | None = None, theme: str = "") -> dict:
        item = feedback_text(self.rng)
        text = text or item.text
        theme = theme or item.topic
        topic = self._topic_for(theme)
        topic["posts"] += 1
        user = username(self.rng)
        post_id = FIRST_POST_ID + len(self.posts) * 3 + self.rng.randint(0, 2)
        cooked = f"<p>{html.escape(text)}</p>"
        if topic["posts"] > 1 and self.rng.random() < 0.2:
            cooked = (
                '<aside class="quote no-group" data-username="someone" data-post="1">'
                "<blockquote><p>Same here, any update?</p></blockquote></aside>\n" + cooked
            )
        if self.rng.random() < 0.15:
            cooked += '\n<p>See <a href="https://example.com/docs">the docs</a> too.</p>'
        stamp = created_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        post = {
            "id": post_id,
            "name": user.split("_")[0].capitalize(),
            "username": user,
            "avatar_template": f"/user_avatar/forum.example.com/{user}/{{size}}/1_2.png",
            "created_at": stamp,
            "updated_at": stamp,
            "version": 1,
            "cooked": cooked,
            "raw": text,
            "blurb": text[:200],
            "post_number": topic["posts"],
            "post_type": 1,
            "reply_count": 0,
            "reply_to_post_number": None,
            "like_count": self.rng.randint(0, 5),
            "reads": self.rng.randint(1, 60),
            "score": round(self.rng.uniform(0, 30), 1),
            "topic_id": topic["id"],
            "topic_slug": topic["slug"],
            "topic_title": topic["title"],
            "user_id": 70_000 + zlib.crc32(user.encode()) % 10_000,
            "trust_level": self.rng.randint(0, 3),
            "moderator": False,
            "admin": False,
            "staff": False,
            "hidden": False,
            "deleted_at": None,
            "user_deleted": False,
            "accepted_answer": False,
            "_created": created_at.astimezone(UTC),
            "_text": text,
        }
        self.posts.append(post)
        return post

    def add_posts(
        self, count: int, when: datetime | None = None, texts: list[str] | None = None
    ) -> list[dict]:
        """New posts (created `when`, default now), as if people kept writing."""
        with self._lock:
            moment = when or datetime.now(UTC)
            return [
                _public(self._append(moment, text=(texts[i] if texts else None)))
                for i in range(count)
            ]

    def edit_post(self, post_id: int, text: str, when: datetime | None = None) -> dict:
        """Its author edits a post, as Discourse's PostRevisor does: new `cooked` and `raw`,
        `version` + 1, `updated_at` the moment of the edit (default now); `created_at` stays."""
        with self._lock:
            post = next((p for p in self.posts if p["id"] == post_id), None)
            if post is None:
                raise KeyError(f"no post {post_id}")
            moment = (when or datetime.now(UTC)).astimezone(UTC)
            post.update(
                cooked=f"<p>{html.escape(text)}</p>",
                raw=text,
                blurb=text[:200],
                version=post["version"] + 1,
                updated_at=moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                _text=text,
            )
            return _public(post)

    def fail_next(self, *faults: Fault) -> None:
        """The next requests answer with these statuses, in order."""
        with self._lock:
            self.faults.extend(faults)

    # --- searching --------------------------------------------------------------------------

    def search(self, q: str, page: int) -> dict[str, Any]:
        terms, after, before, latest = parse_query(q)
        with self._lock:
            matched = [
                p
                for p in self.posts
                if (after is None or p["_created"] > after)
                and (before is None or p["_created"] < before)
                and all(
                    term in p["_text"].lower()
                    or term in self.topics[p["topic_id"]]["title"].lower()
                    for term in terms
                )
            ]
            if latest:
                matched.sort(key=lambda p: (p["_created"], p["id"]), reverse=True)
            else:  # "relevance": Discourse's default order; any stable order does here
                matched.sort(key=lambda p: (-p["score"], p["id"]))
            start = (page - 1) * self.page_size
            chunk = matched[start : start + self.page_size]
            topic_ids = sorted({p["topic_id"] for p in chunk})
            topics = [_public_topic(self.topics[t]) for t in topic_ids]
            posts = [{k: v for k, v in _public(p).items() if k not in NOT_IN_SEARCH} for p in chunk]
        return {
            "posts": posts,
            "topics": topics,
            "users": [],
            "categories": [],
            "tags": [],
            "groups": [],
            "grouped_search_result": {
                "more_posts": None,
                "more_users": None,
                "more_categories": None,
                "term": q,
                "search_log_id": 1000 + page,
                "more_full_page_results": start + self.page_size < len(matched),
                "can_create_topic": False,
                "error": None,
                "post_ids": [p["id"] for p in posts],
                "user_ids": [],
                "category_ids": [],
                "tag_ids": [],
                "group_ids": [],
            },
        }

    def latest_posts(self, before: int | None) -> dict[str, Any]:
        """`/posts.json`: a page of posts with ids below `before`, newest id first."""
        with self._lock:
            older = [p for p in self.posts if before is None or p["id"] < before]
            older.sort(key=lambda p: p["id"], reverse=True)
            return {"latest_posts": [_public(p) for p in older[: self.page_size]]}

    def next_fault(self) -> Fault | None:
        with self._lock:
            self.requests += 1
            return self.faults.popleft() if self.faults else None


def _themes() -> list[str]:
    return sorted(TOPICS) + sorted(NEW_TOPICS) + ["other"]


def _public(post: dict) -> dict:
    return {k: v for k, v in post.items() if not k.startswith("_")}


def _public_topic(topic: dict) -> dict:
    return {
        "id": topic["id"],
        "title": topic["title"],
        "fancy_title": topic["fancy_title"],
        "slug": topic["slug"],
        "posts_count": topic["posts"],
        "category_id": topic["category_id"],
        "closed": False,
        "archived": False,
    }


def parse_query(q: str) -> tuple[list[str], datetime | None, datetime | None, bool]:
    """(terms, after, before, order latest) of a Discourse search string."""
    terms: list[str] = []
    after = before = None
    latest = False
    for word in q.split():
        match = _TOKEN.fullmatch(word)
        if match and match.group(1).lower() in {"after", "before"}:
            day = date.fromisoformat(match.group(2))
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if match.group(1).lower() == "after":
                after = moment
            else:
                before = moment
        elif match and match.group(1).lower() == "order":
            latest = match.group(2).lower() == "latest"
        elif match:
            continue  # other advanced filters (in:, status:, #category) are ignored here
        else:
            terms.append(word.lower())
    return terms, after, before, latest


def discourse_routes(forum: DiscourseForum) -> list[Route]:
    """The forum's HTTP routes, for the sandbox server (or a test's own app)."""

    def refused(request: Request) -> JSONResponse | None:
        """A planted fault, or a private forum's 403 without its key; None: go on."""
        forum.requests_by_path[request.url.path] += 1
        fault = forum.next_fault()
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return JSONResponse(
                {"errors": ["sandbox fault"], "error_type": "rate_limit"},
                status_code=fault.status,
                headers=headers,
            )
        if forum.api_key is not None and (
            request.headers.get("api-key") != forum.api_key
            or not request.headers.get("api-username")
        ):
            return JSONResponse(
                {
                    "errors": ["You are not permitted to view the requested resource."],
                    "error_type": "invalid_access",
                },
                status_code=403,
            )
        return None

    async def search_json(request: Request) -> JSONResponse:
        if (refusal := refused(request)) is not None:
            return refusal
        q = request.query_params.get("q", "")
        try:
            page = int(request.query_params.get("page", "1"))
            if page < 1:
                raise ValueError
            result = forum.search(q, page)
        except ValueError:
            return JSONResponse({"errors": ["invalid search parameters"]}, status_code=400)
        return JSONResponse(result)

    async def posts_json(request: Request) -> JSONResponse:
        if (refusal := refused(request)) is not None:
            return refusal
        try:
            before = int(request.query_params.get("before", "0"))
        except ValueError:
            return JSONResponse({"errors": ["invalid before"]}, status_code=400)
        # Discourse treats a missing or non-positive `before` as "from the newest"
        return JSONResponse(forum.latest_posts(before if before > 0 else None))

    return [
        Route("/search.json", search_json, methods=["GET"]),
        Route("/posts.json", posts_json, methods=["GET"]),
    ]


def routes(config: Any) -> list[Route]:
    """Route provider for `sandbox.server` (`ROUTE_PROVIDERS`): the forum lives in
    `config.extra["discourse_forum"]` (created from the sandbox seed when absent)."""
    forum = config.extra.get("discourse_forum")
    if forum is None:
        forum = DiscourseForum(seed=config.seed)
        config.extra["discourse_forum"] = forum
    return discourse_routes(forum)
