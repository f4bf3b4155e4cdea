"""The insight statistics on a small planted week whose baselines and anomalies are worked out by
hand below (literals, not the code under test): a day without feedback counts as 0 for volume
and is skipped by the negative share and topic baselines; idle workspaces get no chart; the
materialization's preview table lists the day's rows."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

DAY = date(2024, 9, 17)

# Trailing days D-7 .. D-1: (items, of them negative); D-6 had no feedback at all.
TRAILING = {7: (10, 2), 6: (0, 0), 5: (10, 2), 4: (10, 3), 3: (12, 3), 2: (8, 2), 1: (10, 2)}

# Worked by hand.
# volume: counts 10, 0, 10, 10, 12, 8, 10 -> mean 60/7 = 8.5714; population variance
#   (7 * 608 - 60^2) / 49 = 656/49, sd = sqrt(656)/7 = 3.6589 (> sqrt(8.5714) = 2.9277 > 1);
#   allowed 3 x 3.6589 = 10.9768; today 30 > 8.5714 + 10.9768 = 19.5482 -> volume_spike.
# negative share over the 6 days with items: .2 .2 .3 .25 .25 .2 -> mean 1.4/6 = 0.2333,
#   sd 0.0373 so the 15-point floor applies: threshold 0.3833; today 15/30 = 0.5 -> spike.
# topics (6 trailing days with feedback): billing 2 a day -> average 12/6 = 2.0 (over 7 days it
#   would be 1.71), today 10 >= 8 and >= 2 x 2.0 -> growing; 'dark mode' (4) and 'export' (3)
#   never seen before -> new; 'login' 1 a day, today 3 -> nothing.
EXPECTED_ANOMALIES = [
    {
        "kind": "negative_spike",
        "value": 0.5,
        "baseline": 0.2333,
        "threshold": 0.3833,
        "detail": "negative share 50% vs trailing mean 23%",
    },
    {
        "kind": "volume_spike",
        "value": 30,
        "baseline": 8.57,
        "threshold": 19.55,
        "detail": "30 items vs trailing mean 8.6",
    },
    {
        "kind": "growing_topic",
        "topic": "billing",
        "value": 10,
        "baseline": 2.0,
        "detail": "topic 'billing' grew to 10 items from 2.0 a day",
    },
    {
        "kind": "new_topic",
        "topic": "dark mode",
        "value": 4,
        "baseline": 0,
        "detail": "new topic 'dark mode': 4 items, none in the last 7 days",
    },
    {
        "kind": "new_topic",
        "topic": "export",
        "value": 3,
        "baseline": 0,
        "detail": "new topic 'export': 3 items, none in the last 7 days",
    },
]


def _rows(workspace, source_id: int) -> list[tuple]:
    """(created_at, label, score, topics) per item; ordered within a day by created_at."""
    planted = []
    for back, (items, negative) in TRAILING.items():
        day = DAY - timedelta(days=back)
        for n in range(items):
            label, score = ("negative", -0.4) if n < negative else ("positive", 0.6)
            topics = ["billing"] if n in (3, 4) else ["login"] if n == 5 else []
            planted.append((day, n, label, score, topics))
    # today: 15 negative (-0.5), 10 positive (+0.5), 5 neutral and unscored: mean -2.5/25 = -0.1
    for n in range(30):
        if n < 15:
            label, score = "negative", -0.5
        elif n < 25:
            label, score = "positive", 0.5
        else:
            label, score = "neutral", None
        if n < 10:
            topics = ["billing"]
        elif n < 14:
            topics = ["dark mode"]
        elif n < 17:
            topics = ["export", "login"]
        else:
            topics = []
        planted.append((DAY, n, label, score, topics))
    rows = []
    for day, n, label, score, topics in planted:
        external = f"{day.isoformat()}-{n}"
        item_id = hashlib.sha256(f"stats-{workspace.workspace_id}-{external}".encode()).hexdigest()
        created = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=10 + n)
        rows.append(
            (item_id, workspace.workspace_id, workspace.tenant_id, "webhook", source_id, external,
             f"{label} feedback {external}", created, "h", label, score, topics, "h")
        )  # fmt: skip
    return rows


@pytest.fixture
def planted(make_workspace, add_source, db):
    from psycopg.types.json import Jsonb

    workspace = make_workspace()
    source, _ = add_source(workspace, "webhook")
    with db.cursor() as cur:
        cur.executemany(
            """
            insert into raw.feedback_items (item_id, workspace_id, tenant_id, source, source_id,
                external_id, text, created_at, content_hash, sentiment_label, sentiment_score,
                topics, enriched_hash)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            [(*row[:11], Jsonb(row[11]), row[12]) for row in _rows(workspace, source.source_id)],
        )
    return workspace


