"""End to end through Dagster: sandbox message stream -> queue `messages` -> sensor -> drain
runs; agents' events -> queue `conversation_events` -> drain; the closure job with a controlled
clock; every step compared with the independent model of the rules (tests/conversations/helpers).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from assets.conversations import defs as conversations_defs
from assets.conversations import store
from assets.conversations.defs import conversation_daily, conversation_daily_partitions
from assets.conversations.rules import parse_event_body, parse_messages_body
from sandbox.conversations import ConversationStream, queue_changed_event
from tests.conversations.helpers import (
    Model,
    ModelOrigin,
    assert_matches_model,
    conversation_definitions,
    iso,
    run_drain,
    run_sweep,
    stored_tickets,
    tick,
)

START = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
TENANTS = ("acme", "globex")
CLOSE_AFTER = {"globex": 90}  # acme keeps the job's setting: 180 minutes

# name -> (condition as saved, the same rule written for the model)
QUEUES = {
    "new work": (
        {"field": "state", "op": "in", "value": ["created", "working"]},
        lambda t, channel: t.state in ("created", "working"),
    ),
    "facebook": (
        {"field": "channel", "op": "eq", "value": "facebook"},
        lambda t, channel: channel == "facebook",
    ),
    "vip": (
        {"field": "tags", "op": "contains", "value": "vip"},
        lambda t, channel: "vip" in t.tags,
    ),
    "escalated": (
        {"field": "priority", "op": "gt", "value": "normal"},
        lambda t, channel: t.priority in ("high", "urgent"),
    ),
    "tier2 not waiting": (
        {
            "all": [
                {"field": "group", "op": "eq", "value": "tier2"},
                {"not": {"field": "state", "op": "in", "value": ["pending", "followup"]}},
            ]
        },
        lambda t, channel: t.group == "tier2" and t.state not in ("pending", "followup"),
    ),
}


def set_up(db, stream: ConversationStream) -> Model:
    model = Model(CLOSE_AFTER, default_close_after=180)
    with db.transaction():
        for origin in stream.origins():
            store.add_origin(db, origin.tenant_id, origin.name, origin.channel, origin.ref)
            model.origins[origin.ref] = ModelOrigin(origin.tenant_id, origin.name, origin.channel)
        for tenant, minutes in CLOSE_AFTER.items():
            store.set_close_after_minutes(db, tenant, minutes)
        for tenant in TENANTS:
            for name, (condition, rule) in QUEUES.items():
                store.save_work_queue(db, tenant, name, condition=condition, create=True)
                model.queues[tenant][name] = rule
    return model


def test_generated_stream_end_to_end(
    platform, conv_defs, instance, resources, conv_tables, engines
):
    """In both shapes of the platform, the same tickets, states and counters."""
    db, queues = conv_tables, resources["queues"]
    # moto's SQS slows down as a queue grows: a smaller stream there, the same checks
    stream = ConversationStream(
        seed=6 if platform.is_aws else 5,  # both hold every kind of trouble asserted below
        tenants=TENANTS,
        authors=70,
        messages=300 if platform.is_aws else 900,
        start=START,
        days=2.0,
    )
    model = set_up(db, stream)
    bodies = stream.messages()
    truth = stream.truth()
    assert truth.duplicates and truth.out_of_order and truth.removed and truth.hidden

    # acme's first origin is disabled while the first third of the stream arrives
    disabled = stream.origins()[0]
    with db.transaction():
        store.set_origin_active(db, disabled.name, False, tenant_id=disabled.tenant_id)
    model.origins[disabled.ref].active = False

    thirds = [bodies[: len(bodies) // 3], bodies[len(bodies) // 3 : 2 * len(bodies) // 3]]
    thirds.append(bodies[2 * len(bodies) // 3 :])
    for n, part in enumerate(thirds):
        queues.send("messages", part)
        run = run_drain(conv_defs, instance, resources, batch_size=150)
        model.feed(part)
        (check,) = run.get_asset_check_evaluations()
        assert check.passed and check.asset_check_key.name == "counters_equal_recount"
        assert_matches_model(db, model, TENANTS)
        if n == 0:
            assert model.shadowed_count("acme") > 0
            with db.transaction():
                _, replayed = store.set_origin_active(
                    db, disabled.name, True, tenant_id=disabled.tenant_id, engines=engines,
                    default_close_after=180,
                )  # fmt: skip
            assert replayed == len(model.shadowed[disabled.ref])
            model.enable(disabled.ref)
            assert_matches_model(db, model, TENANTS)
    assert not model.rejected and queues.dead_letters("messages") == []
    stored = db.execute("select count(*) from raw.conversation_messages").fetchone()[0]
    assert stored == len(truth.planned)

    # agents and rules act on every ticket; a queue's condition changes meanwhile
    acted_at = START + timedelta(days=2, hours=1)
    tickets = [(t, seq) for t in TENANTS for seq in sorted(stored_tickets(db, t))]
    events = stream.events_for(tickets, acted_at)
    with db.transaction():
        store.save_work_queue(
            db, "acme", "facebook",
            condition={"field": "channel", "op": "in", "value": ["facebook", "instagram"]},
            create=False,
        )  # fmt: skip
    model.queues["acme"]["facebook"] = lambda t, channel: channel in ("facebook", "instagram")
    events.append(queue_changed_event("acme", "facebook", acted_at))
    queues.send("conversation_events", events)
    run_drain(conv_defs, instance, resources, events=True, batch_size=200)
    model.events(events)
    assert_matches_model(db, model, TENANTS)
    assert queues.dead_letters("conversation_events") == []
    states = {t.state for t in model.tickets.values()}
    assert {"solved", "pending", "followup", "closed"} <= states

    # the clock moves: each transition happens exactly at its due time, not a second before
    due = sorted(set(model.due_times()))
    assert len(due) >= 3
    for moment in due[:3]:
        before = {k: (t.state, t.changed_at) for k, t in model.tickets.items()}
        run_sweep(conv_defs, instance, moment - timedelta(seconds=1))
        model.sweep(moment - timedelta(seconds=1))
        assert {k: (t.state, t.changed_at) for k, t in model.tickets.items()} == before
        assert_matches_model(db, model, TENANTS)
        run_sweep(conv_defs, instance, moment)
        model.sweep(moment)
        moved = [k for k, t in model.tickets.items() if (t.state, t.changed_at) != before[k]]
        assert moved and all(model.tickets[k].changed_at == moment for k in moved)
        assert_matches_model(db, model, TENANTS)
    later = acted_at + timedelta(days=3)
    run_sweep(conv_defs, instance, later)
    model.sweep(later)
    assert_matches_model(db, model, TENANTS)
    logged = db.execute(
        "select count(*) from raw.ticket_state_changes where cause = 'schedule' "
        "and changed_at > %s",
        (later,),
    ).fetchone()[0]
    assert logged == 0  # a transition is logged at its due time, never at the sweep's

    # customers write again: closed tickets get a successor, late messages land where they belong
    again = returning_customers(model, later + timedelta(hours=2))
    queues.send("messages", again)
    run_drain(conv_defs, instance, resources, batch_size=150)
    model.feed(again)
    assert_matches_model(db, model, TENANTS)
    assert db.execute(
        "select count(*) from raw.conversation_threads th where "
        "(select count(*) from raw.conversation_tickets t where t.thread_id = th.thread_id) > 1"
    ).fetchone()[0]

    # the daily figures of the stream's first day, backfillable, computed from the tables
    day = START.date()
    result = dg.materialize(
        [conversation_daily], resources=resources, partition_key=day.isoformat()
    )
    assert result.success
    assert daily_new_tickets(db, day) == sum(
        1 for t in model.tickets.values() if t.created_at.date() == day
    )


def test_a_backlog_is_applied_by_tenant_in_worker_processes_with_the_same_result(
    conv_tables, resources, instance, monkeypatch
):
    """A backlog deeper than LANE_BACKLOG (lowered here) is split by tenant over two worker
    processes: the tickets, states, memberships and counters are the model's, as in one
    process, and the run's figures add up the workers'."""
    monkeypatch.setattr(conversations_defs, "LANE_BACKLOG", 100)
    defs = conversation_definitions(resources, close_after_minutes=180, drain_processes=2)
    db, queues = conv_tables, resources["queues"]
    stream = ConversationStream(
        seed=5, tenants=TENANTS, authors=70, messages=900, start=START, days=2.0
    )
    model = set_up(db, stream)
    bodies = stream.messages()
    truth = stream.truth()
    queues.send("messages", bodies)
    run = run_drain(defs, instance, resources, batch_size=150)
    model.feed(bodies)
    assert_matches_model(db, model, TENANTS)
    (check,) = run.get_asset_check_evaluations()
    assert check.passed
    logs = [e.message for e in run.all_events if e.event_type_value == "ENGINE_EVENT"] + [
        e.user_message for e in instance.all_logs(run.run_id)
    ]
    assert any("drained messages in 2 process(es)" in text for text in logs)
    materialized = {m.asset_key.path[-1]: m for m in run.get_asset_materialization_events()}
    metadata = materialized["conversation_messages"].materialization.metadata
    assert metadata["stored"].value == len(truth.planned)
    assert metadata["already_stored"].value == truth.duplicates
    assert queues.depth("messages") == 0 and queues.dead_letters("messages") == []


def returning_customers(model: Model, when: datetime) -> list[dict]:
    """Messages of customers coming back: a new message in threads whose tickets are closed, a
    late one written while a closed ticket was open, and an agent's note in a closed thread."""
    bodies = []
    closed_threads = [
        key for key, tickets in model.threads.items() if tickets and tickets[-1].state == "closed"
    ]
    for n, (tenant, ref, customer) in enumerate(closed_threads[:12]):
        last = model.threads[(tenant, ref, customer)][-1]
        base = {"type": "message", "tenant_id": tenant, "origin": ref}
        bodies.append(
            {**base, "message_id": f"back-{n}", "kind": "customer",
             "author": {"external_id": customer}, "text": "Hello again, it broke once more.",
             "sent_at": iso(when + timedelta(minutes=n))}
        )  # fmt: skip
        if n % 3 == 0:
            inside = last.created_at + (last.closed_at - last.created_at) / 2
            bodies.append(
                {**base, "message_id": f"late-{n}", "kind": "customer",
                 "author": {"external_id": customer}, "text": "(sent while it was still open)",
                 "sent_at": iso(inside)}
            )  # fmt: skip
        if n % 4 == 1:
            bodies.append(
                {**base, "message_id": f"note-{n}", "kind": "private_note",
                 "author": {"external_id": "acme-agent-1"}, "customer": customer,
                 "text": "Returning customer.",
                 "sent_at": iso(when + timedelta(minutes=n, seconds=30))}
            )  # fmt: skip
    return bodies


