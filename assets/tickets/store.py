"""Loading Zendesk export pages into PostgreSQL, one page per transaction.

Each page's rows go through `COPY` into temporary staging tables, then one
`INSERT ... ON CONFLICT ... DO UPDATE ... WHERE` per table, and the desk's new cursor is written
in the same transaction, so a sync killed at any point resumes from the last committed page
with nothing lost and nothing twice. The cursor update is guarded by the cursor the sync started
from: if another sync moved it meanwhile, this page rolls back and the sync stops.

The next ticket page is fetched in a background thread while the current one is written.

A desk's first comment sync splits the work between Zendesk's two budgets (`plan_split`): the
comments of the oldest tickets come from the per-ticket endpoint on the account-wide budget,
several requests at a time, while the ticket events export (10 requests a minute) starts at the
split time and covers everything newer, including whatever the account gains meanwhile. Comments
are keyed by (desk, comment id), so one seen both ways is written once.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from assets.tickets.desks import Desk
from assets.tickets.rules import (
    COMMENT_COLUMNS,
    GROUP_COLUMNS,
    TICKET_COLUMNS,
    USER_COLUMNS,
    comment_rows,
    group_rows,
    next_events_start,
    page_users,
    ticket_rows,
    user_rows,
)
from resources.zendesk import StartTimeTooRecent, TicketPage, ZendeskApi, ZendeskError, budget_rate

T = TypeVar("T")
ConnectionFactory = Callable[[], Any]  # a context manager yielding a psycopg connection

STAGING_DDL = {
    "zendesk_tickets_stage": """
        ticket_id bigint, status text, subject text, priority text, ticket_type text,
        requester_id bigint, req_name text, req_email text, assignee_id bigint,
        assignee_name text, group_id bigint, group_name text, organization_id bigint,
        created_at timestamptz, updated_at timestamptz, generated_ts bigint,
        solved_at timestamptz, raw_data jsonb, metric_set jsonb""",
    "zendesk_users_stage": """
        user_id bigint, name text, email text, role text, external_id text,
        updated_at timestamptz, raw_data jsonb""",
    "zendesk_groups_stage": "group_id bigint, name text, updated_at timestamptz, raw_data jsonb",
    "zendesk_comments_stage": """
        comment_id bigint, ticket_id bigint, author_id bigint, public boolean, body text,
        created_at timestamptz, raw_data jsonb""",
}

# An older version of a ticket never overwrites a newer one: generated_timestamp first
# (system updates move only that), then updated_at.
UPSERT_TICKETS = """
insert into raw.zendesk_tickets as t (
    desk_id, tenant_id, ticket_id, status, subject, priority, ticket_type, requester_id,
    req_name, req_email, assignee_id, assignee_name, group_id, group_name, organization_id,
    created_at, updated_at, generated_at, solved_at, is_deleted, raw_data, metric_set)
select %(desk_id)s::bigint, %(tenant_id)s::text, ticket_id, status, subject, priority,
    ticket_type, requester_id, req_name, req_email, assignee_id, assignee_name, group_id,
    group_name, organization_id, created_at, updated_at, to_timestamp(generated_ts), solved_at,
    coalesce(status = 'deleted', false), raw_data, metric_set
from zendesk_tickets_stage
on conflict (desk_id, ticket_id) do update set
    status = excluded.status, subject = excluded.subject, priority = excluded.priority,
    ticket_type = excluded.ticket_type, requester_id = excluded.requester_id,
    req_name = excluded.req_name, req_email = excluded.req_email,
    assignee_id = excluded.assignee_id, assignee_name = excluded.assignee_name,
    group_id = excluded.group_id, group_name = excluded.group_name,
    organization_id = excluded.organization_id, created_at = excluded.created_at,
    updated_at = excluded.updated_at, generated_at = excluded.generated_at,
    solved_at = excluded.solved_at, is_deleted = excluded.is_deleted,
    raw_data = excluded.raw_data,
    metric_set = coalesce(excluded.metric_set, t.metric_set), synced_at = now(),
    change_seq = excluded.change_seq
