"""Done when (issue 16, Discourse edits): a post edited in the sandbox forum after it was pulled
changes its item, its sentiment and the day's insight report, through a real pull, enrichment
and report materialization, with the report-changes sensor requesting exactly the affected
days; an unedited re-pull writes nothing; the edit sweep's cost per pull stays bounded."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import httpx
import pytest

from assets.feedback.rules import SourceConfigError
from assets.feedback.sources import discourse as discourse_source
from assets.feedback.sources import source_kind
from assets.feedback.sources.base import PullContext
from resources.discourse import DiscourseClient

pytestmark = pytest.mark.slow

ANGRY = (
    "Edited after the update: the export is broken again and nobody answers. Terrible, "
    "awful service, I am angry and really disappointed."
)


@pytest.fixture
def feedback_defs(dagster_resources):
    from assets.feedback.defs import feedback_enrichment, feedback_items
    from assets.feedback.insights import insight_reports, insight_reports_job
    from sensors.feedback import insight_report_changes_sensor

    return dg.Definitions(
        assets=[feedback_items, feedback_enrichment, insight_reports],
        jobs=[insight_reports_job],
        sensors=[insight_report_changes_sensor],
        resources=dagster_resources,
    )


def pull_and_enrich(dagster_resources, instance, workspace: str) -> dict[str, int]:
    from assets.feedback.defs import feedback_enrichment, feedback_items

    result = dg.materialize(
        [feedback_items, feedback_enrichment],
        resources=dagster_resources,
        instance=instance,
        run_config={
            "ops": {"feedback_items": {"config": {"workspace": workspace, "drain": False}}}
        },
    )
    assert result.success
    pulled = result.asset_materializations_for_node("feedback_items")[0].metadata
    enriched = result.asset_materializations_for_node("feedback_enrichment")[0].metadata
    return {
        "new": pulled["pulled_new"].value,
        "updated": pulled["pulled_updated"].value,
        "enriched": enriched["items_enriched"].value,
    }


def report(defs, instance, day: date, tags: dict[str, str] | None = None) -> None:
    job = defs.resolve_job_def("insight_reports_job")
    outcome = job.execute_in_process(
        instance=instance, partition_key=day.isoformat(), tags=tags or {}
    )
    assert outcome.success


def tick(defs, instance, dagster_resources) -> list[dg.RunRequest]:
    sensor = defs.resolve_sensor_def("insight_report_changes_sensor")
    with dg.build_sensor_context(
        instance=instance, resources=dagster_resources, definitions=defs
    ) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or [])


def day_report(db, workspace_id: int, day: date) -> tuple:
    return db.execute(
        "select items, positive, neutral, negative, avg_sentiment from analytics.insight_reports "
        "where workspace_id = %s and day = %s and source = 'all'",
        (workspace_id, day),
    ).fetchone()


def item_versions(db, workspace_id: int) -> dict[str, str]:
    """Each item's row version (xmin): it changes when anything writes the row."""
    rows = db.execute(
        "select item_id, xmin::text from raw.feedback_items where workspace_id = %s",
        (workspace_id,),
    ).fetchall()
    return dict(rows)


