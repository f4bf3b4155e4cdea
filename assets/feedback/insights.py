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

The statistics are frame-shaped, so they are pandas: one read of every workspace's window, daily
counts by a groupby on (workspace, source, day) with 'all' as one more source, every series
reindexed on the window's full day range (a day without feedback is a 0, not a gap), trailing
baselines by shift + rolling down the days, topics by explode + groupby. The rule functions that
take `DayStats` (`negative_spike`, ...) run the same frame code on one series. A workspace with
no feedback in its chart window gets no chart (most workspaces on most days, and a chart is the
slowest part of a report).
"""

import base64
import io
import operator
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import reduce
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from assets.feedback.store import begin_day_report
from resources.columns import table_schema
from resources.frames import markdown_head, query_frame
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
PREVIEW_ROWS = 15  # rows of analytics.insight_reports in the materialization's preview table
ALL_SOURCES = "all"
LABELS = ("positive", "neutral", "negative")
SERIES = ["workspace_id", "source"]  # one daily series per workspace and source


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


def day_baselines(
    items: pd.DataFrame, negative: pd.DataFrame, day: Hashable, window: int = TRAILING_DAYS
) -> pd.DataFrame:
    """One row per series (a column of `items` and `negative`, whose rows are consecutive days,
    0 on a day without feedback): the series' counts on `day` and its baselines over the `window`
    days before it."""
    share = negative / items.where(items > 0)  # a day without items has no share (NaN)
    before = items.shift(1)
    # counts need the whole window (days before the read are unknown, not zeros); shares skip
    # the NaN of days without items, so their mean is over the days that had feedback
    counts = before.rolling(window, min_periods=window)
    shares = share.shift(1).rolling(window, min_periods=1)
    return pd.DataFrame(
        {
            "items": items.loc[day],
            "negative_share": share.loc[day].fillna(0.0),
            "days_with_items": before.clip(upper=1)
            .rolling(window, min_periods=window)
            .sum()
            .loc[day],
            "share_mean": shares.mean().loc[day],
            "share_sd": shares.std(ddof=0).loc[day],
            "volume_mean": counts.mean().loc[day],
            "volume_sd": counts.std(ddof=0).loc[day],
        }
    )


def negative_spikes(base: pd.DataFrame) -> dict[Hashable, dict[str, Any]]:
    """The series of `day_baselines` whose negative share spiked, with the anomaly of each."""
    excess = np.maximum(NEGATIVE_SDS * base["share_sd"], NEGATIVE_MIN_POINTS)
    flagged = (
        (base["items"] >= NEGATIVE_MIN_ITEMS)
        & (base["days_with_items"] >= MIN_TRAILING_DAYS)
        & (base["negative_share"] - base["share_mean"] > excess)
    )
    found = {}
    for key, share, mean, limit in zip(
        base.index[flagged],
        base["negative_share"][flagged],
        base["share_mean"][flagged],
        excess[flagged],
        strict=True,
    ):
        share, mean = float(share), float(mean)  # Python's round, not numpy's
        found[key] = {
            "kind": "negative_spike",
            "value": round(share, 4),
            "baseline": round(mean, 4),
            "threshold": round(mean + float(limit), 4),
            "detail": f"negative share {share:.0%} vs trailing mean {mean:.0%}",
        }
    return found


def volume_anomalies(base: pd.DataFrame) -> dict[Hashable, dict[str, Any]]:
    """The series of `day_baselines` whose item count departed from the trailing mean."""
    mean = base["volume_mean"]
    allowed = VOLUME_SDS * np.maximum(np.maximum(base["volume_sd"], np.sqrt(mean)), 1.0)
    flagged = (base["days_with_items"] >= MIN_TRAILING_DAYS) & (
        (base["items"] - mean).abs() > allowed
    )
    found = {}
    for key, items, mean_, allowed_ in zip(
        base.index[flagged], base["items"][flagged], mean[flagged], allowed[flagged], strict=True
    ):
        items, mean_, allowed_ = int(items), float(mean_), float(allowed_)
        spike = items > mean_
        found[key] = {
            "kind": f"volume_{'spike' if spike else 'drop'}",
            "value": items,
            "baseline": round(mean_, 2),
            "threshold": round(mean_ + allowed_ if spike else mean_ - allowed_, 2),
            "detail": f"{items} items vs trailing mean {mean_:.1f}",
        }
    return found


def topic_findings(topics: pd.DataFrame) -> pd.DataFrame:
    """New and growing topics. `topics` has one row per topic of a day and series: `topic`,
    `count` (its items that day), `trailing` (its items over the trailing days) and
    `days_with_items` (the series' trailing days that had feedback: only those count, a
    workspace's first days or a quiet weekend are no evidence that a topic is new or has grown).
    Returns the rows found, most items first then by name, with `kind` and `baseline`."""
    average = topics["trailing"] / topics["days_with_items"]
    history = topics["days_with_items"] >= MIN_TRAILING_DAYS
    new = history & (topics["count"] >= NEW_TOPIC_MIN_ITEMS) & (topics["trailing"] == 0)
    growing = (
        history
        & ~new
        & (topics["count"] >= GROWING_TOPIC_MIN_ITEMS)
        & (average > 0)
        & (topics["count"] >= GROWTH_FACTOR * average)
    )
    found = topics.assign(
        kind=np.where(new, "new_topic", "growing_topic"), baseline=average.where(growing, 0.0)
    )[new | growing]
    return found.sort_values(["count", "topic"], ascending=[False, True], kind="stable")


def topic_anomaly(kind: str, topic: str, count: int, average: float) -> dict[str, Any]:
    if kind == "new_topic":
        return {
            "kind": kind,
            "topic": topic,
            "value": count,
            "baseline": 0,
            "detail": f"new topic {topic!r}: {count} items, none in the last {TRAILING_DAYS} days",
        }
    return {
        "kind": kind,
        "topic": topic,
        "value": count,
        "baseline": round(average, 2),
        "detail": f"topic {topic!r} grew to {count} items from {average:.1f} a day",
    }


def _topic_anomaly_lists(found: pd.DataFrame, keys: list[str]) -> dict[Hashable, list]:
    """The anomalies of `topic_findings` per series key (a tuple of the `keys` columns, or the
    one column's value), in the order found."""
    lists: dict[Hashable, list] = {}
    columns = [*keys, "kind", "topic", "count", "baseline"]
    for *key, kind, topic, count, baseline in found[columns].itertuples(index=False, name=None):
        lists.setdefault(key[0] if len(key) == 1 else tuple(key), []).append(
            topic_anomaly(kind, topic, int(count), float(baseline))
        )
    return lists


# The rule for one series, as plain functions of `DayStats` (what the rule's tests and the README
# speak in); they run the frame code above on a one-column frame.


def _one_series(today: DayStats, trailing: Sequence[DayStats]) -> pd.DataFrame:
    days = [*trailing, today]
    items = pd.DataFrame({0: [d.items for d in days]})
    negative = pd.DataFrame({0: [d.negative for d in days]})
    return day_baselines(items, negative, len(trailing), window=len(trailing))


def negative_spike(today: DayStats, trailing: Sequence[DayStats]) -> dict[str, Any] | None:
    if len(trailing) < MIN_TRAILING_DAYS:
        return None
    return negative_spikes(_one_series(today, trailing)).get(0)


def volume_anomaly(today: DayStats, trailing: Sequence[DayStats]) -> dict[str, Any] | None:
    if len(trailing) < MIN_TRAILING_DAYS:
        return None
    return volume_anomalies(_one_series(today, trailing)).get(0)


def topic_anomalies(
    today: Counter[str], trailing: Sequence[Counter[str]], trailing_items: Sequence[int]
) -> list[dict[str, Any]]:
    """New and growing topics of one series (see `topic_findings`)."""
    active = [day for day, items in zip(trailing, trailing_items, strict=True) if items]
    history = pd.DataFrame(list(active), columns=list(today)).sum()
    topics = pd.DataFrame(
        {
            "series": 0,
            "topic": list(today),
            "count": list(today.values()),
            "trailing": history.reindex(list(today), fill_value=0).to_numpy(),
            "days_with_items": len(active),
        }
    )
    return _topic_anomaly_lists(topic_findings(topics), ["series"]).get(0, [])


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


def read_window(
    conn: psycopg.Connection, workspace_ids: Sequence[int], start: date, day: date
) -> pd.DataFrame:
    """The feedback items of these workspaces from `start` to `day` (UTC days), oldest first.
    Only the day's own items carry their text (the examples); psycopg 3 without SQLAlchemy is
    no `pd.read_sql` connection, so the frame is built from the cursor (`query_frame`)."""
    frame = query_frame(
        conn,
        """
        select workspace_id, (created_at at time zone 'UTC')::date as day, source, item_id,
               case when created_at >= (%(day)s::date)::timestamp at time zone 'UTC'
                    then left(text, 200) end as text,
               sentiment_label, sentiment_score, topics
        from raw.feedback_items
        where workspace_id = any(%(ids)s)
          and created_at >= (%(start)s::date)::timestamp at time zone 'UTC'
          and created_at < (%(day)s::date + 1)::timestamp at time zone 'UTC'
        order by workspace_id, created_at, item_id
        """,
        {"ids": list(workspace_ids), "start": start, "day": day},
    )
    return frame.assign(
        day=pd.to_datetime(frame["day"]),
        sentiment_score=frame["sentiment_score"].astype("float64"),
    )


def _sum_in_order(scores: pd.Series) -> float:
    """Scores added one by one in item order, as the reports have always summed them: pandas'
    compensated sum differs in the last bit, and a mean like 0.34145 then rounds the other way."""
    return reduce(operator.add, scores.dropna().tolist(), 0.0)


def daily_stats(items: pd.DataFrame, days: pd.DatetimeIndex) -> pd.DataFrame:
    """Counts per (workspace, source, day), 'all' being one more source; every series that has
    an item in the window gets every day of `days`, with zeros on the days without feedback."""
    both = pd.concat([items, items.assign(source=ALL_SOURCES)], ignore_index=True)
    labelled = both.assign(**{label: both["sentiment_label"].eq(label) for label in LABELS})
    daily = labelled.groupby([*SERIES, "day"]).agg(
        items=("item_id", "size"),
        positive=("positive", "sum"),
        neutral=("neutral", "sum"),
        negative=("negative", "sum"),
        score_sum=("sentiment_score", _sum_in_order),
        scored=("sentiment_score", "count"),
    )
    series = daily.index.droplevel("day").unique().to_frame(index=False)
    full = pd.MultiIndex.from_frame(series.merge(pd.DataFrame({"day": days}), how="cross"))
    return daily.reindex(full, fill_value=0)


def topic_counts(items: pd.DataFrame) -> pd.DataFrame:
    """One row per (workspace, source, day, topic) with its items, 'all' included; an item
    counts for each of its topics, `rank` 0 being its main topic."""
    exploded = items[[*SERIES, "day", "item_id", "text", "sentiment_label", "topics"]].explode(
        "topics"
    )
    exploded = exploded.assign(rank=exploded.groupby(level=0).cumcount()).dropna(subset=["topics"])
    exploded = exploded.rename(columns={"topics": "topic"}).reset_index(drop=True)
    return pd.concat([exploded, exploded.assign(source=ALL_SOURCES)], ignore_index=True)


def _none_if_missing(value: Any) -> Any:
    return None if pd.isna(value) else value


def build_reports(
    conn: psycopg.Connection, day: date, workspace: str | None = None
) -> list[WorkspaceReport]:
    """The day's report of every workspace (or the one named), from one read of their windows:
    a workspace without feedback in its window costs no statistics at all."""
    workspaces = conn.execute(
        "select workspace_id, name, tenant_id from control.workspaces "
        "where %(name)s::text is null or name = %(name)s order by name",
        {"name": workspace},
    ).fetchall()
    start = day - timedelta(days=DAYS_READ_BEFORE)
    quiet = [(day - timedelta(days=n), DayStats()) for n in range(CHART_DAYS - 1, -1, -1)]
    reports = {
        wid: WorkspaceReport(wid, name, tenant, day, history=list(quiet))
        for wid, name, tenant in workspaces
    }
    items = read_window(conn, list(reports), start, day)
    if items.empty:
        return list(reports.values())
    today = pd.Timestamp(day)
    days = pd.date_range(start, day, freq="D", name="day")
    daily = daily_stats(items, days)

    # baselines of the day, per series (workspace, source)
    wide = daily[["items", "negative"]].unstack(SERIES)
    base = day_baselines(wide["items"], wide["negative"], today)
    base = base[base["items"] > 0]
    spikes, volumes = negative_spikes(base), volume_anomalies(base)

    topics = topic_counts(items)
    day_topics = _day_topics(topics, base["days_with_items"], today)
    topic_found = _topic_anomaly_lists(topic_findings(day_topics), SERIES)
    top_topics = _top_topics(topics, day_topics, today)

    on_day_stats = daily.xs(today, level="day")
    for (wid, source), stats in on_day_stats[on_day_stats["items"] > 0].sort_index().iterrows():
        key = (wid, source)
        day_stats = _day_stats(stats)
        reports[wid].rows[source] = {
            "items": day_stats.items,
            "positive": day_stats.positive,
            "neutral": day_stats.neutral,
            "negative": day_stats.negative,
            "avg_sentiment": day_stats.avg_sentiment,
            "top_topics": top_topics.get(key, []),
            "anomalies": [a for a in (spikes.get(key), volumes.get(key)) if a]
            + topic_found.get(key, []),
        }
    for report in reports.values():
        report.rows = dict(sorted(report.rows.items()))

    overall = daily.xs(ALL_SOURCES, level="source")
    for wid in overall.index.get_level_values("workspace_id").unique():
        series = overall.loc[wid].reindex(days[-CHART_DAYS:])
        reports[wid].history = [
            (stamp.date(), _day_stats(stats)) for stamp, stats in series.iterrows()
        ]
    return list(reports.values())


def _day_topics(
    topics: pd.DataFrame, days_with_items: pd.Series, today: pd.Timestamp
) -> pd.DataFrame:
    """The day's topics per series with their items that day (`count`) and over the trailing
    days (`trailing`), and the series' trailing days with feedback: `topic_findings`' input."""
    counts = topics.groupby([*SERIES, "day", "topic"]).size().rename("count")
    count_days = counts.index.get_level_values("day")
    on_day = counts[count_days == today].droplevel("day")
    trailing = (
        counts[(count_days >= today - pd.Timedelta(days=TRAILING_DAYS)) & (count_days < today)]
        .groupby(level=[*SERIES, "topic"])
        .sum()
    )
    day_topics = on_day.reset_index().assign(
        trailing=trailing.reindex(on_day.index, fill_value=0).to_numpy()
    )
    return day_topics.join(days_with_items, on=SERIES)


def _top_topics(
    topics: pd.DataFrame, day_topics: pd.DataFrame, today: pd.Timestamp
) -> dict[tuple, list[dict[str, Any]]]:
    """Per series the day's TOP_TOPICS topics, most items first then by name, each with an
    example: the day's first item whose main topic it is (None when it is nobody's main)."""
    main_topics = topics[(topics["day"] == today) & (topics["rank"] == 0)].drop_duplicates(
        [*SERIES, "topic"]
    )
    columns = [*SERIES, "topic", "item_id", "text", "sentiment_label"]
    examples = {
        (wid, source, topic): {
            "item_id": item_id,
            "text": text,
            "sentiment": _none_if_missing(label),
        }
        for wid, source, topic, item_id, text, label in main_topics[columns].itertuples(
            index=False, name=None
        )
    }
    top = (
        day_topics.sort_values(
            [*SERIES, "count", "topic"], ascending=[True, True, False, True], kind="stable"
        )
        .groupby(SERIES, sort=False)
        .head(TOP_TOPICS)
    )
    found: dict[tuple, list[dict[str, Any]]] = {}
    for wid, source, topic, count in top[[*SERIES, "topic", "count"]].itertuples(
        index=False, name=None
    ):
        found.setdefault((wid, source), []).append(
            {"topic": topic, "items": int(count), "example": examples.get((wid, source, topic))}
        )
    return found


def _day_stats(row: pd.Series) -> DayStats:
    return DayStats(
        items=int(row["items"]),
        positive=int(row["positive"]),
        neutral=int(row["neutral"]),
        negative=int(row["negative"]),
        score_sum=float(row["score_sum"]),
        scored=int(row["scored"]),
    )


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
    if any(stats.items for _, stats in report.history):
        png = sentiment_chart_png(
            report.history, f"{report.name}: sentiment, last {CHART_DAYS} days"
        )
        data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
        lines += ["", f"![sentiment over time]({data_uri})", ""]
    else:
        # most workspaces on most days: a chart of nothing is the slowest part of a report
        lines += ["", f"_No feedback in the last {CHART_DAYS} days: no chart._", ""]
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


def preview_table(reports: Sequence[WorkspaceReport], limit: int = PREVIEW_ROWS) -> str:
    """The day's rows of analytics.insight_reports as a Markdown table, a workspace's rows
    together ('all' first): workspaces with anomalies first, then the busiest."""
    frame = pd.DataFrame(
        [
            {
                "workspace": report.name,
                "source": source,
                "items": row["items"],
                "negative": row["negative"],
                "avg sentiment": ""
                if row["avg_sentiment"] is None
                else f"{row['avg_sentiment']:+.2f}",
                "anomalies": ", ".join(a["kind"] for a in row["anomalies"]),
                # topic labels are words of customer text
                "top topic": _md_escape(row["top_topics"][0]["topic"]) if row["top_topics"] else "",
                "_anomalies": len(row["anomalies"]),
                "_source": "" if source == ALL_SOURCES else source,  # 'all' first
            }
            for report in reports
            for source, row in report.rows.items()
        ]
    )
    if frame.empty:
        return "No feedback on this day."
    by_workspace = frame.groupby("workspace")
    frame = frame.assign(
        _anomalies=by_workspace["_anomalies"].transform("sum"),
        _items=by_workspace["items"].transform("max"),  # the 'all' row's
    ).sort_values(
        ["_anomalies", "_items", "workspace", "_source"],
        ascending=[False, False, True, True],
        kind="stable",
    )
    return markdown_head(
        frame.drop(columns=["_anomalies", "_items", "_source"]),
        limit,
        "row(s) in analytics.insight_reports",
        disable_numparse=True,
        colalign=["left", "left", *["right"] * 3, "left", "left"],
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
            "preview": dg.MetadataValue.md(preview_table(reports)),
        }
    )


insight_reports_job = dg.define_asset_job(
    "insight_reports_job",
    selection=[insight_reports],
    description="Daily feedback insight reports (one partition per day).",
)