where (t.generated_at, coalesce(t.updated_at, '-infinity'))
   <= (excluded.generated_at, coalesce(excluded.updated_at, '-infinity'))
returning (xmax = 0) as inserted, is_deleted
"""

UPSERT_USERS = """
insert into raw.zendesk_users as u (
    desk_id, tenant_id, user_id, name, email, role, external_id, updated_at, raw_data)
select %(desk_id)s::bigint, %(tenant_id)s::text, user_id, name, email, role, external_id,
    updated_at, raw_data
from zendesk_users_stage
on conflict (desk_id, user_id) do update set
    name = excluded.name, email = excluded.email, role = excluded.role,
    external_id = excluded.external_id, updated_at = excluded.updated_at,
    raw_data = excluded.raw_data, synced_at = now()
where coalesce(u.updated_at, '-infinity') <= coalesce(excluded.updated_at, '-infinity')
"""

UPSERT_GROUPS = """
insert into raw.zendesk_groups as g (desk_id, tenant_id, group_id, name, updated_at, raw_data)
select %(desk_id)s::bigint, %(tenant_id)s::text, group_id, name, updated_at, raw_data
from zendesk_groups_stage
on conflict (desk_id, group_id) do update set
    name = excluded.name, updated_at = excluded.updated_at, raw_data = excluded.raw_data,
    synced_at = now()
where coalesce(g.updated_at, '-infinity') <= coalesce(excluded.updated_at, '-infinity')
"""

# Comments do not change once written; overlapping pages hit the key and are skipped. A first
# sync writes comments from two threads whose pages can share comments: both insert in key
# order, so neither can wait for a key the other holds while holding one it waits for (deadlock).
INSERT_COMMENTS = """
insert into raw.zendesk_ticket_comments (
    desk_id, tenant_id, comment_id, ticket_id, author_id, public, body, created_at, raw_data)
select %(desk_id)s::bigint, %(tenant_id)s::text, comment_id, ticket_id, author_id, public,
    body, created_at, raw_data
