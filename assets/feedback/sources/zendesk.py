"""Helpdesk feedback: end-user public comments and satisfaction comments of chosen Zendesk desks.

Reads what the tickets domain already keeps in `raw.zendesk_tickets` and
`raw.zendesk_ticket_comments`; a comment counts as feedback when it is public and written by the
ticket's requester. A ticket's satisfaction rating (`good`/`bad`) with a comment becomes an item
too, with the rating.

The cursor is `{"desks": {"<desk_id>": change_seq}}`: per desk, the `raw.zendesk_change_seq`
number the last pull read up to (see `assets/tickets/store.py`). A pull reads only the comments
and tickets changed since, up to a number below which every writer has committed, plus the
comments of changed tickets (a comment loaded before its ticket, a requester who changed). So a
pull costs what changed, not what exists, and a desk added to the source later starts from 0.
The cursor commits with the last batch of items; a killed pull reads the same range again and
the items' upsert keeps that from writing anything twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC
from typing import Any

import psycopg

from assets.feedback.rules import (
    FeedbackItem,
    PulledBatch,
    SourceConfigError,
    SourceRef,
    clean_html,
    content_hash,
)
from assets.feedback.sources.base import ConfigContext, PullContext, SourceKind, SourceOption
from assets.tickets.store import committed_changes_bound

BATCH_ROWS = 5000

DESK_IDS_SQL = """
select desk_id from control.desks
where name = any(%(desks)s) or desk_id::text = any(%(desks)s)
order by desk_id
"""

# Comments changed in (after, upto], and every comment of a ticket changed in that range; with
# the fields that decide whether one is feedback (public, written by the ticket's requester).
CHANGED_COMMENTS_SQL = """
with changed_tickets as (
    select ticket_id from raw.zendesk_tickets
    where desk_id = %(desk_id)s and change_seq > %(after)s and change_seq <= %(upto)s
),
candidates as (
    select comment_id from raw.zendesk_ticket_comments
    where desk_id = %(desk_id)s and change_seq > %(after)s and change_seq <= %(upto)s
    union
    select c.comment_id from raw.zendesk_ticket_comments c
    join changed_tickets k on c.desk_id = %(desk_id)s and c.ticket_id = k.ticket_id
)
select c.comment_id::text, c.ticket_id, c.body,
       coalesce(c.created_at, t.created_at, c.synced_at),
       t.subject, t.req_name, t.requester_id,
       coalesce(c.public and c.author_id = t.requester_id and not t.is_deleted, false)
from candidates k
join raw.zendesk_ticket_comments c on c.desk_id = %(desk_id)s and c.comment_id = k.comment_id
left join raw.zendesk_tickets t on t.desk_id = c.desk_id and t.ticket_id = c.ticket_id
order by c.created_at, c.comment_id
"""

# Tickets changed in (after, upto] that carry a rated satisfaction comment, and the item the
# last pull made of it (its content hash), so an unchanged rating is not written again.
CHANGED_RATINGS_SQL = """
select t.ticket_id, t.raw_data->'satisfaction_rating'->>'score',
       t.raw_data->'satisfaction_rating'->>'comment',
       coalesce(t.updated_at, t.created_at, t.synced_at), t.subject, t.req_name,
       t.requester_id, f.content_hash
from raw.zendesk_tickets t
left join raw.feedback_items f
    on f.source_id = %(source_id)s
   and f.external_id = 'satisfaction:' || t.desk_id::text || ':' || t.ticket_id::text
where t.desk_id = %(desk_id)s and t.change_seq > %(after)s and t.change_seq <= %(upto)s
  and not t.is_deleted
  and t.raw_data->'satisfaction_rating'->>'score' in ('good', 'bad')
  and coalesce(t.raw_data->'satisfaction_rating'->>'comment', '') <> ''
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
            desk_ids = [
                row[0]
                for row in conn.execute(
                    DESK_IDS_SQL, {"desks": list(source.config.get("desks") or [])}
                )
            ]
        with context.connection() as conn:
            upto = committed_changes_bound(conn)
        read_upto = {str(d): int(v) for d, v in (source.cursor.get("desks") or {}).items()}
        if upto is None:
            if context.log is not None:
                context.log.warning(
                    f"{source.name}: the ticket tables stayed locked by writers; "
                    "nothing read this time, the next pull catches up"
                )
            yield PulledBatch([], dict(source.cursor), fetched=0)
            return
        items: list[FeedbackItem] = []
        fetched = 0
        with context.connection() as conn:
            for desk_id in desk_ids:
                params = {
                    "desk_id": desk_id,
                    "after": read_upto.get(str(desk_id), 0),
                    "upto": upto,
                    "source_id": source.source_id,
                }
                comments = conn.execute(CHANGED_COMMENTS_SQL, params).fetchall()
                ratings = conn.execute(CHANGED_RATINGS_SQL, params).fetchall()
                fetched += len(comments) + len(ratings)
                items += self._comment_items(source, desk_id, comments)
                items += self._rating_items(source, desk_id, ratings)
        cursor = {"desks": {**read_upto, **{str(d): upto for d in desk_ids}}}
        if not items:
            yield PulledBatch([], cursor, fetched=fetched)
            return
        # every batch but the last keeps the old cursor: the range is read again after a kill
        for start in range(0, len(items), BATCH_ROWS):
            last = start + BATCH_ROWS >= len(items)
            yield PulledBatch(
                items[start : start + BATCH_ROWS],
                cursor if last else dict(source.cursor),
                fetched=fetched if last else 0,
            )

    def _comment_items(
        self, source: SourceRef, desk_id: int, rows: list[tuple]
    ) -> Iterator[FeedbackItem]:
        for comment_id, ticket_id, body, created_at, subject, req_name, req_id, is_feedback in rows:
            text = clean_html(body or "") if is_feedback else ""
            if text:
                yield self._item(
                    source,
                    f"comment:{desk_id}:{comment_id}",
                    text,
                    created_at,
                    req_name,
                    None,
                    str(desk_id),
                    ticket_id,
                    subject,
                    req_id,
                )

    def _rating_items(
        self, source: SourceRef, desk_id: int, rows: list[tuple]
    ) -> Iterator[FeedbackItem]:
        for ticket_id, score, comment, updated_at, subject, req_name, req_id, stored in rows:
            text = clean_html(comment or "")
            if text and content_hash(text, score) != stored:
                yield self._item(
                    source,
                    f"satisfaction:{desk_id}:{ticket_id}",
                    text,
                    updated_at,
                    req_name,
                    score,
                    str(desk_id),
                    ticket_id,
                    subject,
                    req_id,
                )

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