def daily_new_tickets(db, day: date) -> int:
    return db.execute(
        "select coalesce(sum(new_tickets), 0) from analytics.conversation_daily where day = %s",
        (day,),
    ).fetchone()[0]


def test_invalid_messages_and_events_reach_the_dead_letter_queue_with_their_reason(
    platform, conv_defs, instance, resources, conv_tables
):
    db, queues = conv_tables, resources["queues"]
    with db.transaction():
        store.add_origin(db, "acme", "Acme Facebook", "facebook", "fb-acme")
        store.add_origin(db, "globex", "Globex X", "x", "x-globex")
    good = {
        "type": "message", "tenant_id": "acme", "message_id": "ok-1", "origin": "fb-acme",
        "author": {"external_id": "u1"}, "kind": "customer", "text": "Hi",
        "sent_at": "2026-11-20T10:00:00Z",
    }  # fmt: skip
    bad = {
        "b1": {**good, "message_id": "b1", "author": {"external_id": 7}},
        "b2": {k: v for k, v in {**good, "message_id": "b2"}.items() if k != "sent_at"},
        "b3": {**good, "message_id": "b3", "tenant_id": "nobody"},
        "b4": {**good, "message_id": "b4", "origin": "fb-unknown"},
        "b5": {**good, "message_id": "b5", "origin": "x-globex"},
        "b6": {**good, "message_id": "b6", "kind": "agent_reply", "customer": "stranger"},
        "b7": {**good, "message_id": "b7", "kind": "agent_reply", "sequence": 99},
        "b8": {**good, "message_id": "b8", "sent_at": iso(datetime.now(UTC) + timedelta(days=3))},
    }
    queues.send("messages", [good, *bad.values()])
    run = run_drain(conv_defs, instance, resources)
    dead = {d.body["message_id"]: d.error for d in queues.dead_letters("messages")}
    assert set(dead) == set(bad) - {"b6"}
    assert "Expected `str`, got `int` - at `$.author.external_id`" in dead["b1"]
    assert "missing required field `sent_at`" in dead["b2"]
    assert "Unknown tenant 'nobody'" in dead["b3"] and "$.tenant_id" in dead["b3"]
    assert "Unknown origin 'fb-unknown' of tenant 'acme' - at `$.origin`" in dead["b4"]
    assert "belongs to another tenant" in dead["b5"] and "$.origin" in dead["b5"]
    assert "Unknown ticket 99 of tenant 'acme' - at `$.sequence`" in dead["b7"]
    assert "ahead of its receipt" in dead["b8"] and "$.sent_at" in dead["b8"]
    materialized = {m.asset_key.path[-1]: m for m in run.get_asset_materialization_events()}
    assert materialized["conversation_messages"].materialization.metadata["rejected"].value == 7
    assert [t[2] for t in stored_tickets(db, "acme").values()] == ["created"]
    alert = db.execute(
        "select summary from control.alerts where source = 'queue:messages' "
        "order by alert_id desc limit 1"
    ).fetchone()
    assert alert and "7 message(s)" in alert[0]
    if platform.is_aws:  # and it went out on the SNS topic
        (published,) = platform.published_alerts()
        assert published["source"] == "queue:messages" and published["count"] == 7
    # a reply to a customer not seen yet may have overtaken the customer's message: it is
    # retried with a growing delay, and dead-lettered with its reason after its last receive
    for receive in range(2, 6):
        if not platform.is_aws:  # SQS keeps no error with a waiting message
            waiting = db.execute(
                "select receive_count, last_error from control.queue_messages "
                "where queue = 'messages'"
            ).fetchall()
            assert len(waiting) == 1 and waiting[0][0] == receive - 1
            assert "Unknown customer 'stranger'" in waiting[0][1]
        if not platform.retry_is_due(db, "messages"):
            break  # SQS: a drain received the retry twice, and the last receive dead-lettered it
        run_drain(conv_defs, instance, resources)
    (last,) = [d for d in queues.dead_letters("messages") if d.body["message_id"] == "b6"]
    assert "Unknown customer 'stranger'" in last.error and "$.customer" in last.error

    event = {"event_id": "e", "tenant_id": "acme", "occurred_at": "2026-11-20T11:00:00Z"}
    bad_events = {
        "x1": {**event, "event_id": "x1", "type": "set_state", "sequence": 42, "state": "solved"},
        "x2": {**event, "event_id": "x2", "type": "set_state", "sequence": 1, "state": "open"},
        "x3": {**event, "event_id": "x3", "type": "set_state", "sequence": 1, "state": "followup"},
        "x4": {**event, "event_id": "x4", "type": "queue_changed", "queue": "nope"},
        "x5": {**event, "event_id": "x5", "type": "assign", "tenant_id": "nobody", "sequence": 1,
               "agent": "a"},
    }  # fmt: skip
    good_event = {**event, "event_id": "g1", "type": "set_state", "sequence": 1, "state": "solved"}
    queues.send("conversation_events", [good_event, *bad_events.values()])
    run_drain(conv_defs, instance, resources, events=True)
    dead = {d.body["event_id"]: d.error for d in queues.dead_letters("conversation_events")}
    assert set(dead) == set(bad_events)
    assert "Unknown ticket 42 of tenant 'acme' - at `$.sequence`" in dead["x1"]
    assert "Invalid enum value 'open' - at `$.state`" in dead["x2"]
    assert "A followup needs `until` - at `$.until`" in dead["x3"]
    assert "Unknown work queue 'nope'" in dead["x4"] and "$.queue" in dead["x4"]
    assert "Unknown tenant 'nobody'" in dead["x5"]
    assert [t[2] for t in stored_tickets(db, "acme").values()] == ["solved"]
    # a rejected event's id is not remembered: corrected, it applies
    fixed = {**bad_events["x3"], "until": "2026-11-21T11:00:00Z"}
    queues.send("conversation_events", [fixed])
    run_drain(conv_defs, instance, resources, events=True)
    assert [t[2] for t in stored_tickets(db, "acme").values()] == ["followup"]