from zendesk_comments_stage
order by comment_id
on conflict (desk_id, comment_id) do nothing
"""


def committed_changes_bound(conn: psycopg.Connection, wait_seconds: float = 5.0) -> int | None:
    """The `raw.zendesk_change_seq` number at or below which every change to the tickets and
    comments tables is committed (None when writers held the tables longer than `wait_seconds`).

    A SHARE lock waits for the transactions writing either table to end and keeps new ones out
    for an instant, so a number a late-committing page took can never be skipped by a reader
    that keeps a cursor on `change_seq`. Call it on a connection of its own: the lock is held
    until that connection's transaction ends.
    """
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("set local lock_timeout = {}").format(
                    sql.Literal(f"{int(wait_seconds * 1000)}ms")
                )
            )
            conn.execute(
                "lock table raw.zendesk_tickets, raw.zendesk_ticket_comments in share mode"
            )
            last_value, is_called = conn.execute(
                "select last_value, is_called from raw.zendesk_change_seq"
            ).fetchone()
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
        return None
    return int(last_value) if is_called else 0


class CursorMoved(RuntimeError):
    """Another sync of the same desk committed a page meanwhile; this one stops."""


def begin_page(conn: psycopg.Connection) -> None:
    """Per page transaction: staging tables ready, and no wait for the WAL flush at commit.

    Without a synchronous commit a crash of the database server can forget the last pages'
    commits, but only whole transactions: rows and cursor together, so the next sync fetches
    those pages again. Nothing is half-applied and nothing is lost.
    """
    conn.execute("set local synchronous_commit = off")
    ensure_staging(conn)


_staged: weakref.WeakKeyDictionary[psycopg.Connection, bool] = weakref.WeakKeyDictionary()


def ensure_staging(conn: psycopg.Connection) -> None:
    """Temporary staging tables (per connection), emptied at every commit.

    On an idle connection they are created in a transaction of their own and remembered, so
    a sync pays for this once; inside a transaction they are created there (and vanish with
    it if it rolls back, which is why that case is not remembered).
    """
    if _staged.get(conn):
        return
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        for name, columns in STAGING_DDL.items():
            conn.execute(
                sql.SQL("create temp table if not exists {} ({}) on commit delete rows").format(
                    sql.Identifier(name), sql.SQL(columns)
                )
            )
    if idle:
        _staged[conn] = True


def copy_rows(
    conn: psycopg.Connection, table: str, columns: Iterable[str], rows: list[tuple]
) -> None:
    """COPY rows into `table` (text format; psycopg escapes each value in C)."""
    statement = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def move_cursor(conn: psycopg.Connection, desk_id: int, column: str, old: Any, new: Any) -> None:
    updated = conn.execute(
        sql.SQL(
            "update control.desks set {col} = %s, updated_at = now() "
            "where desk_id = %s and {col} is not distinct from %s"
        ).format(col=sql.Identifier(column)),
        (new, desk_id, old),
    ).rowcount
    if updated != 1:
        raise CursorMoved(
            f"desk {desk_id}: {column} changed under this sync (another sync of the desk is "
            "running); stopping without writing this page"
        )


@dataclass
class TicketSyncStats:
    pages: int = 0
    tickets_seen: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_older: int = 0
    users_written: int = 0
    groups_written: int = 0
    cursor: str | None = None


@dataclass
class CommentSyncStats:
    pages: int = 0
    events_seen: int = 0
    inserted: int = 0
    duplicates: int = 0
    cursor: int | None = None
    seen: set[int] = field(default_factory=set, repr=False)
    # the initial sync's per-ticket part (written by its own thread)
    split_at: int | None = None
    tickets_read: int = 0
    per_ticket_inserted: int = 0
    gap_pages: int = 0


@dataclass(frozen=True)
class SplitPolicy:
    """When and how a desk's first comment sync reads the oldest tickets per ticket.

    `events_per_ticket` estimates the export's events per ticket (comments and other changes)
    and `budget_share` the share of the account budget the workers reach (each request's round
    trip, parse and write cost time too) to balance the two parts; below `min_export_pages` of
    estimated export requests the split is not worth it and the export alone reads everything.
    """

    workers: int = 8
    chunk: int = 200
    events_per_ticket: float = 4.0
    budget_share: float = 0.85
    min_export_pages: int = 10


@dataclass(frozen=True)
class BackfillState:
    """An unfinished initial sync's per-ticket part (control.desks.comments_*)."""

    split_at: int
    after: int
    gap_from: int | None


@dataclass
class PreparedPage:
    """A ticket export page turned into rows (done in the fetch thread, off the write path)."""

    tickets: list[tuple]
    users: list[tuple]
    groups: list[tuple]
    after_cursor: str | None


def prepare_ticket_page(
    page: TicketPage, written_users: dict[int, Any], written_groups: dict[int, Any]
) -> PreparedPage:
    users = page_users(page)
    return PreparedPage(
        tickets=ticket_rows(page, users),
        users=user_rows(users, written_users),
        groups=group_rows(page.groups, written_groups),
        after_cursor=page.after_cursor,
    )


