"""The conversation marts: `dbt build` through Dagster of fct_conversation_tickets and
agg_conversation_daily (with their staging views and tests) over a small, known set of
conversation rows for two tenants; the marts hold what the rows imply, every dbt test passes and
a tenant analyst sees only its tenants' rows."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import dagster as dg
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from assets.analytics.defs import analytics_dbt_models, dbt_resource

CONVERSATION_MODELS = [
    dg.AssetKey(["staging", "stg_conversation_tickets"]),
    dg.AssetKey(["staging", "stg_conversation_messages"]),
    dg.AssetKey(["staging", "stg_ticket_state_changes"]),
    dg.AssetKey(["analytics", "fct_conversation_tickets"]),
    dg.AssetKey(["analytics", "agg_conversation_daily"]),
]
MARTS = ("fct_conversation_tickets", "agg_conversation_daily")


def _insert(db, table: str, row: dict, returning: str | None = None):
    query = sql.SQL("insert into {} ({}) values ({}){}").format(
        sql.Identifier(*table.split(".")),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
        sql.SQL(" returning {}").format(sql.Identifier(returning)) if returning else sql.SQL(""),
    )
    cursor = db.execute(query, list(row.values()))
    return cursor.fetchone()[0] if returning else None


def _insert_conversations(db, tenant: str) -> dict:
    """Two origins, two threads, three tickets:

    #1 (facebook, customer u1): answered after 5 min, solved, reopened by the customer the next
       day, solved again, closed by the schedule; one message removed, one hidden, a shadowed
       message of the thread after the closure belongs to no ticket.
    #2 (facebook, u1 again after the closure): the AI answered after 1 min, working.
    #3 (mail, u2): created, unanswered.
    Only the first day has a computed conversation_daily row (other partitions not computed).
    """
    d0 = datetime.combine(date.today() - timedelta(days=3), datetime.min.time(), UTC)
    at = {  # name -> moment
        "m1": d0 + timedelta(hours=10),
        "m2": d0 + timedelta(hours=10, minutes=5),
        "m3": d0 + timedelta(hours=10, minutes=6),
        "m6": d0 + timedelta(hours=10, minutes=7),
        "m4": d0 + timedelta(hours=10, minutes=30),
        "solved1": d0 + timedelta(hours=11),
        "m5": d0 + timedelta(days=1, hours=9),
        "solved2": d0 + timedelta(days=1, hours=10),
        "m10": d0 + timedelta(days=1, hours=15),
        "closed": d0 + timedelta(days=2, hours=10),
        "m7": d0 + timedelta(days=2, hours=11),
        "m8": d0 + timedelta(days=2, hours=12),
        "m9": d0 + timedelta(days=2, hours=12, minutes=1),
    }
    fb = _insert(
        db,
        "control.origins",
        {"tenant_id": tenant, "name": "Facebook", "channel": "facebook", "ref": f"fb-{tenant}"},
        "origin_id",
    )
    mail = _insert(
        db,
        "control.origins",
        {"tenant_id": tenant, "name": "Mail", "channel": "mail", "ref": f"mail-{tenant}"},
        "origin_id",
    )
    th1 = _insert(
        db,
        "raw.conversation_threads",
        {"tenant_id": tenant, "origin_id": fb, "author_external_id": "u1"},
        "thread_id",
    )
    th2 = _insert(
        db,
        "raw.conversation_threads",
        {"tenant_id": tenant, "origin_id": mail, "author_external_id": "u2"},
        "thread_id",
    )

    def ticket(sequence, thread, origin, channel, author, state, **fields):
        row = {
            "tenant_id": tenant,
            "sequence": sequence,
            "thread_id": thread,
            "origin_id": origin,
            "channel": channel,
            "author_external_id": author,
            "state": state,
            **fields,
        }
        return _insert(db, "raw.conversation_tickets", row, "ticket_id")

    t1 = ticket(
        1,
        th1,
        fb,
        "facebook",
        "u1",
        "closed",
        priority="high",
        tags=["vip"],
        star_rating=4,
        sentiment_label="positive",
        sentiment_score=0.2,
        visible_message_count=5,
        first_customer_message_at=at["m1"],
        last_customer_message_at=at["m5"],
        first_response_at=at["m2"],
        solved_at=at["solved2"],
        closed_at=at["closed"],
        state_changed_at=at["closed"],
        created_at=at["m1"],
    )
    t2 = ticket(
        2,
        th1,
        fb,
        "facebook",
        "u1",
        "working",
        visible_message_count=2,
        first_customer_message_at=at["m8"],
        last_customer_message_at=at["m8"],
        first_response_at=at["m9"],
        state_changed_at=at["m9"],
        created_at=at["m8"],
    )
    t3 = ticket(
        3,
        th2,
        mail,
        "mail",
        "u2",
        "created",
        visible_message_count=1,
        first_customer_message_at=at["m10"],
        last_customer_message_at=at["m10"],
        state_changed_at=at["m10"],
        created_at=at["m10"],
    )
    attachment = '[{"name": "a.png", "url": "https://x.example/a.png", "size": 3}]'
    messages = [
        # (name, ticket, thread, origin, kind, author, extra columns)
        ("m1", t1, th1, fb, "customer", "u1", {"rating": 4, "attachments": attachment}),
        ("m2", t1, th1, fb, "agent_reply", "agent-1", {}),
        ("m3", t1, th1, fb, "private_note", "agent-1", {}),
        ("m6", t1, th1, fb, "ai_suggestion", "bot", {}),
        ("m4", t1, th1, fb, "customer", "u1", {"deleted": True, "deleted_at": at["m5"]}),
        ("m5", t1, th1, fb, "customer", "u1", {"hidden": True}),
        ("m7", None, th1, fb, "customer", "u1", {"shadowed": True}),
        ("m8", t2, th1, fb, "customer", "u1", {}),
        ("m9", t2, th1, fb, "ai_message", "bot", {}),
        ("m10", t3, th2, mail, "customer", "u2", {}),
    ]
    sentiment = {"m1": 0.6, "m4": -0.9, "m5": -0.2, "m7": 0.1, "m8": 0.0, "m10": -0.5}
    for name, ticket_id, thread, origin, kind, author, extra in messages:
        row = {
            "tenant_id": tenant,
            "message_id": f"{tenant}-{name}",
            "ticket_id": ticket_id,
            "thread_id": thread,
            "origin_id": origin,
            "kind": kind,
            "author_external_id": author,
            "text": f"text of {name}",
            "sentiment_score": sentiment.get(name),
            "sent_at": at[name],
            **extra,
        }
        _insert(db, "raw.conversation_messages", row)
    changes = [
        (t1, None, "created", "message", at["m1"]),
        (t1, "created", "working", "message", at["m2"]),
        (t1, "working", "solved", "agent", at["solved1"]),
        (t1, "solved", "working", "message", at["m5"]),
        (t1, "working", "solved", "agent", at["solved2"]),
        (t1, "solved", "closed", "schedule", at["closed"]),
        (t3, None, "created", "message", at["m10"]),
        (t2, None, "created", "message", at["m8"]),
        (t2, "created", "working", "message", at["m9"]),
    ]
    for ticket_id, from_state, to_state, cause, changed_at in changes:
        row = {
            "tenant_id": tenant,
            "ticket_id": ticket_id,
            "from_state": from_state,
            "to_state": to_state,
            "cause": cause,
            "changed_at": changed_at,
        }
        _insert(db, "raw.ticket_state_changes", row)
    daily = {
        "day": d0.date(),
        "tenant_id": tenant,
        "origin_id": fb,
        "origin_name": "Facebook",
        "channel": "facebook",
        "new_tickets": 1,
        "customer_messages": 1,
        "agent_replies": 1,
        "first_response_p50_seconds": 300.0,
        "first_response_p90_seconds": 300.0,
        "solved": 1,
        "closed": 0,
        "reopened": 0,
    }
    _insert(db, "analytics.conversation_daily", daily)
    return {"tickets": (t1, t2, t3), "origins": (fb, mail), "d0": d0.date()}


def _delete_conversations(db, tenant: str) -> None:
    for table in (
        "raw.ticket_state_changes",
        "raw.conversation_messages",
        "raw.conversation_tickets",
        "raw.conversation_threads",
        "analytics.conversation_daily",
        "control.origins",
    ):
        db.execute(
            sql.SQL("delete from {} where tenant_id = %s").format(
                sql.Identifier(*table.split("."))
            ),
            (tenant,),
        )


@pytest.fixture(scope="module")
def built(db_url, embedded_resources):
    resources = embedded_resources
    tenant, other = (f"cv-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with psycopg.connect(db_url, autocommit=True) as db:
        facts = _insert_conversations(db, tenant)
        _insert_conversations(db, other)
    result = dg.materialize(
        [analytics_dbt_models],
        selection=CONVERSATION_MODELS,
        resources={"dbt": dbt_resource(), "warehouse": resources["warehouse"]},
        raise_on_error=False,
    )
    facts["other_tenant"] = other
    yield tenant, facts, result
    with psycopg.connect(db_url, autocommit=True) as db:
        for t in (tenant, other):
            _delete_conversations(db, t)


def _rows(db, query: str, *params) -> list[dict]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def test_the_marts_are_dbt_assets_fed_by_the_conversation_assets():
    specs = {spec.key: spec for spec in analytics_dbt_models.specs}
    assert set(CONVERSATION_MODELS) <= set(specs)
    deps = {dep.asset_key for key in CONVERSATION_MODELS for dep in specs[key].deps}
    # raw.conversation_tickets and raw.ticket_state_changes are both the asset conversation_tickets
    assert {
        dg.AssetKey("conversation_messages"),
        dg.AssetKey("conversation_tickets"),
        dg.AssetKey("conversation_daily"),
    } <= deps


def test_dbt_build_succeeds_and_every_dbt_test_passes(built):
    _, _, result = built
    assert result.success
    checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert len(checks) >= 20
    assert [c.check_name for c in checks if not c.passed] == []
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert set(CONVERSATION_MODELS) <= materialized


def test_fct_conversation_tickets(built, db):
    tenant, facts, _ = built
    rows = _rows(
        db,
        "select * from analytics.fct_conversation_tickets where tenant_id = %s order by sequence",
        tenant,
    )
    assert [r["ticket_id"] for r in rows] == list(facts["tickets"])
    first, second, third = rows
    assert first["ticket_key"] == f"{tenant}:1" and first["state"] == "closed"
    assert not first["is_active"] and second["is_active"] and third["is_active"]
    assert (first["first_response_seconds"], second["first_response_seconds"]) == (300, 60)
    assert third["first_response_seconds"] is None and third["first_response_at"] is None
    assert first["resolution_seconds"] == 24 * 3600  # created d0 10:00, last solved d1 10:00
    counts = (
        "customer_messages",
        "agent_replies",
        "private_notes",
        "ai_messages",
        "ai_suggestions",
        "removed_messages",
        "hidden_messages",
        "attachments",
        "visible_message_count",
    )
    # removed m4 and the shadowed m7 count nowhere; hidden m5 still counts
    assert [first[c] for c in counts] == [2, 1, 1, 0, 1, 1, 1, 1, 5]
    assert [second[c] for c in counts] == [1, 0, 0, 1, 0, 0, 0, 0, 2]
    assert [third[c] for c in counts] == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    lifecycle = ("state_changes", "reopen_count", "times_solved", "scheduled_changes")
    assert [first[c] for c in lifecycle] == [6, 1, 2, 1]
    assert [second[c] for c in lifecycle] == [2, 0, 0, 0]
    assert (first["star_rating"], first["sentiment_label"], first["priority"]) == (
        4,
        "positive",
        "high",
    )
    assert first["tags"] == ["vip"] and third["channel"] == "mail"


def test_agg_conversation_daily(built, db):
    tenant, facts, _ = built
    fb, mail = facts["origins"]
    d0 = facts["d0"]
    d1, d2 = d0 + timedelta(days=1), d0 + timedelta(days=2)
    rows = _rows(
        db,
        "select day, origin_id, channel, figures_computed, new_tickets, agent_replies,"
        " first_response_p50_seconds, customers_writing, live_customer_messages, private_notes,"
        " ai_messages, ai_suggestions, ratings, avg_rating, avg_customer_sentiment"
        " from analytics.agg_conversation_daily where tenant_id = %s order by day, origin_id",
        tenant,
    )
    assert [tuple(r.values()) for r in rows] == [
        (d0, fb, "facebook", True, 1, 1, 300.0, 1, 1, 1, 0, 1, 1, Decimal(4), Decimal("0.6")),
        (d1, fb, "facebook", False, None, None, None, 1, 1, 0, 0, 0, 0, None, Decimal("-0.2")),
        (d1, mail, "mail", False, None, None, None, 1, 1, 0, 0, 0, 0, None, Decimal("-0.5")),
        (d2, fb, "facebook", False, None, None, None, 1, 1, 0, 1, 0, 0, None, Decimal(0)),
    ]


@pytest.mark.parametrize("table", MARTS)
def test_tenant_analyst_sees_only_its_tenants_rows(built, db, db_url, tenant_analyst_login, table):
    tenant, facts, _ = built
    both = [tenant, facts["other_tenant"]]
    query = sql.SQL("select distinct tenant_id from analytics.{} where tenant_id = any(%s)")
    with psycopg.connect(db_url, user=tenant_analyst_login, autocommit=True) as conn:
        seen = {r[0] for r in conn.execute(query.format(sql.Identifier(table)), (both,))}
        assert seen == set()
        db.execute(
            "insert into control.analyst_tenants (role_name, tenant_id) values (%s, %s)",
            (tenant_analyst_login, tenant),
        )
        seen = {r[0] for r in conn.execute(query.format(sql.Identifier(table)), (both,))}
        assert seen == {tenant}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select count(*) from raw.conversation_tickets")


def test_full_analyst_sees_every_tenant(built, analyst_conn):
    tenant, facts, _ = built
    both = [tenant, facts["other_tenant"]]
    for table in MARTS:
        query = sql.SQL("select distinct tenant_id from analytics.{} where tenant_id = any(%s)")
        rows = analyst_conn.execute(query.format(sql.Identifier(table)), (both,)).fetchall()
        assert {r[0] for r in rows} == set(both)
