"""Conversations in the warehouse: applying queue batches of messages and conversation events,
the closure and follow-up sweep, work-queue membership with exact counters, origins, work queues,
the daily figures and the reads behind the CLI.

Plain functions over a psycopg connection; none of them commits (the caller's block is the
transaction), so a batch is applied whole or not at all. Every writer first takes the advisory
lock of each tenant it touches (`lock_tenants`, in key order): two drains, the sweep and the CLI
serialise per tenant, so "find or create" and the counter deltas never race. The rules come from
`rules.py`; this module only loads, applies them in memory in arrival order, and writes the
result set-based (COPY and one statement per table), not one round trip per message.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import msgspec
import psycopg
from msgspec import UNSET
from psycopg import sql
from psycopg.types.json import Jsonb

from assets.conversations.rules import (
    CHANNELS,
    CLOSABLE_STATES,
    DEFAULT_CLOSE_AFTER_MINUTES,
    NEUTRAL_BAND,
    RESPONSE_KINDS,
    Assign,
    Attachment,
    Author,
    ChannelMessage,
    ConversationEvent,
    Escalate,
    FlagEvent,
    InvalidConversationInput,
    MessageHidden,
    MessageRemoved,
    QueueChanged,
    SetMetadata,
    SetState,
    StateEvent,
    TicketProperties,
    TicketSpan,
    closure_due_at,
    escalated_priority,
    is_late,
    matches,
    next_state,
    parse_event_body,
    parse_messages_body,
    place_message,
    rejects_future,
    sentiment_label,
    trigger_for_kind,
    validate_condition,
)
from assets.feedback.rules import score_sentiment
from resources.lanes import LanePart, ProcessLanes
from resources.queues import BatchOutcome, Message
from resources.warehouse import WarehouseResource

LOCK_NAMESPACE = 727600  # first key of the per-tenant advisory locks (see the 0600 migration)
LANGUAGE_CHARS = 400  # py3langid is sure of a language well within this many characters

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection]]
SentimentScorer = Callable[[Sequence[str]], Sequence[float]]
LanguageDetector = Callable[[Sequence[str]], Sequence[str | None]]


def _columns(names: str, table: str | None = None) -> sql.Composed:
    """A column list for a query, as identifiers (qualified by `table` when given)."""
    parts = [name.strip() for name in names.split(",")]
    return sql.SQL(", ").join(
        sql.Identifier(table, name) if table else sql.Identifier(name) for name in parts
    )


_JSON = msgspec.json.Encoder()


def _ids(values: Iterable[int]) -> str:
    """An array literal of integers for `%s::bigint[]` (psycopg dumps lists element by element,
    which costs more than the query on batches of thousands)."""
    return "{" + ",".join(map(str, values)) + "}"


def _records(**columns: Sequence[Any]) -> str:
    """Parallel columns as one JSON array of objects, for `json_to_recordset(%s::json)`."""
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    return _JSON.encode([dict(zip(names, row, strict=True)) for row in rows]).decode()


class ConversationError(ValueError):
    """A request the conversation store refuses (unknown origin, duplicate name, bad condition)."""


def tenant_lock_key(tenant_id: str) -> int:
    """A stable signed 32-bit key per tenant, the same in every process."""
    digest = hashlib.blake2b(tenant_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_tenants(conn: psycopg.Connection, tenant_ids: Iterable[str]) -> None:
    """Take the transaction-scoped lock of every tenant, in key order (no deadlocks)."""
    for key in sorted({tenant_lock_key(t) for t in tenant_ids}):
        conn.execute("select pg_advisory_xact_lock(%s, %s)", (LOCK_NAMESPACE, key))


# --- the feedback domain's engines --------------------------------------------------------------


def feedback_sentiment(texts: Sequence[str]) -> list[float]:
    """Scores in [-1, 1] by the feedback domain's baseline engine (VADER)."""
    return [score for score, _ in score_sentiment(list(texts))]


def detect_languages(texts: Sequence[str]) -> list[str | None]:
    """ISO 639-1 code per text, by py3langid (the library the feedback enrichment uses; its
    model ships inside the package)."""
    import py3langid  # a third-party model, loaded only by processes that create tickets

    return [
        py3langid.classify(text[:LANGUAGE_CHARS])[0] if text.strip() else None for text in texts
    ]


CACHE_LIMIT = 100_000


@dataclass(frozen=True)
class Engines:
    """Sentiment and language for messages; injected so tests and benches can choose.

    Both engines are deterministic, so each distinct text is scored once per process (channels
    repeat themselves: greetings, "thanks!", canned bot answers); the caches are bounded.
    """

    score: SentimentScorer
    neutral_band: float
    detect_languages: LanguageDetector
    _scores: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    _languages: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def default(cls) -> Engines:
        return cls(
            score=feedback_sentiment, neutral_band=NEUTRAL_BAND, detect_languages=detect_languages
        )

    def sentiment(self, texts: Sequence[str]) -> list[float]:
        return _cached(self._scores, self.score, texts)

    def languages(self, texts: Sequence[str]) -> list[str | None]:
        return _cached(self._languages, self.detect_languages, texts)

    @property
    def texts_scored(self) -> int:
        """Distinct texts scored for sentiment (and still cached) in this process."""
        return len(self._scores)


_MISSING = object()


def _cached(cache: dict, compute: Callable[[Sequence[str]], Sequence[Any]], texts) -> list:
    """Each text's value, computing the missing ones in one call. Safe to share between threads
    (a drain scores one batch while it writes the one before): one may clear the cache while
    another reads it."""
    values: dict[str, Any] = {}
    missing = []
    for text in set(texts):
        value = cache.get(text, _MISSING)
        if value is _MISSING:
            missing.append(text)
        else:
            values[text] = value
    if missing:
        missing.sort()
        computed = dict(zip(missing, compute(missing), strict=True))
        if len(cache) + len(computed) > CACHE_LIMIT:
            cache.clear()
        cache.update(computed)
        values.update(computed)
    return [values[t] for t in texts]


def score_customer_texts(
    engines: Engines, messages: Sequence[ChannelMessage]
) -> list[float | None]:
    """Sentiment of each customer message (None for other kinds)."""
    customer = [m.text for m in messages if m.kind == "customer"]
    scores = iter(engines.sentiment(customer))
    return [next(scores) if m.kind == "customer" else None for m in messages]


# --- origins, settings, enrichment, work queues -------------------------------------------------


@dataclass(frozen=True)
class Origin:
    origin_id: int
    tenant_id: str
    name: str
    channel: str
    ref: str
    active: bool
    created_at: datetime | None = None


_ORIGIN_COLUMNS = "origin_id, tenant_id, name, channel, ref, active, created_at"


def add_origin(
    conn: psycopg.Connection, tenant_id: str, name: str, channel: str, ref: str
) -> Origin:
    """Register an origin. Refuses an unknown channel and a name or ref the tenant already has."""
    if channel not in CHANNELS:
        raise ConversationError(f"channel: expected one of {', '.join(CHANNELS)}, got {channel!r}")
    if not name.strip() or not ref.strip():
        raise ConversationError("name and ref must not be empty")
    lock_tenants(conn, [tenant_id])
    clash = conn.execute(
        "select name, ref from control.origins where tenant_id = %s and (name = %s or ref = %s)",
        (tenant_id, name, ref),
    ).fetchone()
    if clash:
        what = f"name {name!r}" if clash[0] == name else f"ref {ref!r}"
        raise ConversationError(f"tenant {tenant_id!r} already has an origin with {what}")
    row = conn.execute(
        sql.SQL(
            "insert into control.origins (tenant_id, name, channel, ref) values (%s, %s, %s, %s) "
            "returning {}"
        ).format(_columns(_ORIGIN_COLUMNS)),
        (tenant_id, name, channel, ref),
    ).fetchone()
    return Origin(*row)


def list_origins(conn: psycopg.Connection, tenant_id: str | None = None) -> list[Origin]:
    rows = conn.execute(
        sql.SQL(
            "select {} from control.origins "
            "where %(tenant)s::text is null or tenant_id = %(tenant)s order by tenant_id, name"
        ).format(_columns(_ORIGIN_COLUMNS)),
        {"tenant": tenant_id},
    ).fetchall()
    return [Origin(*row) for row in rows]


def find_origin(conn: psycopg.Connection, name: str, tenant_id: str | None = None) -> Origin:
    """The origin called `name` (of `tenant_id` when given; the name must then be unambiguous)."""
    rows = conn.execute(
        sql.SQL(
            "select {} from control.origins "
            "where name = %(name)s and (%(tenant)s::text is null or tenant_id = %(tenant)s)"
        ).format(_columns(_ORIGIN_COLUMNS)),
        {"name": name, "tenant": tenant_id},
    ).fetchall()
    if not rows:
        of = f" of tenant {tenant_id!r}" if tenant_id else ""
        raise ConversationError(f"no origin named {name!r}{of}")
    if len(rows) > 1:
        tenants = ", ".join(sorted(row[1] for row in rows))
        raise ConversationError(f"origin {name!r} exists in tenants {tenants}: give --tenant")
    return Origin(*rows[0])


def set_close_after_minutes(conn: psycopg.Connection, tenant_id: str, minutes: int | None) -> None:
    """Override the closure period of a tenant (None: back to the global setting)."""
    if minutes is not None and minutes < 1:
        raise ConversationError("close_after_minutes must be at least 1")
    conn.execute(
        """
        insert into control.conversation_settings (tenant_id, close_after_minutes)
        values (%s, %s)
        on conflict (tenant_id) do update
        set close_after_minutes = excluded.close_after_minutes, updated_at = now()
        """,
        (tenant_id, minutes),
    )


def set_enrichment(
    conn: psycopg.Connection,
    tenant_id: str,
    author_external_id: str,
    *,
    tags: Sequence[str] = (),
    priority: str | None = None,
    custom_fields: Mapping[str, Any] | None = None,
) -> None:
    """Create or replace the enrichment-list entry of an author (applied to new tickets)."""
    conn.execute(
        """
        insert into control.enrichment_lists
            (tenant_id, author_external_id, tags, priority, custom_fields)
        values (%s, %s, %s, %s, %s)
        on conflict (tenant_id, author_external_id) do update
        set tags = excluded.tags, priority = excluded.priority,
            custom_fields = excluded.custom_fields, updated_at = now()
        """,
        (tenant_id, author_external_id, list(tags), priority, Jsonb(dict(custom_fields or {}))),
    )


@dataclass(frozen=True)
class WorkQueue:
    queue_id: int
    tenant_id: str
    name: str
    condition: dict[str, Any]
    priority: int
    visible_to: dict[str, list[str]]


_QUEUE_COLUMNS = "queue_id, tenant_id, name, condition, priority, visible_to"


def validate_visible_to(visible_to: Any) -> dict[str, list[str]]:
    """`{"groups": [...], "agents": [...]}` with lists of non-empty strings."""
    if not isinstance(visible_to, dict):
        raise ConversationError("visible_to: expected an object with groups and agents")
    unknown = sorted(set(visible_to) - {"groups", "agents"})
    if unknown:
        raise ConversationError(f"visible_to: unknown key {unknown[0]!r} (expected groups, agents)")
    result: dict[str, list[str]] = {}
    for key in ("groups", "agents"):
        values = visible_to.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ConversationError(f"visible_to.{key}: expected a list of names")
        result[key] = values
    return result