def load_ticket_page(
    conn: psycopg.Connection,
    desk: Desk,
    page: PreparedPage,
    *,
    old_cursor: str | None,
    stats: TicketSyncStats,
) -> str | None:
    """Write one prepared ticket page and its cursor in the caller's transaction."""
    new_cursor = page.after_cursor or old_cursor
    params = {"desk_id": desk.desk_id, "tenant_id": desk.tenant_id}
    begin_page(conn)
    if page.users:
        copy_rows(conn, "zendesk_users_stage", USER_COLUMNS, page.users)
        conn.execute(UPSERT_USERS, params)
    if page.groups:
        copy_rows(conn, "zendesk_groups_stage", GROUP_COLUMNS, page.groups)
        conn.execute(UPSERT_GROUPS, params)
    if page.tickets:
        copy_rows(conn, "zendesk_tickets_stage", TICKET_COLUMNS, page.tickets)
        applied = conn.execute(UPSERT_TICKETS, params).fetchall()
        inserted = sum(1 for ins, _ in applied if ins)
        stats.inserted += inserted
        stats.updated += len(applied) - inserted
        stats.deleted += sum(1 for _, deleted in applied if deleted)
        stats.skipped_older += len(page.tickets) - len(applied)
    move_cursor(conn, desk.desk_id, "ticket_cursor", old_cursor, new_cursor)
    stats.pages += 1
    stats.tickets_seen += len(page.tickets)
    stats.users_written += len(page.users)
    stats.groups_written += len(page.groups)
    stats.cursor = new_cursor
    return new_cursor


def prefetched(pages: Iterable[T]) -> Iterator[T]:
    """Iterate `pages` one item ahead in a background thread (fetch N+1 while writing N)."""
    iterator = iter(pages)
    sentinel: Any = object()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zendesk-prefetch")
    try:
        future = pool.submit(next, iterator, sentinel)
        while (item := future.result()) is not sentinel:
            future = pool.submit(next, iterator, sentinel)
            yield item
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def sync_tickets(
    connection: ConnectionFactory,
    api: ZendeskApi,
    desk: Desk,
    *,
    per_page: int = 1000,
    on_page: Callable[[TicketSyncStats], None] | None = None,
) -> TicketSyncStats:
    """Export tickets (with sideloads) from the desk's cursor to the end of the stream."""
    stats = TicketSyncStats(cursor=desk.ticket_cursor)
    cursor = desk.ticket_cursor
    written_users: dict[int, Any] = {}
    written_groups: dict[int, Any] = {}
    prepared = (
        prepare_ticket_page(page, written_users, written_groups)
        for page in api.export_tickets(cursor=cursor, start_time=0, per_page=per_page)
    )
    # one connection for the whole sync, one transaction per page
    with connection() as conn:
        ensure_staging(conn)
        for page in prefetched(prepared):
            with conn.transaction():
                cursor = load_ticket_page(conn, desk, page, old_cursor=cursor, stats=stats)
            if on_page:
                on_page(stats)
    release_free_memory()
    return stats


