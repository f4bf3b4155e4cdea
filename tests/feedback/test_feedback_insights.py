"""Done when: two weeks of insight reports over data with a planted negative spike and a planted
new topic; the reports flag both (and nothing else as a negative spike)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets.feedback.rules import FeedbackItem
from sandbox.feedback_text import compose, feedback_text

pytestmark = pytest.mark.slow

START = date(2026, 3, 1)
DAYS = 14
SPIKE_DAY = START + timedelta(days=8)
NEW_TOPIC_DAY = START + timedelta(days=11)
PER_DAY = 40


def planted_items(source) -> list[FeedbackItem]:
    rng = random.Random(2026)
    items = []
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        texts = []
        for _ in range(PER_DAY):
            negative = 0.75 if day == SPIKE_DAY else 0.2
            texts.append(feedback_text(rng, negative_share=negative, foreign_share=0.02).text)
        if day >= NEW_TOPIC_DAY:
            sentiment = ["negative", "neutral", "positive"]
            texts += [compose(rng, "dark_mode", rng.choice(sentiment)) for _ in range(9)]
        for n, text in enumerate(texts):
            created = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
                minutes=rng.randint(0, 24 * 60 - 1)
            )
            items.append(
                FeedbackItem(
                    workspace_id=source.workspace_id,
                    tenant_id=source.tenant_id,
                    source="webhook",
                    source_id=source.source_id,
                    external_id=f"{day.isoformat()}-{n}",
                    author=None,
                    text=text,
                    created_at=created,
                )
            )
    return items


def test_two_weeks_of_reports_flag_the_planted_spike_and_new_topic(
    make_workspace, add_source, warehouse, dagster_resources, db
):
    from assets.feedback.defs import feedback_enrichment
    from assets.feedback.insights import insight_reports
    from assets.feedback.store import upsert_items

    workspace = make_workspace()
    source, _ = add_source(workspace, "webhook")
    with warehouse.connection() as conn:
        upsert_items(conn, planted_items(source))
    assert dg.materialize([feedback_enrichment], resources=dagster_resources).success

    reports = {}
    for offset in range(DAYS):
        day = START + timedelta(days=offset)
        result = dg.materialize(
            [insight_reports], resources=dagster_resources, partition_key=day.isoformat()
        )
        assert result.success
        reports[day] = result.asset_materializations_for_node("insight_reports")[0].metadata

    rows = db.execute(
        "select day, items, negative, anomalies from analytics.insight_reports "
        "where workspace_id = %s and source = 'all' order by day",
        (workspace.workspace_id,),
    ).fetchall()
    assert [r[0] for r in rows] == [START + timedelta(days=n) for n in range(DAYS)]
    kinds = {day: {a["kind"] for a in anomalies} for day, _, _, anomalies in rows}
    spikes = [day for day, found in kinds.items() if "negative_spike" in found]
    assert spikes == [SPIKE_DAY]
    new_topics = {
        day: [a["topic"] for a in anomalies if a["kind"] == "new_topic"]
        for day, _, _, anomalies in rows
    }
    assert any("dark" in topic or "mode" in topic for topic in new_topics[NEW_TOPIC_DAY])
    before = [t for d, ts in new_topics.items() if d < NEW_TOPIC_DAY for t in ts]
    assert not any("dark" in t or "mode" in t for t in before)
    # the per-source row carries the same flags
    webhook_row = db.execute(
        "select anomalies from analytics.insight_reports "
        "where workspace_id = %s and day = %s and source = 'webhook'",
        (workspace.workspace_id, SPIKE_DAY),
    ).fetchone()[0]
    assert "negative_spike" in {a["kind"] for a in webhook_row}

    # the Markdown report in the UI has the chart inline and names the anomalies; the HTML file
    # is written next to the exports
    spike_meta = reports[SPIKE_DAY]
    markdown_text = spike_meta["report"].value
    assert "data:image/png;base64," in markdown_text and "negative share" in markdown_text
    html_path = Path(spike_meta["html_files"].value[workspace.name])
    assert html_path.exists()
    html_text = html_path.read_text()
    assert "<table>" in html_text and "data:image/png;base64," in html_text

    # re-materializing a day replaces its rows
    dg.materialize([insight_reports], resources=dagster_resources, partition_key=str(SPIKE_DAY))
    count = db.execute(
        "select count(*) from analytics.insight_reports where workspace_id = %s and day = %s",
        (workspace.workspace_id, SPIKE_DAY),
    ).fetchone()[0]
    assert count == 2  # 'all' and 'webhook'
