"""Daily feedback insight reports: counts, sentiment, top topics and anomalies per workspace,
day and source, in `analytics.insight_reports`, plus a Markdown/HTML report with a chart.

The anomaly rule (plain functions below, also in the README), for a day D against the trailing
7 days D-7 .. D-1:

- **negative spike**: D has at least 10 items and its negative share exceeds the trailing mean
  share (over trailing days with items, at least 3 of them) by more than
  max(2 standard deviations, 15 percentage points);
- **volume**: D's item count departs from the trailing daily mean (days without items count as 0,
  at least 3 days with items) by more than 3 x max(standard deviation, sqrt(mean), 1) -- the
  sqrt(mean) floor is the Poisson noise of a count, so a very steady week does not make every
  small wobble an anomaly;
- **new topic**: a topic with at least 3 items on D and none in the trailing 7 days;
- **growing topic**: a topic with at least 8 items on D and at least 2x its average over the
  trailing days (which must be above 0).
  Both topic rules look only at trailing days that had feedback, and need at least 3 of them (on
  a workspace's first days everything would be "new").

Reports are computed from `raw.feedback_items` for the day and its trailing window, never from
earlier reports, so partitions can be (re)materialized in any order. A report reads its day and
the `DAYS_READ_BEFORE` days before it (anomaly baselines, the chart); it stamps its day in
`control.insight_report_days` before reading, and when a day it read changes afterwards (an
edited post re-enriched, a late item) `insight_report_changes_sensor` requests it again.
"""

import base64
import io
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from statistics import fmean, pstdev
from typing import Any

import dagster as dg
import psycopg
from psycopg.types.json import Jsonb

from assets.feedback.store import begin_day_report
from resources.columns import table_schema
from resources.partitions import DAILY_FRESHNESS, daily_partitions
from resources.storage import ExportStorage
from resources.warehouse import WarehouseResource

TRAILING_DAYS = 7
MIN_TRAILING_DAYS = 3
NEGATIVE_MIN_ITEMS = 10
NEGATIVE_MIN_POINTS = 0.15
NEGATIVE_SDS = 2.0
VOLUME_SDS = 3.0
NEW_TOPIC_MIN_ITEMS = 3
GROWING_TOPIC_MIN_ITEMS = 8
GROWTH_FACTOR = 2.0
TOP_TOPICS = 5
CHART_DAYS = 14
DAYS_READ_BEFORE = max(TRAILING_DAYS, CHART_DAYS - 1)  # a day's report reads these days before it
UI_REPORTS = 10  # workspaces shown inline in the UI; every one gets its HTML file
ALL_SOURCES = "all"


@dataclass
class DayStats:
    items: int = 0
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    score_sum: float = 0.0
    scored: int = 0

    @property
    def negative_share(self) -> float:
        return self.negative / self.items if self.items else 0.0

    @property
    def avg_sentiment(self) -> float | None:
        return round(self.score_sum / self.scored, 4) if self.scored else None


# --- the anomaly rule ----------------------------------------------------------------------------


def negative_spike(today: DayStats, trailing: Sequence[DayStats]) -> dict[str, Any] | None:
    shares = [d.negative_share for d in trailing if d.items]
    if today.items < NEGATIVE_MIN_ITEMS or len(shares) < MIN_TRAILING_DAYS:
        return None
    mean, sd = fmean(shares), pstdev(shares)
    threshold = max(NEGATIVE_SDS * sd, NEGATIVE_MIN_POINTS)
    if today.negative_share - mean <= threshold:
        return None
    return {
        "kind": "negative_spike",
        "value": round(today.negative_share, 4),
        "baseline": round(mean, 4),
        "threshold": round(mean + threshold, 4),
        "detail": f"negative share {today.negative_share:.0%} vs trailing mean {mean:.0%}",
    }


def volume_anomaly(today: DayStats, trailing: Sequence[DayStats]) -> dict[str, Any] | None:
    counts = [d.items for d in trailing]
    if sum(1 for c in counts if c) < MIN_TRAILING_DAYS:
        return None
    mean, sd = fmean(counts), pstdev(counts)
    allowed = VOLUME_SDS * max(sd, math.sqrt(mean), 1.0)
    if abs(today.items - mean) <= allowed:
        return None
    direction = "spike" if today.items > mean else "drop"
    return {
        "kind": f"volume_{direction}",
        "value": today.items,
        "baseline": round(mean, 2),
        "threshold": round(mean + allowed if today.items > mean else mean - allowed, 2),
        "detail": f"{today.items} items vs trailing mean {mean:.1f}",
    }


