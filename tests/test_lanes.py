"""resources/lanes.py: batches split by key over worker processes (real spawned processes), each
key's messages applied by one worker in the order received; a part that raises or whose worker
dies is failed whole, and the lane gets a new worker."""

from __future__ import annotations

import os

import pytest

from resources.lanes import ProcessLanes
from resources.queues import BatchOutcome, Message


def recording_apply():
    """A worker's applier: records (key, n) in order and returns it with the worker's pid;
    `action` in a body makes the part reject that message, raise, or kill the worker."""

    def apply(messages: list[Message]):
        rejected, seen = {}, []
        for message in messages:
            action = message.body.get("action")
            if action == "raise":
                raise RuntimeError(f"cannot apply {message.body['key']}")
            if action == "die":
                os._exit(3)
            if action == "reject":
                rejected[message.receipt] = "malformed on purpose"
            seen.append((message.body["key"], message.body["n"]))
        return BatchOutcome(rejected=rejected), (os.getpid(), seen)

    return apply


def messages(*bodies: dict) -> list[Message]:
    return [
        Message(queue="messages", body=body, dedup_id=f"d{i}", receive_count=1, receipt=f"r{i}")
        for i, body in enumerate(bodies)
    ]


def by_key(message: Message) -> str:
    return message.body["key"]


def test_each_key_is_applied_by_one_worker_in_the_order_received():
    with ProcessLanes(2, recording_apply, by_key) as lanes:
        a, b = "acme", "globex"  # the same lane by any hash modulo 2
        first = messages(
            *({"key": key, "n": n} for n in range(6) for key in (a, b)),
            {"key": a, "n": 6, "action": "reject"},
        )
        second = messages(*({"key": key, "n": n} for n in range(7, 10) for key in (b, a)))
        # the second batch is handed over before the first is collected, as the drain does
        parts = [lanes.dispatch(first), lanes.dispatch(second)]
        results = [lanes.collect(p) for p in parts]

    outcome, extras = results[0]
    assert outcome.failed == {}
    assert outcome.rejected == {first[-1].receipt: "malformed on purpose"}
    applied = {key: [] for key in (a, b)}
    workers = {key: set() for key in (a, b)}
    for _, part_extras in results:
        for pid, seen in part_extras:
            for key, n in seen:
                applied[key].append(n)
                workers[key].add(pid)
    assert applied == {a: list(range(10)), b: [0, 1, 2, 3, 4, 5, 7, 8, 9]}
    assert len(workers[a]) == len(workers[b]) == 1 and workers[a] != workers[b]
    assert os.getpid() not in workers[a] | workers[b]


def test_a_part_that_raises_or_whose_worker_dies_is_failed_whole_and_the_lane_goes_on():
    with ProcessLanes(2, recording_apply, by_key) as lanes:
        a, b = "acme", "globex"
        batch = messages(
            {"key": a, "n": 1}, {"key": b, "n": 1}, {"key": a, "n": 2, "action": "raise"}
        )
        outcome, extras = lanes.collect(lanes.dispatch(batch))
        # a's part rolled back as a whole; b's part was applied
        assert outcome.failed == {
            batch[0].receipt: f"RuntimeError: cannot apply {a}",
            batch[2].receipt: f"RuntimeError: cannot apply {a}",
        }
        assert [seen for _, seen in extras] == [[(b, 1)]]

        dying = messages({"key": a, "n": 3}, {"key": a, "n": 4, "action": "die"})
        outcome, extras = lanes.collect(lanes.dispatch(dying))
        assert set(outcome.failed) == {m.receipt for m in dying}
        assert "BrokenProcessPool" in outcome.failed[dying[0].receipt]
        assert extras == []

        again = messages({"key": a, "n": 3}, {"key": b, "n": 2})
        outcome, extras = lanes.collect(lanes.dispatch(again))
        assert outcome == BatchOutcome()
        assert sorted(s for _, seen in extras for s in seen) == sorted([(a, 3), (b, 2)])


ORPHANING_DRAIN = """
import os, sys, time
from resources.lanes import ProcessLanes
from resources.queues import Message
from tests.test_lanes import by_key, recording_apply

lanes = ProcessLanes(1, recording_apply, by_key)
parts = lanes.dispatch([Message("messages", {"key": "a", "n": 1}, "d", 1, "r")])
_, extras = lanes.collect(parts)
print(extras[0][0], flush=True)
os._exit(9)  # as a killed run: no shutdown, no cleanup
"""


def test_a_worker_leaves_when_its_drain_is_killed(tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"  # a file, not a pipe: a worker left behind would hold a pipe open
    with out.open("w") as stdout:
        done = subprocess.run(
            [sys.executable, "-c", ORPHANING_DRAIN], cwd=root, stdout=stdout, timeout=120,
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
    assert done.returncode == 9, out.read_text()
    worker = int(out.read_text().split()[-1])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and running(worker):
        time.sleep(0.2)
    assert not running(worker)


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie has exited: it only waits to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_lane_count_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        ProcessLanes(0, recording_apply, by_key)
