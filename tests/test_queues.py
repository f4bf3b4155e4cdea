"""Queue semantics every backend must keep (ARCHITECTURE.md, "Queues and message shapes")."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

import pytest

from resources.messages import id_key, tenant_id_key
from resources.queues import (
    BatchOutcome,
    QueueError,
    dedup_id_for,
    drain,
    retry_delay_seconds,
    validate_queue_name,
)

BACKENDS = ["postgres", "sqs"]


def activity_key(body):
    """A producer's key, as a domain declares one (here: the activities producer's)."""
    return id_key("activity_id", body)


def message_key(body):
    """A producer's key for an id unique only within its tenant."""
    return tenant_id_key("message_id", body, "message")


@pytest.fixture(params=BACKENDS)
def queues(request):
    return request.getfixturevalue(f"{request.param}_queue_backend")


@pytest.fixture
def postgres_queue_backend(pg_queues):
    return pg_queues


# Set by moto's ReceiveMessage while it long-polls an empty queue: a test sends only once a
# consumer is really waiting.
MOTO_LONG_POLL_WAITING = threading.Event()


def _atomic_moto_receive(original):
    """moto picks and hides messages without a lock, so two concurrent ReceiveMessage calls can
    get the same message (a moto limitation, not SQS behaviour within a visibility timeout). Each
    pick is made atomic here; long polling is kept by polling outside the lock."""
    lock = threading.Lock()

    def receive_message(self, queue_name, count, wait_seconds_timeout, *args, **kwargs):
        deadline = time.monotonic() + wait_seconds_timeout
        while True:
            with lock:
                got = original(self, queue_name, count, 0, *args, **kwargs)
            if got or time.monotonic() >= deadline:
                return got
            MOTO_LONG_POLL_WAITING.set()
            time.sleep(0.05)

    return receive_message


@pytest.fixture(scope="session")
def moto_sqs_endpoint():
    """moto's SQS server on a free loopback port (protocol tests with small queues only)."""
    import socket

    from moto.server import ThreadedMotoServer
    from moto.sqs.models import SQSBackend

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            SQSBackend, "receive_message", _atomic_moto_receive(SQSBackend.receive_message)
        )
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        yield f"http://127.0.0.1:{port}"
        server.stop()


@pytest.fixture
def sqs_queue_backend(moto_sqs_endpoint, settings, db_url, monkeypatch):
    """SqsQueues against moto with a prefix of its own, so every test starts with empty queues."""
    import uuid

    from resources.sqs import SqsQueues
    from resources.warehouse import WarehouseResource

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return SqsQueues(
        prefix=f"t{uuid.uuid4().hex[:10]}-",
        endpoint_url=moto_sqs_endpoint,
        region_name="us-east-1",
        warehouse=WarehouseResource(database_url=db_url, home=str(settings.home)),
        wait_time_seconds=1,
    )


