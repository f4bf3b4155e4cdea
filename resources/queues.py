"""Durable message queues: one interface, two backends, and the drain loop every consumer uses.

`postgres` (default) keeps messages in `control.queue_messages` of the warehouse and hands them
out with `FOR UPDATE SKIP LOCKED`; `sqs` (production) uses Amazon SQS with a redrive policy to a
dead-letter queue (see `resources/sqs.py`). Both give the same semantics:

- a received message is invisible to other consumers until its visibility timeout passes;
- a consumer that dies without acknowledging loses nothing: the message comes back;
- every receive counts; after `max_receives` (5) the message moves to the dead-letter queue with
  its last error;
- `retry_later` hides a message for a growing delay (capped at 300 s);
- each message carries a `dedup_id`: the idempotency key its producer declares
  (`send(..., dedup_key=...)`), or the hash of its canonical JSON when it has none; a message whose
  id was acknowledged before arrives flagged `previously_acked`, so the consumer can skip it
  (on every queue but those of `QUEUES_WITHOUT_LEDGER`, whose consumers keep keys of their own).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import dagster as dg
import msgspec
from psycopg.types.json import Jsonb, set_json_loads

from resources.messages import DedupKey
from resources.payloads import PayloadError, encode_message
from resources.warehouse import WarehouseResource

log = logging.getLogger(__name__)

MAX_RECEIVES = 5
MAX_RETRY_DELAY_SECONDS = 300
# Providers and producers re-deliver within hours; two weeks of acknowledged ids is ample.
ACK_LEDGER_DAYS = 14
QUEUE_NAMES = (
    "activities",
    "activity_deletes",
    "email_sent",
    "email_events",
    "feedback",
    "messages",
    "conversation_events",
)
# Queues whose consumers keep idempotency keys of their own and never look at `previously_acked`
# (conversations: a message is stored once per (tenant, message_id), an event's id is claimed in
# raw.conversation_event_ids). Their acknowledged ids are neither written to the ledger nor looked
# up there on receive: that was a third of what the queue cost per message.
QUEUES_WITHOUT_LEDGER = frozenset({"messages", "conversation_events"})
# Drain runs are tagged with their queue: one at a time per queue (sensors, run coordinator).
QUEUE_TAG = "supportflow/queue"


class QueueError(RuntimeError):
    """A queue operation failed or was given something it cannot send."""


def validate_queue_name(queue: str) -> str:
    """Queue names are the fixed ones, plus `email_events.<pod>`."""
    base, _, pod = queue.partition(".")
    if queue in QUEUE_NAMES or (base == "email_events" and pod and pod.replace("-", "").isalnum()):
        return queue
    raise QueueError(
        f"unknown queue {queue!r}: expected one of {', '.join(QUEUE_NAMES)} or email_events.<pod>"
    )


def keeps_ledger(queue: str) -> bool:
    """Whether the queue's acknowledged ids go to the ledger (`control.queue_acks`)."""
    return queue not in QUEUES_WITHOUT_LEDGER


def dedup_id_for(body: dict[str, Any], dedup_key: DedupKey | None = None) -> str:
    """The message's idempotency id: the producer's key of it, or (no key, or no usable id in
    the body) the hash of its canonical JSON."""
    key = dedup_key(body) if dedup_key is not None else None
    if key:
        return key
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def encode_body(body: dict[str, Any], dedup_id: str) -> str:
    """The body as both backends store it (compact JSON), or QueueError when no backend can take
    it: content PostgreSQL jsonb cannot hold (NUL, lone surrogates, NaN/Infinity), or over
    `resources.payloads.MAX_MESSAGE_BYTES` (256 KiB, the SQS limit) with its idempotency id."""
    try:
        return encode_message(body, dedup_id)
    except PayloadError as exc:
        raise QueueError(f"message {dedup_id}: {exc}") from None


def retry_delay_seconds(receive_count: int, base_seconds: float = 10.0) -> float:
    """Growing delay for the n-th failed receive: base, 2x base, 4x base ... capped at 300 s."""
    return min(float(MAX_RETRY_DELAY_SECONDS), base_seconds * 2 ** max(receive_count - 1, 0))