def test_an_edited_post_changes_its_item_sentiment_and_the_days_report(
    make_workspace, add_source, forum, forum_url, dagster_resources, feedback_defs, db
):
    db.execute("delete from control.insight_report_days")  # other tests' days are not ours
    workspace = make_workspace()
    add_source(workspace, "discourse", "forum", **{"base-url": forum_url, "since": "2000-01-01"})
    today = datetime.now(UTC).date()
    with dg.instance_for_test() as instance:
        first = pull_and_enrich(dagster_resources, instance, workspace.name)
        assert first["new"] == len(forum.posts) and first["updated"] == 0

        # the most positive post of a day inside the edit window with a day after it to report
        external_id, day = db.execute(
            """
            select external_id, (created_at at time zone 'UTC')::date from raw.feedback_items
            where workspace_id = %s and sentiment_label = 'positive'
              and (created_at at time zone 'UTC')::date between %s and %s
            order by sentiment_score desc, item_id limit 1
            """,
            (workspace.workspace_id, today - timedelta(days=5), today - timedelta(days=2)),
        ).fetchone()
        for reported in (day - timedelta(days=1), day, day + timedelta(days=1)):
            report(feedback_defs, instance, reported)
        assert tick(feedback_defs, instance, dagster_resources) == []  # reports are current
        before = day_report(db, workspace.workspace_id, day)
        fitted_before = db.execute(
            "select fitted_at from control.topic_models where workspace_id = %s",
            (workspace.workspace_id,),
        ).fetchone()[0]

        edited = forum.edit_post(int(external_id), ANGRY)
        assert edited["version"] == 2
        second = pull_and_enrich(dagster_resources, instance, workspace.name)
        assert (second["new"], second["updated"], second["enriched"]) == (0, 1, 1)
        text, label, score, language, raw, fresh = db.execute(
            "select text, sentiment_label, sentiment_score, language, raw_data, "
            "enriched_hash = content_hash from raw.feedback_items "
            "where workspace_id = %s and external_id = %s",
            (workspace.workspace_id, external_id),
        ).fetchone()
        assert text == ANGRY and label == "negative" and score < 0 and language == "en"
        assert fresh and raw["version"] == 2 and raw["updated_at"] == edited["updated_at"]
        fitted_after = db.execute(
            "select fitted_at from control.topic_models where workspace_id = %s",
            (workspace.workspace_id,),
        ).fetchone()[0]
        assert fitted_after > fitted_before  # topics were assigned again after the edit

        # exactly the reported days that read the edited day: itself and the day after
        requests = tick(feedback_defs, instance, dagster_resources)
        assert sorted(r.partition_key for r in requests) == [
            day.isoformat(),
            (day + timedelta(days=1)).isoformat(),
        ]
        assert all(r.tags["supportflow/rereport"] == "feedback-changed" for r in requests)
        assert [r.run_key for r in tick(feedback_defs, instance, dagster_resources)] == [
            r.run_key for r in requests
        ]  # the same change keeps its run key: the daemon launches it once
        for request in requests:
            report(feedback_defs, instance, date.fromisoformat(request.partition_key), request.tags)
        after = day_report(db, workspace.workspace_id, day)
        assert after[0] == before[0]  # same items
        assert (after[1], after[3]) == (before[1] - 1, before[3] + 1)  # one positive now negative
        assert after[4] < before[4]
        assert tick(feedback_defs, instance, dagster_resources) == []
        rereports = instance.get_run_records(
            dg.RunsFilter(tags={"supportflow/rereport": "feedback-changed"})
        )
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in rereports) == sorted(
            r.partition_key for r in requests
        )

        # an unedited re-pull reads the forum again and writes nothing
        rows_before = item_versions(db, workspace.workspace_id)
        marks_before = db.execute(
            "select * from control.insight_report_days order by day"
        ).fetchall()
        sweeps_before = forum.requests_by_path["/posts.json"]
        third = pull_and_enrich(dagster_resources, instance, workspace.name)
        assert (third["new"], third["updated"], third["enriched"]) == (0, 0, 0)
        assert forum.requests_by_path["/posts.json"] > sweeps_before
        assert item_versions(db, workspace.workspace_id) == rows_before
        assert (
            db.execute("select * from control.insight_report_days order by day").fetchall()
            == marks_before
        )
        assert tick(feedback_defs, instance, dagster_resources) == []


def _pages_to_horizon(forum, days: int) -> int:
    """How many `/posts.json` pages a sweep of a `days` window reads: up to and including the
    first page whose oldest post was created before the window."""
    horizon = datetime.now(UTC) - timedelta(days=days)
    ordered = sorted(forum.posts, key=lambda post: post["id"], reverse=True)
    for page, start in enumerate(range(0, len(ordered), forum.page_size), start=1):
        if ordered[start : start + forum.page_size][-1]["_created"] < horizon:
            return page
    return len(ordered) // forum.page_size + 1


@pytest.fixture
def forum_source(make_workspace, add_source, warehouse, forum_url):
    """A Discourse source on the sandbox forum with these options: (workspace, pull), where a
    pull reads the stored source as a run does and returns its result and the cursor it left."""
    from assets.feedback.defs import pull_source
    from assets.feedback.store import list_sources

    def make(**options):
        workspace = make_workspace()
        options = {"base-url": forum_url, "since": "2000-01-01", **options}
        add_source(workspace, "discourse", "forum", **options)
        client = DiscourseClient(timeout_seconds=5)
        context = PullContext(connection=warehouse.connection, discourse_client=client)

        def stored():
            with warehouse.connection() as conn:
                (source,) = list_sources(conn, workspace.name)
            return source

        def pull():
            result = pull_source(warehouse.connection, stored(), context)
            return result, stored().cursor

        return workspace, pull

    return make


def test_the_edit_sweep_is_bounded_resumes_and_touches_only_held_posts(
    forum_source, forum, db, monkeypatch
):
    monkeypatch.setattr(discourse_source, "MAX_EDIT_PAGES_PER_PULL", 2)
    workspace, pull_forum = forum_source(query="slack")

    def pull():
        sweeps_before = forum.requests_by_path["/posts.json"]
        result, cursor = pull_forum()
        assert forum.requests_by_path["/posts.json"] - sweeps_before <= 2  # the per-pull cap
        return result, cursor

    def held() -> dict[str, str]:
        return dict(
            db.execute(
                "select external_id, text from raw.feedback_items where workspace_id = %s",
                (workspace.workspace_id,),
            ).fetchall()
        )

    result, cursor = pull()
    stored = held()
    assert result.counts.inserted == len(stored) > 0
    assert cursor["edits"]["before"] is not None  # two pages read, the sweep goes on next pull
    horizon = datetime.now(UTC) - timedelta(days=discourse_source.EDIT_WINDOW_DAYS - 1)
    recent = [p for p in forum.posts if p["_created"] > horizon]
    held_post = next(p for p in recent if str(p["id"]) in stored)
    other_post = next(p for p in recent if str(p["id"]) not in stored)
    forum.edit_post(held_post["id"], "Slack alerts arrive twice now, please fix it.")
    forum.edit_post(other_post["id"], "An edit of a post this source never searched for.")

    for _ in range(8):
        result, cursor = pull()
        if held()[str(held_post["id"])] == "Slack alerts arrive twice now, please fix it.":
            break
    else:
        pytest.fail("the edit was not picked up within eight pulls")
    assert result.counts.updated == 1 and result.counts.inserted == 0
    assert str(other_post["id"]) not in held()  # an edit never adds a post the search skipped

    # sweeps run to their end; once one started after the edit, nothing changes any more
    while cursor["edits"]["before"] is not None:
        result, cursor = pull()
    result, cursor = pull()
    while cursor["edits"]["before"] is not None:
        assert result.counts.updated == result.counts.inserted == 0
        result, cursor = pull()
    assert result.counts.updated == result.counts.inserted == 0
    assert cursor["edits"]["checked_until"] is not None