def test_planted_week_gives_the_hand_computed_row(planted, warehouse):
    from assets.feedback.insights import build_reports

    with warehouse.connection() as conn:
        (report,) = build_reports(conn, DAY, planted.name)
    assert list(report.rows) == ["all", "webhook"]
    row = report.rows["all"]
    assert (row["items"], row["positive"], row["neutral"], row["negative"]) == (30, 10, 5, 15)
    assert row["avg_sentiment"] == -0.1
    assert row["anomalies"] == EXPECTED_ANOMALIES
    assert report.rows["webhook"] == row
    # most items first, ties by name; the example is the day's first item whose *main* topic
    # it is, so 'login' (only ever a second topic) has none
    assert [(t["topic"], t["items"]) for t in row["top_topics"]] == [
        ("billing", 10),
        ("dark mode", 4),
        ("export", 3),
        ("login", 3),
    ]
    billing, _, export, login = row["top_topics"]
    assert billing["example"] == {
        "item_id": hashlib.sha256(
            f"stats-{planted.workspace_id}-{DAY.isoformat()}-0".encode()
        ).hexdigest(),
        "text": f"negative feedback {DAY.isoformat()}-0",
        "sentiment": "negative",
    }
    assert export["example"]["text"] == f"negative feedback {DAY.isoformat()}-14"
    assert login["example"] is None
    # the chart's 14 days, oldest first, with the empty D-6 as zeros
    assert [d for d, _ in report.history] == [DAY - timedelta(days=n) for n in range(13, -1, -1)]
    assert [s.items for _, s in report.history] == [0] * 6 + [10, 0, 10, 10, 12, 8, 10, 30]
    assert report.history[6][1].avg_sentiment == 0.4  # (2 x -0.4 + 8 x 0.6) / 10


def test_the_day_before_stays_within_its_baselines(planted, warehouse):
    """D-1 against D-8 .. D-2 (D-8 is before the planted week): counts 0, 10, 0, 10, 10, 12, 8,
    mean 50/7 = 7.14, sd sqrt(1056)/7 = 4.64, so 10 is well inside; shares .2 .2 .3 .25 .25 mean
    .24 against its .2; billing 2, below the 8 a growing topic needs."""
    from assets.feedback.insights import build_reports

    with warehouse.connection() as conn:
        (report,) = build_reports(conn, DAY - timedelta(days=1), planted.name)
    assert report.rows["all"]["items"] == 10
    assert report.rows["all"]["anomalies"] == []


def test_idle_workspaces_get_no_chart_and_the_preview_lists_the_day(
    planted, make_workspace, dagster_resources, db
):
    from assets.feedback.insights import insight_reports

    idle = make_workspace()
    result = dg.materialize(
        [insight_reports], resources=dagster_resources, partition_key=DAY.isoformat()
    )
    assert result.success
    metadata = result.asset_materializations_for_node("insight_reports")[0].metadata
    html = {
        name: open(path).read()  # noqa: SIM115 - small files
        for name, path in metadata["html_files"].value.items()
        if name in (planted.name, idle.name)
    }
    assert "data:image/png;base64," in html[planted.name]
    assert "data:image/png;base64," not in html[idle.name]
    assert "No feedback in the last 14 days" in html[idle.name]

    preview = metadata["preview"].value
    lines = preview.splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "workspace", "source", "items", "negative", "avg sentiment", "anomalies", "top topic"
    ]  # fmt: skip
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[2:] if "|" in line]
    mine = [c for c in cells if c[0] == planted.name]
    assert mine[0] == [
        planted.name,
        "all",
        "30",
        "15",
        "-0.10",
        "negative_spike, volume_spike, growing_topic, new_topic, new_topic",
        "billing",
    ]
    assert mine[1][:3] == [planted.name, "webhook", "30"]
    assert idle.name not in preview
    stored = db.execute(
        "select count(*) from analytics.insight_reports where day = %s", (DAY,)
    ).fetchone()[0]
    assert len(cells) == min(stored, 15)