def list_work_queues(conn: psycopg.Connection, tenant_id: str | None = None) -> list[WorkQueue]:
    rows = conn.execute(
        sql.SQL(
            "select {} from control.work_queues "
            "where %(tenant)s::text is null or tenant_id = %(tenant)s "
            "order by tenant_id, priority desc, name"
        ).format(_columns(_QUEUE_COLUMNS)),
        {"tenant": tenant_id},
    ).fetchall()
    return [WorkQueue(*row) for row in rows]


def save_work_queue(
    conn: psycopg.Connection,
    tenant_id: str,
    name: str,
    *,
    condition: Any = None,
    priority: int | None = None,
    visible_to: Any = None,
    create: bool,
) -> WorkQueue:
    """Add (`create`) or update a work queue, then re-evaluate every open ticket of the tenant
    against it in the same transaction, so its members and counters are exact at commit.

    The condition is validated first (rules.validate_condition): a bad one raises
    ConditionError and nothing is written.
    """
    if condition is not None:
        validate_condition(condition)
    seen = validate_visible_to(visible_to) if visible_to is not None else None
    lock_tenants(conn, [tenant_id])
    existing = conn.execute(
        sql.SQL("select {} from control.work_queues where tenant_id = %s and name = %s").format(
            _columns(_QUEUE_COLUMNS)
        ),
        (tenant_id, name),
    ).fetchone()
    if create:
        if existing:
            raise ConversationError(f"tenant {tenant_id!r} already has a work queue {name!r}")
        if condition is None:
            raise ConversationError("a new work queue needs a condition")
        row = conn.execute(
            sql.SQL(
                """
                insert into control.work_queues (tenant_id, name, condition, priority, visible_to)
                values (%s, %s, %s, %s, %s) returning {}
                """
            ).format(_columns(_QUEUE_COLUMNS)),
            (
                tenant_id,
                name,
                Jsonb(condition),
                priority or 0,
                Jsonb(seen or {"groups": [], "agents": []}),
            ),
        ).fetchone()
    else:
        if not existing:
            raise ConversationError(f"tenant {tenant_id!r} has no work queue {name!r}")
        current = WorkQueue(*existing)
        row = conn.execute(
            sql.SQL(
                """
                update control.work_queues
                set condition = %s, priority = %s, visible_to = %s, updated_at = now()
                where queue_id = %s returning {}
                """
            ).format(_columns(_QUEUE_COLUMNS)),
            (
                Jsonb(condition if condition is not None else current.condition),
                priority if priority is not None else current.priority,
                Jsonb(seen if seen is not None else current.visible_to),
                current.queue_id,
            ),
        ).fetchone()
    queue = WorkQueue(*row)
    reevaluate_tenant(conn, tenant_id, queue_ids=[queue.queue_id])
    return queue


# --- work-queue membership and counters ---------------------------------------------------------


_PROPERTY_SQL = """
    select t.ticket_id, t.tenant_id, t.state, o.name, t.channel, t.priority, t.language,
           t.sentiment_label, t.sentiment_score, t.tags, t.topic, t.owner_group, t.custom_fields
    from raw.conversation_tickets t
    join control.origins o on o.origin_id = t.origin_id
"""


def _properties(row: Sequence[Any]) -> TicketProperties:
    return TicketProperties(
        origin=row[3],
        channel=row[4],
        state=row[2],
        priority=row[5],
        language=row[6],
        sentiment=row[7],
        sentiment_score=row[8],
        tags=tuple(row[9] or ()),
        topic=row[10],
        group=row[11],
        custom_fields=row[12] or {},
    )


def apply_counter_deltas(
    conn: psycopg.Connection, deltas: Mapping[tuple[str, int, str], int]
) -> None:
    """Add (tenant, queue, state) -> n to analytics.queue_counters (n may be negative)."""
    changed = [(t, q, s, n) for (t, q, s), n in sorted(deltas.items(), key=str) if n]
    if not changed:
        return
    tenants, queues, states, counts = (list(col) for col in zip(*changed, strict=True))
    # Rows first, then the deltas: an insert's proposed row must pass the check (count >= 0)
    # before ON CONFLICT is considered, so a negative delta cannot travel in the insert.
    conn.execute(
        """
        insert into analytics.queue_counters (tenant_id, queue_id, state, ticket_count)
        select tenant_id, queue_id, state, 0
        from unnest(%s::text[], %s::bigint[], %s::text[]) as d(tenant_id, queue_id, state)
        on conflict (queue_id, state) do nothing
        """,
        (tenants, queues, states),
    )
    conn.execute(
        """
        update analytics.queue_counters c set ticket_count = c.ticket_count + d.delta
        from unnest(%s::bigint[], %s::text[], %s::bigint[]) as d(queue_id, state, delta)
        where c.queue_id = d.queue_id and c.state = d.state
        """,
        (queues, states, counts),
    )


def refresh_membership(
    conn: psycopg.Connection, ticket_ids: Sequence[int], queue_ids: Sequence[int] | None = None
) -> None:
    """Put each ticket into exactly the queues (of its tenant) whose condition it matches, and
    move the counters by the difference, in the caller's transaction. Closed tickets leave every
    queue (rule 8). With `queue_ids`, only those queues are re-evaluated.

    The result is the issue's "remove the ticket from its queues, then add it to every queue that
    matches"; only the rows that differ are written (most tickets of a batch stay where they
    were). The caller holds the tenants' locks.
    """
    if not ticket_ids:
        return
    ids = sorted(set(ticket_ids))
    only = list(queue_ids) if queue_ids is not None else None
    rows = conn.execute(
        _PROPERTY_SQL + " where t.ticket_id = any(%s::bigint[])", (_ids(ids),), binary=True
    ).fetchall()
    tenants = sorted({row[1] for row in rows})
    queue_rows = conn.execute(
        "select queue_id, tenant_id, condition from control.work_queues "
        "where tenant_id = any(%(tenants)s) "
        "and (%(queues)s::bigint[] is null or queue_id = any(%(queues)s))",
        {"tenants": tenants, "queues": only},
    ).fetchall()
    queues_of: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for queue_id, tenant_id, condition in queue_rows:
        queues_of[tenant_id].append((queue_id, condition))
    wanted: dict[tuple[int, int], tuple[str, str]] = {}
    for row in rows:
        ticket_id, tenant_id, state = row[0], row[1], row[2]
        if state == "closed" or not queues_of.get(tenant_id):
            continue
        ticket = _properties(row)
        for queue_id, condition in queues_of[tenant_id]:
            if matches(condition, ticket):
                wanted[(queue_id, ticket_id)] = (tenant_id, state)
    current = {
        (queue_id, ticket_id): (tenant_id, state)
        for queue_id, ticket_id, tenant_id, state in conn.execute(
            "select queue_id, ticket_id, tenant_id, state from raw.work_queue_members "
            "where ticket_id = any(%(ids)s::bigint[]) "
            "and (%(queues)s::bigint[] is null or queue_id = any(%(queues)s))",
            {"ids": _ids(ids), "queues": only},
        ).fetchall()
    }
    leaving = [key for key, value in current.items() if wanted.get(key) != value]
    joining = [(key, value) for key, value in wanted.items() if current.get(key) != value]
    deltas: Counter[tuple[str, int, str]] = Counter()
    if leaving:
        conn.execute(
            """
            delete from raw.work_queue_members m
            using json_to_recordset(%s::json) as l(queue_id bigint, ticket_id bigint)
            where m.queue_id = l.queue_id and m.ticket_id = l.ticket_id
            """,
            (_records(queue_id=[k[0] for k in leaving], ticket_id=[k[1] for k in leaving]),),
        )
        for queue_id, ticket_id in leaving:
            tenant_id, state = current[(queue_id, ticket_id)]
            deltas[(tenant_id, queue_id, state)] -= 1
    if joining:
        with conn.cursor().copy(
            "copy raw.work_queue_members (tenant_id, queue_id, ticket_id, state) from stdin"
        ) as copy:
            for (queue_id, ticket_id), (tenant_id, state) in joining:
                copy.write_row((tenant_id, queue_id, ticket_id, state))
                deltas[(tenant_id, queue_id, state)] += 1
    apply_counter_deltas(conn, deltas)


def reevaluate_tenant(
    conn: psycopg.Connection, tenant_id: str, queue_ids: Sequence[int] | None = None
) -> int:
    """Re-evaluate every open ticket of a tenant (against `queue_ids`, or all its queues).
    Returns how many tickets were looked at."""
    lock_tenants(conn, [tenant_id])
    ids = [
        row[0]
        for row in conn.execute(
            "select ticket_id from raw.conversation_tickets "
            "where tenant_id = %s and state <> 'closed'",
            (tenant_id,),
        )
    ]
    for start in range(0, len(ids), 5000):
        refresh_membership(conn, ids[start : start + 5000], queue_ids)
    return len(ids)


def stored_counters(conn: psycopg.Connection, tenant_id: str | None = None) -> dict[tuple, int]:
    """(tenant, queue_id, state) -> count as kept in analytics.queue_counters (zeros left out)."""
    rows = conn.execute(
        "select tenant_id, queue_id, state, ticket_count from analytics.queue_counters "
        "where ticket_count <> 0 and (%(tenant)s::text is null or tenant_id = %(tenant)s)",
        {"tenant": tenant_id},
    ).fetchall()
    return {(t, q, s): n for t, q, s, n in rows}


def recount_counters(conn: psycopg.Connection, tenant_id: str | None = None) -> dict[tuple, int]:
    """(tenant, queue_id, state) -> count recounted from raw.work_queue_members."""
    rows = conn.execute(
        "select tenant_id, queue_id, state, count(*) from raw.work_queue_members "
        "where %(tenant)s::text is null or tenant_id = %(tenant)s group by 1, 2, 3",
        {"tenant": tenant_id},
    ).fetchall()
    return {(t, q, s): n for t, q, s, n in rows}


def repair_counters(conn: psycopg.Connection, tenant_id: str | None = None) -> int:
    """Set the counters (of one tenant, or all) to a recount of the members, under the tenants'
    locks; returns how many counters were wrong. Counters move with every change, so this is
    for an operator after a manual edit of the tables, not a job."""
    tenants = (
        [tenant_id]
        if tenant_id
        else [row[0] for row in conn.execute("select distinct tenant_id from control.work_queues")]
    )
    lock_tenants(conn, tenants)
    wrong = 0
    for tenant in tenants:
        stored, recount = stored_counters(conn, tenant), recount_counters(conn, tenant)
        deltas = {
            key: recount.get(key, 0) - stored.get(key, 0) for key in set(stored) | set(recount)
        }
        wrong += sum(1 for delta in deltas.values() if delta)
        apply_counter_deltas(conn, deltas)
    return wrong


