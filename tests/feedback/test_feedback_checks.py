"""The feedback domain's asset checks, run with their assets: an item left without enrichment
fails `every_item_enriched`, and a day's report that no longer counts the day's items fails
`one_report_per_workspace_and_day`."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import dagster as dg

from assets.feedback.defs import (
    every_item_enriched,
    feedback_enrichment,
    insight_reports,
    one_report_per_workspace_and_day,
)
from assets.feedback.rules import FeedbackItem
from assets.feedback.store import upsert_items

DAY = date(2024, 2, 14)


def _items(workspace, source_id: int, count: int) -> list[FeedbackItem]:
    return [
        FeedbackItem(
            workspace_id=workspace.workspace_id,
            tenant_id=workspace.tenant_id,
            source="webhook",
            source_id=source_id,
            external_id=f"check-{n}-{uuid.uuid4().hex[:6]}",
            author="ann",
            text=f"The export works great now, thank you ({n})",
            created_at=datetime(DAY.year, DAY.month, DAY.day, 9 + n, tzinfo=UTC),
            rating=None,
            raw_data={},
        )
        for n in range(count)
    ]


def _check(result, name: str):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def test_an_item_waiting_for_enrichment_past_its_lag_fails_until_enriched(
    make_workspace, add_source, dagster_resources, warehouse, db
):
    workspace = make_workspace()
    source, _ = add_source(workspace, "webhook")
    items = _items(workspace, source.source_id, 1)
    with warehouse.connection() as conn:
        upsert_items(conn, items)
        # written an hour ago and never enriched (an enrichment run that kept failing)
        conn.execute(
            "update raw.feedback_items set updated_at = now() - interval '1 hour'"
            " where workspace_id = %s",
            (workspace.workspace_id,),
        )
    waiting = every_item_enriched(warehouse=dagster_resources["warehouse"])
    assert not waiting.passed and waiting.metadata["items_not_enriched"].value >= 1
    result = dg.materialize([feedback_enrichment, every_item_enriched], resources=dagster_resources)
    assert result.success
    after = _check(result, "every_item_enriched")
    assert (
        after.metadata["items_not_enriched"].value
        == waiting.metadata["items_not_enriched"].value - 1
    )
    assert db.execute(
        "select enriched_hash = content_hash from raw.feedback_items where workspace_id = %s",
        (workspace.workspace_id,),
    ).fetchone() == (True,)


def test_a_report_that_no_longer_counts_its_days_items_fails_the_check(
    make_workspace, add_source, dagster_resources, warehouse, db
):
    workspace = make_workspace()
    source, _ = add_source(workspace, "webhook")
    with warehouse.connection() as conn:
        upsert_items(conn, _items(workspace, source.source_id, 3))
    assert dg.materialize([feedback_enrichment], resources=dagster_resources).success

    def report():
        result = dg.materialize(
            [insight_reports, one_report_per_workspace_and_day],
            resources=dagster_resources,
            partition_key=DAY.isoformat(),
        )
        assert result.success
        check = _check(result, "one_report_per_workspace_and_day")
        mine = [
            r
            for r in check.metadata["first_disagreeing"].value
            if r["workspace_id"] == workspace.workspace_id
        ]
        return check, mine

    check, mine = report()
    assert mine == []
    assert db.execute(
        "select items from analytics.insight_reports where workspace_id = %s and day = %s"
        " and source = 'all'",
        (workspace.workspace_id, DAY),
    ).fetchone() == (3,)
    # an item of that day removed behind the report's back (no change mark): the report is wrong
    db.execute(
        "delete from raw.feedback_items where item_id = (select item_id from raw.feedback_items"
        " where workspace_id = %s limit 1)",
        (workspace.workspace_id,),
    )
    check = one_report_per_workspace_and_day(warehouse=dagster_resources["warehouse"])
    assert not check.passed
    assert {
        "workspace_id": workspace.workspace_id,
        "day": DAY.isoformat(),
        "items": 2,
        "reported": 3,
    } in check.metadata["first_disagreeing"].value
