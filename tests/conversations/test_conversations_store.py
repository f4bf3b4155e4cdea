"""The conversation store against a real PostgreSQL: the lifecycle of a ticket message by message,
out-of-order arrivals, shadowed origins and their replay, moderation flags, agents' events, the
schedule, derived properties, and what two drains at once, a failing batch and a killed drain do.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from assets.conversations import store
from assets.conversations.rules import parse_event_body, parse_messages_body
from resources.queues import drain
from sandbox.conversations import ConversationStream
from tests.conversations.helpers import (
    Model,
    ModelOrigin,
    assert_matches_model,
    counters_equal_recount,
    iso,
)

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def msg(mid: str, author: str = "u1", kind: str = "customer", at: float = 0, **extra) -> dict:
    body = {
        "type": "message",
        "tenant_id": extra.pop("tenant_id", "acme"),
        "message_id": mid,
        "origin": extra.pop("origin", "wa-acme"),
        "author": {"external_id": author},
        "kind": kind,
        "text": extra.pop("text", "Hello, I need help"),
        "sent_at": iso(minutes(at)),
    }
    if kind != "customer" and not {"ticket_id", "sequence"} & set(extra):
        body["customer"] = extra.pop("customer", "u1")
    body.update(extra)
    return body


def ev(eid: str, kind: str, at: float, sequence: int = 1, **fields) -> dict:
    return {"type": kind, "event_id": eid, "tenant_id": "acme", "occurred_at": iso(minutes(at)),
            "sequence": sequence, **fields}  # fmt: skip


def flag(eid: str, kind: str, mid: str, at: float) -> dict:
    return {"type": kind, "event_id": eid, "tenant_id": "acme", "message_id": mid,
            "occurred_at": iso(minutes(at))}  # fmt: skip


class Conversations:
    """Applies bodies straight through the store, one transaction per call."""

    def __init__(self, db, engines, close_after: int = 180) -> None:
        self.db, self.engines, self.close_after = db, engines, close_after

    def messages(self, *bodies: dict) -> store.BatchResult:
        items: list = []
        for n, body in enumerate(bodies):
            parsed = parse_messages_body(body)
            if body["type"] == "message":
                (score,) = store.score_customer_texts(self.engines, [parsed])
                items.append(store.Incoming(f"k{n}", parsed, score, datetime.now(UTC)))
            else:
                items.append((f"k{n}", parsed))
        with self.db.transaction():
            return store.apply_messages(
                self.db, items, engines=self.engines, default_close_after=self.close_after
            )

    def events(self, *bodies: dict) -> store.BatchResult:
        parsed = [(f"e{n}", parse_event_body(b)) for n, b in enumerate(bodies)]
        with self.db.transaction():
            return store.apply_events(
                self.db, parsed, engines=self.engines, default_close_after=self.close_after
            )

    def sweep(self, now: datetime) -> store.SweepResult:
        with self.db.transaction():
            return store.sweep(self.db, now, self.close_after)

    def ticket(self, sequence: int, tenant: str = "acme") -> dict:
        view = store.show_ticket(self.db, tenant, sequence)
        assert view is not None
        return {**view.ticket, "messages": [m["message_id"] for m in view.messages],
                "changes": [(c["from_state"], c["to_state"], c["cause"], c["event_id"],
                             c["changed_at"]) for c in view.state_changes],
                "queues": view.queues}  # fmt: skip


@pytest.fixture
def conv(conv_tables, engines):
    db = conv_tables
    with db.transaction():
        store.add_origin(db, "acme", "Acme WhatsApp", "whatsapp", "wa-acme")
        store.add_origin(db, "acme", "Acme Facebook", "facebook", "fb-acme")
        store.add_origin(db, "globex", "Globex Mail", "mail", "mail-globex")
        store.save_work_queue(db, "acme", "open", condition={"all": []}, create=True)
    return Conversations(db, engines)


def test_a_ticket_lives_its_lifecycle_message_by_message(conv):
    conv.messages(msg("m1", at=0))
    assert conv.ticket(1)["state"] == "created"
    conv.messages(msg("m2", "agent-1", "agent_reply", 5, sequence=1))
    conv.events(ev("e1", "set_state", 30, state="solved"))
    # written before the ticket was solved, arriving after: stored in place, no reopening
    conv.messages(msg("m0", at=20, text="one more detail"))
    ticket = conv.ticket(1)
    assert ticket["state"] == "solved" and ticket["visible_message_count"] == 3
    assert ticket["messages"] == ["m1", "m2", "m0"]
    conv.messages(msg("m3", at=60))
    assert conv.ticket(1)["state"] == "working"
    conv.events(ev("e2", "set_state", 70, state="pending"))
    due = minutes(70 + 180)
    assert conv.sweep(due - timedelta(seconds=1)).closed == 0
    assert conv.ticket(1)["state"] == "pending"
    assert conv.sweep(due).closed == 1
    ticket = conv.ticket(1)
    assert ticket["state"] == "closed" and ticket["closed_at"] == due
    conv.messages(msg("m4", at=400), msg("m5", at=65, text="sent before it closed"))
    first, second = conv.ticket(1), conv.ticket(2)
    assert "m5" in first["messages"] and first["state"] == "closed"
    assert second["messages"] == ["m4"] and second["thread_id"] == first["thread_id"]
    assert first["changes"] == [
        (None, "created", "message", "m1", minutes(0)),
        ("created", "working", "message", "m2", minutes(5)),
        ("working", "solved", "agent", "e1", minutes(30)),
        ("solved", "working", "message", "m3", minutes(60)),
        ("working", "pending", "agent", "e2", minutes(70)),
        ("pending", "closed", "schedule", None, due),
    ]


def test_messages_are_stored_in_thread_order_whatever_their_arrival(conv):
    conv.messages(msg("m3", at=30), msg("m1", at=10), msg("m2", "a", "agent_reply", 20))
    ticket = conv.ticket(1)
    assert ticket["messages"] == ["m1", "m2", "m3"]  # show_ticket orders by sent_at
    # created by m3 at :30; the reply at :20 is older than that: no move to working
    assert ticket["state"] == "created"
    assert ticket["first_customer_message_at"] == minutes(10)
    assert ticket["first_response_at"] == minutes(20)
    assert ticket["last_customer_message_at"] == minutes(30)


def test_a_followup_wakes_at_its_time_even_before_the_sweep_runs(conv):
    conv.messages(msg("m1", at=0))
    until = iso(minutes(120))
    conv.events(ev("f1", "set_state", 10, state="followup", until=until))
    conv.events(ev("f2", "set_state", 11, state="followup", until=iso(minutes(90))))
    ticket = conv.ticket(1)
    assert ticket["state"] == "followup" and ticket["followup_until"] == minutes(90)
    assert len(ticket["changes"]) == 2  # moving `until` is no state change
    # the customer writes after the follow-up came due, before any sweep ran
    conv.messages(msg("m2", at=100))
    assert conv.ticket(1)["changes"][-1] == ("followup", "working", "schedule", None, minutes(90))
    assert conv.ticket(1)["state"] == "working"
    conv.events(ev("f3", "set_state", 110, state="followup", until=iso(minutes(200))))
    assert conv.sweep(minutes(200) - timedelta(seconds=1)).followed_up == 0
    assert conv.sweep(minutes(200)).followed_up == 1
    assert conv.ticket(1)["changes"][-1] == ("followup", "working", "schedule", None, minutes(200))


def test_a_customer_reply_reopens_pending_solved_and_followup_but_agents_do_not(conv):
    conv.messages(msg("m1", at=0), msg("r1", "a", "agent_reply", 1))
    for n, state in enumerate(["pending", "solved", "followup"]):
        extra = {"until": iso(minutes(10 * n + 500))} if state == "followup" else {}
        conv.events(ev(f"s{n}", "set_state", 10 * n + 2, state=state, **extra))
        conv.messages(msg(f"r{n + 2}", "a", "agent_reply", 10 * n + 3))
        conv.messages(msg(f"n{n}", "a", "private_note", 10 * n + 4))
        conv.messages(msg(f"x{n}", "a", "ai_suggestion", 10 * n + 4.5))
        assert conv.ticket(1)["state"] == state
        conv.messages(msg(f"c{n}", at=10 * n + 5))
        ticket = conv.ticket(1)
        assert ticket["state"] == "working" and ticket["followup_until"] is None


def test_events_on_a_closed_ticket_and_repeated_events_change_nothing(conv):
    conv.messages(msg("m1", at=0))
    conv.events(ev("c", "set_state", 5, state="closed"))
    result = conv.events(
        ev("w", "set_state", 6, state="working"), ev("a", "assign", 7, agent="ann")
    )
    assert not result.rejected
    ticket = conv.ticket(1)
    assert ticket["state"] == "closed" and ticket["owner_agent"] is None
    applied = conv.db.execute(
        "select count(*) from raw.conversation_event_ids where tenant_id = 'acme'"
    ).fetchone()[0]
    assert applied == 3  # recorded, so their duplicates are ignored too
    conv.messages(msg("m2", at=10))
    conv.events(ev("up", "escalate", 11, sequence=2), ev("up", "escalate", 11, sequence=2))
    conv.events(ev("up", "escalate", 11, sequence=2))
    assert conv.ticket(2)["priority"] == "high"  # once, not three times


def test_assign_metadata_and_escalation_move_tickets_between_queues(conv):
    with conv.db.transaction():
        store.save_work_queue(
            conv.db, "acme", "vip billing", create=True, priority=5,
            condition={"all": [{"field": "tags", "op": "contains", "value": "vip"},
                               {"field": "topic", "op": "eq", "value": "billing"}]},
        )  # fmt: skip
        store.save_work_queue(
            conv.db, "acme", "urgent tier2", create=True,
            condition={"all": [{"field": "priority", "op": "eq", "value": "urgent"},
                               {"field": "group", "op": "eq", "value": "tier2"}]},
        )  # fmt: skip
    conv.messages(msg("m1", at=0))
    assert conv.ticket(1)["queues"] == ["open"]
    conv.events(
        ev("md", "set_metadata", 1, tags=["vip", "vip", "refund"], topic="billing",
           custom_fields={"plan": "pro", "seats": 3}),
        ev("md2", "set_metadata", 2, custom_fields={"seats": None, "region": "eu"}),
    )  # fmt: skip
    ticket = conv.ticket(1)
    assert ticket["tags"] == ["vip", "refund"] and ticket["queues"] == ["vip billing", "open"]
    assert ticket["custom_fields"] == {"plan": "pro", "region": "eu"}
    conv.events(ev("x1", "escalate", 3, priority="urgent", group="tier2"))
    assert conv.ticket(1)["queues"] == ["vip billing", "open", "urgent tier2"]
    conv.events(ev("x2", "assign", 4, group=None, agent="ann"))
    ticket = conv.ticket(1)
    assert ticket["owner_group"] is None and ticket["owner_agent"] == "ann"
    assert "urgent tier2" not in ticket["queues"]
    counts = {name: c for name, _, c in store.queue_counts(conv.db, "acme")}
    assert counts == {"vip billing": {"created": 1}, "open": {"created": 1}, "urgent tier2": {}}
    assert counters_equal_recount(conv.db)


def test_a_changed_queue_condition_reevaluates_open_tickets(conv):
    conv.messages(msg("m1", at=0), msg("m2", "u2", at=1), msg("m3", "u3", at=2, origin="fb-acme"))
    conv.events(ev("c", "set_state", 3, sequence=2, state="closed"))
    with conv.db.transaction():
        store.save_work_queue(
            conv.db, "acme", "open", create=False,
            condition={"field": "channel", "op": "eq", "value": "facebook"},
        )  # fmt: skip
    assert [conv.ticket(n)["queues"] for n in (1, 2, 3)] == [[], [], ["open"]]
    with conv.db.transaction():
        conv.db.execute(
            "update control.work_queues set condition = '{\"all\": []}' where name = 'open'"
        )
    result = conv.events(
        {"type": "queue_changed", "event_id": "q1", "tenant_id": "acme", "queue": "open",
         "occurred_at": iso(minutes(5))}
    )  # fmt: skip
    assert not result.rejected
    assert [conv.ticket(n)["queues"] for n in (1, 2, 3)] == [["open"], [], ["open"]]
    assert counters_equal_recount(conv.db)


def test_a_bad_condition_is_refused_and_nothing_is_saved(conv):
    from assets.conversations.rules import ConditionError

    with pytest.raises(ConditionError, match="Unknown field 'colour'"):
        with conv.db.transaction():
            store.save_work_queue(
                conv.db, "acme", "red", create=True,
                condition={"field": "colour", "op": "eq", "value": "red"},
            )  # fmt: skip
    assert [q.name for q in store.list_work_queues(conv.db, "acme")] == ["open"]


def test_a_disabled_origin_shadows_and_replays_oldest_first(conv, engines):
    conv.messages(msg("m1", at=0))
    with conv.db.transaction():
        store.set_origin_active(conv.db, "Acme WhatsApp", False, tenant_id="acme")
    conv.messages(
        msg("s2", at=50), msg("s1", "u9", at=40), msg("n1", "a", "agent_reply", 55),
        flag("h", "message_hidden", "s2", 60),
    )  # fmt: skip
    shadowed = conv.db.execute(
        "select message_id, ticket_id, hidden from raw.conversation_messages "
        "where shadowed order by message_id"
    ).fetchall()
    assert shadowed == [("n1", None, False), ("s1", None, False), ("s2", None, True)]
    ticket = conv.ticket(1)
    assert ticket["visible_message_count"] == 1 and ticket["state"] == "created"
    # shadowed messages are not shown: not even to a search
    assert [r["message_id"] for r in store.search_messages(conv.db, "acme", "help")] == ["m1"]
    with conv.db.transaction():
        _, replayed = store.set_origin_active(
            conv.db, "Acme WhatsApp", True, tenant_id="acme", engines=engines,
            default_close_after=180,
        )  # fmt: skip
    assert replayed == 3
    first, second = conv.ticket(1), conv.ticket(2)
    # replayed as if they had arrived now: u1's reply moved ticket 1 on, u9 got ticket 2
    assert first["messages"] == ["m1", "s2", "n1"] and first["state"] == "working"
    assert second["messages"] == ["s1"] and second["author_external_id"] == "u9"
    assert conv.db.execute(
        "select hidden from raw.conversation_messages where message_id = 's2'"
    ).fetchone() == (True,)
    assert counters_equal_recount(conv.db)


def test_flags_remove_hide_and_unhide_by_their_own_time(conv):
    conv.messages(
        msg("m1", at=0, rating=2, text="This is terrible, I hate it"),
        msg("m2", at=10, rating=5, text="Thanks, great service, love it"),
    )
    ticket = conv.ticket(1)
    assert ticket["star_rating"] == 5 and ticket["visible_message_count"] == 2
    conv.messages(flag("r", "message_removed", "m2", 20))
    ticket = conv.ticket(1)
    assert ticket["star_rating"] == 2 and ticket["visible_message_count"] == 1
    assert ticket["sentiment_label"] == "negative" and ticket["last_customer_message_at"] == T0
    # an unhide older than the hide, delivered after it, leaves the message hidden
    conv.messages(flag("h", "message_hidden", "m1", 30), flag("u", "message_unhidden", "m1", 25))
    assert conv.db.execute(
        "select hidden from raw.conversation_messages where message_id = 'm1'"
    ).fetchone() == (True,)
    assert conv.ticket(1)["visible_message_count"] == 1  # hidden still counts as visible
    # a flag for a message not stored yet is retried, not dropped
    result = conv.messages(flag("h2", "message_hidden", "m9", 40))
    assert "No message 'm9'" in result.failed["k0"] and "$.message_id" in result.failed["k0"]
    conv.messages(msg("m9", at=35))
    assert not conv.messages(flag("h2", "message_hidden", "m9", 40)).failed
    assert conv.db.execute(
        "select hidden from raw.conversation_messages where message_id = 'm9'"
    ).fetchone() == (True,)


def test_derived_properties_enrichment_language_and_search(conv):
    with conv.db.transaction():
        store.set_enrichment(
            conv.db, "acme", "vip-1", tags=["vip"], priority="high", custom_fields={"tier": "gold"}
        )
    conv.messages(
        msg("g1", "vip-1", at=0, text="Die Rechnung ist falsch und niemand antwortet, furchtbar."),
        msg("g2", "a", "ai_message", 1, customer="vip-1", text="Thanks! An agent will reply."),
        msg("g3", "a", "agent_reply", 2, customer="vip-1", text="We refunded the invoice.",
            attachments=[{"name": "r.pdf", "url": "https://x/r.pdf", "size": 10}]),
    )  # fmt: skip
    ticket = conv.ticket(1)
    assert ticket["tags"] == ["vip"] and ticket["priority"] == "high"
    assert ticket["custom_fields"] == {"tier": "gold"} and ticket["language"] == "de"
    assert ticket["first_response_at"] == minutes(1) and ticket["state"] == "working"
    found = store.search_messages(conv.db, "acme", "refunded invoice")
    assert [(r["sequence"], r["message_id"]) for r in found] == [(1, "g3")]
    assert "<b>refunded</b>" in found[0]["excerpt"]
    assert store.search_messages(conv.db, "globex", "refunded invoice") == []


def test_tenants_never_share_threads_tickets_or_sequences(conv):
    conv.messages(msg("same-id", at=0))
    conv.messages(msg("same-id", at=0, tenant_id="globex", origin="mail-globex"))
    assert conv.ticket(1)["tenant_id"] == "acme"
    assert conv.ticket(1, "globex")["tenant_id"] == "globex"
    result = conv.messages(msg("x", at=1, tenant_id="globex", origin="wa-acme"))
    assert "belongs to another tenant" in result.rejected["k0"]


# --- concurrency and faults -----------------------------------------------------------------------


def _stream(authors: int = 40, messages: int = 500, seed: int = 3) -> ConversationStream:
    return ConversationStream(
        seed=seed, tenants=("acme", "globex"), authors=authors, messages=messages,
        start=datetime(2026, 11, 18, 8, tzinfo=UTC), days=1.0,
    )  # fmt: skip


def _register(db, stream: ConversationStream) -> Model:
    model = Model({}, default_close_after=180)
    with db.transaction():
        for origin in stream.origins():
            store.add_origin(db, origin.tenant_id, origin.name, origin.channel, origin.ref)
            model.origins[origin.ref] = ModelOrigin(origin.tenant_id, origin.name, origin.channel)
        for tenant in stream.tenants:
            store.save_work_queue(
                db, tenant, "new work", create=True,
                condition={"field": "state", "op": "in", "value": ["created", "working"]},
            )  # fmt: skip
            model.queues[tenant]["new work"] = lambda t, c: t.state in ("created", "working")
    return model


def _snapshot(db) -> dict:
    return {
        "tickets": db.execute(
            "select tenant_id, sequence, thread_id, state, state_changed_at, visible_message_count,"
            " star_rating, first_response_at, sentiment_score from raw.conversation_tickets "
            "order by 1, 2"
        ).fetchall(),
        "messages": db.execute(
            "select tenant_id, message_id, ticket_id, deleted, hidden, shadowed "
            "from raw.conversation_messages order by 1, 2"
        ).fetchall(),
        "changes": db.execute("select count(*) from raw.ticket_state_changes").fetchone(),
        "members": db.execute("select * from raw.work_queue_members order by 1, 2, 3").fetchall(),
        "counters": db.execute(
            "select * from analytics.queue_counters order by 1, 2, 3"
        ).fetchall(),
        "threads": db.execute("select count(*) from raw.conversation_threads").fetchone(),
    }


def _drain(resources, engines, **options):
    tally = store.MessageTally()
    applier = store.MessageBatchApplier(
        resources["warehouse"].connection, tally, engines=engines, default_close_after=180
    )
    options = {"batch_size": 40, "retry_base_seconds": 0.05, "skip_previously_acked": False,
               **options}  # fmt: skip
    return drain(resources["queues"], "messages", applier, **options), tally


def _two_drains_at_once(resources, engines) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _drain(resources, engines)
        except BaseException as exc:  # noqa: BLE001 - reported to the test below
            errors.append(exc)

    while True:
        workers = [threading.Thread(target=run) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=300)
        assert not errors and not any(w.is_alive() for w in workers)
        # A reply handled before the customer message it answers (the other drain has it) is
        # retried later: let the retry delay pass at once, until every message is through.
        with resources["warehouse"].connection() as conn:
            left = conn.execute(
                "update control.queue_messages set visible_at = now() where queue = 'messages' "
                "returning 1"
            ).fetchall()
        if not left:
            return


def test_two_drains_at_once_change_nothing(conv_tables, resources, engines):
    db = conv_tables
    stream = _stream()
    _register(db, stream)
    bodies = stream.messages()
    resources["queues"].send("messages", bodies)
    _two_drains_at_once(resources, engines)
    assert resources["queues"].depth("messages") == 0
    truth = stream.truth()
    # without closures the outcome is order-free: one ticket per thread holding its messages
    stored = db.execute(
        """
        select t.tenant_id, o.ref, th.author_external_id, t.sequence,
               array_agg(m.message_id order by m.message_id)
        from raw.conversation_tickets t
        join raw.conversation_threads th on th.thread_id = t.thread_id
        join control.origins o on o.origin_id = t.origin_id
        join raw.conversation_messages m on m.ticket_id = t.ticket_id
        group by 1, 2, 3, 4
        """
    ).fetchall()
    expected = {key: sorted(m.message_id for m in messages)
                for key, messages in truth.threads().items()}  # fmt: skip
    assert {(t, ref, a): ids for t, ref, a, _, ids in stored} == {
        tuple(k): v for k, v in expected.items()
    }
    for tenant in stream.tenants:
        sequences = sorted(seq for t, _, _, seq, _ in stored if t == tenant)
        assert sequences == list(range(1, len(sequences) + 1))
    assert counters_equal_recount(db)
    visible = db.execute(
        "select count(*) from raw.conversation_tickets t where visible_message_count <> "
        "(select count(*) from raw.conversation_messages m "
        " where m.ticket_id = t.ticket_id and not m.deleted)"
    ).fetchone()[0]
    assert visible == 0
    before = _snapshot(db)
    # everything again, twice at once: every body is a duplicate and changes nothing
    resources["queues"].send("messages", bodies)
    _two_drains_at_once(resources, engines)
    assert _snapshot(db) == before


DERIVED = (
    "select ticket_id, visible_message_count, first_customer_message_at, "
    "last_customer_message_at, first_response_at, star_rating, sentiment_count, "
    "round(sentiment_sum::numeric, 9), round(sentiment_score::numeric, 9), sentiment_label "
    "from raw.conversation_tickets order by ticket_id"
)


def test_derived_properties_kept_per_message_equal_a_recount_of_the_messages(
    conv_tables, resources, engines
):
    """The drain folds in-order messages into a ticket's derived properties and aggregates a
    ticket again only when a message arrives out of order or is removed: both ways agree."""
    db = conv_tables
    stream = _stream(authors=40, messages=600, seed=5)
    model = _register(db, stream)
    bodies = stream.messages()
    truth = stream.truth()
    assert truth.out_of_order and truth.removed  # both ways are exercised
    resources["queues"].send("messages", bodies)
    while True:
        _drain(resources, engines, batch_size=50)
        left = db.execute(
            "update control.queue_messages set visible_at = now() where queue = 'messages' "
            "returning 1"
        ).fetchall()
        if not left:
            break
    model.feed(bodies)
    assert_matches_model(db, model, stream.tenants)
    kept = db.execute(DERIVED).fetchall()
    ids = [row[0] for row in kept]
    with db.transaction():
        store.refresh_derived(db, ids, engines.neutral_band)
    assert db.execute(DERIVED).fetchall() == kept
    live = db.execute(
        "select count(*) from raw.conversation_messages where not deleted and not shadowed"
    ).fetchone()[0]
    assert sum(row[1] for row in kept) == live


def test_a_batch_failing_half_way_loses_and_duplicates_nothing(
    conv_tables, resources, engines, monkeypatch
):
    db = conv_tables
    stream = _stream(authors=30, messages=300, seed=8)
    model = _register(db, stream)
    bodies = stream.messages()
    resources["queues"].send("messages", bodies)
    real = store.refresh_membership

    def fail(*args, **kwargs):
        # threads, tickets and messages of the batch are written by now: the batch dies half way
        assert db.execute("select count(*) from raw.conversation_messages").fetchone()[0] == 0
        raise RuntimeError("injected: the drain died half way through its batch")

    monkeypatch.setattr(store, "refresh_membership", fail)
    report, _ = _drain(resources, engines, batch_size=len(bodies))
    assert report.retried == len(bodies) and report.applied == 0
    assert _snapshot(db)["messages"] == [] and _snapshot(db)["tickets"] == []
    monkeypatch.setattr(store, "refresh_membership", real)
    db.execute("update control.queue_messages set visible_at = now() where queue = 'messages'")
    report, _ = _drain(resources, engines, batch_size=len(bodies))
    assert report.applied == len(bodies)
    model.feed(bodies)
    assert_matches_model(db, model, stream.tenants)


KILLED_DRAIN = """
import os
from assets.conversations import store
from resources.queues import drain
from resources.runtime import build_resources
from resources.settings import Settings