def topic_anomalies(
    today: Counter[str], trailing: Sequence[Counter[str]], trailing_items: Sequence[int]
) -> list[dict[str, Any]]:
    """New and growing topics. Only trailing days that had feedback count: a workspace's first
    days (or a quiet weekend) are no evidence that a topic is new or has grown."""
    active = [day for day, items in zip(trailing, trailing_items, strict=True) if items]
    if len(active) < MIN_TRAILING_DAYS:
        return []
    found = []
    for topic, count in sorted(today.items(), key=lambda kv: (-kv[1], kv[0])):
        history = [day.get(topic, 0) for day in active]
        average = sum(history) / len(active)
        if count >= NEW_TOPIC_MIN_ITEMS and sum(history) == 0:
            found.append(
                {
                    "kind": "new_topic",
                    "topic": topic,
                    "value": count,
                    "baseline": 0,
                    "detail": f"new topic {topic!r}: {count} items, none in the last "
                    f"{TRAILING_DAYS} days",
                }
            )
        elif count >= GROWING_TOPIC_MIN_ITEMS and average > 0 and count >= GROWTH_FACTOR * average:
            found.append(
                {
                    "kind": "growing_topic",
                    "topic": topic,
                    "value": count,
                    "baseline": round(average, 2),
                    "detail": f"topic {topic!r} grew to {count} items from {average:.1f} a day",
                }
            )
    return found


def day_anomalies(
    today: DayStats,
    trailing: Sequence[DayStats],
    topics_today: Counter[str],
    topics_trailing: Sequence[Counter[str]],
) -> list[dict[str, Any]]:
    """Every anomaly of one day (one workspace and source) by the rule above."""
    found = [a for a in (negative_spike(today, trailing), volume_anomaly(today, trailing)) if a]
    return found + topic_anomalies(topics_today, topics_trailing, [d.items for d in trailing])


# --- building a day's reports --------------------------------------------------------------------


@dataclass
class WorkspaceReport:
    workspace_id: int
    name: str
    tenant_id: str
    day: date
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # source -> report row
    history: list[tuple[date, DayStats]] = field(default_factory=list)  # CHART_DAYS, 'all'


def _window_rows(conn: psycopg.Connection, workspace_id: int, start: date, end: date):
    return conn.execute(
        """
        select (created_at at time zone 'UTC')::date as day, source, item_id, text,
               sentiment_label, sentiment_score, topics
        from raw.feedback_items
        where workspace_id = %s
          and created_at >= (%s::date)::timestamp at time zone 'UTC'
          and created_at < (%s::date + 1)::timestamp at time zone 'UTC'
        order by created_at, item_id
        """,
        (workspace_id, start, end),
    ).fetchall()


def build_workspace_report(
    conn: psycopg.Connection, workspace_id: int, name: str, tenant_id: str, day: date
) -> WorkspaceReport:
    start = day - timedelta(days=DAYS_READ_BEFORE)
    stats: dict[tuple[date, str], DayStats] = defaultdict(DayStats)
    topics: dict[tuple[date, str], Counter[str]] = defaultdict(Counter)
    examples: dict[tuple[str, str], dict[str, Any]] = {}
    for row_day, source, item_id, text, label, score, item_topics in _window_rows(
        conn, workspace_id, start, day
    ):
        for key in (source, ALL_SOURCES):
            s = stats[(row_day, key)]
            s.items += 1
            if label in ("positive", "neutral", "negative"):
                setattr(s, label, getattr(s, label) + 1)
            if score is not None:
                s.score_sum += score
                s.scored += 1
            for rank, topic in enumerate(item_topics or []):
                topics[(row_day, key)][topic] += 1
                # the example is an item whose main topic this is
                if row_day == day and rank == 0 and (key, topic) not in examples:
                    examples[(key, topic)] = {
                        "item_id": item_id,
                        "text": text[:200],
                        "sentiment": label,
                    }
    report = WorkspaceReport(workspace_id, name, tenant_id, day)
    trailing_days = [day - timedelta(days=n) for n in range(TRAILING_DAYS, 0, -1)]
    sources = sorted({src for (d, src) in stats if d == day})
    for source in sources:
        today = stats[(day, source)]
        trailing = [stats.get((d, source), DayStats()) for d in trailing_days]
        today_topics = topics.get((day, source), Counter())
        anomalies = day_anomalies(
            today,
            trailing,
            today_topics,
            [topics.get((d, source), Counter()) for d in trailing_days],
        )
        top = [
            {"topic": topic, "items": count, "example": examples.get((source, topic))}
            for topic, count in sorted(today_topics.items(), key=lambda kv: (-kv[1], kv[0]))[
                :TOP_TOPICS
            ]
        ]
        report.rows[source] = {
            "items": today.items,
            "positive": today.positive,
            "neutral": today.neutral,
            "negative": today.negative,
            "avg_sentiment": today.avg_sentiment,
            "top_topics": top,
            "anomalies": anomalies,
        }
    report.history = [
        (d, stats.get((d, ALL_SOURCES), DayStats()))
        for d in (day - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1))
    ]
    return report