def counter_mismatches(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Counters that differ from a recount of the members (empty when all are exact)."""
    stored, recount = stored_counters(conn), recount_counters(conn)
    return [
        {
            "tenant_id": key[0],
            "queue_id": key[1],
            "state": key[2],
            "stored": stored.get(key, 0),
            "recount": recount.get(key, 0),
        }
        for key in sorted(set(stored) | set(recount), key=str)
        if stored.get(key, 0) != recount.get(key, 0)
    ]


# --- applying queue `messages` ------------------------------------------------------------------

_TICKET_COLUMNS = (
    "ticket_id, tenant_id, sequence, thread_id, origin_id, channel, author_external_id, state, "
    "state_changed_at, created_at, closed_at, solved_at, followup_until, last_customer_message_at, "
    "visible_message_count, first_customer_message_at, first_response_at, star_rating, "
    "sentiment_sum, sentiment_count"
)


@dataclass(eq=False)
class _Thread:
    thread_id: int  # negative until inserted
    tenant_id: str
    origin_id: int
    author_external_id: str
    author_name: str | None
    new: bool = False
    latest: _Ticket | None = None
    closed: list[_Ticket] = field(default_factory=list)
    last_message_at: datetime | None = None
    dirty: bool = False

    @property
    def active(self) -> _Ticket | None:
        return self.latest if self.latest is not None and self.latest.state != "closed" else None


@dataclass(eq=False)
class _Ticket:
    ticket_id: int  # negative until inserted
    tenant_id: str
    sequence: int | None
    thread: _Thread
    origin_id: int
    channel: str
    author_external_id: str
    state: str
    state_changed_at: datetime
    created_at: datetime
    closed_at: datetime | None = None
    solved_at: datetime | None = None
    followup_until: datetime | None = None
    last_customer_message_at: datetime | None = None
    new: bool = False
    dirty: bool = False
    first_text: str = ""
    # derived properties (rule 16), kept incrementally while every message the batch adds to the
    # ticket is newer than all it holds; `recompute` when one is not (or a message is stored
    # removed): the stored messages are aggregated again after the batch is written
    visible_message_count: int = 0
    first_customer_message_at: datetime | None = None
    first_response_at: datetime | None = None
    star_rating: int | None = None
    sentiment_sum: float = 0.0
    sentiment_count: int = 0
    derived_dirty: bool = False
    recompute: bool = False

    def span(self) -> TicketSpan:
        return TicketSpan(self.ticket_id, self.state, self.created_at, self.closed_at)

    def add_derived(self, message: ChannelMessage, score: float | None) -> None:
        """Fold a live message newer than every message of the ticket into its derived values:
        the same result as `refresh_derived`'s aggregate over all of them."""
        self.visible_message_count += 1
        if message.kind == "customer":
            if self.first_customer_message_at is None:
                self.first_customer_message_at = message.sent_at
            self.last_customer_message_at = message.sent_at
            if score is not None:
                self.sentiment_sum += score
                self.sentiment_count += 1
            if message.rating is not None:
                self.star_rating = message.rating
        elif message.kind in RESPONSE_KINDS:
            if self.first_response_at is None and self.first_customer_message_at is not None:
                self.first_response_at = message.sent_at
        self.derived_dirty = True

    def sentiment(self, band: float) -> tuple[float | None, str | None]:
        """(mean score of its customer messages, label) as `refresh_derived` sets them."""
        if not self.sentiment_count:
            return None, None
        score = self.sentiment_sum / self.sentiment_count
        return score, sentiment_label(score, band)


@dataclass
class Incoming:
    """A channel message on its way in: from the queue, or a shadowed one being replayed."""

    key: str
    message: ChannelMessage
    sentiment_score: float | None
    received_at: datetime
    deleted: bool = False
    hidden: bool = False
    hidden_changed_at: datetime | None = None
    deleted_at: datetime | None = None


@dataclass
class MessageTally:
    """What a drain did, beside the queue-level DrainReport."""

    stored: int = 0
    shadowed: int = 0
    duplicates: int = 0
    tickets_created: int = 0
    state_changes: int = 0
    flags_applied: int = 0
    events_applied: int = 0
    events_without_effect: int = 0

    def as_metadata(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, other: MessageTally) -> None:
        for name, value in other.__dict__.items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class BatchResult:
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def close_after_minutes(
    conn: psycopg.Connection, tenant_ids: Iterable[str], default: int
) -> dict[str, int]:
    """The closure period of each tenant: its override, else `default`."""
    tenants = sorted(set(tenant_ids))
    rows = conn.execute(
        "select tenant_id, close_after_minutes from control.conversation_settings "
        "where tenant_id = any(%s) and close_after_minutes is not null",
        (tenants,),
    ).fetchall()
    found = dict(rows)
    return {t: found.get(t, default) for t in tenants}


class _Retry(str):
    """Why a message cannot be applied yet (it may have overtaken the message it answers): the
    drain retries it with a growing delay and dead-letters it after its last receive."""


class _Session:
    """One batch in one transaction: loads what the batch touches, applies the rules in memory in
    arrival order, then writes every table with a few set-based statements."""

    def __init__(
        self,
        conn: psycopg.Connection,
        tenants: Iterable[str],
        *,
        engines: Engines,
        default_close_after: int,
    ) -> None:
        self.conn = conn
        self.engines = engines
        self.tenants = sorted(set(tenants))
        self.temp_ids = itertools.count(-1, -1)
        self.threads: dict[tuple[str, int, str], _Thread] = {}
        self.threads_by_id: dict[int, _Thread] = {}
        self.tickets: dict[int, _Ticket] = {}
        self.changes: list[tuple[_Ticket, str | None, str, str, str | None, datetime]] = []
        # ids of existing tickets whose derived values are aggregated again (flags, events)
        self.touched: set[int] = set()
        self.touched_new: list[_Ticket] = []
        self.moved: set[int] = set()  # ids of existing tickets whose state an event changed
        self.members: set[int] = set()  # ids of existing tickets a message was added to
        lock_tenants(conn, self.tenants)
        self.close_after = close_after_minutes(conn, self.tenants, default_close_after)
        self.origins: dict[tuple[str, str], Origin] = {}
        self.known_tenants: set[str] = set()
        for row in conn.execute(
            sql.SQL("select {} from control.origins where tenant_id = any(%s)").format(
                _columns(_ORIGIN_COLUMNS)
            ),
            (self.tenants,),
        ):
            origin = Origin(*row)
            self.origins[(origin.tenant_id, origin.ref)] = origin
            self.known_tenants.add(origin.tenant_id)

    # -- loading ----------------------------------------------------------------------------------

    def origin_problem(self, tenant_id: str, ref: str) -> str | None:
        if tenant_id not in self.known_tenants:
            return f"Unknown tenant {tenant_id!r}: it has no origins - at `$.tenant_id`"
        if (tenant_id, ref) in self.origins:
            return None
        elsewhere = self.conn.execute(
            "select 1 from control.origins where ref = %s and tenant_id <> %s limit 1",
            (ref, tenant_id),
        ).fetchone()
        if elsewhere:
            return f"Origin {ref!r} belongs to another tenant than {tenant_id!r} - at `$.origin`"
        return f"Unknown origin {ref!r} of tenant {tenant_id!r} - at `$.origin`"

    def _ticket(self, row: Sequence[Any]) -> _Ticket:
        ticket = self.tickets.get(row[0])
        if ticket is not None:
            return ticket
        thread = self.threads_by_id[row[3]]
        ticket = _Ticket(
            ticket_id=row[0],
            tenant_id=row[1],
            sequence=row[2],
            thread=thread,
            origin_id=row[4],
            channel=row[5],
            author_external_id=row[6],
            state=row[7],
            state_changed_at=row[8],
            created_at=row[9],
            closed_at=row[10],
            solved_at=row[11],
            followup_until=row[12],
            last_customer_message_at=row[13],
            visible_message_count=row[14],
            first_customer_message_at=row[15],
            first_response_at=row[16],
            star_rating=row[17],
            sentiment_sum=row[18],
            sentiment_count=row[19],
        )
        self.tickets[ticket.ticket_id] = ticket
        return ticket

    def load_tickets_by_ref(
        self, refs: Iterable[tuple[str, int | None, int | None]]
    ) -> dict[tuple[str, str, int], _Ticket]:
        """Tickets named by (tenant, ticket_id, sequence), with their threads loaded."""
        refs = list(refs)
        if not refs:
            return {}
        tenants = [r[0] for r in refs]
        rows = self.conn.execute(
            sql.SQL(
                """
                select {} from raw.conversation_tickets t
                join unnest(%s::text[], %s::bigint[], %s::bigint[]) as r(tenant_id, id, seq)
                  on t.tenant_id = r.tenant_id and (t.ticket_id = r.id or t.sequence = r.seq)
                """
            ).format(_columns(_TICKET_COLUMNS, "t")),
            (tenants, [r[1] for r in refs], [r[2] for r in refs]),
            binary=True,  # timestamps as they are stored, not parsed from text
        ).fetchall()
        self.load_threads(thread_ids=[row[3] for row in rows])
        found: dict[tuple[str, str, int], _Ticket] = {}
        for row in rows:
            ticket = self._ticket(row)
            found[(ticket.tenant_id, "ticket_id", ticket.ticket_id)] = ticket
            found[(ticket.tenant_id, "sequence", ticket.sequence)] = ticket
        return found

    def load_threads(
        self,
        keys: Iterable[tuple[str, int, str]] = (),
        thread_ids: Iterable[int] = (),
        since: Mapping[tuple[str, int, str], datetime] | None = None,
    ) -> None:
        """Threads by key or id, each with its latest ticket and the closed tickets that may cover
        a message of the batch (closed at or after the oldest one sent in that thread)."""
        keys = [k for k in set(keys) if k not in self.threads]
        ids = [i for i in set(thread_ids) if i not in self.threads_by_id]
        if not keys and not ids:
            return
        rows = self.conn.execute(
            """
            select th.thread_id, th.tenant_id, th.origin_id, th.author_external_id,
                   th.author_name, th.last_message_at
            from raw.conversation_threads th
            join json_to_recordset(%s::json) as k(tenant_id text, origin_id bigint, author text)
              on th.tenant_id = k.tenant_id and th.origin_id = k.origin_id
             and th.author_external_id = k.author
            union
            select thread_id, tenant_id, origin_id, author_external_id, author_name, last_message_at
            from raw.conversation_threads where thread_id = any(%s::bigint[])
            """,
            (
                _records(
                    tenant_id=[k[0] for k in keys],
                    origin_id=[k[1] for k in keys],
                    author=[k[2] for k in keys],
                ),
                _ids(ids),
            ),
        ).fetchall()
        loaded = []
        for thread_id, tenant_id, origin_id, author, name, last_message_at in rows:
            thread = _Thread(thread_id, tenant_id, origin_id, author, name)
            thread.last_message_at = last_message_at
            self.threads[(tenant_id, origin_id, author)] = thread
            self.threads_by_id[thread_id] = thread
            loaded.append(thread)
        if not loaded:
            return
        loaded_ids = [t.thread_id for t in loaded]
        for row in self.conn.execute(
            sql.SQL(
                """
                select distinct on (thread_id) {} from raw.conversation_tickets
                where thread_id = any(%s::bigint[]) order by thread_id, sequence desc
                """
            ).format(_columns(_TICKET_COLUMNS)),
            (_ids(loaded_ids),),
            binary=True,  # timestamps as they are stored, not parsed from text
        ).fetchall():
            ticket = self._ticket(row)
            ticket.thread.latest = ticket
        oldest = [
            (since or {}).get((t.tenant_id, t.origin_id, t.author_external_id))
            or datetime(1970, 1, 1, tzinfo=UTC)
            for t in loaded
        ]
        for row in self.conn.execute(
            sql.SQL(
                """
                select {} from raw.conversation_tickets t
                join json_to_recordset(%s::json) as s(thread_id bigint, since timestamptz)
                  on t.thread_id = s.thread_id
                where t.state = 'closed' and t.closed_at >= s.since
                """
            ).format(_columns(_TICKET_COLUMNS, "t")),
            (_records(thread_id=loaded_ids, since=oldest),),
            binary=True,  # timestamps as they are stored, not parsed from text
        ).fetchall():
            ticket = self._ticket(row)
            if ticket not in ticket.thread.closed:
                ticket.thread.closed.append(ticket)

    # -- the rules, in memory ---------------------------------------------------------------------

    def thread_for(self, tenant_id: str, origin_id: int, author: str, name: str | None) -> _Thread:
        key = (tenant_id, origin_id, author)
        thread = self.threads.get(key)
        if thread is None:
            thread = _Thread(next(self.temp_ids), tenant_id, origin_id, author, name, new=True)
            self.threads[key] = thread
            self.threads_by_id[thread.thread_id] = thread
        return thread

    def change_state(
        self,
        ticket: _Ticket,
        to_state: str,
        at: datetime,
        cause: str,
        event_id: str | None,
        *,
        until: datetime | None = None,
    ) -> None:
        from_state = ticket.state
        ticket.state = to_state
        ticket.state_changed_at = at
        ticket.followup_until = until if to_state == "followup" else None
        if to_state == "solved":
            ticket.solved_at = at
        if to_state == "closed":
            ticket.closed_at = at
            if ticket not in ticket.thread.closed:
                ticket.thread.closed.append(ticket)
        ticket.dirty = True
        self.changes.append((ticket, from_state, to_state, cause, event_id, at))

    def settle(self, ticket: _Ticket, at: datetime) -> None:
        """Apply the schedule's transitions that were due by `at` before anything newer is
        applied, so the outcome never depends on when the sweep last ran."""
        if ticket.state == "followup" and ticket.followup_until <= at:
            self.change_state(ticket, "working", ticket.followup_until, "schedule", None)
        due = closure_due_at(
            ticket.state,
            ticket.state_changed_at,
            self.close_after.get(ticket.tenant_id, DEFAULT_CLOSE_AFTER_MINUTES),
        )
        if due is not None and due <= at:
            self.change_state(ticket, "closed", due, "schedule", None)

    def covering(self, thread: _Thread, at: datetime) -> _Ticket | None:
        spans = [t for t in thread.closed if t.span().covers(at)]
        return max(spans, key=lambda t: t.created_at) if spans else None

    def new_ticket(
        self, thread: _Thread, origin: Origin, at: datetime, text: str, message_id: str
    ) -> _Ticket:
        ticket = _Ticket(
            ticket_id=next(self.temp_ids),
            tenant_id=thread.tenant_id,
            sequence=None,
            thread=thread,
            origin_id=origin.origin_id,
            channel=origin.channel,
            author_external_id=thread.author_external_id,
            state="created",
            state_changed_at=at,
            created_at=at,
            new=True,
            first_text=text,
        )
        thread.latest = ticket
        self.tickets[ticket.ticket_id] = ticket
        self.touched_new.append(ticket)
        self.changes.append((ticket, None, "created", "message", message_id, at))
        return ticket

    def touch(self, ticket: _Ticket) -> None:
        if not ticket.new:
            self.members.add(ticket.ticket_id)

    def route(
        self, item: Incoming, origin: Origin, by_ref: Mapping[tuple[str, str, int], _Ticket]
    ) -> tuple[_Thread, _Ticket | None] | str:
        """The thread and ticket of a message (ticket None: shadowed), or why it is refused."""
        m = item.message
        if m.kind == "customer":
            thread = self.thread_for(
                m.tenant_id, origin.origin_id, m.author.external_id, m.author.name
            )
            if m.author.name and m.author.name != thread.author_name:
                thread.author_name = m.author.name
                thread.dirty = True
            if not origin.active:
                return thread, None
            if thread.active is not None:
                self.settle(thread.active, m.sent_at)
            home = self.covering(thread, m.sent_at)
            placement = place_message(
                m.sent_at, thread.active and thread.active.span(), home and home.span()
            )
            if placement == "closed":
                return thread, home
            if placement == "active":
                return thread, thread.active
            return thread, self.new_ticket(thread, origin, m.sent_at, m.text, m.message_id)
        if m.customer is not None:
            thread = self.threads.get((m.tenant_id, origin.origin_id, m.customer))
            if thread is None:
                return _Retry(
                    f"Unknown customer {m.customer!r} on origin {origin.ref!r} (yet) - at "
                    "`$.customer`"
                )
            if not origin.active:
                return thread, None
            if thread.active is not None:
                self.settle(thread.active, m.sent_at)
            home = self.covering(thread, m.sent_at)
            ticket = home or thread.active or thread.latest
            if ticket is None:
                return _Retry(f"Customer {m.customer!r} has no ticket yet - at `$.customer`")
            return thread, ticket
        name, value = (
            ("ticket_id", m.ticket_id) if m.ticket_id is not None else ("sequence", m.sequence)
        )
        ticket = by_ref.get((m.tenant_id, name, value))
        if ticket is None:
            return f"Unknown ticket {value} of tenant {m.tenant_id!r} - at `$.{name}`"
        if ticket.origin_id != origin.origin_id:
            return f"Ticket {value} is not on origin {origin.ref!r} - at `$.origin`"
        if not origin.active:
            return ticket.thread, None
        return ticket.thread, ticket

    def apply_message(self, item: Incoming, thread: _Thread, ticket: _Ticket | None) -> None:
        m = item.message
        if ticket is None:
            return
        # the thread's newest message bounds every message of its tickets: a message newer than
        # it is newer than all its ticket holds, and folds into the derived values as they are
        newest = thread.last_message_at is None or m.sent_at > thread.last_message_at
        if newest:
            thread.last_message_at = m.sent_at
            thread.dirty = True
        if not ticket.recompute:
            if newest and not item.deleted:
                ticket.add_derived(m, item.sentiment_score)
            else:
                ticket.recompute = True
        self.touch(ticket)
        if ticket.state != "closed":
            self.settle(ticket, m.sent_at)
        if ticket.state == "closed" or is_late(m.sent_at, ticket.state_changed_at):
            return
        to_state = next_state(ticket.state, StateEvent(trigger_for_kind(m.kind)))
        if to_state is not None:
            self.change_state(ticket, to_state, m.sent_at, "message", m.message_id)

    # -- writing ----------------------------------------------------------------------------------

    def write_threads_and_tickets(self) -> None:
        new_threads = [t for t in self.threads.values() if t.new]
        if new_threads:
            rows = self.conn.execute(
                """
                insert into raw.conversation_threads
                    (tenant_id, origin_id, author_external_id, author_name, last_message_at)
                select * from json_to_recordset(%s::json) as r(tenant_id text, origin_id bigint,
                    author_external_id text, author_name text, last_message_at timestamptz)
                returning thread_id, tenant_id, origin_id, author_external_id
                """,
                (
                    _records(
                        tenant_id=[t.tenant_id for t in new_threads],
                        origin_id=[t.origin_id for t in new_threads],
                        author_external_id=[t.author_external_id for t in new_threads],
                        author_name=[t.author_name for t in new_threads],
                        last_message_at=[t.last_message_at for t in new_threads],
                    ),
                ),
            ).fetchall()
            for thread_id, tenant_id, origin_id, author in rows:
                thread = self.threads[(tenant_id, origin_id, author)]
                thread.thread_id = thread_id
                thread.new = False
                thread.dirty = False
        new_tickets = [t for t in self.touched_new if t.new]
        if not new_tickets:
            return
        ids = [
            row[0]
            for row in self.conn.execute(
                "select nextval(pg_get_serial_sequence('raw.conversation_tickets', 'ticket_id')) "
                "from generate_series(1, %s)",
                (len(new_tickets),),
            ).fetchall()
        ]
        per_tenant = Counter(t.tenant_id for t in new_tickets)
        tenants = sorted(per_tenant)
        last = dict(
            self.conn.execute(
                """
                insert into raw.conversation_sequences (tenant_id, last)
                select * from unnest(%s::text[], %s::bigint[])
                on conflict (tenant_id) do update
                set last = conversation_sequences.last + excluded.last
                returning tenant_id, last
                """,
                (tenants, [per_tenant[t] for t in tenants]),
            ).fetchall()
        )
        next_sequence = {t: last[t] - per_tenant[t] + 1 for t in tenants}
        for ticket, ticket_id in zip(new_tickets, ids, strict=True):
            ticket.ticket_id = ticket_id
            ticket.sequence = next_sequence[ticket.tenant_id]
            next_sequence[ticket.tenant_id] += 1
        enrichment = self._enrichment(new_tickets)
        languages = self.engines.languages([t.first_text for t in new_tickets])
        with self.conn.cursor().copy(
            """
            copy raw.conversation_tickets (ticket_id, tenant_id, sequence, thread_id, origin_id,
                channel, author_external_id, state, state_changed_at, created_at, closed_at,
                solved_at, followup_until, last_customer_message_at, language, tags, priority,
                custom_fields, visible_message_count, first_customer_message_at,
                first_response_at, star_rating, sentiment_sum, sentiment_count, sentiment_score,
                sentiment_label)
            from stdin (format binary)
            """
        ) as copy:
            copy.set_types(_TICKET_COLUMN_TYPES)
            band = self.engines.neutral_band
            for ticket, language in zip(new_tickets, languages, strict=True):
                tags, priority, custom = enrichment.get(
                    (ticket.tenant_id, ticket.author_external_id), ([], None, {})
                )
                copy.write_row(
                    (
                        ticket.ticket_id,
                        ticket.tenant_id,
                        ticket.sequence,
                        ticket.thread.thread_id,
                        ticket.origin_id,
                        ticket.channel,
                        ticket.author_external_id,
                        ticket.state,
                        ticket.state_changed_at,
                        ticket.created_at,
                        ticket.closed_at,
                        ticket.solved_at,
                        ticket.followup_until,
                        ticket.last_customer_message_at,
                        language,
                        tags,
                        priority or "normal",
                        Jsonb(custom, dumps=_JSON.encode),
                        ticket.visible_message_count,
                        ticket.first_customer_message_at,
                        ticket.first_response_at,
                        ticket.star_rating,
                        ticket.sentiment_sum,
                        ticket.sentiment_count,
                        *ticket.sentiment(band),
                    )
                )
        for ticket in new_tickets:
            ticket.new = False
            ticket.dirty = False
            ticket.derived_dirty = False

    def _enrichment(self, tickets: Sequence[_Ticket]) -> dict[tuple[str, str], tuple]:
        keys = sorted({(t.tenant_id, t.author_external_id) for t in tickets})
        rows = self.conn.execute(
            """
            select e.tenant_id, e.author_external_id, e.tags, e.priority, e.custom_fields
            from control.enrichment_lists e
            join unnest(%s::text[], %s::text[]) as k(tenant_id, author)
              on e.tenant_id = k.tenant_id and e.author_external_id = k.author
            """,
            ([k[0] for k in keys], [k[1] for k in keys]),
        ).fetchall()
        return {(t, a): (tags, priority, custom) for t, a, tags, priority, custom in rows}

    def write_thread_updates(self) -> None:
        dirty = [t for t in self.threads.values() if t.dirty and not t.new]
        if not dirty:
            return
        self.conn.execute(
            """
            update raw.conversation_threads th
            set last_message_at = u.last_message_at, author_name = u.author_name
            from json_to_recordset(%s::json)
                as u(thread_id bigint, last_message_at timestamptz, author_name text)
            where th.thread_id = u.thread_id
            """,
            (
                _records(
                    thread_id=[t.thread_id for t in dirty],
                    last_message_at=[t.last_message_at for t in dirty],
                    author_name=[t.author_name for t in dirty],
                ),
            ),
        )
        for thread in dirty:
            thread.dirty = False

    def write_ticket_states(self) -> None:
        """One update for the existing tickets whose state or derived values moved (`d`: the
        derived values were kept in memory and are written too)."""
        dirty = [t for t in self.tickets.values() if t.dirty or t.derived_dirty]
        if not dirty:
            return
        band = self.engines.neutral_band
        derived = [t.derived_dirty and not t.recompute for t in dirty]
        sentiments = [t.sentiment(band) for t in dirty]
        kept = [
            "visible_message_count",
            "first_customer_message_at",
            "last_customer_message_at",
            "first_response_at",
            "star_rating",
            "sentiment_sum",
            "sentiment_count",
            "sentiment_score",
            "sentiment_label",
        ]
        states = ["ticket_id", "state", "state_changed_at", "closed_at", "solved_at"]
        values = {
            name: [getattr(t, name) for t in dirty]
            for name in [*states, "followup_until", *kept[:-2]]  # the sentiment: computed
        }
        values["sentiment_score"] = [score for score, _ in sentiments]
        values["sentiment_label"] = [label for _, label in sentiments]
        self.conn.execute(
            sql.SQL(
                """
                update raw.conversation_tickets t
                set state = u.state, state_changed_at = u.state_changed_at,
                    closed_at = u.closed_at, solved_at = u.solved_at,
                    followup_until = u.followup_until, {}, updated_at = now()
                from json_to_recordset(%s::json)
                    as u(ticket_id bigint, state text, state_changed_at timestamptz,
                         closed_at timestamptz, solved_at timestamptz,
                         followup_until timestamptz, d boolean,
                         visible_message_count integer, first_customer_message_at timestamptz,
                         last_customer_message_at timestamptz, first_response_at timestamptz,
                         star_rating smallint, sentiment_sum float8, sentiment_count integer,
                         sentiment_score float8, sentiment_label text)
                where t.ticket_id = u.ticket_id
                """
            ).format(
                sql.SQL(", ").join(
                    sql.SQL("{0} = case when u.d then u.{0} else t.{0} end").format(
                        sql.Identifier(name)
                    )
                    for name in kept
                )
            ),
            (_records(d=derived, **values),),
        )
        for ticket in dirty:
            if ticket.dirty:
                self.moved.add(ticket.ticket_id)
            ticket.dirty = False
            ticket.derived_dirty = False

    def write_changes(self) -> int:
        if not self.changes:
            return 0
        with self.conn.cursor().copy(
            "copy raw.ticket_state_changes "
            "(tenant_id, ticket_id, from_state, to_state, cause, event_id, changed_at) from stdin"
        ) as copy:
            for ticket, from_state, to_state, cause, event_id, at in self.changes:
                copy.write_row(
                    (ticket.tenant_id, ticket.ticket_id, from_state, to_state, cause, event_id, at)
                )
        count = len(self.changes)
        self.changes.clear()
        return count

    def finish(self, band: float) -> int:
        """Write states and the log, recompute derived properties and queue membership of every
        ticket the batch touched. Returns the number of state changes written."""
        self.write_threads_and_tickets()
        self.write_thread_updates()
        self.write_ticket_states()
        written = self.write_changes()
        recompute = self.touched | {t.ticket_id for t in self.tickets.values() if t.recompute}
        refresh_derived(self.conn, sorted(recompute), band)
        ids = self.touched | self.moved | self.members | {t.ticket_id for t in self.touched_new}
        refresh_membership(self.conn, sorted(ids))
        return written


def refresh_derived(conn: psycopg.Connection, ticket_ids: Sequence[int], band: float) -> None:
    """Recompute each ticket's derived properties from its stored messages (rule 16), so they are
    right whatever order the messages and their flags arrived in."""
    if not ticket_ids:
        return
    conn.execute(
        """
        with live as materialized (
            select m.ticket_id, m.message_id, m.kind, m.sent_at, m.rating, m.sentiment_score
            from raw.conversation_messages m
            where m.ticket_id = any(%(ids)s::bigint[]) and not m.deleted and not m.shadowed
        ), agg as (
            select ticket_id,
                   count(*) as visible,
                   min(sent_at) filter (where kind = 'customer') as first_customer,
                   max(sent_at) filter (where kind = 'customer') as last_customer,
                   avg(sentiment_score) filter (where kind = 'customer') as sentiment,
                   sum(sentiment_score) filter (where kind = 'customer') as sentiment_sum,
                   count(sentiment_score) filter (where kind = 'customer') as sentiment_count,
                   (array_agg(rating order by sent_at desc, message_id desc)
                       filter (where kind = 'customer' and rating is not null))[1] as rating
            from live group by ticket_id
        ), response as (
            select a.ticket_id, min(l.sent_at) as first_response
            from agg a join live l on l.ticket_id = a.ticket_id
            where l.kind in ('agent_reply', 'ai_message') and l.sent_at >= a.first_customer
            group by a.ticket_id
        )
        update raw.conversation_tickets t
        set visible_message_count = coalesce(a.visible, 0),
            first_customer_message_at = a.first_customer,
            last_customer_message_at = a.last_customer,
            first_response_at = r.first_response,
            star_rating = a.rating,
            sentiment_score = a.sentiment,
            sentiment_sum = coalesce(a.sentiment_sum, 0),
            sentiment_count = coalesce(a.sentiment_count, 0),
            sentiment_label = case
                when a.sentiment is null then null
                when a.sentiment >= %(band)s then 'positive'
                when a.sentiment <= -%(band)s then 'negative'
                else 'neutral' end,
            updated_at = now()
        from unnest(%(ids)s::bigint[]) as i(ticket_id)
        left join agg a on a.ticket_id = i.ticket_id
        left join response r on r.ticket_id = i.ticket_id
        where t.ticket_id = i.ticket_id
        """,
        {"ids": _ids(ticket_ids), "band": band},
    )


def _existing_message_ids(
    conn: psycopg.Connection, keys: Sequence[tuple[str, str]]
) -> set[tuple[str, str]]:
    if not keys:
        return set()
    rows = conn.execute(
        """
        select m.tenant_id, m.message_id from raw.conversation_messages m
        join json_to_recordset(%s::json) as k(tenant_id text, message_id text)
          on m.tenant_id = k.tenant_id and m.message_id = k.message_id
        """,
        (_records(tenant_id=[k[0] for k in keys], message_id=[k[1] for k in keys]),),
    ).fetchall()
    return {(t, m) for t, m in rows}


def _claim_event_ids(
    conn: psycopg.Connection, events: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str]]:
    """Record (tenant, event_id, type) in the ledger; returns the pairs that were new."""
    if not events:
        return set()
    rows = conn.execute(
        """
        insert into raw.conversation_event_ids (tenant_id, event_id, event_type)
        select * from unnest(%s::text[], %s::text[], %s::text[])
        on conflict do nothing
        returning tenant_id, event_id
        """,
        ([e[0] for e in events], [e[1] for e in events], [e[2] for e in events]),
    ).fetchall()
    return {(t, e) for t, e in rows}


