"""The Discourse client against the sandbox forum over real HTTP: search semantics, retries
with Retry-After, and a pull killed mid-way that resumes without loss or duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from assets.feedback.sources.base import PullContext
from resources.discourse import DiscourseClient, DiscourseError
from sandbox.discourse import Fault


def test_search_pages_filters_and_shape(forum, forum_url):
    client = DiscourseClient(timeout_seconds=5)
    newest = max(p["_created"] for p in forum.posts)
    after = (newest - timedelta(days=3)).date().isoformat()
    expected = sorted(
        (p for p in forum.posts if p["_created"] > datetime.fromisoformat(after + "T00:00+00:00")),
        key=lambda p: (p["_created"], p["id"]),
        reverse=True,
    )
    pages, page = [], 1
    while True:
        result = client.search(forum_url, f"after:{after} order:latest", page)
        pages.append(result)
        if not result.more:
            break
        page += 1
    ids = [post["id"] for result in pages for post in result.posts]
    assert ids == [p["id"] for p in expected]
    assert all(len(r.posts) <= 20 for r in pages) and len(pages) >= 2
    post = pages[0].posts[0]
    for key in ("id", "username", "created_at", "cooked", "topic_id", "post_number", "blurb"):
        assert key in post
    assert post["topic_id"] in pages[0].topics
    raw = httpx.get(f"{forum_url}/search.json", params={"q": "slack", "page": 1}).json()
    assert set(raw["grouped_search_result"]) >= {"post_ids", "more_full_page_results", "term"}
    by_id = {p["id"]: p for p in forum.posts}
    assert all(
        "slack" in by_id[p["id"]]["_text"].lower()
        or "slack" in forum.topics[p["topic_id"]]["title"].lower()
        for p in raw["posts"]
    )
    assert raw["posts"] and len(raw["posts"]) < len(forum.posts)


def test_retries_429_honouring_retry_after_then_succeeds(forum, forum_url):
    waits: list[float] = []
    forum.fail_next(Fault(429, "2"), Fault(503))
    client = DiscourseClient(timeout_seconds=5, backoff_base_seconds=0.5)
    result = client.search(forum_url, "order:latest", 1, sleep=waits.append)
    assert result.posts
    assert waits[0] == 2.0 and 0 <= waits[1] <= 1.0  # 2nd retry: up to 2 x base


def test_gives_up_with_a_clear_error(forum, forum_url):
    forum.fail_next(*[Fault(500)] * 3)
    client = DiscourseClient(timeout_seconds=5, max_attempts=3)
    with pytest.raises(DiscourseError, match=r"failed after 3 attempts: HTTP 500"):
        client.search(forum_url, "order:latest", 1, sleep=lambda _: None)
    with pytest.raises(DiscourseError, match="HTTP 400"):
        client.search(forum_url, "order:latest", 0, sleep=lambda _: None)


def test_killed_pull_resumes_at_its_page_without_loss_or_duplicates(
    make_workspace, add_source, warehouse, forum, forum_url, db
):
    from assets.feedback.defs import pull_source
    from assets.feedback.store import list_sources

    workspace = make_workspace()
    add_source(workspace, "discourse", "forum", **{"base-url": forum_url, "since": "2000-01-01"})
    client = DiscourseClient(timeout_seconds=5, max_attempts=1)
    context = PullContext(connection=warehouse.connection, discourse_client=client)

    def source():
        with warehouse.connection() as conn:
            return list_sources(conn, workspace.name)[0]

    # page 1 answers, then the forum fails: the run dies after committing one page
    original = forum.next_fault
    calls = {"n": 0}

    def fail_from_second_request():
        calls["n"] += 1
        return Fault(500) if calls["n"] >= 2 else original()

    forum.next_fault = fail_from_second_request
    with pytest.raises(DiscourseError):
        pull_source(warehouse.connection, source(), context)
    forum.next_fault = original
    cursor = source().cursor
    assert cursor["scan"]["page"] == 2 and cursor["last_post_id"] == 0
    stored = db.execute(
        "select count(*) from raw.feedback_items where source_id = %s", (source().source_id,)
    ).fetchone()[0]
    assert stored == 20

    forum.add_posts(3, when=datetime.now(UTC))  # arrives meanwhile: page positions shift
    result = pull_source(warehouse.connection, source(), context)
    total, distinct = db.execute(
        "select count(*), count(distinct external_id) from raw.feedback_items where source_id = %s",
        (source().source_id,),
    ).fetchone()
    # the resumed scan saw every old post; the 3 new ones come on the next pull
    old_ids = {str(p["id"]) for p in forum.posts[:-3]}
    have = {
        r[0]
        for r in db.execute(
            "select external_id from raw.feedback_items where source_id = %s",
            (source().source_id,),
        )
    }
    assert old_ids <= have and total == distinct
    assert result.counts.updated == 0
    pull_source(warehouse.connection, source(), context)
    assert {str(p["id"]) for p in forum.posts} <= {
        r[0]
        for r in db.execute(
            "select external_id from raw.feedback_items where source_id = %s",
            (source().source_id,),
        )
    }
    assert db.execute(
        "select count(*) = count(distinct external_id) from raw.feedback_items "
        "where source_id = %s",
        (source().source_id,),
    ).fetchone()[0]


def test_private_forum_api_key_is_stored_encrypted_and_used(
    make_workspace, warehouse, forum, forum_url, db, settings, monkeypatch
):
    from assets.feedback.defs import pull_source
    from assets.feedback.rules import SourceConfigError, SourceRef
    from assets.feedback.sources import source_kind
    from assets.feedback.sources.base import ConfigContext
    from assets.feedback.store import add_source
    from resources.secrets import SecretBox

    forum.api_key = "discourse-key-123"
    box = SecretBox.from_settings(settings.secret_key, settings.home)
    options = {"base-url": forum_url, "since": "2000-01-01", "api-key-env": "FORUM_KEY"}
    with pytest.raises(SourceConfigError, match="FORUM_KEY is not set"):
        source_kind("discourse").build_config(options, ConfigContext(box, {}))
    config = source_kind("discourse").build_config(
        options, ConfigContext(box, {"FORUM_KEY": "discourse-key-123"})
    )
    assert "discourse-key-123" not in str(config) and config["api_username"] == "system"
    workspace = make_workspace()
    with warehouse.connection() as conn:
        source_id = add_source(conn, workspace, "private", "discourse", config)
    source = SourceRef(source_id, workspace.workspace_id, workspace.name, workspace.tenant_id,
                       "private", "discourse", config, {})  # fmt: skip
    client = DiscourseClient(timeout_seconds=5, home=str(settings.home))
    result = pull_source(
        warehouse.connection,
        source,
        PullContext(warehouse.connection, discourse_client=client, secret_box=client.secret_box()),
    )
    assert result.counts.inserted == len(forum.posts)
    stored = db.execute(
        "select config::text from control.feedback_sources where source_id = %s", (source_id,)
    ).fetchone()[0]
    assert "discourse-key-123" not in stored
    # without the key the forum refuses, and the error does not carry the key
    with pytest.raises(DiscourseError, match="HTTP 403") as caught:
        client.search(forum_url, "order:latest", 1, api_key="wrong-key")
    assert "wrong-key" not in str(caught.value)