def test_sensors_launch_one_drain_at_a_time(conv_defs, instance, resources, conv_tables):
    queues = resources["queues"]
    for sensor, queue, job_name in (
        ("conversation_messages_queue_sensor", "messages", "conversation_messages_drain"),
        ("conversation_events_queue_sensor", "conversation_events", "conversation_events_drain"),
    ):
        empty = tick(conv_defs, instance, resources, sensor)
        assert not empty.run_requests and "empty" in empty.skip_message
        queues.send(queue, [{"type": "message", "tenant_id": "acme", "message_id": queue}])
        (request,) = tick(conv_defs, instance, resources, sensor).run_requests
        assert request.tags["supportflow/queue"] == queue
        job = conv_defs.resolve_job_def(job_name)
        instance.create_run_for_job(job_def=job, tags=request.tags)  # queued, not finished
        waiting = tick(conv_defs, instance, resources, sensor)
        assert not waiting.run_requests and "already in progress" in waiting.skip_message


def test_definitions_declare_the_schedule_the_partitions_and_the_check(conv_defs):
    schedule = conv_defs.resolve_schedule_def("conversation_closure_every_2_minutes")
    assert schedule.cron_schedule == "*/2 * * * *"  # due tickets change within 5 minutes
    # SUPPORTFLOW_PARTITIONS_START, which the tests set (tests/conftest.py)
    assert conversation_daily_partitions.start.date() == date(2024, 1, 1)
    assert conversation_daily.backfill_policy == dg.BackfillPolicy.single_run()
    job = conv_defs.resolve_job_def("conversation_messages_drain")
    assert {key.name for key in job.asset_layer.asset_graph.asset_check_keys} == {
        "counters_equal_recount"
    }