def _insert_messages(
    conn: psycopg.Connection, rows: Sequence[tuple[Incoming, _Thread, _Ticket | None]]
) -> None:
    if not rows:
        return
    with conn.cursor().copy(
        """
        copy raw.conversation_messages (tenant_id, message_id, ticket_id, thread_id, origin_id,
            kind, author_external_id, author_name, text, attachments, rating, sentiment_score,
            sent_at, received_at, deleted, hidden, shadowed, hidden_changed_at, deleted_at)
        from stdin (format binary)
        """
    ) as copy:
        # binary: timestamps and numbers go as they are, neither formatted here nor parsed there
        copy.set_types(_MESSAGE_COLUMN_TYPES)
        for item, thread, ticket in rows:
            m = item.message
            copy.write_row(
                (
                    m.tenant_id,
                    m.message_id,
                    ticket.ticket_id if ticket is not None else None,
                    thread.thread_id,
                    thread.origin_id,
                    m.kind,
                    m.author.external_id,
                    m.author.name,
                    m.text,
                    Jsonb(m.attachments, dumps=_JSON.encode),
                    m.rating,
                    item.sentiment_score,
                    m.sent_at,
                    item.received_at,
                    item.deleted,
                    item.hidden,
                    ticket is None,
                    item.hidden_changed_at,
                    item.deleted_at,
                )
            )