_JSON_DECODER = msgspec.json.Decoder()
# The receipts of postgres messages as one array literal: {<message_id>:<lease uuid>,...}
_RECEIPTS = re.compile(r"\{\d+:[0-9a-f-]{36}(?:,\d+:[0-9a-f-]{36})*\}")


def _loads_json(data: bytes | str) -> Any:
    """A received body: msgspec's decoder (several times faster than `json` on batches of
    thousands), or `json` for what msgspec refuses and jsonb holds (numbers beyond a double)."""
    try:
        return _JSON_DECODER.decode(data)
    except msgspec.DecodeError:
        return json.loads(data)


@dataclass(frozen=True)
class Message:
    queue: str
    # the JSON object; its JSON text as bytes when received with `raw_bodies` (a consumer that
    # decodes straight into its own types spares the dict in between)
    body: Any
    dedup_id: str
    receive_count: int
    receipt: str
    previously_acked: bool = False
    enqueued_at: datetime | None = None


@dataclass(frozen=True)
class QueueStats:
    queue: str
    visible: int
    in_flight: int
    delayed: int
    dead: int


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    body: dict[str, Any]
    dedup_id: str
    receive_count: int
    error: str
    dead_lettered_at: datetime | None = None


def report_redriven(
    letter: DeadLetter, on_dead_letter: Callable[[DeadLetter], None] | None
) -> None:
    """A message its consumer never acknowledged went to the dead-letter queue on receive."""
    log.error(
        "queue %s: message %s moved to the dead-letter queue: %s",
        letter.queue,
        letter.dedup_id,
        letter.error,
    )
    if on_dead_letter is not None:
        on_dead_letter(letter)