def wait_until_received(queues, queue, timeout=15.0, **kwargs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = queues.receive(queue, **kwargs)
        if got:
            return got
        time.sleep(0.2)
    return []


def receive_at_least(queues, queue, n, timeout=15.0, **kwargs):
    """Receive until `n` messages came (one receive may hand out fewer than are visible)."""
    got: list = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += queues.receive(queue, **kwargs)
    return got


def test_send_receive_ack_roundtrip(queues):
    assert queues.send("activities", [{"activity_id": f"a{i}", "n": i} for i in range(3)]) == 3
    got = receive_at_least(queues, "activities", 3, max_messages=10, visibility_timeout=30)
    assert sorted(m.body["n"] for m in got) == [0, 1, 2]
    assert all(m.receive_count == 1 and not m.previously_acked for m in got)
    assert queues.ack(got) == 3
    assert queues.receive("activities", max_messages=10, visibility_timeout=30) == []


def test_received_message_is_not_handed_to_a_second_consumer(queues):
    queues.send("activities", [{"activity_id": f"c{i}"} for i in range(40)])
    seen: list[str] = []
    lock = threading.Lock()

    def consume():
        for _ in range(20):
            batch = queues.receive("activities", max_messages=5, visibility_timeout=60)
            if not batch:
                break  # every message is taken (and invisible) now
            with lock:
                seen.extend(m.dedup_id for m in batch)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 40


def test_consumer_that_dies_without_ack_loses_nothing(queues):
    queues.send("activities", [{"activity_id": "dies"}], dedup_key=activity_key)
    first = wait_until_received(queues, "activities", visibility_timeout=1)
    assert [m.dedup_id for m in first] == ["activity_id:dies"]
    # the consumer "dies": no ack. After its visibility timeout the message comes back, its
    # receive counted ...
    again = wait_until_received(queues, "activities", visibility_timeout=60)
    assert [m.body for m in again] == [{"activity_id": "dies"}]
    assert again[0].receive_count == 2
    # ... and while a consumer has it (60 s, far longer than any receive here) nobody else does
    assert queues.receive("activities", visibility_timeout=1) == []


def test_dead_letter_after_max_receives_keeps_body_and_error(queues):
    body = {"activity_id": "poison", "payload": "x" * 100}
    queues.send("activities", [body])
    dead_lettered = False
    for attempt in range(1, queues.max_receives + 1):
        got = wait_until_received(queues, "activities", visibility_timeout=30)
        assert len(got) == 1 and got[0].receive_count == attempt
        dead_lettered = queues.retry_later(got[0], 0, f"boom {attempt}")
    assert dead_lettered
    assert queues.receive("activities", visibility_timeout=30) == []
    [dead] = queues.dead_letters("activities")
    assert dead.body == body
    assert "boom 5" in dead.error
    assert next(s for s in queues.stats() if s.queue == "activities").dead == 1


def test_consumer_that_dies_every_time_ends_in_the_dead_letter_queue(queues):
    # the backstop (SQS: the redrive policy) for a consumer that never gets to retry_later
    queues.send("activities", [{"activity_id": "crashes-consumer"}])
    for attempt in range(1, queues.max_receives + 1):
        [got] = wait_until_received(queues, "activities", visibility_timeout=0)
        assert got.receive_count == attempt
    # the next receive moves it aside and hands out what comes after it
    queues.send("activities", [{"activity_id": "healthy"}])
    [after] = wait_until_received(queues, "activities", max_messages=1, visibility_timeout=30)
    assert after.body == {"activity_id": "healthy"}
    [dead] = queues.dead_letters("activities")
    assert dead.body == {"activity_id": "crashes-consumer"}
    assert "without acknowledgement" in dead.error


def test_retry_later_hides_the_message_for_the_delay(queues):
    queues.send("email_sent", [{"notification_id": "n1"}])
    [message] = wait_until_received(queues, "email_sent", visibility_timeout=30)
    assert queues.retry_later(message, 1, "notification store down") is False
    [back] = wait_until_received(queues, "email_sent", visibility_timeout=30)
    assert back.receive_count == 2
    # hidden for the whole delay (60 s: no receive here can outlast it)
    assert queues.retry_later(back, 60, "still down") is False
    assert queues.receive("email_sent", visibility_timeout=30) == []
    stats = next(s for s in queues.stats() if s.queue == "email_sent")
    assert (stats.visible, stats.delayed + stats.in_flight) == (0, 1)


def test_duplicate_of_an_acknowledged_id_is_flagged(queues):
    queues.send("activities", [{"activity_id": "dup-1", "v": 1}], dedup_key=activity_key)
    first = wait_until_received(queues, "activities", visibility_timeout=30)
    queues.ack(first)
    queues.send("activities", [{"activity_id": "dup-1", "v": 2}], dedup_key=activity_key)
    [again] = wait_until_received(queues, "activities", visibility_timeout=30)
    assert again.previously_acked and again.body["v"] == 2


def test_the_producer_declares_the_idempotency_key(queues):
    """The same id in two tenants is two messages when the producer's key says so; without a key
    (or without a usable id) a message is known by the hash of its canonical JSON."""
    # queue `feedback` keeps the ledger (`messages` does not: see the test after this one)
    acme = {"tenant_id": "acme", "message_id": "m-1", "text": "hello"}
    globex = {"tenant_id": "globex", "message_id": "m-1", "text": "hello"}
    queues.send("feedback", [acme, globex], dedup_key=message_key)
    first = wait_until_received(queues, "feedback", max_messages=10, visibility_timeout=30)
    first += queues.receive("feedback", max_messages=10, visibility_timeout=30)
    assert sorted(m.dedup_id for m in first) == ["message:acme:m-1", "message:globex:m-1"]
    queues.ack(first)

    canonical = json.dumps({"text": "hello", "message_id": "m-2"}, sort_keys=True,
                           separators=(",", ":"))  # fmt: skip
    hashed = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    resent = [{**acme, "text": "hello again"}, {"message_id": "m-2", "text": "hello"}]
    queues.send("feedback", resent, dedup_key=message_key)
    again = wait_until_received(queues, "feedback", max_messages=10, visibility_timeout=30)
    again += queues.receive("feedback", max_messages=10, visibility_timeout=30)
    by_id = {m.dedup_id: m for m in again}
    assert set(by_id) == {"message:acme:m-1", hashed}
    assert by_id["message:acme:m-1"].previously_acked  # a re-send of an applied message
    queues.ack([by_id["message:acme:m-1"]])
    assert not by_id[hashed].previously_acked  # no tenant: no usable key, the body's hash
    queues.dead_letter(by_id[hashed], "tenant_id: missing")
    [dead] = queues.dead_letters("feedback")
    assert dead.dedup_id == hashed and dead.error == "tenant_id: missing"


def test_raw_bodies_are_the_json_text_and_dead_letter_whole(queues):
    """A consumer that decodes into its own types receives each body as its JSON text; one it
    rejects reaches the dead-letter queue with the body intact."""
    bodies = [
        {"tenant_id": "acme", "message_id": f"m-{n}", "text": "héllo ✓", "n": n} for n in (1, 2)
    ]
    queues.send("messages", bodies, dedup_key=message_key)
    got = receive_at_least(
        queues, "messages", 2, max_messages=10, visibility_timeout=30, raw_bodies=True
    )
    assert all(isinstance(m.body, bytes) for m in got)
    assert sorted((json.loads(m.body) for m in got), key=lambda b: b["n"]) == bodies
    assert {m.dedup_id for m in got} == {"message:acme:m-1", "message:acme:m-2"}
    rejected = next(m for m in got if json.loads(m.body)["n"] == 2)
    queues.dead_letter(rejected, "invalid message: on purpose")
    queues.ack([m for m in got if m is not rejected])
    [dead] = queues.dead_letters("messages")
    assert dead.body == bodies[1] and dead.error == "invalid message: on purpose"


def test_the_conversations_queues_keep_no_ledger(queues, db):
    """The conversations consumers know their duplicates by keys of their own: their queues'
    acknowledged ids cost no ledger write on ack and no lookup on receive."""
    body = {"tenant_id": "acme", "message_id": "m-1", "text": "hello"}
    for _ in range(2):
        queues.send("messages", [body], dedup_key=message_key)
        [received] = wait_until_received(queues, "messages", visibility_timeout=30)
        assert not received.previously_acked and received.dedup_id == "message:acme:m-1"
        assert queues.ack([received]) == 1
    assert queues.receive("messages", visibility_timeout=30) == []
    ledger = db.execute(
        "select queue from control.queue_acks where queue like '%%messages' and dedup_id = %s",
        ("message:acme:m-1",),
    ).fetchall()
    assert ledger == []


def test_drain_applies_rejects_and_retries(queues, resources):
    queues.send(
        "activities",
        [{"activity_id": "ok-1"}, {"activity_id": "bad-1"}, {"activity_id": "slow-1"}],
    )
    applied: list[str] = []
    alerts: list[tuple] = []

    def apply_batch(messages):
        outcome = BatchOutcome()
        for m in messages:
            if m.body["activity_id"].startswith("bad"):
                outcome.rejected[m.receipt] = "activity_id bad-1: actor_type is missing"
            elif m.body["activity_id"].startswith("slow"):
                outcome.failed[m.receipt] = "database unavailable"
            else:
                applied.append(m.body["activity_id"])
        return outcome

    report = drain(
        queues,
        "activities",
        apply_batch,
        raise_alert=lambda *args: alerts.append(args),
        retry_base_seconds=60,
        max_seconds=20,
    )
    assert applied == ["ok-1"]
    assert (report.applied, report.rejected, report.retried) == (1, 1, 1)
    [dead] = queues.dead_letters("activities")
    assert dead.error == "activity_id bad-1: actor_type is missing"
    assert alerts and alerts[0][0] == "queue:activities"
    stats = next(s for s in queues.stats() if s.queue == "activities")
    assert (stats.visible, stats.dead) == (0, 1)
    assert stats.delayed + stats.in_flight == 1


def test_drain_retries_the_whole_batch_when_apply_raises(queues):
    queues.send("activities", [{"activity_id": "x1"}, {"activity_id": "x2"}])

    def broken(messages):
        raise ConnectionError("server closed the connection unexpectedly")

    report = drain(queues, "activities", broken, retry_base_seconds=60, max_seconds=10)
    assert report.retried == 2 and report.applied == 0
    assert queues.dead_letters("activities") == []


def test_queue_names_and_dedup_ids():
    assert validate_queue_name("email_events.eu-1") == "email_events.eu-1"
    with pytest.raises(QueueError, match="unknown queue"):
        validate_queue_name("nope")
    assert dedup_id_for({"activity_id": 7, "x": 1}, activity_key) == "activity_id:7"
    # no key declared: an id field is not guessed, the body's hash serves
    assert dedup_id_for({"activity_id": 7}).startswith("sha256:")
    assert dedup_id_for({"activity_id": ""}, activity_key).startswith("sha256:")
    assert dedup_id_for({"b": 1, "a": 2}) == dedup_id_for({"a": 2, "b": 1})


@pytest.mark.parametrize(
    ("receive_count", "expected"), [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (12, 300)]
)
def test_retry_delay_grows_and_is_capped(receive_count, expected):
    assert retry_delay_seconds(receive_count, 10) == expected


# --- sqs specifics: names, queue creation, batches, long polling, the CLI ---------------------


@pytest.mark.parametrize(
    ("queue", "sqs_name"),
    [
        ("activities", "supportflow-activities"),
        ("email_events", "supportflow-email_events"),
        ("email_events.eu-1", "supportflow-email_events__eu-1"),
    ],
)
def test_sqs_names_map_one_to_one(queue, sqs_name):
    from resources.sqs import logical_queue_name, sqs_queue_name

    assert sqs_queue_name("supportflow-", queue) == sqs_name
    assert logical_queue_name("supportflow-", sqs_name) == queue
    assert logical_queue_name("supportflow-", sqs_name + "_dlq") is None


def test_sqs_prefix_with_characters_sqs_refuses_is_a_clear_error():
    from resources.sqs import sqs_queue_name

    with pytest.raises(QueueError, match="SUPPORTFLOW_SQS_PREFIX='prod.sf/'"):
        sqs_queue_name("prod.sf/", "activities")


def test_sqs_queue_is_created_with_a_dead_letter_queue_and_redrive_policy(sqs_queue_backend):
    import json

    sqs_queue_backend.send("email_events.eu-1", [{"event_id": "e1"}])
    client = sqs_queue_backend._client()
    name = f"{sqs_queue_backend.prefix}email_events__eu-1"
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attributes["RedrivePolicy"])
    # one receive beyond ours: `receive` moves an exhausted message itself (and it is alerted);
    # SQS moves it only if a consumer dies in between
    assert int(policy["maxReceiveCount"]) == sqs_queue_backend.max_receives + 1 == 6
    assert policy["deadLetterTargetArn"].endswith(f":{name}_dlq")
    [row] = [s for s in sqs_queue_backend.stats() if s.queue == "email_events.eu-1"]
    assert (row.visible, row.dead) == (1, 0)