_TICKET_COLUMN_TYPES = (
    *("int8", "text", "int8", "int8", "int8", "text", "text", "text"),
    *("timestamptz", "timestamptz", "timestamptz", "timestamptz", "timestamptz", "timestamptz"),
    *("text", "text[]", "text", "jsonb", "int4", "timestamptz", "timestamptz", "int2"),
    *("float8", "int4", "float8", "text"),
)
_MESSAGE_COLUMN_TYPES = (
    *("text", "text", "int8", "int8", "int8", "text", "text", "text", "text", "jsonb"),
    *("int2", "float8", "timestamptz", "timestamptz", "bool", "bool", "bool"),
    *("timestamptz", "timestamptz"),
)


def apply_messages(
    conn: psycopg.Connection,
    items: Sequence[Incoming | tuple[str, FlagEvent]],
    *,
    engines: Engines,
    default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES,
    tally: MessageTally | None = None,
) -> BatchResult:
    """Apply parsed bodies of queue `messages` in arrival order, in the caller's transaction.

    New messages go through origin, thread, ticket (find or create), the state machine, derived
    properties and queue membership; flag events set deleted / hidden. Duplicates (a stored
    message_id, an applied event_id) change nothing. Returns the refused keys with their reason
    (`rejected`) and flag events for messages not stored yet (`failed`: retried later).
    """
    tally = tally if tally is not None else MessageTally()
    result = BatchResult()
    tenants = {i.message.tenant_id if isinstance(i, Incoming) else i[1].tenant_id for i in items}
    if not items:
        return result
    session = _Session(conn, tenants, engines=engines, default_close_after=default_close_after)
    new = [i for i in items if isinstance(i, Incoming)]
    flags = [i for i in items if not isinstance(i, Incoming)]

    stored = _existing_message_ids(conn, [(i.message.tenant_id, i.message.message_id) for i in new])
    seen: set[tuple[str, str]] = set()
    fresh: list[tuple[Incoming, Origin]] = []
    for item in new:
        m = item.message
        problem = session.origin_problem(m.tenant_id, m.origin)
        if problem:
            result.rejected[item.key] = problem
            continue
        key = (m.tenant_id, m.message_id)
        if key in stored or key in seen:
            tally.duplicates += 1
            continue
        seen.add(key)
        fresh.append((item, session.origins[(m.tenant_id, m.origin)]))

    refs = {
        (i.message.tenant_id, i.message.ticket_id, i.message.sequence)
        for i, _ in fresh
        if i.message.ticket_id is not None or i.message.sequence is not None
    }
    by_ref = session.load_tickets_by_ref(refs)
    since: dict[tuple[str, int, str], datetime] = {}
    for item, origin in fresh:
        m = item.message
        author = m.thread_author
        if author:
            key3 = (m.tenant_id, origin.origin_id, author)
            since[key3] = min(m.sent_at, since.get(key3, m.sent_at))
    session.load_threads(keys=since, since=since)

    rows: list[tuple[Incoming, _Thread, _Ticket | None]] = []
    for item, origin in fresh:
        routed = session.route(item, origin, by_ref)
        if isinstance(routed, _Retry):
            result.failed[item.key] = str(routed)
            continue
        if isinstance(routed, str):
            result.rejected[item.key] = routed
            continue
        thread, ticket = routed
        session.apply_message(item, thread, ticket)
        rows.append((item, thread, ticket))
        tally.stored += 1
        tally.shadowed += ticket is None
    tally.tickets_created += len(session.touched_new)
    session.write_threads_and_tickets()
    _insert_messages(conn, rows)

    for key, flag in flags:
        if flag.tenant_id not in session.known_tenants:
            result.rejected[key] = (
                f"Unknown tenant {flag.tenant_id!r}: it has no origins - at `$.tenant_id`"
            )
    flags = [(key, flag) for key, flag in flags if key not in result.rejected]
    if flags:
        claimed = _claim_event_ids(
            conn, [(f.tenant_id, f.event_id, f.__struct_config__.tag) for _, f in flags]
        )
        pending = []
        for key, flag in flags:
            if (flag.tenant_id, flag.event_id) in claimed:
                claimed.discard((flag.tenant_id, flag.event_id))
                pending.append((key, flag))
            else:
                tally.duplicates += 1
        flagged, missing = _apply_flags(conn, [f for _, f in pending])
        for key, flag in pending:
            if (flag.tenant_id, flag.message_id) in missing:
                result.failed[key] = (
                    f"No message {flag.message_id!r} of tenant {flag.tenant_id!r} yet "
                    "- at `$.message_id`"
                )
        session.touched.update(flagged)
        tally.flags_applied += len(pending) - len(result.failed)
        if result.failed:
            # a failed flag is retried: its event id must not stay claimed
            conn.execute(
                """
                delete from raw.conversation_event_ids e
                using unnest(%s::text[], %s::text[]) as f(tenant_id, event_id)
                where e.tenant_id = f.tenant_id and e.event_id = f.event_id
                """,
                (
                    [f.tenant_id for k, f in pending if k in result.failed],
                    [f.event_id for k, f in pending if k in result.failed],
                ),
            )
    tally.state_changes += session.finish(engines.neutral_band)
    return result