def test_a_sweep_reads_the_window_not_the_forum(forum_source, forum, warehouse):
    workspace, pull = forum_source(**{"edit-window-days": "3"})
    pull()  # the first pull: the search, and a sweep
    searches, sweeps = (forum.requests_by_path[p] for p in ("/search.json", "/posts.json"))
    result, _ = pull()
    assert forum.requests_by_path["/search.json"] - searches == 1
    pages = forum.requests_by_path["/posts.json"] - sweeps
    assert pages == _pages_to_horizon(forum, 3) < len(forum.posts) // forum.page_size
    assert result.counts.inserted == result.counts.updated == 0
    # 0 days: edits are not looked for at all
    with warehouse.connection() as conn:
        conn.execute(
            "update control.feedback_sources set config = config || '{\"edit_window_days\": 0}' "
            "where workspace_id = %s",
            (workspace.workspace_id,),
        )
    sweeps = forum.requests_by_path["/posts.json"]
    pull()
    assert forum.requests_by_path["/posts.json"] == sweeps


def test_a_sweep_checks_edits_from_when_the_last_finished_sweep_started():
    from assets.feedback.sources.discourse import EDIT_CLOCK_SLACK, EditSweep

    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    horizon = now - timedelta(days=7)

    def post(post_id: int, created: datetime, updated: datetime) -> dict:
        return {"id": post_id, "created_at": created.isoformat(), "updated_at": updated.isoformat()}

    first = EditSweep.from_cursor({}, now)
    assert first.started == now - EDIT_CLOCK_SLACK and first.before is None
    assert first.is_new_edit(post(1, horizon, horizon))  # before any finished sweep: every post
    page = [post(30, now - timedelta(days=1), now), post(20, now - timedelta(days=2), now)]
    going_on = first.after_page(page, horizon)
    assert going_on.before == 20 and going_on.checked_until is None
    resumed = EditSweep.from_cursor(going_on.as_cursor(), now + timedelta(hours=1))
    assert resumed == going_on  # a later pull goes on with the same start
    done = resumed.after_page([post(10, now - timedelta(days=8), now)], horizon)
    assert (done.before, done.checked_until) == (None, first.started)
    after = EditSweep.from_cursor(done.as_cursor(), now + timedelta(hours=2))
    assert after.started == now + timedelta(hours=2) - EDIT_CLOCK_SLACK
    assert after.is_new_edit(post(5, horizon, first.started + timedelta(seconds=1)))
    assert not after.is_new_edit(post(6, horizon, first.started))
    assert after.after_page([], horizon).before is None  # the forum's first post reached


@pytest.mark.parametrize("value", ["-1", "366", "a week"])
def test_edit_window_option_is_checked(value):
    with pytest.raises(SourceConfigError, match="--edit-window-days"):
        source_kind("discourse").build_config(
            {"base-url": "https://forum.example", "edit-window-days": value}
        )


def test_sandbox_shows_edits_where_discourse_does(forum, forum_url):
    post = forum.posts[-5]
    forum.edit_post(post["id"], "Edited: the calendar sync works again.")
    search = httpx.get(f"{forum_url}/search.json", params={"q": "order:latest"}).json()
    found = next(p for p in search["posts"] if p["id"] == post["id"])
    # search: sorted by creation (the edit does not move it), no updated_at or version
    assert [p["id"] for p in search["posts"]][:5] == [p["id"] for p in forum.posts[::-1][:5]]
    assert "updated_at" not in found and "version" not in found
    assert "calendar sync works again" in found["cooked"]
    latest = httpx.get(f"{forum_url}/posts.json").json()["latest_posts"]
    assert [p["id"] for p in latest] == sorted((p["id"] for p in forum.posts), reverse=True)[:20]
    shown = next(p for p in latest if p["id"] == post["id"])
    assert shown["version"] == 2 and shown["updated_at"] > shown["created_at"]
    assert shown["raw"] == "Edited: the calendar sync works again."
    older = httpx.get(f"{forum_url}/posts.json", params={"before": latest[-1]["id"]}).json()
    assert max(p["id"] for p in older["latest_posts"]) < latest[-1]["id"]