def test_sqs_itself_redrives_a_message_received_past_the_limit(sqs_queue_backend):
    """The backstop: consumers that die before `receive` can move a message (six raw receives,
    none acknowledged) leave it to SQS's redrive policy, and the dead-letter queue shows it with
    its body."""
    queues = sqs_queue_backend
    queues.send("activities", [{"activity_id": "a-dies", "text": "kept"}])
    client = queues._client()
    url = client.get_queue_url(QueueName=f"{queues.prefix}activities")["QueueUrl"]
    for _ in range(queues.max_receives + 1):  # the redrive policy's maxReceiveCount
        [message] = client.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=1)[
            "Messages"
        ]
    assert client.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", []) == []
    [letter] = queues.dead_letters("activities")
    assert letter.body == {"activity_id": "a-dies", "text": "kept"}
    assert queues.depth("activities") == 0
    [row] = [s for s in queues.stats() if s.queue == "activities"]
    assert (row.visible, row.in_flight, row.dead) == (0, 0, 1)


def test_sqs_uses_batches_of_ten(sqs_queue_backend):
    calls: list[str] = []
    client = sqs_queue_backend._client()
    for op in ("SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch"):
        client.meta.events.register(
            f"before-call.sqs.{op}", lambda model, **_: calls.append(model.name)
        )
    try:
        assert sqs_queue_backend.send("feedback", [{"item_id": i} for i in range(25)]) == 25
        got = sqs_queue_backend.receive("feedback", max_messages=25, visibility_timeout=30)
        assert sorted(m.body["item_id"] for m in got) == list(range(25))
        assert sqs_queue_backend.ack(got) == 25
    finally:
        for op in ("SendMessageBatch", "ReceiveMessage", "DeleteMessageBatch"):
            client.meta.events.unregister(f"before-call.sqs.{op}")
    assert calls.count("SendMessageBatch") == 3
    assert calls.count("ReceiveMessage") >= 3
    assert calls.count("DeleteMessageBatch") == 3


