"""Done when: a sandbox Discourse source and a webhook source in one workspace, pulled and pushed
with overlaps twice, leave each item once in raw.feedback_items with language, sentiment and
topics. Real HTTP both ways, the real drain sensor, real Dagster materializations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest

from assets.feedback.sources.discourse import MAX_EDIT_PAGES_PER_PULL
from sandbox.feedback_text import feedback_text

pytestmark = pytest.mark.slow


def _pushed(start: int, stop: int) -> list[dict]:
    import random

    rng = random.Random(5)
    base = datetime.now(UTC) - timedelta(days=3)
    items = []
    for n in range(stop):
        text = feedback_text(rng, foreign_share=0.0).text
        if n >= start:
            items.append(
                {
                    "external_id": f"app-review-{n}",
                    "text": text,
                    "author": f"user{n}@example.com" if n % 3 else None,
                    "created_at": (base + timedelta(minutes=7 * n)).isoformat(),
                    "rating": (n % 5) + 1,
                    "metadata": {"store": "app-store", "version": "4.2"},
                }
            )
    return items


def _push(webhook_url: str, workspace: str, token: str, items: list[dict]) -> httpx.Response:
    return httpx.post(
        f"{webhook_url}/webhooks/feedback/{workspace}",
        json=items,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _drain_via_sensor(dagster_resources) -> None:
    """What the daemon does: the sensor sees the queue and requests a drain run; run it."""
    from assets.feedback.defs import feedback_enrichment, feedback_items
    from sensors.feedback import feedback_queue_sensor

    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=dagster_resources) as context:
            result = feedback_queue_sensor.evaluate_tick(context)
        assert len(result.run_requests) == 1, result.skip_message
        request = result.run_requests[0]
        assert request.tags["supportflow/queue"] == "feedback"
        outcome = dg.materialize(
            [feedback_items, feedback_enrichment],
            resources=dagster_resources,
            run_config=request.run_config,
            instance=instance,
        )
        assert outcome.success


def _pull(dagster_resources, workspace: str) -> dg.ExecuteInProcessResult:
    from assets.feedback.defs import feedback_enrichment, feedback_items

    result = dg.materialize(
        [feedback_items, feedback_enrichment],
        resources=dagster_resources,
        run_config={
            "ops": {"feedback_items": {"config": {"workspace": workspace, "drain": False}}}
        },
    )
    assert result.success
    return result


def test_discourse_and_webhook_into_one_workspace_each_item_once(
    platform, make_workspace, add_source, forum, forum_url, webhook_url, dagster_resources,
    feedback_queue, db,
):  # fmt: skip
    """In both shapes of the platform (pushed items through PostgreSQL queues or SQS)."""
    workspace = make_workspace()
    add_source(workspace, "discourse", "forum", **{"base-url": forum_url, "since": "2000-01-01"})
    _, shown = add_source(workspace, "webhook")
    token = shown["bearer token (shown once, store it now)"]

    # pull 1 and push 1 (two overlapping requests)
    first_pull = _pull(dagster_resources, workspace.name)
    meta = first_pull.asset_materializations_for_node("feedback_items")[0].metadata
    assert meta["pulled_new"].value == len(forum.posts) == 120
    assert _push(webhook_url, workspace.name, token, _pushed(0, 30)).status_code == 202
    assert _push(webhook_url, workspace.name, token, _pushed(20, 50)).status_code == 202
    _drain_via_sensor(dagster_resources)

    # people keep writing; pull 2 and push 2 overlap what is already there
    forum.add_posts(15, when=datetime.now(UTC) - timedelta(hours=2))
    searches_before = forum.requests_by_path["/search.json"]
    sweeps_before = forum.requests_by_path["/posts.json"]
    second_pull = _pull(dagster_resources, workspace.name)
    meta = second_pull.asset_materializations_for_node("feedback_items")[0].metadata
    assert meta["pulled_new"].value == 15
    assert meta["pulled_updated"].value == 0
    # one search page: the newest posts, then seen ones; the edit sweep reads a bounded slice
    assert forum.requests_by_path["/search.json"] - searches_before == 1
    assert 1 <= forum.requests_by_path["/posts.json"] - sweeps_before <= MAX_EDIT_PAGES_PER_PULL
    response = _push(webhook_url, workspace.name, token, _pushed(10, 60))
    assert response.status_code == 202 and response.json()["accepted"] == 50
    _drain_via_sensor(dagster_resources)

    rows = db.execute(
        """
        select source, count(*), count(distinct external_id),
               count(*) filter (where language is not null and language_score > 0),
               count(*) filter (where sentiment_label in ('positive', 'neutral', 'negative')
                                and sentiment_score between -1 and 1
                                and sentiment_model is not null),
               count(*) filter (where jsonb_array_length(topics) > 0)
        from raw.feedback_items where workspace_id = %s group by source order by source
        """,
        (workspace.workspace_id,),
    ).fetchall()
    by_source = {row[0]: row[1:] for row in rows}
    assert by_source["discourse"] == (135, 135, 135, 135, by_source["discourse"][4])
    assert by_source["webhook"][:4] == (60, 60, 60, 60)
    # topics: every item whose words the workspace's topic model knows gets one
    assert by_source["discourse"][4] >= 0.9 * 135
    assert by_source["webhook"][4] >= 0.9 * 60

    # the uniform format: HTML gone, author and the source's extras kept
    text, author, raw = db.execute(
        "select text, author, raw_data from raw.feedback_items "
        "where workspace_id = %s and source = 'discourse' and raw_data->>'id' = %s",
        (workspace.workspace_id, str(forum.posts[0]["id"])),
    ).fetchone()
    assert "<" not in text and text.startswith(forum.posts[0]["_text"])
    assert author == forum.posts[0]["username"]
    assert raw["topic_id"] == forum.posts[0]["topic_id"] and raw["url"].startswith(forum_url)
    pushed = db.execute(
        "select rating, raw_data, author from raw.feedback_items "
        "where workspace_id = %s and external_id = 'app-review-3'",
        (workspace.workspace_id,),
    ).fetchone()
    assert pushed == ("4", {"metadata": {"store": "app-store", "version": "4.2"}}, None)
    languages = {
        r[0]
        for r in db.execute(
            "select language from raw.feedback_items where workspace_id = %s",
            (workspace.workspace_id,),
        )
    }
    assert "en" in languages

    # the cursor remembers the newest post and the scan is complete
    cursor = db.execute(
        "select cursor from control.feedback_sources "
        "where workspace_id = %s and kind = 'discourse'",
        (workspace.workspace_id,),
    ).fetchone()[0]
    assert cursor["last_post_id"] == max(p["id"] for p in forum.posts)
    assert cursor["scan"] is None
