"""Helpdesk feedback: end-user public comments and satisfaction comments of chosen Zendesk desks.

Reads what the tickets domain already keeps in `raw.zendesk_tickets` and
`raw.zendesk_ticket_comments`; a comment counts as feedback when it is public and written by the
ticket's requester. A ticket's satisfaction rating (`good`/`bad`) with a comment becomes an item
too, with the rating. Items not yet in `raw.feedback_items` (or whose rating or text changed) are
selected with an anti-join on (source_id, external_id), so comments that arrive late are still
picked up and nothing is read twice into the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

from assets.feedback.rules import (
    FeedbackItem,
    PulledBatch,
    SourceConfigError,
    SourceRef,
    clean_html,
)
from assets.feedback.sources.base import ConfigContext, PullContext, SourceKind, SourceOption

BATCH_ROWS = 5000

# public end-user comments: author = the ticket's requester
COMMENTS_SQL = """
select c.desk_id::text, c.comment_id::text, c.ticket_id, c.body,
       coalesce(c.created_at, t.created_at, c.synced_at),
       t.subject, t.req_name, t.requester_id
from raw.zendesk_ticket_comments c
join raw.zendesk_tickets t on t.desk_id = c.desk_id and t.ticket_id = c.ticket_id
join control.desks d on d.desk_id = c.desk_id
where (d.name = any(%(desks)s) or d.desk_id::text = any(%(desks)s))
  and c.public and c.author_id = t.requester_id and not t.is_deleted
  and not exists (
      select 1 from raw.feedback_items f
      where f.source_id = %(source_id)s
        and f.external_id = 'comment:' || c.desk_id::text || ':' || c.comment_id::text)
order by c.created_at, c.comment_id
"""

SATISFACTION_SQL = """
select t.desk_id::text, t.ticket_id, t.raw_data->'satisfaction_rating'->>'score',
       t.raw_data->'satisfaction_rating'->>'comment',
       coalesce(t.updated_at, t.created_at, t.synced_at), t.subject, t.req_name,
       t.requester_id
from raw.zendesk_tickets t
join control.desks d on d.desk_id = t.desk_id
where (d.name = any(%(desks)s) or d.desk_id::text = any(%(desks)s)) and not t.is_deleted
  and t.raw_data->'satisfaction_rating'->>'score' in ('good', 'bad')
  and coalesce(t.raw_data->'satisfaction_rating'->>'comment', '') <> ''
  and not exists (
      select 1 from raw.feedback_items f
      where f.source_id = %(source_id)s
        and f.external_id = 'satisfaction:' || t.desk_id::text || ':' || t.ticket_id::text
        and f.rating = t.raw_data->'satisfaction_rating'->>'score')
order by t.ticket_id
"""


def tickets_tables_exist(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "select to_regclass('raw.zendesk_tickets') is not null "
        "and to_regclass('raw.zendesk_ticket_comments') is not null "
        "and to_regclass('control.desks') is not null"
    ).fetchone()
    return bool(row[0])


class ZendeskKind(SourceKind):
    name = "zendesk"
    description = "end-user comments and satisfaction comments of Zendesk desks (raw.zendesk_*)"
    options = (SourceOption("desk", "desk name or id (repeat for several)", multiple=True),)

    def build_config(
        self, options: Mapping[str, Any], context: ConfigContext | None = None
    ) -> dict[str, Any]:
        desks = [str(d).strip() for d in options.get("desk") or () if str(d).strip()]
        if not desks:
            raise SourceConfigError("--desk is required for kind zendesk (repeat for several)")
        return {"desks": sorted(set(desks))}

    def check(self, conn: psycopg.Connection, config: Mapping[str, Any]) -> None:
        if not tickets_tables_exist(conn):
            raise SourceConfigError("no Zendesk desks are set up here (control.desks is missing)")
        known = {
            value
            for row in conn.execute("select desk_id::text, name from control.desks").fetchall()
            for value in row
        }
        missing = [d for d in config["desks"] if d not in known]
        if missing:
            raise SourceConfigError(f"unknown desk(s): {', '.join(missing)}")

    def pull(self, source: SourceRef, context: PullContext) -> Iterator[PulledBatch]:
        with context.connection() as conn:
            if not tickets_tables_exist(conn):
                return
            params = {
                "desks": list(source.config.get("desks") or []),
                "source_id": source.source_id,
            }
            comments = conn.execute(COMMENTS_SQL, params).fetchall()
            ratings = conn.execute(SATISFACTION_SQL, params).fetchall()
        items: list[FeedbackItem] = []
        for desk_id, comment_id, ticket_id, body, created_at, subject, req_name, req_id in comments:
            text = clean_html(body or "")
            if text:
                items.append(
                    self._item(
                        source,
                        f"comment:{desk_id}:{comment_id}",
                        text,
                        created_at,
                        req_name,
                        None,
                        desk_id,
                        ticket_id,
                        subject,
                        req_id,
                    )
                )
        for desk_id, ticket_id, score, comment, updated_at, subject, req_name, req_id in ratings:
            text = clean_html(comment or "")
            if text:
                items.append(
                    self._item(
                        source,
                        f"satisfaction:{desk_id}:{ticket_id}",
                        text,
                        updated_at,
                        req_name,
                        score,
                        desk_id,
                        ticket_id,
                        subject,
                        req_id,
                    )
                )
        now = datetime.now(UTC).isoformat()
        if not items:
            yield PulledBatch([], {"last_pull": now}, fetched=0)
        for start in range(0, len(items), BATCH_ROWS):
            chunk = items[start : start + BATCH_ROWS]
            yield PulledBatch(chunk, {"last_pull": now}, fetched=len(chunk))

    @staticmethod
    def _item(
        source,
        external_id,
        text,
        created_at,
        author,
        rating,
        desk_id,
        ticket_id,
        subject,
        requester_id,
    ) -> FeedbackItem:
        return FeedbackItem(
            workspace_id=source.workspace_id,
            tenant_id=source.tenant_id,
            source=source.kind,
            source_id=source.source_id,
            external_id=external_id,
            author=author,
            text=text,
            created_at=created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC),
            rating=rating,
            raw_data={
                "desk_id": desk_id,
                "ticket_id": ticket_id,
                "subject": subject,
                "requester_id": requester_id,
            },
        )


KIND = ZendeskKind()
