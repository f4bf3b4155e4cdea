"""Feedback workspaces, sources and items in the warehouse.

Owns `control.workspaces`, `control.feedback_sources` and writes to `raw.feedback_items`. Items
are upserted (COPY into a staging table, then one INSERT ... ON CONFLICT), so a re-fetched or
re-pushed item updates its row only when its content changed and never duplicates. A source's
cursor is written by the caller in the same transaction as the items it covers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
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
