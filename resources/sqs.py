"""The `sqs` queue backend: Amazon SQS with the same semantics as `PostgresQueues`.

Each logical queue maps to one standard SQS queue named `<prefix><queue>` (the `.` of
`email_events.<pod>` becomes `__`, since SQS names allow only alphanumerics, `-` and `_`), created
on first use together with its dead-letter queue `<name>_dlq` and a redrive policy. A consumer
that gives up calls `retry_later` / `dead_letter`, which move the message to the dead-letter
queue explicitly, with the error as a message attribute. A message whose consumers kept dying
comes back with a receive count over `max_receives`: `receive` moves it explicitly too and
reports it (`drain` raises the alert), exactly as the postgres backend does. The redrive policy
(`maxReceiveCount = max_receives + 1`) is only the backstop for a consumer that dies in between;
SQS moves such a message silently.

SQS forgets a message once it is deleted, so the ids of acknowledged messages are kept in the
warehouse table `control.queue_acks` (keyed by the SQS queue name): a later duplicate arrives
flagged `previously_acked`, exactly as with the postgres backend (on the queues that keep the
ledger: see `resources.queues.QUEUES_WITHOUT_LEDGER`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from resources.messages import DedupKey
from resources.payloads import MAX_MESSAGE_BYTES, message_size
from resources.queues import (
    MAX_RETRY_DELAY_SECONDS,
    QUEUE_NAMES,
    DeadLetter,
    Message,
    QueueError,
    QueueResource,
    QueueStats,
    dedup_id_for,
    encode_body,
    keeps_ledger,
    report_redriven,
    validate_queue_name,
)
from resources.warehouse import WarehouseResource

log = logging.getLogger(__name__)

SQS_BATCH = 10  # SendMessageBatch / DeleteMessageBatch / ReceiveMessage take at most 10
MAX_SEND_DELAY_SECONDS = 900
MAX_VISIBILITY_SECONDS = 43_200
RETENTION_SECONDS = 14 * 24 * 3600  # the SQS maximum: dead letters wait two weeks for a look
MAX_ERROR_CHARS = 4000
DLQ_SUFFIX = "_dlq"  # pods cannot contain `_`, so no queue name can end like a dead-letter queue
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")

_clients: dict[tuple[str, str, float], Any] = {}
_queue_urls: dict[tuple[str, str, str], str] = {}
_cache_lock = threading.Lock()


def sqs_queue_name(prefix: str, queue: str) -> str:
    """The SQS name of a logical queue (deterministic, one-to-one)."""
    validate_queue_name(queue)
    name = prefix + queue.replace(".", "__")
    if not _NAME_RE.match(name + DLQ_SUFFIX):
        raise QueueError(
            f"SQS queue name {name!r} (from SUPPORTFLOW_SQS_PREFIX={prefix!r}) must be at most "
            f"{80 - len(DLQ_SUFFIX)} characters of A-Z, a-z, 0-9, '-' and '_'"
        )
    return name


def logical_queue_name(prefix: str, sqs_name: str) -> str | None:
    """The logical queue behind an SQS name, or None for dead-letter and foreign queues."""
    if not sqs_name.startswith(prefix) or sqs_name.endswith(DLQ_SUFFIX):
        return None
    queue = sqs_name[len(prefix) :].replace("__", ".")
    try:
        return validate_queue_name(queue)
    except QueueError:
        return None


def _chunks(items: Sequence[Any], size: int = SQS_BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _attr(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


class SqsQueues(QueueResource):
    """Queues on Amazon SQS; the ack ledger stays in the warehouse (`warehouse`)."""

    prefix: str = "supportflow-"
    endpoint_url: str = ""
    region_name: str = ""
    warehouse: WarehouseResource
    wait_time_seconds: int = 10  # long polling: an empty receive waits this long for a message

    # --- plumbing ----------------------------------------------------------------------------

    def _client(self):
        key = (self.endpoint_url, self.region_name, float(self.wait_time_seconds))
        with _cache_lock:
            client = _clients.get(key)
            if client is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    connect_timeout=10,
                    read_timeout=max(self.wait_time_seconds, 0) + 20,  # outlast the long poll
                    retries={"mode": "standard", "max_attempts": 5},
                    max_pool_connections=20,
                )
                client = boto3.session.Session().client(
                    "sqs",
                    endpoint_url=self.endpoint_url or None,
                    region_name=self.region_name or None,
                    config=config,
                )
                _clients[key] = client
            return client

    def _ledger_pool(self) -> WarehouseResource:
        # the warehouse's pooled connections, bounded by its pool timeout
        return self.warehouse

    def _queue_url(self, queue: str) -> str:
        """The URL of `queue`, creating it and its dead-letter queue on first use."""
        name = sqs_queue_name(self.prefix, queue)
        key = (self.endpoint_url, self.region_name, name)
        url = _queue_urls.get(key)
        if url is None:
            url = self._create_queue_pair(name)
            with _cache_lock:
                _queue_urls[key] = url
        return url

    def _dlq_url(self, queue: str) -> str:
        self._queue_url(queue)
        name = sqs_queue_name(self.prefix, queue) + DLQ_SUFFIX
        key = (self.endpoint_url, self.region_name, name)
        url = _queue_urls.get(key)
        if url is None:
            url = self._client().get_queue_url(QueueName=name)["QueueUrl"]
            with _cache_lock:
                _queue_urls[key] = url
        return url

    def _create_queue_pair(self, name: str) -> str:
        # CreateQueue is idempotent for identical attributes, so processes racing here agree.
        client = self._client()
        retention = {"MessageRetentionPeriod": str(RETENTION_SECONDS)}
        dlq_url = client.create_queue(QueueName=name + DLQ_SUFFIX, Attributes=retention)["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        # one receive later than `receive` moves it itself: SQS's move is the silent backstop
        redrive = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_receives + 1)}
        )
        attributes = {**retention, "RedrivePolicy": redrive}
        try:
            return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except client.exceptions.QueueNameExists:
            # Created earlier with other settings (say another max_receives): bring it in line.
            url = client.get_queue_url(QueueName=name)["QueueUrl"]
            client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
            return url

    def _acked(self, queue: str, sqs_name: str, dedup_ids: Sequence[str]) -> set[str]:
        if not dedup_ids or not keeps_ledger(queue):
            return set()
        with self._ledger_pool().connection() as conn:
            rows = conn.execute(
                "select dedup_id from control.queue_acks where queue = %s and dedup_id = any(%s)",
                (sqs_name, list(set(dedup_ids))),
            ).fetchall()
        return {row[0] for row in rows}

    # --- the interface -----------------------------------------------------------------------

    def send(
        self,
        queue: str,
        bodies: Sequence[dict[str, Any]],
        delay_seconds: float = 0,
        *,
        dedup_key: DedupKey | None = None,
    ) -> int:
        url = self._queue_url(queue)
        entries: list[dict[str, Any]] = []
        for index, body in enumerate(bodies):
            if not isinstance(body, dict):
                raise QueueError(f"a message must be a JSON object, not {type(body).__name__}")
            dedup_id = dedup_id_for(body, dedup_key)
            text = encode_body(body, dedup_id)  # QueueError over 256 KiB or not storable
            size = message_size(text, dedup_id)
            entry = {
                "Id": str(index),
                "MessageBody": text,
                "MessageAttributes": {"dedup_id": _attr(dedup_id)},
            }
            if delay_seconds:
                entry["DelaySeconds"] = min(int(math.ceil(delay_seconds)), MAX_SEND_DELAY_SECONDS)
            entries.append((entry, size))
        for batch in self._size_limited_batches(entries):
            self._send_batch(url, batch)
        return len(entries)

    @staticmethod
    def _size_limited_batches(entries: list[tuple[dict, int]]) -> Iterator[list[dict]]:
        """Batches of at most 10 entries whose payload together stays within the SQS limit."""
        batch: list[dict] = []
        total = 0
        for entry, size in entries:
            if batch and (len(batch) == SQS_BATCH or total + size > MAX_MESSAGE_BYTES):
                yield batch
                batch, total = [], 0
            batch.append(entry)
            total += size
        if batch:
            yield batch

    def _send_batch(self, url: str, batch: list[dict]) -> None:
        pending = batch
        for attempt in range(5):
            response = self._client().send_message_batch(QueueUrl=url, Entries=pending)
            failed = response.get("Failed", [])
            if not failed:
                return
            fatal = [f for f in failed if f.get("SenderFault")]
            if fatal:
                first = fatal[0]
                raise QueueError(
                    f"SQS refused {len(fatal)} message(s): {first.get('Code')}: "
                    f"{first.get('Message', '')}"
                )
            failed_ids = {f["Id"] for f in failed}
            pending = [entry for entry in pending if entry["Id"] in failed_ids]
            time.sleep(min(2.0, 0.1 * 2**attempt))
        raise QueueError(f"SQS kept failing to accept {len(pending)} message(s); try again")

    def receive(
        self,
        queue: str,
        max_messages: int = 10,
        visibility_timeout: float = 60.0,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        *,
        raw_bodies: bool = False,
    ) -> list[Message]:
        while True:
            messages = self._receive_batch(queue, max_messages, visibility_timeout, raw_bodies)
            exhausted = [m for m in messages if m.receive_count > self.max_receives]
            for message in exhausted:
                # its consumer received it max_receives times and never acknowledged it
                error = f"received {message.receive_count - 1} times without acknowledgement"
                self.dead_letter(message, error)
                letter = DeadLetter(queue, {}, message.dedup_id, message.receive_count - 1, error)
                report_redriven(letter, on_dead_letter)
            kept = [m for m in messages if m.receive_count <= self.max_receives]
            if kept or not exhausted:
                return kept

    def _receive_batch(
        self, queue: str, max_messages: int, visibility_timeout: float, raw_bodies: bool = False
    ) -> list[Message]:
        url = self._queue_url(queue)
        sqs_name = sqs_queue_name(self.prefix, queue)
        timeout = min(max(int(math.ceil(visibility_timeout)), 0), MAX_VISIBILITY_SECONDS)
        raw: dict[str, dict[str, Any]] = {}
        wait = max(self.wait_time_seconds, 0)
        while len(raw) < max_messages:
            asked = min(SQS_BATCH, max_messages - len(raw))
            response = self._client().receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=asked,
                VisibilityTimeout=timeout,
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
            got = response.get("Messages", [])
            again = any(item["MessageId"] in raw for item in got)
            # With a very short visibility timeout a message can come back within this call:
            # keep one copy, with the newest receipt (the only one SQS honours).
            raw.update((item["MessageId"], item) for item in got)
            if len(got) < asked or again:
                break  # nothing more visible right now
            wait = 0  # only the first call waits; later calls take what is there now
        messages = []
        for item in raw.values():
            attributes = item.get("MessageAttributes", {})
            dedup_id = attributes.get("dedup_id", {}).get("StringValue")
            body = None if raw_bodies and dedup_id else json.loads(item["Body"])
            if not dedup_id:  # sent around `send`: known by its body's hash
                dedup_id = dedup_id_for(body)
            if raw_bodies:
                body = item["Body"].encode()
            sent_ms = int(item.get("Attributes", {}).get("SentTimestamp", 0))
            messages.append(
                Message(
                    queue=queue,
                    body=body,
                    dedup_id=dedup_id,
                    receive_count=int(item["Attributes"]["ApproximateReceiveCount"]),
                    receipt=item["ReceiptHandle"],
                    enqueued_at=datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms else None,
                )
            )
        acked = self._acked(queue, sqs_name, [m.dedup_id for m in messages])
        return [replace(m, previously_acked=m.dedup_id in acked) for m in messages]

    def ack(self, messages: Sequence[Message]) -> int:
        if not messages:
            return 0
        # The ledger first: if a delete is lost, the redelivered copy is flagged and skipped.
        pairs = {
            (sqs_queue_name(self.prefix, m.queue), m.dedup_id)
            for m in messages
            if keeps_ledger(m.queue)
        }
        if pairs:
            queues, dedup_ids = zip(*sorted(pairs), strict=True)
            with self._ledger_pool().connection() as conn:
                conn.execute(
                    """
                    insert into control.queue_acks (queue, dedup_id)
                    select * from unnest(%s::text[], %s::text[])
                    on conflict do nothing
                    """,
                    (list(queues), list(dedup_ids)),
                )
        deleted = 0
        by_queue: dict[str, list[Message]] = {}
        for message in messages:
            by_queue.setdefault(message.queue, []).append(message)
        for queue, group in by_queue.items():
            deleted += self._delete(self._queue_url(queue), [m.receipt for m in group])
        return deleted

    def _delete(self, url: str, receipts: Sequence[str]) -> int:
        deleted = 0
        for batch in _chunks(list(receipts)):
            response = self._client().delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(batch)],
            )
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                # An expired receipt: the message went back to the queue; it will come again,
                # flagged previously_acked, and be acknowledged then.
                log.warning(
                    "could not delete an SQS message: %s: %s",
                    failure.get("Code"),
                    failure.get("Message", ""),
                )
        return deleted

    def retry_later(self, message: Message, delay_seconds: float, error: str) -> bool:
        if message.receive_count >= self.max_receives:
            self.dead_letter(message, error)
            return True
        delay = min(int(math.ceil(max(delay_seconds, 0))), MAX_RETRY_DELAY_SECONDS)
        client = self._client()
        try:
            client.change_message_visibility(
                QueueUrl=self._queue_url(message.queue),
                ReceiptHandle=message.receipt,
                VisibilityTimeout=delay,
            )
        except client.exceptions.ReceiptHandleIsInvalid:
            log.warning("queue %s: lease expired before retry_later; it comes back", message.queue)
        return False

    def dead_letter(self, message: Message, error: str) -> None:
        attributes = {
            "dedup_id": _attr(message.dedup_id),
            "error": _attr(error[:MAX_ERROR_CHARS] or "(no error given)"),
            "receive_count": {"DataType": "Number", "StringValue": str(message.receive_count)},
            "dead_lettered_at": _attr(datetime.now(UTC).isoformat()),
        }
        if message.enqueued_at is not None:
            attributes["enqueued_at"] = _attr(message.enqueued_at.isoformat())
        client = self._client()
        # Copy first, then delete: a crash in between leaves a duplicate, never a loss.
        client.send_message(
            QueueUrl=self._dlq_url(message.queue),
            MessageBody=(
                message.body.decode()
                if isinstance(message.body, bytes)
                else json.dumps(message.body, separators=(",", ":"), default=str)
            ),
            MessageAttributes=attributes,
        )
        self._delete(self._queue_url(message.queue), [message.receipt])

    def _attributes(self, url: str) -> dict[str, int]:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        found = self._client().get_queue_attributes(QueueUrl=url, AttributeNames=names)
        return {name: int(found["Attributes"].get(name, 0)) for name in names}

    def depth(self, queue: str) -> int:
        return self._attributes(self._queue_url(queue))["ApproximateNumberOfMessages"]

    def stats(self) -> list[QueueStats]:
        existing: set[str] = set()
        paginator = self._client().get_paginator("list_queues")
        for page in paginator.paginate(QueueNamePrefix=self.prefix):
            for url in page.get("QueueUrls", []):
                queue = logical_queue_name(self.prefix, url.rsplit("/", 1)[-1])
                if queue is not None:
                    existing.add(queue)
        rows = []
        for queue in sorted(existing | set(QUEUE_NAMES)):
            if queue not in existing:
                rows.append(QueueStats(queue, 0, 0, 0, 0))
                continue
            live = self._attributes(self._queue_url(queue))
            dead = self._attributes(self._dlq_url(queue))
            rows.append(
                QueueStats(
                    queue=queue,
                    visible=live["ApproximateNumberOfMessages"],
                    in_flight=live["ApproximateNumberOfMessagesNotVisible"],
                    delayed=live["ApproximateNumberOfMessagesDelayed"],
                    dead=dead["ApproximateNumberOfMessages"]
                    + dead["ApproximateNumberOfMessagesNotVisible"],
                )
            )
        return rows

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """Peek at the dead-letter queue: messages are received briefly, then released again."""
        url = self._dlq_url(queue)
        client = self._client()
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < limit:
            response = client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(SQS_BATCH, limit - len(seen)),
                VisibilityTimeout=30,
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["SentTimestamp"],
                MessageAttributeNames=["All"],
            )
            got = response.get("Messages", [])
            if not got:
                break
            for item in got:
                seen.setdefault(item["MessageId"], item)
        for batch in _chunks(list(seen.values())):
            client.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": item["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, item in enumerate(batch)
                ],
            )
        letters = [self._dead_letter_from(queue, item) for item in seen.values()]
        letters.sort(key=lambda d: d.dead_lettered_at or datetime.min.replace(tzinfo=UTC))
        return letters[::-1]

    def _dead_letter_from(self, queue: str, item: dict[str, Any]) -> DeadLetter:
        attributes = {
            k: v.get("StringValue", "") for k, v in item.get("MessageAttributes", {}).items()
        }
        body = json.loads(item["Body"])
        sent_ms = int(item.get("Attributes", {}).get("SentTimestamp", 0))
        when = attributes.get("dead_lettered_at")
        return DeadLetter(
            queue=queue,
            body=body,
            dedup_id=attributes.get("dedup_id") or dedup_id_for(body),
            receive_count=int(attributes.get("receive_count") or self.max_receives),
            # No error attribute: the redrive policy moved it (its consumer never came back).
            error=attributes.get("error")
            or f"received {self.max_receives} times without acknowledgement (SQS redrive policy)",
            dead_lettered_at=datetime.fromisoformat(when)
            if when
            else (datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms else None),
        )