def _apply_flags(
    conn: psycopg.Connection, flags: Sequence[FlagEvent]
) -> tuple[set[int], set[tuple[str, str]]]:
    """Fold flag events, in order, into the stored messages. Returns (tickets touched,
    (tenant, message_id) pairs not stored)."""
    if not flags:
        return set(), set()
    keys = sorted({(f.tenant_id, f.message_id) for f in flags})
    rows = conn.execute(
        """
        select m.tenant_id, m.message_id, m.ticket_id, m.deleted, m.hidden, m.hidden_changed_at,
               m.deleted_at
        from raw.conversation_messages m
        join unnest(%s::text[], %s::text[]) as k(tenant_id, message_id)
          on m.tenant_id = k.tenant_id and m.message_id = k.message_id
        for update of m
        """,
        ([k[0] for k in keys], [k[1] for k in keys]),
    ).fetchall()
    state = {(r[0], r[1]): list(r[2:]) for r in rows}
    missing = {k for k in keys if k not in state}
    for flag in flags:
        current = state.get((flag.tenant_id, flag.message_id))
        if current is None:
            continue
        if isinstance(flag, MessageRemoved):
            if not current[1]:
                current[1], current[4] = True, flag.occurred_at
        elif current[3] is None or flag.occurred_at >= current[3]:
            current[2], current[3] = isinstance(flag, MessageHidden), flag.occurred_at
    changed = sorted(state)
    conn.execute(
        """
        update raw.conversation_messages m
        set deleted = u.deleted, hidden = u.hidden, hidden_changed_at = u.hidden_changed_at,
            deleted_at = u.deleted_at
        from unnest(%s::text[], %s::text[], %s::boolean[], %s::boolean[], %s::timestamptz[],
                    %s::timestamptz[]) as u(tenant_id, message_id, deleted, hidden,
                                             hidden_changed_at, deleted_at)
        where m.tenant_id = u.tenant_id and m.message_id = u.message_id
        """,
        (
            [k[0] for k in changed],
            [k[1] for k in changed],
            [state[k][1] for k in changed],
            [state[k][2] for k in changed],
            [state[k][3] for k in changed],
            [state[k][4] for k in changed],
        ),
    )
    return {v[0] for v in state.values() if v[0] is not None}, missing


@dataclass
class PreparedMessages:
    """A batch of queue `messages` parsed, validated and scored: what needs no database."""

    items: list[Incoming | tuple[str, FlagEvent]]
    rejected: dict[str, str]


class MessageBatchApplier:
    """The `apply_batch` of the `messages` drain: validate each body (an invalid one is rejected
    with the reason, so it is dead-lettered), score customer texts, then apply the rest in one
    transaction. A database error propagates: `drain` retries the whole batch.

    `prepare` (validate and score) and `apply` (the transaction) are the drain's two stages
    (`drain(..., prepare_batch=applier.prepare, apply_batch=applier.apply)`), so one batch is
    parsed while the one before it is written; calling the applier does both."""

    def __init__(
        self,
        connection: ConnectionFactory,
        tally: MessageTally,
        *,
        engines: Engines,
        default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.connection = connection
        self.tally = tally
        self.engines = engines
        self.default_close_after = default_close_after
        self.clock = clock

    def prepare(self, messages: list[Message]) -> PreparedMessages:
        now = self.clock()
        rejected: dict[str, str] = {}
        parsed: list[tuple[str, ChannelMessage | FlagEvent]] = []
        for message in messages:
            try:
                body = parse_messages_body(message.body)
            except InvalidConversationInput as exc:
                rejected[message.receipt] = f"invalid message: {exc}"
                continue
            if isinstance(body, ChannelMessage):
                too_new = rejects_future(body.sent_at, now)
                if too_new:
                    rejected[message.receipt] = f"invalid message: {too_new}"
                    continue
            parsed.append((message.receipt, body))
        channel = [body for _, body in parsed if isinstance(body, ChannelMessage)]
        scores = iter(score_customer_texts(self.engines, channel))
        items: list[Incoming | tuple[str, FlagEvent]] = [
            Incoming(key, body, next(scores), now)
            if isinstance(body, ChannelMessage)
            else (key, body)
            for key, body in parsed
        ]
        return PreparedMessages(items, rejected)

    def apply(self, prepared: PreparedMessages) -> BatchOutcome:
        rejected = dict(prepared.rejected)
        if not prepared.items:
            return BatchOutcome(rejected=rejected)
        with self.connection() as conn:
            result = apply_messages(
                conn,
                prepared.items,
                engines=self.engines,
                default_close_after=self.default_close_after,
                tally=self.tally,
            )
        rejected.update({k: f"invalid message: {v}" for k, v in result.rejected.items()})
        failed = {k: f"not applicable yet: {v}" for k, v in result.failed.items()}
        return BatchOutcome(rejected=rejected, failed=failed)

    def __call__(self, messages: list[Message]) -> BatchOutcome:
        return self.apply(self.prepare(messages))


# --- the messages drain in worker processes -----------------------------------------------------

# A backlog at least this deep is applied in lanes (worker processes, tenants spread over them):
# a worker's start-up (a second or two) is repaid after about ten batches.
LANE_BACKLOG = 20_000


class _TenantOf(msgspec.Struct):
    tenant_id: Any = None


_TENANT_OF = msgspec.json.Decoder(_TenantOf)


def message_tenant(message: Message) -> str:
    """The lane key of a body of queue `messages` (decoded or its JSON text): its tenant (a body
    without one is rejected by whichever lane gets it)."""
    body = message.body
    if isinstance(body, bytes):
        try:
            tenant = _TENANT_OF.decode(body).tenant_id  # the other fields are skipped unread
        except msgspec.DecodeError:
            return ""
    else:
        tenant = body.get("tenant_id") if isinstance(body, dict) else None
    return tenant if isinstance(tenant, str) else ""


def lane_applier(
    database_url: str, home: str, default_close_after: int
) -> Callable[[list[Message]], tuple[BatchOutcome, MessageTally]]:
    """What a lane's worker process applies its parts with (built in the worker): the drain's
    prepare and apply stages one after the other, with the part's tally beside the outcome."""
    warehouse = WarehouseResource(database_url=database_url, home=home)
    engines = Engines.default()

    def apply(messages: list[Message]) -> tuple[BatchOutcome, MessageTally]:
        tally = MessageTally()
        applier = MessageBatchApplier(
            warehouse.connection, tally, engines=engines, default_close_after=default_close_after
        )
        return applier(messages), tally

    return apply


@contextmanager
def message_drain_stages(
    warehouse: WarehouseResource,
    tally: MessageTally,
    *,
    lanes: int,
    default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES,
) -> Iterator[tuple[Callable[[list[Message]], Any], Callable[[Any], BatchOutcome]]]:
    """The `(prepare_batch, apply_batch)` of the `messages` drain: in this process (`lanes` 1),
    or split by tenant over `lanes` worker processes (`resources.lanes`), which run while the
    block does and stop when it ends. Either way `tally` adds up what was applied."""
    if lanes <= 1:
        applier = MessageBatchApplier(
            warehouse.connection,
            tally,
            engines=Engines.default(),
            default_close_after=default_close_after,
        )
        yield applier.prepare, applier.apply
        return
    make_apply = functools.partial(
        lane_applier, warehouse.database_url, warehouse.home, default_close_after
    )
    with ProcessLanes(lanes, make_apply, message_tenant) as workers:

        def apply(parts: list[LanePart]) -> BatchOutcome:
            outcome, tallies = workers.collect(parts)
            for part_tally in tallies:
                tally.add(part_tally)
            return outcome

        yield workers.dispatch, apply


# --- origins: disable, enable and replay --------------------------------------------------------


def set_origin_active(
    conn: psycopg.Connection,
    name: str,
    active: bool,
    *,
    tenant_id: str | None = None,
    engines: Engines | None = None,
    default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES,
) -> tuple[Origin, int]:
    """Disable or enable an origin. Enabling replays its shadowed messages, oldest first, through
    the normal path in this transaction. Returns the origin and how many messages were replayed."""
    origin = find_origin(conn, name, tenant_id)
    lock_tenants(conn, [origin.tenant_id])
    row = conn.execute(
        sql.SQL(
            "update control.origins set active = %s, updated_at = now() where origin_id = %s "
            "returning {}"
        ).format(_columns(_ORIGIN_COLUMNS)),
        (active, origin.origin_id),
    ).fetchone()
    origin = Origin(*row)
    replayed = 0
    if active:
        replayed = replay_shadowed(
            conn,
            origin,
            engines=engines or Engines.default(),
            default_close_after=default_close_after,
        )
    return origin, replayed


def replay_shadowed(
    conn: psycopg.Connection,
    origin: Origin,
    *,
    engines: Engines,
    default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES,
) -> int:
    """Replay an (active) origin's shadowed messages through `apply_messages`, oldest first.

    Each stored row is taken out and applied again as the message it was (same id, text,
    received_at and flags), so it meets exactly the rules a live message meets.
    """
    rows = conn.execute(
        """
        delete from raw.conversation_messages m
        using raw.conversation_threads th
        where m.origin_id = %s and m.shadowed and th.thread_id = m.thread_id
        returning m.tenant_id, m.message_id, m.kind, m.author_external_id, m.author_name, m.text,
                  m.attachments, m.rating, m.sentiment_score, m.sent_at, m.received_at, m.deleted,
                  m.hidden, m.hidden_changed_at, m.deleted_at, th.author_external_id, m.thread_id
        """,
        (origin.origin_id,),
    ).fetchall()
    rows.sort(key=lambda r: (r[9], r[1]))
    items: list[Incoming] = []
    threads: dict[str, int] = {}
    for row in rows:
        (tenant, message_id, kind, author, author_name, text, attachments, rating, score) = row[:9]
        (sent_at, received_at, deleted, hidden, hidden_at, deleted_at, customer) = row[9:16]
        threads[message_id] = row[16]
        message = ChannelMessage(
            tenant_id=tenant,
            message_id=message_id,
            origin=origin.ref,
            author=_author(author, author_name),
            kind=kind,
            text=text,
            sent_at=sent_at,
            attachments=[_attachment_struct(a) for a in attachments],
            rating=rating,
            customer=None if kind == "customer" else customer,
        )
        items.append(
            Incoming(
                f"replay:{message_id}",
                message,
                score,
                received_at,
                deleted,
                hidden,
                hidden_at,
                deleted_at,
            )
        )
    refused: list[tuple[Incoming, _Thread, None]] = []
    for start in range(0, len(items), 2000):
        chunk = items[start : start + 2000]
        result = apply_messages(
            conn, chunk, engines=engines, default_close_after=default_close_after
        )
        # A reply older than every customer message of its thread has no ticket to join: it
        # stays shadowed in its thread rather than failing the whole replay.
        for item in chunk:
            if item.key in result.rejected or item.key in result.failed:
                thread = _Thread(
                    threads[item.message.message_id],
                    item.message.tenant_id,
                    origin.origin_id,
                    "",
                    None,
                )
                refused.append((item, thread, None))
    _insert_messages(conn, refused)
    return len(items) - len(refused)


def _author(external_id: str, name: str | None) -> Author:
    return Author(external_id=external_id, name=name)


def _attachment_struct(data: Mapping[str, Any]) -> Attachment:
    return Attachment(
        name=data["name"],
        url=data["url"],
        size=data.get("size"),
        content_type=data.get("content_type"),
    )


# --- applying queue `conversation_events` -------------------------------------------------------


_EVENT_TICKET_COLUMNS = (
    "ticket_id, tenant_id, sequence, state, state_changed_at, closed_at, solved_at, "
    "followup_until, last_customer_message_at, owner_agent, owner_group, priority, tags, topic, "
    "custom_fields, escalated_at, created_at, thread_id, origin_id, channel, author_external_id"
)


@dataclass(eq=False)
class _EventTicket(_Ticket):
    owner_agent: str | None = None
    owner_group: str | None = None
    priority: str = "normal"
    tags: list[str] = field(default_factory=list)
    topic: str | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)
    escalated_at: datetime | None = None
    props_dirty: bool = False