def test_sqs_receive_long_polls(sqs_queue_backend):
    from resources.sqs import SqsQueues

    # a long poll of 20 s (the SQS maximum): the message is sent only once the receive waits
    waiting = SqsQueues(
        prefix=sqs_queue_backend.prefix,
        endpoint_url=sqs_queue_backend.endpoint_url,
        region_name=sqs_queue_backend.region_name,
        warehouse=sqs_queue_backend.warehouse,
        wait_time_seconds=20,
    )
    waiting.depth("feedback")  # create the queue before the consumer waits on it
    MOTO_LONG_POLL_WAITING.clear()

    def send_while_polled() -> None:
        if MOTO_LONG_POLL_WAITING.wait(30):
            sqs_queue_backend.send("feedback", [{"item_id": "late"}])

    sender = threading.Thread(target=send_while_polled)
    sender.start()
    started = time.monotonic()
    got = waiting.receive("feedback", visibility_timeout=30)
    sender.join()
    assert MOTO_LONG_POLL_WAITING.is_set(), "the receive never waited"
    assert [m.body for m in got] == [{"item_id": "late"}]
    assert time.monotonic() - started < 20  # it returned with the message, not at the end


def test_cli_queue_commands_use_sqs_when_configured(sqs_queue_backend, tmp_path):
    import json
    import os
    import subprocess
    import sys

    path = tmp_path / "sent.jsonl"
    path.write_text(json.dumps({"notification_id": "n-cli"}) + "\n")
    env = {
        **os.environ,
        "SUPPORTFLOW_QUEUE_BACKEND": "sqs",
        "SUPPORTFLOW_SQS_PREFIX": sqs_queue_backend.prefix,
        "AWS_ENDPOINT_URL": sqs_queue_backend.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    cli = [sys.executable, "-m", "orchestration.cli", "queue"]
    sent = subprocess.run(
        [*cli, "send", "email_sent", str(path)], env=env, capture_output=True, text=True
    )
    assert sent.returncode == 0, sent.stderr
    assert sqs_queue_backend.depth("email_sent") == 1
    stats = subprocess.run([*cli, "stats"], env=env, capture_output=True, text=True)
    line = next(x for x in stats.stdout.splitlines() if x.startswith("email_sent "))
    assert line.split()[1:] == ["1", "0", "0", "0"]


# --- every dead-lettering alerted; one size limit for both backends (issue 14) ---------------


def test_consumer_that_keeps_dying_is_dead_lettered_with_an_alert(queues):
    """Received max_receives times and never acknowledged nor failed (the consumer process
    died each time): the next drain moves it aside and raises one alert, on both backends."""
    queues.send("activities", [{"activity_id": "kills-its-consumer"}])
    for attempt in range(1, queues.max_receives + 1):
        [got] = wait_until_received(queues, "activities", visibility_timeout=0)
        assert got.receive_count == attempt  # ... and the consumer dies: no ack, no retry_later
    queues.send("activities", [{"activity_id": "after-it"}])
    alerts: list[tuple] = []
    applied: list[str] = []

    def apply_batch(messages):
        applied.extend(m.body["activity_id"] for m in messages)

    deadline = time.monotonic() + 15
    drain(queues, "activities", apply_batch, raise_alert=lambda *a: alerts.append(a))
    while "after-it" not in applied and time.monotonic() < deadline:  # moto: eventual
        drain(queues, "activities", apply_batch, raise_alert=lambda *a: alerts.append(a))
    assert applied == ["after-it"]
    [(source, summary, details)] = alerts
    assert source == "queue:activities" and "dead-letter queue of activities" in summary
    assert details["count"] == 1 and "without acknowledgement" in details["errors"][0]
    [dead] = queues.dead_letters("activities")
    assert dead.body == {"activity_id": "kills-its-consumer"}


def test_one_message_size_limit_for_both_backends_at_send(queues):
    from resources.payloads import MAX_MESSAGE_BYTES

    assert MAX_MESSAGE_BYTES == 256 * 1024
    fits = {"activity_id": "fits", "pad": "x" * (MAX_MESSAGE_BYTES - 1024)}
    too_big = {"activity_id": "too-big", "pad": "x" * MAX_MESSAGE_BYTES}
    with pytest.raises(QueueError, match=r"message activity_id:too-big: is \d+ bytes; .*262144"):
        queues.send("activities", [fits, too_big], dedup_key=lambda b: id_key("activity_id", b))
    with pytest.raises(QueueError, match="NaN or Infinity"):
        queues.send("activities", [{"activity_id": "nan", "x": float("nan")}])
    with pytest.raises(QueueError, match="NUL character"):
        queues.send("activities", [{"activity_id": "nul", "x": "\x00"}])
    assert queues.depth("activities") == 0  # checked before anything is sent
    assert queues.send("activities", [fits]) == 1


def test_a_failed_batch_logs_its_kind_not_its_values(pg_queues, db, caplog):
    """The error's text (which can quote personal data) goes with the message, not to the log."""
    import logging

    from resources.queues import drain

    pg_queues.send("activities", [{"activity_id": "log-1", "email": "jane@example.org"}])

    def failing(messages):
        raise ValueError("cannot store jane@example.org")

    with caplog.at_level(logging.WARNING, logger="resources.queues"):
        report = drain(pg_queues, "activities", failing, retry_base_seconds=60)
    assert report.retried == 1
    assert "ValueError" in caplog.text and "jane@example.org" not in caplog.text
    (last_error,) = db.execute(
        "select last_error from control.queue_messages where queue = 'activities'"
    ).fetchone()
    assert last_error == "ValueError: cannot store jane@example.org"  # kept for the operator


def test_received_bodies_hold_every_number_jsonb_holds(pg_queues, db):
    """Bodies are decoded by msgspec; a number it refuses (beyond a double, with a fraction,
    which jsonb keeps exactly) is decoded as `json` does."""
    huge = "1" + "0" * 400 + ".5"
    pg_queues.send("activities", [{"activity_id": "n-1", "n": 12345678901234567890123}])
    db.execute(
        "insert into control.queue_messages (queue, dedup_id, body) "
        "values ('activities', 'n-2', jsonb_build_object('activity_id', 'n-2', 'n', %s::numeric))",
        (huge,),
    )
    got = {m.body["activity_id"]: m.body["n"] for m in pg_queues.receive("activities")}
    assert got == {"n-1": 12345678901234567890123, "n-2": float("inf")}


def test_drain_receives_the_next_batch_while_it_applies_one_in_order(pg_queues, db):
    """The background thread leases the next batch while a batch is applied; effects keep the
    queue's order and nothing stays leased."""
    pg_queues.send("activities", [{"activity_id": f"p-{n:03d}"} for n in range(50)])
    applied: list[str] = []
    next_leased: list[bool] = []

    def leased() -> set[str]:
        rows = db.execute(
            "select body->>'activity_id' from control.queue_messages "
            "where queue = 'activities' and lease_token is not null and visible_at > now()"
        ).fetchall()
        return {row[0] for row in rows}

    def apply_batch(messages):
        upcoming = {f"p-{n:03d}" for n in range(len(applied) + 10, min(len(applied) + 20, 50))}
        deadline = time.monotonic() + 10
        while not upcoming <= leased() and time.monotonic() < deadline:
            time.sleep(0.01)
        next_leased.append(bool(upcoming) and upcoming <= leased())
        applied.extend(m.body["activity_id"] for m in messages)
        return BatchOutcome()

    report = drain(pg_queues, "activities", apply_batch, batch_size=10, max_seconds=60)
    assert applied == [f"p-{n:03d}" for n in range(50)]
    assert next_leased == [True, True, True, True, False]  # the last batch has none after it
    assert report.applied == 50 and report.batches == 5
    stats = next(s for s in pg_queues.stats() if s.queue == "activities")
    assert (stats.visible, stats.in_flight, stats.delayed) == (0, 0, 0)


def test_a_drain_stopping_early_still_applies_the_batch_it_received_ahead(pg_queues):
    """A batch failing as a whole for a passing cause ends the drain, but the batch already
    received ahead of it is applied, not left hidden for its visibility timeout."""
    pg_queues.send("activities", [{"activity_id": f"s-{n}"} for n in range(30)])
    applied: list[str] = []

    def apply_batch(messages):
        if messages[0].body["activity_id"] == "s-0":  # the first batch: not applicable yet
            return BatchOutcome(failed={m.receipt: "not applicable yet" for m in messages})
        applied.extend(m.body["activity_id"] for m in messages)
        return BatchOutcome()

    report = drain(
        pg_queues, "activities", apply_batch, batch_size=10, retry_base_seconds=60, max_seconds=60
    )
    assert (report.retried, report.applied, report.batches) == (10, 10, 2)
    assert applied == [f"s-{n}" for n in range(10, 20)]
    stats = next(s for s in pg_queues.stats() if s.queue == "activities")
    assert (stats.visible, stats.in_flight + stats.delayed) == (10, 10)


def test_drain_prepares_the_next_batch_while_it_applies_one(pg_queues):
    """`prepare_batch` runs on each batch as soon as it is received (the next one while the
    current one is applied), and `apply_batch` is given what it returned."""
    pg_queues.send("activities", [{"activity_id": f"q-{n:02d}"} for n in range(30)])
    prepared: list[list[str]] = []
    applied: list[list[str]] = []
    next_prepared: list[bool] = []

    def prepare_batch(messages):
        ids = [m.body["activity_id"] for m in messages]
        prepared.append(ids)
        return ids

    def apply_batch(ids):
        assert isinstance(ids, list) and all(isinstance(i, str) for i in ids)  # prepare's result
        deadline = time.monotonic() + 10
        while len(prepared) == len(applied) + 1 and len(applied) < 2:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        next_prepared.append(len(prepared) > len(applied) + 1)
        applied.append(ids)
        return BatchOutcome()

    report = drain(pg_queues, "activities", apply_batch, prepare_batch=prepare_batch, batch_size=10)
    assert [i for ids in applied for i in ids] == [f"q-{n:02d}" for n in range(30)]
    assert applied == prepared
    assert next_prepared == [True, True, False]  # the last batch has none after it
    assert report.applied == 30 and report.batches == 3


def test_a_batch_whose_preparation_raises_is_retried_whole(pg_queues, db):
    pg_queues.send("activities", [{"activity_id": f"r-{n}"} for n in range(5)])
    attempts: list[int] = []

    def prepare_batch(messages):
        attempts.append(len(messages))
        if len(attempts) == 1:
            raise ValueError("the sentiment model is not loaded yet")
        return messages

    applied: list[str] = []

    def apply_batch(messages):
        applied.extend(m.body["activity_id"] for m in messages)
        return BatchOutcome()

    first = drain(
        pg_queues, "activities", apply_batch, prepare_batch=prepare_batch,
        retry_base_seconds=0.05, max_seconds=10,
    )  # fmt: skip
    assert (first.retried, first.applied) == (5, 0) and applied == []
    errors = db.execute(
        "select distinct last_error from control.queue_messages where queue = 'activities'"
    ).fetchall()
    assert errors == [("ValueError: the sentiment model is not loaded yet",)]
    time.sleep(0.1)  # the retry delay
    second = drain(pg_queues, "activities", apply_batch, prepare_batch=prepare_batch)
    assert second.applied == 5 and sorted(applied) == [f"r-{n}" for n in range(5)]
    assert pg_queues.dead_letters("activities") == []