def build_reports(
    conn: psycopg.Connection, day: date, workspace: str | None = None
) -> list[WorkspaceReport]:
    workspaces = conn.execute(
        "select workspace_id, name, tenant_id from control.workspaces "
        "where %(name)s::text is null or name = %(name)s order by name",
        {"name": workspace},
    ).fetchall()
    return [
        build_workspace_report(conn, wid, name, tenant, day) for wid, name, tenant in workspaces
    ]


def store_reports(conn: psycopg.Connection, day: date, reports: Sequence[WorkspaceReport]) -> int:
    """Replace the day's rows of these workspaces (idempotent re-materialization)."""
    conn.execute(
        "delete from analytics.insight_reports where day = %s and workspace_id = any(%s)",
        (day, [r.workspace_id for r in reports]),
    )
    rows = [
        (
            r.workspace_id,
            day,
            source,
            r.tenant_id,
            row["items"],
            row["positive"],
            row["neutral"],
            row["negative"],
            row["avg_sentiment"],
            Jsonb(row["top_topics"]),
            Jsonb(row["anomalies"]),
        )
        for r in reports
        for source, row in r.rows.items()
    ]
    if rows:
        with conn.cursor() as cur:
            cur.executemany(
                """
                insert into analytics.insight_reports (workspace_id, day, source, tenant_id,
                    items, positive, neutral, negative, avg_sentiment, top_topics, anomalies)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                rows,
            )
    return len(rows)


# --- rendering -----------------------------------------------------------------------------------


def sentiment_chart_png(history: Sequence[tuple[date, DayStats]], title: str) -> bytes:
    """Average sentiment (line) and negative share (bars) per day, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    days = [d for d, _ in history]
    avg = [s.avg_sentiment if s.avg_sentiment is not None else float("nan") for _, s in history]
    negative = [s.negative_share for _, s in history]
    figure = Figure(figsize=(7, 2.6), dpi=90)
    axis = figure.subplots()
    axis.bar(days, negative, color="#e4572e", alpha=0.35, label="negative share")
    axis.plot(days, avg, color="#17becf", marker="o", label="avg sentiment")
    axis.axhline(0, color="#999", linewidth=0.6)
    axis.set_ylim(-1, 1)
    axis.set_title(title, fontsize=10)
    axis.legend(loc="lower left", fontsize=7)
    axis.tick_params(axis="x", labelsize=7, rotation=45)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def render_markdown(report: WorkspaceReport) -> str:
    """The day's report for one workspace, with the chart embedded as a data URI."""
    lines = [f"## Feedback insights: {report.name}, {report.day.isoformat()}", ""]
    if not report.rows:
        lines.append("No feedback on this day.")
    else:
        lines += [
            "| source | items | positive | neutral | negative | avg sentiment |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for source, row in sorted(report.rows.items(), key=lambda kv: kv[0] != ALL_SOURCES):
            avg = "" if row["avg_sentiment"] is None else f"{row['avg_sentiment']:+.2f}"
            lines.append(
                f"| {source} | {row['items']} | {row['positive']} | {row['neutral']} "
                f"| {row['negative']} | {avg} |"
            )
        overall = report.rows.get(ALL_SOURCES, {})
        lines += ["", "**Anomalies**", ""]
        anomalies = [(source, a) for source, row in report.rows.items() for a in row["anomalies"]]
        lines += [f"- {source}: {a['detail']}" for source, a in anomalies] or ["- none"]
        lines += ["", "**Top topics**", ""]
        for n, topic in enumerate(overall.get("top_topics", []), start=1):
            example = (topic.get("example") or {}).get("text", "")
            lines.append(f"{n}. {topic['topic']} ({topic['items']}): _{_md_escape(example)}_")
    png = sentiment_chart_png(report.history, f"{report.name}: sentiment, last {CHART_DAYS} days")
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    lines += ["", f"![sentiment over time]({data_uri})", ""]
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    """Customer text inside Markdown: HTML escaped (Markdown passes raw HTML through, and the
    report becomes an HTML file), Markdown emphasis and table characters neutralised."""
    import html

    text = html.escape(text, quote=False)
    return text.replace("|", "\\|").replace("_", "\\_").replace("*", "\\*").replace("\n", " ")


def render_html(markdown_text: str, title: str) -> str:
    import html

    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em}</style>"
        f"</head><body>{body}</body></html>"
    )