resources = build_resources(Settings.from_env(), for_dagster=False)
inner = store.MessageBatchApplier(
    resources["warehouse"].connection, store.MessageTally(), engines=store.Engines.default(),
    default_close_after=180,
)
batches = 0


def apply(messages):
    global batches
    outcome = inner(messages)
    batches += 1
    if batches == 3:
        os._exit(9)  # the third batch is committed, not acknowledged: killed right there
    return outcome


drain(resources["queues"], "messages", apply, batch_size=60, visibility_timeout=600,
      skip_previously_acked=False)
"""


def test_a_drain_killed_between_commit_and_ack_loses_and_duplicates_nothing(
    conv_tables, resources, engines
):
    db = conv_tables
    stream = _stream(authors=30, messages=300, seed=9)
    model = _register(db, stream)
    bodies = stream.messages()
    resources["queues"].send("messages", bodies)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_DRAIN], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == 9, killed.stderr[-2000:]
    stored = db.execute("select count(*) from raw.conversation_messages").fetchone()[0]
    assert 0 < stored < len(bodies)
    in_flight = db.execute(
        "select count(*) from control.queue_messages where queue = 'messages' "
        "and visible_at > now()"
    ).fetchone()[0]
    # Unacknowledged, back once their lease expires: the killed batch, and the batch before it
    # or the one after it (the drain's background thread acknowledges the one and then receives
    # the other while a batch is applied), or both
    assert in_flight in (60, 120)
    left = db.execute(
        "select count(*) from control.queue_messages where queue = 'messages'"
    ).fetchone()[0]
    assert left >= len(bodies) - 120
    db.execute("update control.queue_messages set visible_at = now() where queue = 'messages'")
    report, _ = _drain(resources, engines, batch_size=100)
    assert report.applied == left
    model.feed(bodies)
    assert_matches_model(db, model, stream.tenants)
