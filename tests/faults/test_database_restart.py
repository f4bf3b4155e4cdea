"""A real PostgreSQL restart in the middle of work loses nothing and duplicates nothing.

The fault server is an embedded PostgreSQL of its own (see conftest.py), restarted by a separate
process while a ticket sync or an activities drain runs against it in this process, whose pools
and caches see the restart as they would in production. Afterwards the pipelines run again and
the tables are compared exactly with the ground truth.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from resources.queues import PostgresQueues
from resources.warehouse import (
    WarehouseResource,
    ensure_embedded_server,
    get_pool,
    stop_embedded_server,
)
from sandbox.server import SandboxConfig, build_app, start_in_thread
from sandbox.zendesk import (
    SANDBOX_EMAIL,
    SANDBOX_TOKEN,
    RateLimits,
    ZendeskSandbox,
    decode_cursor,
)
from tests.activities.helpers import activity_definitions, make_event
from tests.tickets.helpers import assert_matches_truth, materialized_metadata, zendesk_resource

pytestmark = pytest.mark.slow

# The sync is held at the sandbox until the database is down (see below), so the restart lands
# in its middle however fast or slow the machine is; the pace only has to stay under the limits.
RATE = 6000
LIMITS = RateLimits(export_per_minute=RATE, api_per_minute=10 * RATE)
TICKETS = 2000
PAGE = 100


# What the server's own log shows for each kind of restart (proof it really happened).
SERVER_LOG_SAYS = {
    "fast": "received fast shutdown request",
    "immediate": "database system was not properly shut down; automatic recovery in progress",
}


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


# --- the foundation: a restart in this process -------------------------------------------------


def test_server_stopped_in_this_process_starts_again_and_other_pools_stay_open(
    fault_home, fault_url, db_url
):
    other = get_pool(db_url)  # the session server's pool, in the same process
    before = get_pool(fault_url)
    with before.connection() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    assert stop_embedded_server(fault_home)
    assert before.closed and not other.closed  # only the stopped server's pools are closed
    ensure_embedded_server(fault_home)  # really starts it again (it used to hand back a stale URL)
    with get_pool(fault_url).connection() as conn:
        assert conn.execute("select pg_backend_pid()").fetchone()[0] != pid
    with other.connection() as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# --- scenario 1: a ticket sync -----------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_accounts() -> Iterator[tuple[dict, str]]:
    """One sandbox server hosting named Zendesk accounts at /accounts/<name>."""
    accounts: dict[str, ZendeskSandbox] = {}
    base_url, stop = start_in_thread(build_app(SandboxConfig(extra={"zendesk_accounts": accounts})))
    yield accounts, base_url
    stop()


def register_desk(url: str, settings, sandbox_accounts, sandbox: ZendeskSandbox):
    from assets.tickets.desks import add_desk
    from resources.secrets import SecretBox

    accounts, base_url = sandbox_accounts
    name = f"desk-{uuid.uuid4().hex[:10]}"
    accounts[name] = sandbox
    with connect(url) as conn:
        return add_desk(
            conn,
            SecretBox.from_settings(settings.secret_key, settings.home),
            name=name,
            subdomain="sandbox",
            base_url=f"{base_url}/accounts/{name}",
            email=SANDBOX_EMAIL,
            token=SANDBOX_TOKEN,
            tenant_id=f"tenant-{name}",
            export_rate_per_minute=RATE,
            api_rate_per_minute=10 * RATE,
        )


def sync(desk, resources, settings, instance, *, raise_on_error: bool = True):
    from assets.tickets.defs import DESK_PARTITIONS, zendesk_ticket_comments, zendesk_tickets

    if not instance.has_dynamic_partition(DESK_PARTITIONS.name, desk.name):
        instance.add_dynamic_partitions(DESK_PARTITIONS.name, [desk.name])
    return dg.materialize(
        [zendesk_tickets, zendesk_ticket_comments],
        partition_key=desk.name,
        instance=instance,
        resources={**resources, "zendesk": zendesk_resource(settings, page_size=PAGE)},
        raise_on_error=raise_on_error,
    )


def assert_rows_match_cursors(db, desk, sandbox: ZendeskSandbox) -> tuple[int, int]:
    """The stored rows are exactly what the committed cursors cover: tickets up to and including
    the ticket cursor's position; comments of every event from the split time (0 without one)
    before the events cursor and none after it (the page at the cursor's second overlaps the
    next one), and, while a first sync's per-ticket reading is unfinished, every comment of the
    tickets created before the split up to its progress and none of the later ones. Returns the
    counts."""
    ticket_cursor, events_cursor, split_at, read_up_to = db.execute(
        "select ticket_cursor, events_cursor, comments_split_at, comments_backfill_after "
        "from control.desks where desk_id = %s",
        (desk.desk_id,),
    ).fetchone()
    tickets = [
        r[0]
        for r in db.execute(
            "select ticket_id from raw.zendesk_tickets where desk_id = %s", (desk.desk_id,)
        )
    ]
    covered = (
        set()
        if ticket_cursor is None
        else {key[1] for key in sandbox._order if key <= decode_cursor(ticket_cursor)}
    )
    assert len(tickets) == len(set(tickets)) and set(tickets) == covered
    comments = [
        r[0]
        for r in db.execute(
            "select comment_id from raw.zendesk_ticket_comments where desk_id = %s",
            (desk.desk_id,),
        )
    ]
    assert len(comments) == len(set(comments))
    by_second = [
        (event["timestamp"], child["id"])
        for event in sandbox._events
        for child in event["child_events"]
        if child.get("event_type") == "Comment"
    ]
    read_per_ticket = set()
    if split_at is not None:
        read_per_ticket = {
            comment["id"]
            for tid, ticket in sandbox.tickets.items()
            if ticket["_created"] < split_at and tid <= read_up_to
            for comment in sandbox.comments[tid]
        }
    start = split_at or 0
    if events_cursor is None:
        assert set(comments) == read_per_ticket
    else:
        must = {cid for ts, cid in by_second if start <= ts < events_cursor} | read_per_ticket
        may = {cid for ts, cid in by_second if start <= ts <= events_cursor} | read_per_ticket
        assert must <= set(comments) <= may
    return len(tickets), len(comments)


@pytest.mark.parametrize(
    ("table", "threshold", "seed", "mode"),
    [("zendesk_tickets", 500, 61, "fast"), ("zendesk_ticket_comments", 1500, 62, "immediate")],
    ids=["tickets-restart", "comments-crash"],
)
def test_ticket_sync_through_a_database_restart(
    table,
    threshold,
    seed,
    mode,
    fault_url,
    fault_settings,
    fault_resources,
    sandbox_accounts,
    restart_when,
):
    sandbox = ZendeskSandbox(
        seed=seed, tickets=TICKETS, comments_per_ticket=2.0, rate_limits=LIMITS
    )
    comments_total = len(sandbox.truth_comments())
    desk = register_desk(fault_url, fault_settings, sandbox_accounts, sandbox)
    count = sql.SQL("select count(*) from raw.{} where desk_id = %s").format(sql.Identifier(table))

    def committed(conn):
        n = conn.execute(count, (desk.desk_id,)).fetchone()[0]
        return n if n >= threshold else 0

    instance = dg.DagsterInstance.ephemeral()
    pool = get_pool(fault_resources["warehouse"].url)  # this process's pool lives through it
    # Once `threshold` rows are committed the sandbox holds the sync's next request; the restart
    # begins while it is held and lets it go only when the database is down, so the sync meets
    # the restart in its middle, never after its end.
    with (
        connect(fault_url) as watch,
        sandbox.holding(lambda endpoint: bool(committed(watch))) as hold,
    ):
        restart = restart_when(
            lambda conn: hold.held.is_set() and committed(conn), mode=mode, on_down=hold.release
        )
        first = sync(desk, fault_resources, fault_settings, instance, raise_on_error=False)
        restart.wait()
    assert SERVER_LOG_SAYS[mode] in restart.server_log
    assert restart.observed >= threshold

    with connect(fault_url) as db:
        # The interrupted sync left whole pages with their cursors, and not all of them.
        tickets, comments = assert_rows_match_cursors(db, desk, sandbox)
        if table == "zendesk_ticket_comments":  # a first sync: the oldest tickets per ticket
            split_at, read_up_to = db.execute(
                "select comments_split_at, comments_backfill_after from control.desks "
                "where desk_id = %s",
                (desk.desk_id,),
            ).fetchone()
            assert split_at is not None
            unread = sum(
                1
                for tid, t in sandbox.tickets.items()
                if t["_created"] < split_at and tid > read_up_to
            )
        assert (tickets, comments) != (TICKETS, comments_total), "the restart came too late"
        assert not first.success
        failure = next(e for e in first.all_events if e.is_step_failure)
        assert desk.name in failure.event_specific_data.error.message

        second = materialized_metadata(sync(desk, fault_resources, fault_settings, instance))
        if table == "zendesk_ticket_comments":  # it resumed the per-ticket reading
            assert second["zendesk_ticket_comments"]["tickets_read_per_ticket"] == unread
        assert second["zendesk_tickets"]["rows_inserted"] == TICKETS - tickets
        assert second["zendesk_ticket_comments"]["rows_inserted"] == comments_total - comments
        assert_matches_truth(db, desk, sandbox)
        assert assert_rows_match_cursors(db, desk, sandbox) == (TICKETS, comments_total)
        synced_at, error = db.execute(
            "select last_synced_at, last_sync_error from control.desks where desk_id = %s",
            (desk.desk_id,),
        ).fetchone()
        assert synced_at is not None and error is None
        assert get_pool(fault_resources["warehouse"].url) is pool and not pool.closed

        # The cursors are where the data is: one more sync finds nothing new.
        third = materialized_metadata(sync(desk, fault_resources, fault_settings, instance))
        assert third["zendesk_tickets"]["rows_inserted"] == 0
        assert third["zendesk_ticket_comments"]["rows_inserted"] == 0
        assert_matches_truth(db, desk, sandbox)


# --- scenario 2: the activities drain ----------------------------------------------------------

EVENTS = 2000
BATCH = 100
GATED_BATCH = 5  # batches 1-4 are done when the restart begins
DRAIN_CONFIG = {
    "ops": {
        "activities": {
            "config": {"batch_size": BATCH, "visibility_timeout": 2.0, "retry_base_seconds": 0.2}
        }
    }
}


class Gate:
    """Holds the drain at its n-th pass through one point until the database is down, so the
    restart lands exactly there: before a batch is written, or after it committed but before
    its messages are acknowledged."""

    def __init__(self) -> None:
        self.point: str | None = None
        self.calls = 0
        self.reached = threading.Event()
        self.down = threading.Event()
        self._lock = threading.Lock()

    def arm(self, point: str) -> None:
        self.point, self.calls = point, 0
        self.reached.clear()
        self.down.clear()

    def passing(self, point: str) -> None:
        if point != self.point:
            return
        with self._lock:
            self.calls += 1
            hold = self.calls == GATED_BATCH
        if hold:
            self.reached.set()
            assert self.down.wait(30), "the database never went down"


GATE = Gate()


class GatedWarehouse(WarehouseResource):
    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        GATE.passing("write")  # the activities applier's one connection per batch
        with super().connection() as conn:
            yield conn


class GatedQueues(PostgresQueues):
    def ack(self, messages):
        GATE.passing("ack")
        return super().ack(messages)


def drain_until_settled(job, instance, queues, *, timeout: float = 30.0) -> list:
    """Run the drain until nothing is visible, in flight or waiting for a retry."""
    results = []
    deadline = time.monotonic() + timeout
    while True:
        results.append(
            job.execute_in_process(instance=instance, run_config=DRAIN_CONFIG, raise_on_error=False)
        )
        stats = next(s for s in queues.stats() if s.queue == "activities")
        if stats.visible + stats.in_flight + stats.delayed == 0:
            return results
        assert time.monotonic() < deadline, f"the queue did not settle: {stats}"
        time.sleep(0.3)


@pytest.mark.parametrize(
    ("point", "mode"), [("write", "fast"), ("ack", "immediate")], ids=["write-restart", "ack-crash"]
)
def test_activities_drain_through_a_database_restart(
    point, mode, fault_url, fault_settings, fault_resources, restart_when
):

    with connect(fault_url) as db:
        db.execute(
            "truncate raw.activities, raw.activity_ids, control.queue_messages, "
            "control.queue_dead_letters, control.queue_acks"
        )
    tenant = f"fault-{uuid.uuid4().hex[:8]}"
    events = [make_event(tenant, n) for n in range(EVENTS)]
    queues = fault_resources["queues"]
    assert queues.send("activities", events) == EVENTS

    GATE.arm(point)
    gated = {
        **fault_resources,
        "warehouse": GatedWarehouse(home=str(fault_settings.home)),
        "queues": GatedQueues(warehouse=WarehouseResource(home=str(fault_settings.home))),
    }
    defs = activity_definitions(gated, fault_settings)
    job = defs.resolve_job_def("activities_drain")
    restart = restart_when(lambda conn: GATE.reached.is_set(), mode=mode, on_down=GATE.down.set)
    with dg.instance_for_test() as instance:
        interrupted = job.execute_in_process(
            instance=instance, run_config=DRAIN_CONFIG, raise_on_error=False
        )
        restart.wait()
        assert SERVER_LOG_SAYS[mode] in restart.server_log
        with connect(fault_url) as db:
            written = db.execute(
                "select count(*) from raw.activities where tenant_id = %s", (tenant,)
            ).fetchone()[0]
        if interrupted.success:
            drained = interrupted.asset_materializations_for_node("activities")[0].metadata
            if drained["retried"].value == 0:
                # the pool waited for the server to come back and the run rode through the restart
                assert written == EVENTS
            else:
                # the next batch, applied while the held ack waited, was cut by the crash: it
                # waits for its retry and the run ended there (the later runs finish the queue)
                assert point == "ack" and written < EVENTS
        else:
            # The gated batch was written before the restart when held before its ack, and not
            # when held before its write. One batch more may be written: the drain applies a batch
            # while its background thread acknowledges the last one and receives the next, so the
            # pool can reconnect for the held write (or the batch after the held ack) before the
            # background call that met the restart ends the run.
            held = BATCH * (GATED_BATCH if point == "ack" else GATED_BATCH - 1)
            assert written in (held, held + BATCH)

        later = drain_until_settled(job, instance, queues)

    assert all(result.success for result in later)
    metadata = [
        result.asset_materializations_for_node("activities")[0].metadata for result in later
    ]
    inserted = sum(m["inserted"].value for m in metadata)
    already = sum(m["already_stored"].value for m in metadata)
    assert inserted == EVENTS - written  # each activity inserted exactly once, over all runs
    # Batches committed but not acknowledged came back and had no second effect: the gated one
    # when the run died at its ack, and any batch the drain had received ahead (it receives the
    # next batch while one is applied) whose 2-second lease ran out while the server restarted,
    # so that its acknowledgement found the messages leased again and deleted nothing.
    if point == "ack" and not interrupted.success:
        assert already >= BATCH
    assert 0 <= already <= EVENTS - inserted
    with connect(fault_url) as db:
        stored = [
            r[0]
            for r in db.execute(
                "select activity_id from raw.activities where tenant_id = %s", (tenant,)
            )
        ]
        ledger = db.execute(
            "select count(*) from raw.activity_ids where activity_id like %s", (f"{tenant}-%",)
        ).fetchone()[0]
        leftover = db.execute("select count(*) from control.queue_messages").fetchone()[0]
    assert len(stored) == EVENTS and set(stored) == {e["activity_id"] for e in events}
    assert ledger == EVENTS
    assert leftover == 0
    assert queues.dead_letters("activities") == []