def report_path(workspace: str, day: date) -> str:
    """Where a report's HTML goes, relative to the export storage root."""
    return f"insight_reports/{workspace}/{day.isoformat()}.html"


# --- the Dagster asset ---------------------------------------------------------------------------

# From SUPPORTFLOW_PARTITIONS_START, fixed per deployment so partition keys stay stable.
insight_partitions = daily_partitions()


@dg.asset(
    name="insight_reports",
    group_name="feedback",
    owners=["team:data-eng"],
    kinds={"python", "postgres"},
    deps=[dg.AssetKey("feedback_enrichment")],
    partitions_def=insight_partitions,
    freshness_policy=DAILY_FRESHNESS,
    retry_policy=dg.RetryPolicy(
        max_retries=3, delay=1, backoff=dg.Backoff.LINEAR, jitter=dg.Jitter.FULL
    ),
    description="Daily feedback insight reports per workspace and source "
    "(analytics.insight_reports): counts, sentiment, top topics, anomalies; a Markdown report "
    "with a sentiment chart here and as HTML next to the exports.",
    metadata={
        "dagster/table_name": "analytics.insight_reports",
        "dagster/column_schema": table_schema(
            ("workspace_id", "bigint", "control.workspaces.workspace_id"),
            ("day", "date", "the UTC day reported (the partition)"),
            ("source", "text", "source kind or 'all'"),
            ("items", "integer", "feedback items written that day"),
            ("positive", "integer", "items labelled positive"),
            ("neutral", "integer", "items labelled neutral"),
            ("negative", "integer", "items labelled negative"),
            ("avg_sentiment", "double precision", "mean sentiment score, -1 .. 1"),
            ("top_topics", "jsonb", "the day's most frequent topics with their counts"),
            ("anomalies", "jsonb", "what departed from the rolling baseline, and how far"),
        ),
    },
)
def insight_reports(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, export_storage: ExportStorage
) -> dg.MaterializeResult:
    day = date.fromisoformat(context.partition_key)
    with warehouse.connection() as conn:
        begin_day_report(conn, day)
        reports = build_reports(conn, day)
        rows = store_reports(conn, day, reports)
    sections, files, anomalies = [], {}, 0
    # the UI shows workspaces with anomalies first, then the busiest
    ordered = sorted(
        reports,
        key=lambda r: (
            -sum(len(row["anomalies"]) for row in r.rows.values()),
            -r.rows.get(ALL_SOURCES, {}).get("items", 0),
            r.name,
        ),
    )
    for n, report in enumerate(ordered):
        markdown_text = render_markdown(report)
        if n < UI_REPORTS:
            sections.append(markdown_text)
        html_text = render_html(markdown_text, f"Feedback insights {report.name} {day}")
        files[report.name] = export_storage.write_bytes(
            report_path(report.name, day), html_text.encode(), content_type="text/html"
        )
        anomalies += sum(len(row["anomalies"]) for row in report.rows.values())
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "workspaces": len(reports),
            "rows": rows,
            "anomalies": anomalies,
            "report": dg.MetadataValue.md(
                "\n\n".join(sections)
                + (
                    f"\n\n_{len(reports) - UI_REPORTS} more workspace(s): see html_files._"
                    if len(reports) > UI_REPORTS
                    else ""
                )
                or "No workspaces."
            ),
            "html_files": dg.MetadataValue.json(files),
        }
    )


insight_reports_job = dg.define_asset_job(
    "insight_reports_job",
    selection=[insight_reports],
    description="Daily feedback insight reports (one partition per day).",
)