def apply_events(
    conn: psycopg.Connection,
    events: Sequence[tuple[str, ConversationEvent]],
    *,
    engines: Engines,
    default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES,
    tally: MessageTally | None = None,
) -> BatchResult:
    """Apply conversation events in arrival order, idempotently by (tenant_id, event_id), in the
    caller's transaction. Unknown tenants, tickets and queues are rejected with the reason."""
    tally = tally if tally is not None else MessageTally()
    result = BatchResult()
    if not events:
        return result
    session = _Session(
        conn,
        {e.tenant_id for _, e in events},
        engines=engines,
        default_close_after=default_close_after,
    )
    claimed = _claim_event_ids(
        conn,
        [
            (e.tenant_id, e.event_id, e.__struct_config__.tag)
            for _, e in events
            if e.tenant_id in session.known_tenants
        ],
    )
    todo = []
    for key, event in events:
        pair = (event.tenant_id, event.event_id)
        if event.tenant_id not in session.known_tenants:
            result.rejected[key] = (
                f"Unknown tenant {event.tenant_id!r}: it has no origins - at `$.tenant_id`"
            )
        elif pair in claimed:
            claimed.discard(pair)
            todo.append((key, event))
        else:
            tally.duplicates += 1
    tickets = _load_event_tickets(session, [e for _, e in todo if not isinstance(e, QueueChanged)])
    queues = {
        (t, n): q
        for q, t, n in conn.execute(
            "select queue_id, tenant_id, name from control.work_queues where tenant_id = any(%s)",
            (session.tenants,),
        )
    }
    reevaluate: dict[str, set[int]] = defaultdict(set)
    for key, event in todo:
        if isinstance(event, QueueChanged):
            queue_id = queues.get((event.tenant_id, event.queue))
            if queue_id is None:
                result.rejected[key] = (
                    f"Unknown work queue {event.queue!r} of tenant {event.tenant_id!r} "
                    "- at `$.queue`"
                )
                continue
            reevaluate[event.tenant_id].add(queue_id)
            tally.events_applied += 1
            continue
        name, value = (
            ("ticket_id", event.ticket_id)
            if event.ticket_id is not None
            else ("sequence", event.sequence)
        )
        ticket = tickets.get((event.tenant_id, name, value))
        if ticket is None:
            result.rejected[key] = (
                f"Unknown ticket {value} of tenant {event.tenant_id!r} - at `$.{name}`"
            )
            continue
        if _apply_event(session, ticket, event):
            tally.events_applied += 1
        else:
            tally.events_without_effect += 1
    if result.rejected:
        # a rejected event was not applied: forget its id, so a corrected resend is not a duplicate
        bad = [(e.tenant_id, e.event_id) for k, e in todo if k in result.rejected]
        conn.execute(
            """
            delete from raw.conversation_event_ids e
            using unnest(%s::text[], %s::text[]) as b(tenant_id, event_id)
            where e.tenant_id = b.tenant_id and e.event_id = b.event_id
            """,
            ([b[0] for b in bad], [b[1] for b in bad]),
        )
    _write_ticket_properties(conn, [t for t in tickets.values() if t.props_dirty])
    for ticket in tickets.values():
        if ticket.props_dirty:
            session.touched.add(ticket.ticket_id)
    tally.state_changes += session.finish(engines.neutral_band)
    for tenant_id, queue_ids in reevaluate.items():
        reevaluate_tenant(conn, tenant_id, sorted(queue_ids))
    return result


def _load_event_tickets(
    session: _Session, events: Sequence[ConversationEvent]
) -> dict[tuple[str, str, int], _EventTicket]:
    if not events:
        return {}
    rows = session.conn.execute(
        sql.SQL(
            """
            select {} from raw.conversation_tickets t
            join unnest(%s::text[], %s::bigint[], %s::bigint[]) as r(tenant_id, id, seq)
              on t.tenant_id = r.tenant_id and (t.ticket_id = r.id or t.sequence = r.seq)
            for update of t
            """
        ).format(_columns(_EVENT_TICKET_COLUMNS, "t")),
        (
            [e.tenant_id for e in events],
            [e.ticket_id for e in events],
            [e.sequence for e in events],
        ),
    ).fetchall()
    session.load_threads(thread_ids=[row[17] for row in rows])
    found: dict[tuple[str, str, int], _EventTicket] = {}
    for row in rows:
        if row[0] in session.tickets and isinstance(session.tickets[row[0]], _EventTicket):
            ticket = session.tickets[row[0]]
        else:
            thread = session.threads_by_id[row[17]]
            ticket = _EventTicket(
                ticket_id=row[0],
                tenant_id=row[1],
                sequence=row[2],
                thread=thread,
                origin_id=row[18],
                channel=row[19],
                author_external_id=row[20],
                state=row[3],
                state_changed_at=row[4],
                created_at=row[16],
                closed_at=row[5],
                solved_at=row[6],
                followup_until=row[7],
                last_customer_message_at=row[8],
                owner_agent=row[9],
                owner_group=row[10],
                priority=row[11],
                tags=list(row[12] or []),
                topic=row[13],
                custom_fields=dict(row[14] or {}),
                escalated_at=row[15],
            )
            session.tickets[ticket.ticket_id] = ticket
            if thread.latest is not None and thread.latest.ticket_id == ticket.ticket_id:
                thread.latest = ticket
        found[(ticket.tenant_id, "ticket_id", ticket.ticket_id)] = ticket
        found[(ticket.tenant_id, "sequence", ticket.sequence)] = ticket
    return found


def _apply_event(session: _Session, ticket: _EventTicket, event: ConversationEvent) -> bool:
    """Apply one ticket event; False when it has no effect (closed ticket, late, no change)."""
    if ticket.state != "closed":
        session.settle(ticket, event.occurred_at)
    if ticket.state == "closed":
        return False  # closed is final (rule 6)
    if isinstance(event, SetState):
        if is_late(event.occurred_at, ticket.state_changed_at):
            return False
        if event.state == "followup" and ticket.state == "followup":
            if event.until == ticket.followup_until:
                return False
            ticket.followup_until = event.until
            ticket.dirty = True
            return True
        to_state = next_state(ticket.state, StateEvent("set_state", event.state))
        if to_state is None:
            return False
        session.change_state(
            ticket, to_state, event.occurred_at, event.cause, event.event_id, until=event.until
        )
        return True
    before = (
        ticket.owner_agent,
        ticket.owner_group,
        ticket.priority,
        list(ticket.tags),
        ticket.topic,
        dict(ticket.custom_fields),
    )
    if isinstance(event, Assign):
        if event.agent is not UNSET:
            ticket.owner_agent = event.agent
        if event.group is not UNSET:
            ticket.owner_group = event.group
    elif isinstance(event, SetMetadata):
        if event.tags is not UNSET:
            ticket.tags = list(dict.fromkeys(event.tags))
        if event.topic is not UNSET:
            ticket.topic = event.topic
        if event.custom_fields is not UNSET:
            for name, value in event.custom_fields.items():
                if value is None:
                    ticket.custom_fields.pop(name, None)
                else:
                    ticket.custom_fields[name] = value
    elif isinstance(event, Escalate):
        ticket.priority = escalated_priority(ticket.priority, event.priority)
        if event.group is not UNSET:
            ticket.owner_group = event.group
        ticket.escalated_at = event.occurred_at
    after = (
        ticket.owner_agent,
        ticket.owner_group,
        ticket.priority,
        ticket.tags,
        ticket.topic,
        ticket.custom_fields,
    )
    changed = before != after or isinstance(event, Escalate)
    ticket.props_dirty = ticket.props_dirty or changed
    return changed


def _write_ticket_properties(conn: psycopg.Connection, tickets: Sequence[_EventTicket]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            """
            update raw.conversation_tickets
            set owner_agent = %s, owner_group = %s, priority = %s, tags = %s, topic = %s,
                custom_fields = %s, escalated_at = %s, updated_at = now()
            where ticket_id = %s
            """,
            [
                (
                    t.owner_agent,
                    t.owner_group,
                    t.priority,
                    t.tags,
                    t.topic,
                    Jsonb(t.custom_fields),
                    t.escalated_at,
                    t.ticket_id,
                )
                for t in tickets
            ],
        )


def event_batch_applier(
    connection: ConnectionFactory,
    tally: MessageTally,
    *,
    engines: Engines,
    default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES,
) -> Callable[[list[Message]], BatchOutcome]:
    """The `apply_batch` of the `conversation_events` drain."""

    def apply(messages: list[Message]) -> BatchOutcome:
        rejected: dict[str, str] = {}
        events: list[tuple[str, ConversationEvent]] = []
        for message in messages:
            try:
                events.append((message.receipt, parse_event_body(message.body)))
            except InvalidConversationInput as exc:
                rejected[message.receipt] = f"invalid conversation event: {exc}"
        if events:
            with connection() as conn:
                result = apply_events(
                    conn,
                    events,
                    engines=engines,
                    default_close_after=default_close_after,
                    tally=tally,
                )
            rejected.update(
                {k: f"invalid conversation event: {v}" for k, v in result.rejected.items()}
            )
        return BatchOutcome(rejected=rejected)

    return apply


# --- the closure and follow-up sweep ------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    closed: int
    followed_up: int


