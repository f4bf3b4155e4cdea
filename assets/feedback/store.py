"""Feedback workspaces, sources and items in the warehouse.

Owns `control.workspaces`, `control.feedback_sources`, `control.insight_report_days` (which
reports are out of date) and writes to `raw.feedback_items`. Items
are upserted (COPY into a staging table, then one INSERT ... ON CONFLICT), so a re-fetched or
re-pushed item updates its row only when its content changed and never duplicates. A source's
cursor is written by the caller in the same transaction as the items it covers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from assets.feedback.rules import FeedbackItem, SourceRef

WORKSPACE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


class WorkspaceError(ValueError):
    """A workspace or source request cannot be done (the message says why)."""


@dataclass(frozen=True)
class Workspace:
    workspace_id: int
    name: str
    tenant_id: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_workspace(conn: psycopg.Connection, name: str, tenant_id: str | None) -> Workspace:
    if not WORKSPACE_NAME.fullmatch(name):
        raise WorkspaceError(
            f"workspace name {name!r} must be lowercase letters, digits, '-' or '_' "
            "(it appears in the webhook URL)"
        )
    tenant = tenant_id or name
    row = conn.execute(
        "insert into control.workspaces (name, tenant_id) values (%s, %s) "
        "on conflict (name) do nothing returning workspace_id",
        (name, tenant),
    ).fetchone()
    if row is None:
        raise WorkspaceError(f"workspace {name!r} already exists")
    return Workspace(row[0], name, tenant)


def get_workspace(conn: psycopg.Connection, name: str) -> Workspace:
    row = conn.execute(
        "select workspace_id, name, tenant_id from control.workspaces where name = %s", (name,)
    ).fetchone()
    if row is None:
        raise WorkspaceError(f"no workspace named {name!r} (see `supportflow workspaces list`)")
    return Workspace(*row)


def list_workspaces(conn: psycopg.Connection) -> list[tuple[Workspace, int]]:
    rows = conn.execute(
        """
        select w.workspace_id, w.name, w.tenant_id, count(s.source_id)
        from control.workspaces w
        left join control.feedback_sources s on s.workspace_id = w.workspace_id and s.active
        group by w.workspace_id order by w.name
        """
    ).fetchall()
    return [(Workspace(r[0], r[1], r[2]), r[3]) for r in rows]


def add_source(
    conn: psycopg.Connection,
    workspace: Workspace,
    name: str,
    kind: str,
    config: dict[str, Any],
) -> int:
    if not SOURCE_NAME.fullmatch(name):
        raise WorkspaceError(f"source name {name!r} must be lowercase letters, digits, '-_.'")
    row = conn.execute(
        "insert into control.feedback_sources (workspace_id, name, kind, config) "
        "values (%s, %s, %s, %s) on conflict (workspace_id, name) do nothing returning source_id",
        (workspace.workspace_id, name, kind, Jsonb(config)),
    ).fetchone()
    if row is None:
        raise WorkspaceError(f"workspace {workspace.name!r} already has a source named {name!r}")
    return row[0]


def issue_webhook_token(conn: psycopg.Connection, workspace_id: int) -> str:
    """A new bearer token for the workspace's webhook; only its hash is stored."""
    token = "sfw_" + secrets.token_urlsafe(32)
    conn.execute(
        "update control.workspaces set webhook_token_hash = %s where workspace_id = %s",
        (hash_token(token), workspace_id),
    )
    return token


