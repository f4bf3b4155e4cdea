"""Queue semantics every backend must keep (ARCHITECTURE.md, "Queues and message shapes")."""

from __future__ import annotations

import threading
import time

import pytest

from resources.queues import (
    BatchOutcome,
    QueueError,
    dedup_id_for,
    drain,
    retry_delay_seconds,
    validate_queue_name,
)

BACKENDS = ["postgres"]


@pytest.fixture(params=BACKENDS)
def queues(request):
    return request.getfixturevalue(f"{request.param}_queue_backend")


@pytest.fixture
def postgres_queue_backend(pg_queues):
    return pg_queues


def wait_until_received(queues, queue, timeout=15.0, **kwargs):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = queues.receive(queue, **kwargs)
        if got:
            return got
        time.sleep(0.2)
    return []


def test_send_receive_ack_roundtrip(queues):
    assert queues.send("activities", [{"activity_id": f"a{i}", "n": i} for i in range(3)]) == 3
    got = wait_until_received(queues, "activities", max_messages=10, visibility_timeout=30)
    got += queues.receive("activities", max_messages=10, visibility_timeout=30)
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
            with lock:
                seen.extend(m.dedup_id for m in batch)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == len(set(seen)) == 40


def test_consumer_that_dies_without_ack_loses_nothing(queues):
    queues.send("activities", [{"activity_id": "dies"}])
    first = wait_until_received(queues, "activities", visibility_timeout=1)
    assert [m.dedup_id for m in first] == ["activity_id:dies"]
    # the consumer "dies": no ack. While invisible nobody else gets it ...
    assert queues.receive("activities", visibility_timeout=1) == []
    # ... and after the timeout it comes back, its receive counted
    again = wait_until_received(queues, "activities", visibility_timeout=30)
    assert [m.body for m in again] == [{"activity_id": "dies"}]
    assert again[0].receive_count == 2


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


def test_retry_later_hides_the_message_for_the_delay(queues):
    queues.send("email_sent", [{"notification_id": "n1"}])
    [message] = wait_until_received(queues, "email_sent", visibility_timeout=30)
    assert queues.retry_later(message, 2, "notification store down") is False
    assert queues.receive("email_sent", visibility_timeout=30) == []
    [back] = wait_until_received(queues, "email_sent", visibility_timeout=30)
    assert back.receive_count == 2


def test_duplicate_of_an_acknowledged_id_is_flagged(queues):
    queues.send("activities", [{"activity_id": "dup-1", "v": 1}])
    first = wait_until_received(queues, "activities", visibility_timeout=30)
    queues.ack(first)
    queues.send("activities", [{"activity_id": "dup-1", "v": 2}])
    [again] = wait_until_received(queues, "activities", visibility_timeout=30)
    assert again.previously_acked and again.body["v"] == 2


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
    assert dedup_id_for({"activity_id": 7, "x": 1}) == "activity_id:7"
    assert dedup_id_for({"b": 1, "a": 2}) == dedup_id_for({"a": 2, "b": 1})


@pytest.mark.parametrize(
    ("receive_count", "expected"), [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (12, 300)]
)
def test_retry_delay_grows_and_is_capped(receive_count, expected):
    assert retry_delay_seconds(receive_count, 10) == expected