class QueueResource(dg.ConfigurableResource):
    """The queue interface. `PostgresQueues` and `SqsQueues` implement it."""

    max_receives: int = MAX_RECEIVES

    @abstractmethod
    def send(
        self,
        queue: str,
        bodies: Sequence[dict[str, Any]],
        delay_seconds: float = 0,
        *,
        dedup_key: DedupKey | None = None,
    ) -> int:
        """Enqueue each body (a JSON object); returns how many were sent. `dedup_key` is the
        producer's idempotency key of a body (see `dedup_id_for`)."""

    @abstractmethod
    def receive(
        self,
        queue: str,
        max_messages: int = 10,
        visibility_timeout: float = 60.0,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        *,
        raw_bodies: bool = False,
    ) -> list[Message]:
        """Up to `max_messages` visible messages, hidden from others for `visibility_timeout`.
        A message back after `max_receives` receives (its consumer kept dying) is moved to the
        dead-letter queue here instead, and reported to `on_dead_letter` (`drain` alerts).
        `raw_bodies`: each body as its JSON text (bytes), not decoded."""

    @abstractmethod
    def ack(self, messages: Sequence[Message]) -> int:
        """Delete messages whose effect is committed and remember their ids."""

    @abstractmethod
    def retry_later(self, message: Message, delay_seconds: float, error: str) -> bool:
        """Hide the message for `delay_seconds` (capped at 300); dead-letter it instead when it
        has used its receives. True when it was dead-lettered."""

    @abstractmethod
    def dead_letter(self, message: Message, error: str) -> None:
        """Move the message to the dead-letter queue now, with the error."""

    @abstractmethod
    def depth(self, queue: str) -> int:
        """Messages visible now (cheap: what a sensor looks at)."""

    @abstractmethod
    def stats(self) -> list[QueueStats]:
        """Visible, in flight, delayed and dead messages per known queue."""

    @abstractmethod
    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters of a queue."""


class PostgresQueues(QueueResource):
    """Queues as tables in the warehouse (`control.queue_*`)."""

    warehouse: WarehouseResource

    def _pool(self) -> WarehouseResource:
        # the warehouse's pooled connections, bounded by its pool timeout
        return self.warehouse

    def send(
        self,
        queue: str,
        bodies: Sequence[dict[str, Any]],
        delay_seconds: float = 0,
        *,
        dedup_key: DedupKey | None = None,
    ) -> int:
        validate_queue_name(queue)
        rows = []
        for body in bodies:
            if not isinstance(body, dict):
                raise QueueError(f"a message must be a JSON object, not {type(body).__name__}")
            dedup_id = dedup_id_for(body, dedup_key)
            text = encode_body(body, dedup_id)
            rows.append((queue, dedup_id, Jsonb(body, dumps=lambda _, text=text: text)))
        if not rows:
            return 0
        with self._pool().connection() as conn, conn.cursor() as cur:
            if delay_seconds:
                cur.executemany(
                    "insert into control.queue_messages (queue, dedup_id, body, visible_at) "
                    "values (%s, %s, %s, now() + make_interval(secs => %s))",
                    [(*row, float(delay_seconds)) for row in rows],
                )
            else:
                with cur.copy(
                    "copy control.queue_messages (queue, dedup_id, body) from stdin"
                ) as copy:
                    for row in rows:
                        copy.write_row(row)
        return len(rows)

    # One statement: pick, dead-letter the exhausted among the picked, lease the rest.
    _RECEIVE_SQL = """
        with picked as (
            select message_id, receive_count from control.queue_messages
            where queue = %(queue)s and visible_at <= now()
            order by visible_at, message_id
            limit %(limit)s
            for update skip locked
        ), exhausted as (
            delete from control.queue_messages m
            using picked
            where m.message_id = picked.message_id and picked.receive_count >= %(max)s
            returning m.*
        ), dead as (
            insert into control.queue_dead_letters
                (message_id, queue, dedup_id, body, enqueued_at, receive_count, error)
            select message_id, queue, dedup_id, body, enqueued_at, receive_count,
                   'received ' || receive_count || ' times without acknowledgement'
                   || coalesce('; last error: ' || last_error, '')
            from exhausted
            on conflict (message_id) do nothing
        ), lease as (
            -- one token per receive: the message id beside it makes each receipt unique
            select gen_random_uuid() as token
        ), updated as (
            update control.queue_messages m
            set receive_count = m.receive_count + 1,
                visible_at = now() + make_interval(secs => %(timeout)s),
                lease_token = lease.token
            from picked, lease
            where m.message_id = picked.message_id and picked.receive_count < %(max)s
            returning m.message_id, m.message_id || ':' || m.lease_token, m.dedup_id, m.body,
                      m.receive_count, m.enqueued_at,
                      %(ledger)s and exists (select 1 from control.queue_acks a
                              where a.queue = m.queue and a.dedup_id = m.dedup_id)
        )
        select e.moved, u.*
        from (
            select coalesce(jsonb_agg(jsonb_build_object(
                'dedup_id', dedup_id, 'receive_count', receive_count,
                'error', 'received ' || receive_count || ' times without acknowledgement'
                         || coalesce('; last error: ' || last_error, ''))), '[]') as moved
            from exhausted
        ) e left join updated u on true
        """

    def receive(
        self,
        queue: str,
        max_messages: int = 10,
        visibility_timeout: float = 60.0,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        *,
        raw_bodies: bool = False,
    ) -> list[Message]:
        params = {
            "queue": queue,
            "limit": max_messages,
            "timeout": float(visibility_timeout),
            "max": self.max_receives,
            "ledger": keeps_ledger(queue),
        }
        # A message visible again after using all its receives was never acknowledged: its
        # consumer died each time. It goes to the dead-letter table, as SQS redrive does. Only
        # the picked rows are looked at, so a receive costs the batch, not the whole queue; a
        # batch that was all exhausted messages is followed by another pick.
        rows: list = []
        moved: list[dict[str, Any]] = [{}]
        while moved and not rows:
            with self._pool().connection() as conn, conn.cursor() as cur:
                # The pick must walk the (queue, visible_at, message_id) index: FOR UPDATE under
                # LIMIT rules out a bounded sort, so a plan that sorts (chosen while the table's
                # statistics are stale, e.g. right after a large send) sorts every visible message.
                cur.execute("set local enable_sort = off")
                set_json_loads(bytes if raw_bodies else _loads_json, cur)
                found = cur.execute(self._RECEIVE_SQL, params).fetchall()
            moved = _loads_json(found[0][0]) if raw_bodies else found[0][0]
            rows = [row[1:] for row in found if row[1] is not None]
            for dead in moved:
                report_redriven(
                    DeadLetter(queue, {}, dead["dedup_id"], dead["receive_count"], dead["error"]),
                    on_dead_letter,
                )
        rows.sort(key=lambda row: row[0])
        return [
            Message(
                queue=queue,
                body=body,
                dedup_id=dedup_id,
                receive_count=receive_count,
                receipt=receipt,
                previously_acked=acked,
                enqueued_at=enqueued_at,
            )
            for _, receipt, dedup_id, body, receive_count, enqueued_at, acked in rows
        ]

    @staticmethod
    def _parse_receipt(message: Message) -> tuple[int, str]:
        message_id, _, lease = message.receipt.partition(":")
        return int(message_id), lease

    def ack(self, messages: Sequence[Message]) -> int:
        if not messages:
            return 0
        receipts = "{" + ",".join(m.receipt for m in messages) + "}"
        if not _RECEIPTS.fullmatch(receipts):
            raise QueueError("ack: not receipts of this backend (message_id:lease_token)")
        with self._pool().connection() as conn:
            # Only the current lease holder may delete: a consumer whose lease expired and whose
            # message went to someone else acknowledges nothing. The receipts go in as one array
            # literal, split in SQL (psycopg dumps a list element by element, which costs more
            # than the statement).
            row = conn.execute(
                """
                with deleted as (
                    delete from control.queue_messages m
                    using (select split_part(r, ':', 1)::bigint as message_id,
                                  split_part(r, ':', 2)::uuid as lease_token
                           from unnest(%s::text[]) as r) as a
                    where m.message_id = a.message_id and m.lease_token = a.lease_token
                    returning m.queue, m.dedup_id
                ), remembered as (
                    insert into control.queue_acks (queue, dedup_id)
                    select queue, dedup_id from deleted where queue <> all(%s::text[])
                    on conflict do nothing
                )
                select count(*) from deleted
                """,
                (receipts, sorted(QUEUES_WITHOUT_LEDGER)),
            ).fetchone()
        return int(row[0])

    def retry_later(self, message: Message, delay_seconds: float, error: str) -> bool:
        if message.receive_count >= self.max_receives:
            self.dead_letter(message, error)
            return True
        message_id, lease = self._parse_receipt(message)
        delay = min(float(delay_seconds), float(MAX_RETRY_DELAY_SECONDS))
        with self._pool().connection() as conn:
            conn.execute(
                """
                update control.queue_messages
                set visible_at = now() + make_interval(secs => %s), lease_token = null,
                    last_error = %s
                where message_id = %s and lease_token = %s
                """,
                (delay, error, message_id, lease),
            )
        return False

    def dead_letter(self, message: Message, error: str) -> None:
        message_id, lease = self._parse_receipt(message)
        with self._pool().connection() as conn:
            conn.execute(
                """
                with moved as (
                    delete from control.queue_messages
                    where message_id = %s and lease_token = %s
                    returning *
                )
                insert into control.queue_dead_letters
                    (message_id, queue, dedup_id, body, enqueued_at, receive_count, error)
                select message_id, queue, dedup_id, body, enqueued_at, receive_count, %s
                from moved
                on conflict (message_id) do nothing
                """,
                (message_id, lease, error),
            )

    def depth(self, queue: str) -> int:
        with self._pool().connection() as conn:
            row = conn.execute(
                "select count(*) from control.queue_messages "
                "where queue = %s and visible_at <= now()",
                (queue,),
            ).fetchone()
        return int(row[0])

    def stats(self) -> list[QueueStats]:
        with self._pool().connection() as conn:
            rows = conn.execute(
                """
                with live as (
                    select queue,
                           count(*) filter (where visible_at <= now()) as visible,
                           count(*) filter (where visible_at > now() and lease_token is not null)
                               as in_flight,
                           count(*) filter (where visible_at > now() and lease_token is null)
                               as delayed
                    from control.queue_messages group by queue
                ), dead as (
                    select queue, count(*) as dead from control.queue_dead_letters group by queue
                )
                select coalesce(live.queue, dead.queue), coalesce(visible, 0),
                       coalesce(in_flight, 0), coalesce(delayed, 0), coalesce(dead, 0)
                from live full join dead on dead.queue = live.queue
                """
            ).fetchall()
        found = {row[0]: QueueStats(*row) for row in rows}
        for queue in QUEUE_NAMES:
            found.setdefault(queue, QueueStats(queue, 0, 0, 0, 0))
        return [found[name] for name in sorted(found)]

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        with self._pool().connection() as conn:
            rows = conn.execute(
                """
                select queue, body, dedup_id, receive_count, error, dead_lettered_at
                from control.queue_dead_letters where queue = %s
                order by dead_lettered_at desc, message_id desc limit %s
                """,
                (queue, limit),
            ).fetchall()
        return [DeadLetter(*row) for row in rows]


def prune_acknowledged_ids(conn: Any, older_than_days: int = ACK_LEDGER_DAYS) -> int:
    """Forget acknowledged ids older than the window in which duplicates arrive.

    The ledger (`control.queue_acks`) serves both backends; without pruning it grows forever.
    """
    cur = conn.execute(
        "delete from control.queue_acks where acked_at < now() - make_interval(days => %s)",
        (older_than_days,),
    )
    return cur.rowcount


# --- the drain loop ------------------------------------------------------------------------------


@dataclass
class BatchOutcome:
    """What a consumer made of a batch. Messages named in neither map were applied."""

    rejected: dict[str, str] = field(default_factory=dict)  # receipt -> why it is malformed
    failed: dict[str, str] = field(default_factory=dict)  # receipt -> passing error, retry later


@dataclass
class DrainReport:
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    retried: int = 0
    dead_lettered: int = 0
    batches: int = 0

    def as_metadata(self) -> dict[str, int]:
        return dict(self.__dict__)


AlertFn = Callable[[str, str, dict[str, Any]], None]


def kind_of(exc: Exception) -> str:
    """What a log or alert may say of an error: its kind (and SQLSTATE), never its text, which
    for a database error can quote the data's values."""
    sqlstate = getattr(exc, "sqlstate", None)
    return type(exc).__name__ + (f" (SQLSTATE {sqlstate})" if sqlstate else "")