def sweep(
    conn: psycopg.Connection, now: datetime, default_close_after: int = DEFAULT_CLOSE_AFTER_MINUTES
) -> SweepResult:
    """Close every `solved`/`pending` ticket whose closure period has passed by `now` and move
    every `followup` ticket whose `until` has passed to `working`, set-based.

    A change takes effect at its due time (closed_at, state_changed_at and the log's changed_at
    are the due time, not `now`), the same moment the drains use (`_Session.settle`), so the
    outcome never depends on how late the sweep runs.
    """
    overrides = dict(
        conn.execute(
            "select tenant_id, close_after_minutes from control.conversation_settings "
            "where close_after_minutes is not null"
        ).fetchall()
    )
    shortest = min([default_close_after, *overrides.values()])
    params = {
        "now": now,
        "default": default_close_after,
        "shortest": shortest,
        "closable": list(CLOSABLE_STATES),
    }
    tenants = [
        row[0]
        for row in conn.execute(
            """
            select distinct tenant_id from raw.conversation_tickets
            where (state = any(%(closable)s)
                   and state_changed_at <= %(now)s - make_interval(mins => %(shortest)s))
               or (state = 'followup' and followup_until <= %(now)s)
            """,
            params,
        )
    ]
    if not tenants:
        return SweepResult(0, 0)
    lock_tenants(conn, tenants)
    params["tenants"] = tenants
    closed = conn.execute(
        """
        with due as (
            select t.ticket_id, t.state as from_state,
                   t.state_changed_at
                   + make_interval(mins => coalesce(s.close_after_minutes, %(default)s)) as due_at
            from raw.conversation_tickets t
            left join control.conversation_settings s on s.tenant_id = t.tenant_id
            where t.tenant_id = any(%(tenants)s) and t.state = any(%(closable)s)
              and t.state_changed_at <= %(now)s - make_interval(mins => %(shortest)s)
        ), closed as (
            update raw.conversation_tickets t
            set state = 'closed', closed_at = due.due_at, state_changed_at = due.due_at,
                followup_until = null, updated_at = now()
            from due
            where t.ticket_id = due.ticket_id and due.due_at <= %(now)s
            returning t.ticket_id, t.tenant_id, due.from_state, due.due_at
        ), logged as (
            insert into raw.ticket_state_changes
                (tenant_id, ticket_id, from_state, to_state, cause, changed_at)
            select tenant_id, ticket_id, from_state, 'closed', 'schedule', due_at from closed
        ), left_queues as (
            delete from raw.work_queue_members m using closed c
            where m.ticket_id = c.ticket_id
            returning m.tenant_id, m.queue_id, m.state
        ), counted as (
            update analytics.queue_counters q
            set ticket_count = q.ticket_count - g.n
            from (select queue_id, state, count(*) as n from left_queues group by 1, 2) as g
            where q.queue_id = g.queue_id and q.state = g.state
        )
        select count(*) from closed
        """,
        params,
    ).fetchone()[0]
    woken = conn.execute(
        """
        with woken as (
            update raw.conversation_tickets t
            set state = 'working', state_changed_at = t.followup_until, followup_until = null,
                updated_at = now()
            where t.tenant_id = any(%(tenants)s) and t.state = 'followup'
              and t.followup_until <= %(now)s
            returning t.ticket_id, t.tenant_id, t.state_changed_at
        ), logged as (
            insert into raw.ticket_state_changes
                (tenant_id, ticket_id, from_state, to_state, cause, changed_at)
            select tenant_id, ticket_id, 'followup', 'working', 'schedule', state_changed_at
            from woken
        )
        select ticket_id from woken
        """,
        params,
    ).fetchall()
    woken_ids = [row[0] for row in woken]
    for start in range(0, len(woken_ids), 5000):
        refresh_membership(conn, woken_ids[start : start + 5000])
    return SweepResult(closed=closed, followed_up=len(woken_ids))


# --- daily figures ------------------------------------------------------------------------------


def compute_conversation_daily(conn: psycopg.Connection, day: date) -> int:
    """Replace analytics.conversation_daily for one UTC day; returns the rows written.

    Per tenant and origin: tickets created, live customer messages and agent replies sent,
    first-response time p50/p90 of tickets first answered that day, tickets solved, closed and
    reopened (solved -> working) that day.
    """
    start = datetime.combine(day, time(0), tzinfo=UTC)
    params = {"day": day, "start": start, "end": start + timedelta(days=1)}
    conn.execute("delete from analytics.conversation_daily where day = %(day)s", params)
    cur = conn.execute(
        """
        with facts as (
            select tenant_id, origin_id, 1 as new_ticket, 0 as customer, 0 as reply,
                   null::float8 as response, 0 as solved, 0 as closed, 0 as reopened
            from raw.conversation_tickets
            where created_at >= %(start)s and created_at < %(end)s
            union all
            select tenant_id, origin_id, 0, (kind = 'customer')::int, (kind = 'agent_reply')::int,
                   null, 0, 0, 0
            from raw.conversation_messages
            where sent_at >= %(start)s and sent_at < %(end)s and not shadowed and not deleted
              and kind in ('customer', 'agent_reply')
            union all
            select tenant_id, origin_id, 0, 0, 0,
                   extract(epoch from first_response_at - first_customer_message_at), 0, 0, 0
            from raw.conversation_tickets
            where first_response_at >= %(start)s and first_response_at < %(end)s
            union all
            select c.tenant_id, t.origin_id, 0, 0, 0, null,
                   (c.to_state = 'solved')::int, (c.to_state = 'closed')::int,
                   (c.from_state = 'solved' and c.to_state = 'working')::int
            from raw.ticket_state_changes c
            join raw.conversation_tickets t on t.ticket_id = c.ticket_id
            where c.changed_at >= %(start)s and c.changed_at < %(end)s
        )
        insert into analytics.conversation_daily
            (day, tenant_id, origin_id, origin_name, channel, new_tickets, customer_messages,
             agent_replies, first_response_p50_seconds, first_response_p90_seconds, solved,
             closed, reopened)
        select %(day)s, f.tenant_id, f.origin_id, o.name, o.channel, sum(new_ticket),
               sum(customer), sum(reply),
               percentile_cont(0.5) within group (order by response),
               percentile_cont(0.9) within group (order by response),
               sum(solved), sum(closed), sum(reopened)
        from facts f join control.origins o on o.origin_id = f.origin_id
        group by f.tenant_id, f.origin_id, o.name, o.channel
        """,
        params,
    )
    return cur.rowcount


# --- reads for the CLI --------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketView:
    ticket: dict[str, Any]
    messages: list[dict[str, Any]]
    state_changes: list[dict[str, Any]]
    queues: list[str]


def _dicts(cur: psycopg.Cursor) -> list[dict[str, Any]]:
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def show_ticket(conn: psycopg.Connection, tenant_id: str, sequence: int) -> TicketView | None:
    """A ticket with its messages (in thread order), its state changes and its queues."""
    tickets = _dicts(
        conn.execute(
            """
            select t.*, o.name as origin_name, th.author_name
            from raw.conversation_tickets t
            join control.origins o on o.origin_id = t.origin_id
            join raw.conversation_threads th on th.thread_id = t.thread_id
            where t.tenant_id = %s and t.sequence = %s
            """,
            (tenant_id, sequence),
        )
    )
    if not tickets:
        return None
    ticket = tickets[0]
    messages = _dicts(
        conn.execute(
            """
            select message_id, kind, author_external_id, author_name, text, attachments, rating,
                   sent_at, deleted, hidden
            from raw.conversation_messages
            where tenant_id = %s and ticket_id = %s order by sent_at, message_id
            """,
            (tenant_id, ticket["ticket_id"]),
        )
    )
    changes = _dicts(
        conn.execute(
            """
            select from_state, to_state, cause, event_id, changed_at
            from raw.ticket_state_changes
            where tenant_id = %s and ticket_id = %s order by change_id
            """,
            (tenant_id, ticket["ticket_id"]),
        )
    )
    queues = [
        row[0]
        for row in conn.execute(
            """
            select q.name from raw.work_queue_members m
            join control.work_queues q on q.queue_id = m.queue_id
            where m.tenant_id = %s and m.ticket_id = %s order by q.priority desc, q.name
            """,
            (tenant_id, ticket["ticket_id"]),
        )
    ]
    return TicketView(ticket, messages, changes, queues)


def queue_counts(conn: psycopg.Connection, tenant_id: str) -> list[tuple[str, int, dict[str, int]]]:
    """(queue name, priority, {state: tickets}) for each work queue of a tenant, in agent order."""
    rows = conn.execute(
        """
        select q.name, q.priority, c.state, c.ticket_count
        from control.work_queues q
        left join analytics.queue_counters c on c.queue_id = q.queue_id and c.ticket_count > 0
        where q.tenant_id = %s
        order by q.priority desc, q.name, c.state
        """,
        (tenant_id,),
    ).fetchall()
    result: dict[str, tuple[int, dict[str, int]]] = {}
    for name, priority, state, count in rows:
        counts = result.setdefault(name, (priority, {}))[1]
        if state is not None:
            counts[state] = count
    return [(name, priority, counts) for name, (priority, counts) in result.items()]


def search_messages(
    conn: psycopg.Connection, tenant_id: str, words: str, limit: int = 20
) -> list[dict[str, Any]]:
    """Messages of a tenant matching `words` (web-search syntax: quotes, OR, -word), best first.
    Shadowed and removed messages are not searched."""
    return _dicts(
        conn.execute(
            """
            select t.sequence, m.message_id, m.kind, m.author_external_id, m.sent_at, m.hidden,
                   ts_headline('simple', m.text, q, 'MaxWords=20, MinWords=8') as excerpt
            from raw.conversation_messages m
            join raw.conversation_tickets t on t.ticket_id = m.ticket_id,
                 websearch_to_tsquery('simple', %s) as q
            where m.tenant_id = %s and m.search @@ q and not m.shadowed and not m.deleted
            order by ts_rank(m.search, q) desc, m.sent_at desc
            limit %s
            """,
            (words, tenant_id, limit),
        )
    )


# --- reads for other domains (the feedback source kind `conversations`) ------------------------


@dataclass(frozen=True)
class CustomerMessage:
    """A live customer message as other domains read it."""

    message_id: str
    origin_name: str
    channel: str
    author_external_id: str
    author_name: str | None
    text: str
    rating: int | None
    sent_at: datetime
    sequence: int | None  # its ticket's sequence
    attachments: int


def customer_messages(
    conn: psycopg.Connection,
    tenant_id: str,
    *,
    origins: Sequence[str] = (),
    channels: Sequence[str] = (),
    after: tuple[datetime, str] | None = None,
    limit: int = 5000,
) -> list[CustomerMessage]:
    """A page of a tenant's customer messages that are neither shadowed, removed nor hidden, in
    (sent_at, message_id) order after the key `after`; only of the origins named and the
    channels given, when given. Page with the last message's (sent_at, message_id)."""
    rows = conn.execute(
        """
        select m.message_id, o.name, o.channel, m.author_external_id, m.author_name, m.text,
               m.rating, m.sent_at, t.sequence, jsonb_array_length(m.attachments)
        from raw.conversation_messages m
        join control.origins o on o.origin_id = m.origin_id
        left join raw.conversation_tickets t on t.ticket_id = m.ticket_id
        where m.tenant_id = %(tenant)s and m.kind = 'customer'
          and not m.shadowed and not m.deleted and not m.hidden
          and (cardinality(%(origins)s::text[]) = 0 or o.name = any(%(origins)s))
          and (cardinality(%(channels)s::text[]) = 0 or o.channel = any(%(channels)s))
          and (%(after_at)s::timestamptz is null
               or (m.sent_at, m.message_id) > (%(after_at)s, %(after_id)s))
        order by m.sent_at, m.message_id
        limit %(limit)s
        """,
        {
            "tenant": tenant_id,
            "origins": list(origins),
            "channels": list(channels),
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    ).fetchall()
    return [CustomerMessage(*row) for row in rows]