def release_free_memory() -> None:
    """Hand the heap memory freed by a sync's pages back to the operating system (glibc keeps
    it otherwise, and the next step's peak would start from there); a no-op elsewhere."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_comment_page(
    conn: psycopg.Connection,
    desk: Desk,
    events: list[dict],
    *,
    old_cursor: int | None,
    new_cursor: int,
    stats: CommentSyncStats,
) -> None:
    # only the next page can repeat this page's comments (it starts at this page's last second),
    # so the ids of this page are all a sync needs to remember, not every id it has seen
    page_ids: set[int] = set()
    rows = comment_rows(events, stats.seen, page_ids)
    stats.seen = page_ids
    begin_page(conn)
    inserted = 0
    if rows:
        copy_rows(conn, "zendesk_comments_stage", COMMENT_COLUMNS, rows)
        inserted = conn.execute(
            INSERT_COMMENTS, {"desk_id": desk.desk_id, "tenant_id": desk.tenant_id}
        ).rowcount
    move_cursor(conn, desk.desk_id, "events_cursor", old_cursor, new_cursor)
    stats.pages += 1
    stats.events_seen += len(events)
    stats.inserted += inserted
    stats.duplicates += len(rows) - inserted
    stats.cursor = new_cursor


def sync_comments(
    connection: ConnectionFactory,
    api: ZendeskApi,
    desk: Desk,
    *,
    per_page: int = 1000,
    on_page: Callable[[CommentSyncStats], None] | None = None,
    split: SplitPolicy | None = SplitPolicy(),
) -> CommentSyncStats:
    """Comments from the ticket events export, from the desk's events cursor to the end.

    On a desk's first sync (no events cursor yet) with enough tickets, the comments of the
    tickets created before a split time are read through the per-ticket endpoint in a thread of
    their own, several at a time on the account-wide budget, and the export starts at the split
    time: every comment written before it belongs to one of those tickets, every comment
    written from it on (later comments on old tickets and anything added during the sync
    included) is in the export. A ticket deleted before its comments were read (404) leaves a
    gap that the export fills afterwards from that ticket's creation to the split time. The
    state of this is kept on the desk, so a killed first sync resumes where it stopped.
    """
    stats = CommentSyncStats(cursor=desk.events_cursor)
    with connection() as conn:
        ensure_staging(conn)
        with conn.transaction():
            state = read_backfill(conn, desk.desk_id)
            stored = conn.execute(
                "select events_cursor from control.desks where desk_id = %s", (desk.desk_id,)
            ).fetchone()[0]
            if state is None and stored is None and split is not None:
                split_at = plan_split(conn, desk, split, per_page)
                if split_at is not None:
                    state = start_backfill(conn, desk.desk_id, split_at)
        stats.cursor = stored
        start = stored if stored is not None else (state.split_at if state else 0)
        if state is None:
            _sync_comment_pages(conn, api, desk, start, stored, per_page, stats, on_page)
            return stats
        stats.split_at = state.split_at
        failed = threading.Event()
        policy = split or SplitPolicy()
        reader = _BackfillThread(connection, api, desk, state, policy, stats, failed)
        reader.start()
        try:
            _sync_comment_pages(
                conn, api, desk, start, stored, per_page, stats, on_page, stop=failed.is_set
            )
        except BaseException:
            failed.set()
            raise
        finally:
            reader.join()
        if reader.error is not None:
            raise reader.error
        _fill_gap(conn, api, desk, per_page, stats)
    return stats


def read_backfill(conn: psycopg.Connection, desk_id: int) -> BackfillState | None:
    row = conn.execute(
        "select comments_split_at, comments_backfill_after, comments_gap_from "
        "from control.desks where desk_id = %s",
        (desk_id,),
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return BackfillState(split_at=row[0], after=row[1] or 0, gap_from=row[2])


def plan_split(
    conn: psycopg.Connection, desk: Desk, policy: SplitPolicy, per_page: int = 1000
) -> int | None:
    """The split time of a first comment sync (unix s), or None to use the export alone.

    The per-ticket part takes a request a ticket on the account budget, the export a request
    per `per_page` events on the export budget; the split balances the two so both end at about
    the same time. It never lies after a ticket already deleted: Zendesk does not serve a
    deleted ticket's comments per ticket, so those must come from the export.
    """
    created = [
        int(ts)
        for (ts,) in conn.execute(
            "select extract(epoch from created_at)::bigint from raw.zendesk_tickets "
            "where desk_id = %s and not is_deleted and created_at is not null "
            "order by created_at",
            (desk.desk_id,),
        )
    ]
    export_pages = len(created) * policy.events_per_ticket / per_page
    if not created or export_pages <= policy.min_export_pages:
        return None
    # minutes per ticket read per ticket, and per ticket left to the export
    per_ticket = 1.0 / (budget_rate(desk.api_rate_per_minute) * policy.budget_share)
    by_export = policy.events_per_ticket / per_page / budget_rate(desk.export_rate_per_minute)
    head = int(len(created) * by_export / (per_ticket + by_export))
    if head <= 0:
        return None
    split_at = created[min(head, len(created) - 1)]
    (first_deleted,) = conn.execute(
        "select min(extract(epoch from created_at))::bigint from raw.zendesk_tickets "
        "where desk_id = %s and is_deleted",
        (desk.desk_id,),
    ).fetchone()
    if first_deleted is not None:
        split_at = min(split_at, int(first_deleted))
    return split_at if split_at > created[0] else None


def start_backfill(conn: psycopg.Connection, desk_id: int, split_at: int) -> BackfillState:
    """Record the split on a desk with no events cursor (CursorMoved if another sync began)."""
    updated = conn.execute(
        "update control.desks set comments_split_at = %s, comments_backfill_after = 0, "
        "comments_gap_from = null, updated_at = now() "
        "where desk_id = %s and events_cursor is null and comments_split_at is null",
        (split_at, desk_id),
    ).rowcount
    if updated != 1:
        raise CursorMoved(f"desk {desk_id}: another sync started the desk's comments meanwhile")
    return BackfillState(split_at=split_at, after=0, gap_from=None)


class _BackfillThread(threading.Thread):
    """Reads the comments of the tickets created before the split, in ticket id order, a chunk
    at a time (the chunk's tickets `policy.workers` at a time); each chunk's comments and the
    progress are one transaction."""

    def __init__(
        self,
        connection: ConnectionFactory,
        api: ZendeskApi,
        desk: Desk,
        state: BackfillState,
        policy: SplitPolicy,
        stats: CommentSyncStats,
        failed: threading.Event,
    ):
        super().__init__(name=f"zendesk-comments-{desk.name}", daemon=True)
        self.connection, self.api, self.desk = connection, api, desk
        self.state, self.policy, self.stats, self.failed = state, policy, stats, failed
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._read_all()
        except BaseException as exc:  # handed to the sync's thread, which raises it
            self.error = exc
            self.failed.set()

    def _comments(self, ticket: tuple[int, int, bool]) -> list[dict] | None:
        ticket_id, _, deleted = ticket
        if deleted or self.failed.is_set():
            return None
        try:
            return self.api.ticket_comments(ticket_id)
        except ZendeskError as exc:
            if exc.status == 404:  # deleted meanwhile: its earlier comments come from the gap
                return None
            raise

    def _read_all(self) -> None:
        desk, state = self.desk, self.state
        after = state.after
        with (
            self.connection() as conn,
            ThreadPoolExecutor(self.policy.workers, thread_name_prefix="zendesk-comments") as pool,
        ):
            ensure_staging(conn)
            while not self.failed.is_set():
                with conn.transaction():
                    tickets = conn.execute(
                        "select ticket_id, extract(epoch from created_at)::bigint, is_deleted "
                        "from raw.zendesk_tickets where desk_id = %s and ticket_id > %s "
                        "and created_at < to_timestamp(%s) order by ticket_id limit %s",
                        (desk.desk_id, after, state.split_at, self.policy.chunk),
                    ).fetchall()
                if not tickets:
                    return
                fetched = list(pool.map(self._comments, tickets))
                if self.failed.is_set():
                    return
                events = [
                    {"ticket_id": ticket[0], "child_events": comments}
                    for ticket, comments in zip(tickets, fetched, strict=True)
                    if comments
                ]
                gap = min(
                    (t[1] for t, c in zip(tickets, fetched, strict=True) if c is None),
                    default=None,
                )
                last = tickets[-1][0]
                with conn.transaction():
                    inserted = _insert_comments(conn, desk, comment_rows(events, set()))
                    moved = conn.execute(
                        "update control.desks set comments_backfill_after = %s, "
                        "comments_gap_from = least(comments_gap_from, %s), updated_at = now() "
                        "where desk_id = %s and comments_backfill_after = %s",
                        (last, gap, desk.desk_id, after),
                    ).rowcount
                    if moved != 1:
                        raise CursorMoved(
                            f"desk {desk.desk_id}: the per-ticket comment reading moved under "
                            "this sync (another sync of the desk is running)"
                        )
                after = last
                self.stats.tickets_read += len(tickets)
                self.stats.per_ticket_inserted += inserted


def _insert_comments(conn: psycopg.Connection, desk: Desk, rows: list[tuple]) -> int:
    """Stage and insert comment rows in the caller's transaction; returns rows new."""
    begin_page(conn)
    if not rows:
        return 0
    copy_rows(conn, "zendesk_comments_stage", COMMENT_COLUMNS, rows)
    return conn.execute(
        INSERT_COMMENTS, {"desk_id": desk.desk_id, "tenant_id": desk.tenant_id}
    ).rowcount


def _fill_gap(
    conn: psycopg.Connection, api: ZendeskApi, desk: Desk, per_page: int, stats: CommentSyncStats
) -> None:
    """Read the export from the gap's start up to the split time (tickets deleted before their
    comments were read per ticket), then mark the desk's first sync finished."""
    with conn.transaction():
        state = read_backfill(conn, desk.desk_id)
    if state is None:
        return
    start = state.gap_from
    while start is not None and start < state.split_at:
        try:
            page = api.ticket_events(start, per_page)
        except StartTimeTooRecent:
            break
        events = page.get("ticket_events") or []
        following = next_events_start(start, int(page.get("end_time") or start), len(events))
        done = page.get("end_of_stream") or following == start or following >= state.split_at
        with conn.transaction():
            stats.per_ticket_inserted += _insert_comments(
                conn, desk, comment_rows(events, stats.seen)
            )
            conn.execute(
                "update control.desks set comments_gap_from = %s where desk_id = %s",
                (None if done else following, desk.desk_id),
            )
        stats.gap_pages += 1
        start = None if done else following
    with conn.transaction():
        conn.execute(
            "update control.desks set comments_split_at = null, comments_backfill_after = null, "
            "comments_gap_from = null, updated_at = now() where desk_id = %s",
            (desk.desk_id,),
        )


def events_pages(
    api: ZendeskApi, start: int, per_page: int, stop: Callable[[], bool] = lambda: False
) -> Iterator[tuple[list[dict], int]]:
    """(events, the next page's start) for each page of the ticket events export from `start`
    to the end of the stream (or until `stop()`)."""
    while not stop():
        try:
            page = api.ticket_events(start, per_page)
        except StartTimeTooRecent:
            return  # the cursor is within Zendesk's last minute: nothing to fetch yet
        events = page.get("ticket_events") or []
        end_time = int(page.get("end_time") or start)
        following = next_events_start(start, end_time, len(events))
        yield events, following
        if page.get("end_of_stream") or following == start:
            return
        start = following


def _sync_comment_pages(
    conn: psycopg.Connection,
    api: ZendeskApi,
    desk: Desk,
    start: int,
    stored: int | None,
    per_page: int,
    stats: CommentSyncStats,
    on_page: Callable[[CommentSyncStats], None] | None,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    # the next page is fetched while this one is written: the export's budget allows a request
    # every few seconds, and a page's write must not push the next request later
    for events, following in prefetched(events_pages(api, start, per_page, stop)):
        with conn.transaction():
            load_comment_page(
                conn, desk, events, old_cursor=stored, new_cursor=following, stats=stats
            )
        stored = following
        if on_page:
            on_page(stats)
        release_free_memory()  # an export page can be a whole busy second: thousands of events


def repair_ticket_comments(
    connection: ConnectionFactory, api: ZendeskApi, desk: Desk, ticket_id: int
) -> int:
    """Re-read one ticket's comments through the per-ticket endpoint and add any that are
    missing (the repair path; the bulk path is the events export). Returns rows added."""
    comments = api.ticket_comments(ticket_id)
    events = [{"ticket_id": ticket_id, "child_events": comments}]
    rows = comment_rows(events, set())
    if not rows:
        return 0
    with connection() as conn:
        begin_page(conn)
        copy_rows(conn, "zendesk_comments_stage", COMMENT_COLUMNS, rows)
        return conn.execute(
            INSERT_COMMENTS, {"desk_id": desk.desk_id, "tenant_id": desk.tenant_id}
        ).rowcount