def failed_whole(messages: Sequence[Message], exc: Exception) -> dict[str, str]:
    """Every message of a batch whose effect was rolled back, failed with the full error (their
    retry and dead-letter reason)."""
    error = f"{type(exc).__name__}: {exc}"
    return {m.receipt: error for m in messages}


@dataclass
class _Received:
    """A batch as the drain's background thread hands it over."""

    messages: list[Message]
    redriven: list[DeadLetter]
    fresh: list[Message] = field(default_factory=list)  # to apply
    duplicates: list[Message] = field(default_factory=list)  # acknowledged before: skipped
    prepared: Any = None  # what `prepare_batch` made of `fresh` (`fresh` itself without one)
    prepare_error: Exception | None = None


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """What was alive before a drain (a run's code, Dagster's machinery) outlives it: frozen out
    of the garbage collector's walks meanwhile, so the collections that a drain's many
    short-lived objects trigger walk only what the drain made (a tenth of a drain's time)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def drain(
    queues: QueueResource,
    queue: str,
    apply_batch: Callable[[Any], BatchOutcome | None],
    *,
    raise_alert: AlertFn | None = None,
    batch_size: int = 500,
    visibility_timeout: float = 300.0,
    retry_base_seconds: float = 10.0,
    max_seconds: float = 600.0,
    skip_previously_acked: bool = True,
    prepare_batch: Callable[[list[Message]], Any] | None = None,
    raw_bodies: bool = False,
) -> DrainReport:
    """Receive, apply, then acknowledge, until the queue has nothing visible (or time is up).

    `apply_batch` commits the effect of the messages it is given and reports malformed ones
    (dead-lettered at once) and ones that failed for a passing cause (retried with growing delay,
    dead-lettered after `max_receives`). If it raises, the whole batch is retried. Every
    dead-lettering raises an alert, whatever the cause: rejected, retries used up, or (found on
    receive) a consumer that kept dying before it could say anything.

    A batch is received while the one before it is applied, so `visibility_timeout` must cover
    applying two batches: a lease that runs out first lets the batch be received again, and it is
    then applied twice with no second effect (consumers are idempotent), never lost.

    `prepare_batch` is the consumer's work that needs neither the database nor the batches before
    (parsing, validating, scoring texts): it runs on the batch as soon as it is received, beside
    the applying of the one before, and `apply_batch` is then given what it returned instead of
    the messages. If it raises, the whole batch is retried, as when `apply_batch` raises.

    `raw_bodies`: the consumer is given each body as its JSON text (see `QueueResource.receive`).
    """
    report = DrainReport()
    deadline = time.monotonic() + max_seconds
    prepare = prepare_batch or (lambda messages: messages)

    def receive_batch() -> _Received:
        redriven: list[DeadLetter] = []
        messages = queues.receive(
            queue,
            max_messages=batch_size,
            visibility_timeout=visibility_timeout,
            on_dead_letter=redriven.append,
            raw_bodies=raw_bodies,
        )
        received = _Received(messages, redriven)
        for message in messages:
            skip = skip_previously_acked and message.previously_acked
            (received.duplicates if skip else received.fresh).append(message)
        if received.fresh:
            try:
                received.prepared = prepare(received.fresh)
            except Exception as exc:  # retried with the batch: see the apply below
                received.prepare_error = exc
        return received

    # Receiving and acknowledging are the queue's work, applying is the consumer's: one
    # background thread receives the next batch and acknowledges the last one while this thread
    # applies the current one, so the database (or SQS) works while Python does. The order of
    # effects is unchanged: a batch is applied after the one before it committed, and it is
    # acknowledged only after its own effect committed.
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"drain-{queue}")
    with _frozen_heap(), background:
        next_batch: Future | None = background.submit(receive_batch)
        last_ack: Future | None = None
        while next_batch is not None:
            received: _Received = next_batch.result()
            messages, redriven = received.messages, received.redriven
            fresh, duplicates = received.fresh, received.duplicates
            next_batch = None
            if redriven:
                report.dead_lettered += len(redriven)
                if raise_alert is not None:
                    raise_alert(
                        f"queue:{queue}",
                        f"{len(redriven)} message(s) moved to the dead-letter queue of {queue}: "
                        "received too often without acknowledgement (the consumer keeps dying)",
                        {
                            "errors": sorted({d.error for d in redriven})[:20],
                            "count": len(redriven),
                        },
                    )
            if not messages:
                break
            if time.monotonic() < deadline:
                next_batch = background.submit(receive_batch)
            report.batches += 1
            report.received += len(messages)
            try:
                if received.prepare_error is not None:
                    raise received.prepare_error
                outcome = apply_batch(received.prepared) if fresh else BatchOutcome()
            except Exception as exc:  # the batch's effect was rolled back: all of it comes again
                log.warning(
                    "queue %s: batch of %d failed, will retry: %s", queue, len(fresh), kind_of(exc)
                )
                outcome = BatchOutcome(failed=failed_whole(fresh, exc))
            outcome = outcome or BatchOutcome()
            to_ack = list(duplicates)
            dead: list[tuple[Message, str]] = []
            retried_now = 0
            for message in fresh:
                if message.receipt in outcome.rejected:
                    reason = outcome.rejected[message.receipt]
                    queues.dead_letter(message, reason)
                    report.rejected += 1
                    dead.append((message, reason))
                elif message.receipt in outcome.failed:
                    reason = outcome.failed[message.receipt]
                    delay = retry_delay_seconds(message.receive_count, retry_base_seconds)
                    if queues.retry_later(message, delay, reason):
                        report.dead_lettered += 1
                        dead.append((message, reason))
                    else:
                        retried_now += 1
                else:
                    to_ack.append(message)
            if last_ack is not None:
                last_ack.result()  # an acknowledgement that failed stops the drain, as before
            last_ack = background.submit(queues.ack, to_ack)
            report.retried += retried_now
            report.duplicates += len(duplicates)
            report.applied += len(to_ack) - len(duplicates)
            if dead and raise_alert is not None:
                raise_alert(
                    f"queue:{queue}",
                    f"{len(dead)} message(s) moved to the dead-letter queue of {queue}",
                    {"errors": sorted({reason for _, reason in dead})[:20], "count": len(dead)},
                )
            if fresh and retried_now == len(fresh):
                # the whole batch failed for a passing cause: let the delay pass, don't spin
                # (a batch already received is still applied: its lease would hide it)
                if next_batch is not None:
                    deadline = 0.0
        if last_ack is not None:
            last_ack.result()
    return report