def test_the_daily_figures_of_a_day(conv_tables, resources, engines):
    db = conv_tables
    with db.transaction():
        store.add_origin(db, "acme", "Acme WhatsApp", "whatsapp", "wa-acme")
    t0 = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)

    def msg(n, author, kind="customer", minutes=0, **extra):
        return {"type": "message", "tenant_id": "acme", "message_id": f"d{n}", "origin": "wa-acme",
                "author": {"external_id": author}, "kind": kind, "text": "hi",
                "sent_at": iso(t0 + timedelta(minutes=minutes)), **extra}  # fmt: skip

    bodies = [
        msg(1, "u1"), msg(2, "u2", minutes=1), msg(3, "agent", "agent_reply", 10, customer="u1"),
        msg(4, "agent", "agent_reply", 31, customer="u2"), msg(5, "u1", minutes=40),
        msg(6, "agent", "private_note", 41, customer="u1"),
    ]  # fmt: skip
    with db.transaction():
        items = [
            store.Incoming(str(n), parse_messages_body(b), 0.0, t0) for n, b in enumerate(bodies)
        ]
        store.apply_messages(db, items, engines=engines)
        events = [
            ("s", parse_event_body({"type": "set_state", "event_id": "s", "tenant_id": "acme",
                                          "occurred_at": iso(t0 + timedelta(hours=1)),
                                          "sequence": 1, "state": "solved"})),
            ("w", parse_event_body({"type": "set_state", "event_id": "w", "tenant_id": "acme",
                                          "occurred_at": iso(t0 + timedelta(hours=2)),
                                          "sequence": 1, "state": "working"})),
        ]  # fmt: skip
        store.apply_events(db, events, engines=engines)
    result = dg.materialize([conversation_daily], resources=resources, partition_key="2026-11-10")
    assert result.success
    row = db.execute(
        "select new_tickets, customer_messages, agent_replies, first_response_p50_seconds, "
        "first_response_p90_seconds, solved, closed, reopened from analytics.conversation_daily "
        "where day = '2026-11-10' and tenant_id = 'acme'"
    ).fetchone()
    # first responses: 600 s and 1800 s; p50 interpolates, p90 near the slower one
    assert row == (2, 3, 2, 1200.0, 1680.0, 1, 0, 1)


