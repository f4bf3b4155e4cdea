"""A real `supportflow sync` subprocess killed (SIGKILL) mid-way, twice, then started again:
the desk ends exactly equal to the sandbox's ground truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sandbox.zendesk import RateLimits, ZendeskSandbox
from tests.tickets.helpers import assert_matches_truth

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def start_sync(desk_name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "sync", desk_name, "--page-size", "100"],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when_held(
    process: subprocess.Popen,
    sandbox: ZendeskSandbox,
    endpoint: str,
    served: int,
    db,
    query: str,
    desk_id: int,
    threshold: int,
) -> int:
    """Stop the sync at a known point and SIGKILL it there: the sandbox holds every request of
    `endpoint` after the first `served`, the test waits until `query` counts `threshold` rows
    (the pages before the held one are committed) and kills the process, blocked on the held
    request. Returns the rows the killed sync left."""

    def count() -> int:
        return db.execute(query, (desk_id,)).fetchone()[0]

    def pick(name: str) -> bool:
        return name == endpoint and sandbox.requests[endpoint] >= served

    with sandbox.holding(pick) as hold:
        deadline = time.monotonic() + 120
        while not (hold.held.is_set() and count() >= threshold):
            if process.poll() is not None:
                pytest.fail(f"sync finished before it could be killed: {process.stderr.read()}")
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"sync never reached the held request ({count()} rows)")
            hold.held.wait(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    return count()


def test_killed_sync_resumes_exactly(db, make_desk):
    sandbox = ZendeskSandbox(
        seed=41,
        tickets=2000,
        comments_per_ticket=4.0,
        rate_limits=RateLimits(export_per_minute=6000, api_per_minute=60000),
    )
    desk = make_desk(sandbox, export_rate=6000, api_rate=60000)
    seconds = Counter(ts for ts, _ in sandbox._event_keys)
    assert max(seconds.values()) > 100  # one second fills more than a page of 100 events
    tickets_q = "select count(*) from raw.zendesk_tickets where desk_id = %s"
    comments_q = "select count(*) from raw.zendesk_ticket_comments where desk_id = %s"

    # held at its 6th page of 100 tickets: killed with exactly 5 pages committed
    first = start_sync(desk.name)
    killed_at = kill_when_held(
        first, sandbox, "tickets_export", 5, db, tickets_q, desk.desk_id, 500
    )
    assert killed_at == 500  # killed in the middle of the ticket export
    cursor = db.execute(
        "select ticket_cursor from control.desks where desk_id = %s", (desk.desk_id,)
    ).fetchone()[0]
    assert cursor  # the committed pages' cursor survived the kill

    # held at its 26th page of ticket events (about 2,400 comments): killed mid-way
    second = start_sync(desk.name)
    killed_at = kill_when_held(
        second, sandbox, "ticket_events_export", 25, db, comments_q, desk.desk_id, 2000
    )
    assert 2000 <= killed_at < 8000  # killed in the middle of the comments
    (split_at,) = db.execute(
        "select comments_split_at from control.desks where desk_id = %s", (desk.desk_id,)
    ).fetchone()
    assert split_at is not None  # in the middle of a first sync reading old tickets per ticket

    sandbox.apply_changes(new=30, updated=100, deleted=10, comments=200)
    final = start_sync(desk.name)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert out.startswith(f"desk {desk.name}: tickets")
    assert_matches_truth(db, desk, sandbox)
    assert db.execute(
        "select comments_split_at from control.desks where desk_id = %s", (desk.desk_id,)
    ).fetchone() == (None,)  # the resumed first sync finished


def test_two_desks_sync_at_the_same_time_in_two_processes(db, make_desk):
    fast = RateLimits(export_per_minute=6000, api_per_minute=60000)
    one = ZendeskSandbox(seed=42, tickets=800, comments_per_ticket=3.0, rate_limits=fast)
    two = ZendeskSandbox(seed=43, tickets=600, comments_per_ticket=2.0, rate_limits=fast)
    desk_one = make_desk(one, export_rate=6000, api_rate=60000)
    desk_two = make_desk(two, export_rate=6000, api_rate=60000, oauth=True)
    processes = [start_sync(desk_one.name), start_sync(desk_two.name)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert_matches_truth(db, desk_one, one)
    assert_matches_truth(db, desk_two, two)