def token_matches(presented: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented token against the stored hash."""
    if not stored_hash:
        # still spend the comparison so a missing token costs what a wrong one does
        hmac.compare_digest(hash_token(presented), "0" * 64)
        return False
    return hmac.compare_digest(hash_token(presented), stored_hash)


_SOURCE_COLUMNS = """
    s.source_id, s.workspace_id, w.name, w.tenant_id, s.name, s.kind, s.config, s.cursor
"""


def _source_ref(row: Sequence[Any]) -> SourceRef:
    return SourceRef(*row)


def list_sources(
    conn: psycopg.Connection,
    workspace: str | None = None,
    kinds: Sequence[str] | None = None,
    active_only: bool = True,
) -> list[SourceRef]:
    rows = conn.execute(
        f"""
        select {_SOURCE_COLUMNS}
        from control.feedback_sources s join control.workspaces w using (workspace_id)
        where (%(workspace)s::text is null or w.name = %(workspace)s)
          and (%(kinds)s::text[] is null or s.kind = any(%(kinds)s))
          and (s.active or not %(active_only)s)
        order by w.name, s.name
        """,  # noqa: S608 -- fixed column list, values bound
        {
            "workspace": workspace,
            "kinds": list(kinds) if kinds else None,
            "active_only": active_only,
        },
    ).fetchall()
    return [_source_ref(r) for r in rows]


def webhook_source(conn: psycopg.Connection, workspace: str) -> tuple[SourceRef, str | None]:
    """The workspace's active webhook source and its token hash (WorkspaceError when none)."""
    row = conn.execute(
        f"""
        select {_SOURCE_COLUMNS}, w.webhook_token_hash
        from control.feedback_sources s join control.workspaces w using (workspace_id)
        where w.name = %s and s.kind = 'webhook' and s.active
        order by s.source_id limit 1
        """,  # noqa: S608 -- fixed column list, values bound
        (workspace,),
    ).fetchone()
    if row is None:
        raise WorkspaceError(f"workspace {workspace!r} has no webhook source")
    return _source_ref(row[:-1]), row[-1]


def lock_source(conn: psycopg.Connection, source_id: int) -> bool:
    """Session lock so two runs never pull the same source at once (False: someone else is)."""
    row = conn.execute("select pg_try_advisory_lock(400, %s)", (source_id,)).fetchone()
    return bool(row[0])


def unlock_source(conn: psycopg.Connection, source_id: int) -> None:
    conn.execute("select pg_advisory_unlock(400, %s)", (source_id,))


def save_cursor(conn: psycopg.Connection, source_id: int, cursor: dict[str, Any]) -> None:
    conn.execute(
        "update control.feedback_sources set cursor = %s, last_pulled_at = now() "
        "where source_id = %s",
        (Jsonb(cursor), source_id),
    )


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def add(self, other: UpsertCounts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged


def upsert_items(conn: psycopg.Connection, items: Sequence[FeedbackItem]) -> UpsertCounts:
    """Insert new items; update changed ones (their enrichment reruns); leave the rest alone."""
    if not items:
        return UpsertCounts()
    # one row per item id: the last occurrence wins (a page may repeat a post)
    unique = list({item.item_id: item for item in items}.values())
    conn.execute(
        """
        create temp table if not exists feedback_items_stage
            (like raw.feedback_items including defaults)
        """
    )
    conn.execute("truncate feedback_items_stage")
    with conn.cursor().copy(
        """
        copy feedback_items_stage (item_id, workspace_id, tenant_id, source, source_id,
            external_id, author, text, created_at, rating, content_hash, raw_data)
        from stdin
        """
    ) as copy:
        for item in unique:
            copy.write_row(
                (
                    item.item_id,
                    item.workspace_id,
                    item.tenant_id,
                    item.source,
                    item.source_id,
                    item.external_id,
                    item.author,
                    item.text,
                    item.created_at,
                    item.rating,
                    item.content_hash,
                    Jsonb(dict(item.raw_data)),
                )
            )
    rows = conn.execute(
        """
        insert into raw.feedback_items as f (item_id, workspace_id, tenant_id, source, source_id,
            external_id, author, text, created_at, rating, content_hash, raw_data)
        select item_id, workspace_id, tenant_id, source, source_id, external_id, author, text,
               created_at, rating, content_hash, raw_data
        from feedback_items_stage
        on conflict (item_id) do update set
            author = excluded.author, text = excluded.text, created_at = excluded.created_at,
            rating = excluded.rating, content_hash = excluded.content_hash,
            raw_data = excluded.raw_data, updated_at = now()
        where f.content_hash is distinct from excluded.content_hash
           or f.author is distinct from excluded.author
           or f.created_at is distinct from excluded.created_at
        returning (xmax = 0)
        """
    ).fetchall()
    conn.execute("truncate feedback_items_stage")
    inserted = sum(1 for (fresh,) in rows if fresh)
    updated = len(rows) - inserted
    return UpsertCounts(inserted, updated, len(unique) - len(rows))


def held_external_ids(
    conn: psycopg.Connection, source_id: int, external_ids: Sequence[str]
) -> set[str]:
    """Which of these external ids the source already holds items for (a source re-reading
    what may have changed updates those and must not add the rest)."""
    rows = conn.execute(
        "select external_id from raw.feedback_items where source_id = %s and external_id = any(%s)",
        (source_id, list(external_ids)),
    ).fetchall()
    return {row[0] for row in rows}


# --- which insight reports are out of date ------------------------------------------------------


def mark_feedback_days_changed(conn: psycopg.Connection, days: Iterable[date]) -> None:
    """Record that enriched items created on these UTC days changed (in the caller's
    transaction); the reports that read those days are then written again
    (`changed_report_days`).

    The row lock orders this against a report being written: a report that stamped its day first
    holds the row until it commits, so the change is stamped after it and the day is reported
    again; a change that committed first is in what the report reads.
    """
    ordered = sorted(set(days))
    if ordered:
        conn.execute(
            """
            insert into control.insight_report_days (day, changed_at)
            select d, clock_timestamp() from unnest(%s::date[]) as d
            on conflict (day) do update set changed_at = excluded.changed_at
            """,
            (ordered,),
        )


def begin_day_report(conn: psycopg.Connection, day: date) -> None:
    """Stamp the start of `day`'s report, before it reads anything, in the same transaction."""
    conn.execute(
        "insert into control.insight_report_days (day, reported_at) values (%s, now()) "
        "on conflict (day) do update set reported_at = now()",
        (day,),
    )


def changed_report_days(
    conn: psycopg.Connection, days_read_before: int, limit: int = 60
) -> list[tuple[date, datetime]]:
    """Days whose report was written before a day it reads (itself and `days_read_before` days
    before it) changed, oldest first, with the time of the latest such change (what makes a
    request to report the day again unique)."""
    return conn.execute(
        """
        select r.day, max(c.changed_at)
        from control.insight_report_days r
        join control.insight_report_days c
          on c.day between r.day - %(before)s and r.day and c.changed_at > r.reported_at
        where r.reported_at is not null
        group by r.day
        order by r.day
        limit %(limit)s
        """,
        {"before": days_read_before, "limit": limit},
    ).fetchall()


def latest_reports(conn: psycopg.Connection, workspace_id: int, days: int) -> list[tuple]:
    """The workspace's insight reports of its last `days` days that have reports, newest first
    (per day: `all` first, then each source)."""
    return conn.execute(
        """
        select day, source, items, positive, neutral, negative, avg_sentiment, top_topics,
               anomalies
        from analytics.insight_reports
        where workspace_id = %s
          and day > (select max(day) from analytics.insight_reports where workspace_id = %s) - %s
        order by day desc, source <> 'all', source
        """,
        (workspace_id, workspace_id, days),
    ).fetchall()


@dataclass(frozen=True)
class SourceError:
    """A source's last failed pull, until a pull succeeds again."""

    error: str
    at: Any  # datetime
    failed_pulls: int  # in a row


def record_pull_failure(conn: psycopg.Connection, source_id: int, error: str) -> int:
    """Remember a failed pull on its source; returns the failed pulls in a row."""
    row = conn.execute(
        "update control.feedback_sources set last_error = %s, last_error_at = now(), "
        "failed_pulls = failed_pulls + 1 where source_id = %s returning failed_pulls",
        (error[:1000], source_id),
    ).fetchone()
    return int(row[0]) if row else 0


def clear_pull_failure(conn: psycopg.Connection, source_id: int) -> None:
    """A pull succeeded: the source's last error is gone."""
    conn.execute(
        "update control.feedback_sources set last_error = null, last_error_at = null, "
        "failed_pulls = 0 where source_id = %s and failed_pulls > 0",
        (source_id,),
    )


def source_errors(conn: psycopg.Connection, workspace: str | None = None) -> dict[int, SourceError]:
    """The sources (of one workspace, or all) whose last pull failed, by source id."""
    rows = conn.execute(
        """
        select s.source_id, s.last_error, s.last_error_at, s.failed_pulls
        from control.feedback_sources s join control.workspaces w using (workspace_id)
        where s.last_error is not null and (%(workspace)s::text is null or w.name = %(workspace)s)
        """,
        {"workspace": workspace},
    ).fetchall()
    return {row[0]: SourceError(row[1], row[2], row[3]) for row in rows}


def update_source_config(conn: psycopg.Connection, source_id: int, changes: dict[str, Any]) -> None:
    """Merge `changes` into a source's stored config (e.g. a new encrypted API key)."""
    conn.execute(
        "update control.feedback_sources set config = config || %s where source_id = %s",
        (Jsonb(changes), source_id),
    )


# --- the life of workspaces and sources ---------------------------------------------------------


def _find_source(conn: psycopg.Connection, workspace: str, name: str) -> SourceRef:
    found = [s for s in list_sources(conn, workspace, active_only=False) if s.name == name]
    if not found:
        raise WorkspaceError(f"workspace {workspace!r} has no source named {name!r}")
    return found[0]


def set_source_active(conn: psycopg.Connection, workspace: str, name: str, active: bool) -> None:
    """Pause (its items stay) or resume a source's pulls and pushes."""
    source = _find_source(conn, workspace, name)
    conn.execute(
        "update control.feedback_sources set active = %s where source_id = %s",
        (active, source.source_id),
    )


def rename_source(conn: psycopg.Connection, workspace: str, name: str, new_name: str) -> None:
    source = _find_source(conn, workspace, name)
    try:
        conn.execute(
            "update control.feedback_sources set name = %s where source_id = %s",
            (new_name, source.source_id),
        )
    except psycopg.errors.UniqueViolation:
        raise WorkspaceError(f"workspace {workspace!r} already has a source {new_name!r}") from None


def _tables_with(conn: psycopg.Connection, column: str) -> list[tuple[str, str]]:
    """(schema, table) of every base table of ours with `column`."""
    return conn.execute(
        """
        select c.table_schema, c.table_name from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where c.column_name = %s and t.table_type = 'BASE TABLE'
          and c.table_schema in ('raw', 'control', 'analytics')
        order by 1, 2
        """,
        (column,),
    ).fetchall()


def _delete_where(
    conn: psycopg.Connection, tables: Sequence[tuple[str, str]], column: str, ids: Sequence[int]
) -> dict[str, int]:
    deleted = {}
    for schema, table in tables:
        deleted[f"{schema}.{table}"] = conn.execute(
            sql.SQL("delete from {} where {} = any(%s)").format(
                sql.Identifier(schema, table), sql.Identifier(column)
            ),
            (list(ids),),
        ).rowcount
    return deleted


def remove_source(
    conn: psycopg.Connection, workspace: str, name: str, *, purge: bool = False
) -> dict[str, int]:
    """Remove a source. Without `purge` only one that brought no items (disable keeps them);
    with `purge` its rows in every table go too, in the caller's transaction."""
    source = _find_source(conn, workspace, name)
    children = [t for t in _tables_with(conn, "source_id") if t != ("control", "feedback_sources")]
    if not purge:
        (items,) = conn.execute(
            "select count(*) from raw.feedback_items where source_id = %s", (source.source_id,)
        ).fetchone()
        if items:
            raise WorkspaceError(
                f"source {workspace}/{name} holds {items} items; `sources disable` keeps them, "
                "`sources remove --purge` deletes them"
            )
    deleted = _delete_where(conn, children, "source_id", [source.source_id])
    deleted |= _delete_where(
        conn, [("control", "feedback_sources")], "source_id", [source.source_id]
    )
    return deleted


def remove_workspace(conn: psycopg.Connection, name: str, *, purge: bool = False) -> dict[str, int]:
    """Remove a workspace. Without `purge` only an empty one (no sources, no items); with
    `purge` its sources, items, reports and models go too, in the caller's transaction."""
    workspace = get_workspace(conn, name)
    sources = [
        row[0]
        for row in conn.execute(
            "select source_id from control.feedback_sources where workspace_id = %s",
            (workspace.workspace_id,),
        )
    ]
    if sources and not purge:
        raise WorkspaceError(
            f"workspace {name!r} still has {len(sources)} source(s); remove them, or "
            f"`workspaces remove {name} --purge` deletes everything of it"
        )
    by_source = [t for t in _tables_with(conn, "source_id") if t != ("control", "feedback_sources")]
    by_workspace = [
        t
        for t in _tables_with(conn, "workspace_id")
        if t not in (("control", "workspaces"), ("control", "feedback_sources"))
    ]
    deleted = _delete_where(conn, by_source, "source_id", sources)
    for table, count in _delete_where(
        conn, by_workspace, "workspace_id", [workspace.workspace_id]
    ).items():
        deleted[table] = deleted.get(table, 0) + count
    deleted |= _delete_where(conn, [("control", "feedback_sources")], "source_id", sources)
    deleted |= _delete_where(
        conn, [("control", "workspaces")], "workspace_id", [workspace.workspace_id]
    )
    return deleted