def test_the_check_catches_a_counter_that_drifted_and_repair_fixes_it(
    conv_defs, instance, resources, conv_tables
):
    db = conv_tables
    with db.transaction():
        store.add_origin(db, "acme", "Acme Mail", "mail", "mail-acme")
        store.save_work_queue(db, "acme", "all", condition={"all": []}, create=True)
    resources["queues"].send(
        "messages",
        [{"type": "message", "tenant_id": "acme", "message_id": "m1", "origin": "mail-acme",
          "author": {"external_id": "u1"}, "kind": "customer", "text": "Hello",
          "sent_at": "2026-11-20T10:00:00Z"}],
    )  # fmt: skip
    (check,) = run_drain(conv_defs, instance, resources).get_asset_check_evaluations()
    assert check.passed
    db.execute("update analytics.queue_counters set ticket_count = ticket_count + 2")
    job = conv_defs.resolve_job_def("conversation_messages_drain")
    (check,) = job.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert not check.passed and check.metadata["mismatches"].value == 1
    with db.transaction():
        assert store.repair_counters(db, "acme") == 1
    (check,) = job.execute_in_process(instance=instance).get_asset_check_evaluations()
    assert check.passed and check.metadata["memberships"].value == 1


def test_the_counters_materialization_previews_queues_by_open_tickets(
    conv_defs, instance, resources, conv_tables
):
    from tests.conversations.helpers import drain_config

    db = conv_tables
    with db.transaction():
        store.add_origin(db, "acme", "Acme Mail", "mail", "mail-acme")
        store.add_origin(db, "acme", "Acme Facebook", "facebook", "fb-acme")
        store.save_work_queue(db, "acme", "everything", condition={"all": []}, create=True)
        store.save_work_queue(
            db, "acme", "facebook", condition={"field": "channel", "op": "eq", "value": "facebook"},
            create=True,
        )  # fmt: skip
    resources["queues"].send(
        "messages",
        [{"type": "message", "tenant_id": "acme", "message_id": f"m{n}", "origin": "mail-acme",
          "author": {"external_id": f"u{n}"}, "kind": "customer", "text": "Hello",
          "sent_at": f"2026-11-20T10:0{n}:00Z"} for n in range(3)]
        + [{"type": "message", "tenant_id": "acme", "message_id": "f1", "origin": "fb-acme",
            "author": {"external_id": "f1"}, "kind": "customer", "text": "Hi",
            "sent_at": "2026-11-20T10:05:00Z"}],
    )  # fmt: skip
    drain = conv_defs.resolve_assets_def("queue_counters")  # the drain, its resources bound
    result = dg.materialize(
        [drain], instance=instance, run_config=drain_config("conversation_messages_drain")
    )
    assert result.success
    (counters,) = [
        m for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey("queue_counters")
    ]  # fmt: skip
    metadata = counters.materialization.metadata
    assert metadata["memberships_created"].value == 5  # 4 in everything, 1 in facebook
    lines = metadata["preview"].value.splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
    assert cells[0] == ["tenant", "queue", "created", "open"]
    assert cells[2:] == [["acme", "everything", "4", "4"], ["acme", "facebook", "1", "1"]]
