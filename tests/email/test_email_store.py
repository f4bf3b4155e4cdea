"""Receipts against the real warehouse: status rules in SQL, duplicates, failure activities on
the ticket timeline, orphans and adoption, internal senders, concurrent drains, routing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from assets.email.rules import InvalidMessage, parse_receipt, parse_sent_notification
from assets.email.store import (
    apply_receipts,
    pods_for_tenants,
    set_tenant_pod,
    store_sent_notifications,
)
from webhooks.events import normalise_mailgun, normalise_sendgrid, normalise_ses

INTERNAL = ["invitations@supportflow.example"]


def receipt_for(generator, notification, kind, at=None):
    at = at or datetime.now(UTC)
    data, _ = generator.event(notification, kind, at)
    provider = notification["provider"]
    if provider == "mailgun":
        (message,) = normalise_mailgun({"event-data": data})
    elif provider == "sendgrid":
        (message,) = normalise_sendgrid([data])
    else:
        import json

        (message,) = normalise_ses(f"sns-{data['mail']['messageId']}-{kind}-{at}", json.dumps(data))
    return parse_receipt(message)


def store(db_url, generator, tenant, provider="mailgun", **kwargs):
    n = generator.notification(tenant, 77, "reply", provider, datetime.now(UTC), **kwargs)
    with psycopg.connect(db_url) as conn:
        store_sent_notifications(conn, [parse_sent_notification(n)])
    return n


def apply(db_url, receipts, last=False):
    with psycopg.connect(db_url) as conn:
        return apply_receipts(
            conn, receipts, last_attempt=[last] * len(receipts), internal_senders=INTERNAL
        )


def status_of(db, notification):
    return db.execute(
        "select status from raw.notifications where notification_id = %s",
        (notification["notification_id"],),
    ).fetchone()[0]


def failure_activities(db, tenant):
    return db.execute(
        "select activity_id, actor_type, action, details from raw.activities "
        "where tenant_id = %s and action = 'email_delivery_failed'",
        (tenant,),
    ).fetchall()


@pytest.mark.parametrize("provider", ["mailgun", "sendgrid", "ses"])
def test_status_moves_once_and_duplicates_have_no_effect(
    db, db_url, email_tables, generator, tenant, provider
):
    n = store(db_url, generator, tenant, provider)
    assert status_of(db, n) == "sending"
    accepted = receipt_for(generator, n, "accepted")
    delivered = receipt_for(generator, n, "delivered")
    permanent = receipt_for(generator, n, "permanent")
    results = apply(db_url, [accepted, accepted])
    assert (results.applied, results.duplicates, results.status_changes) == (1, 1, 1)
    assert status_of(db, n) == "pending"
    apply(db_url, [delivered])
    assert status_of(db, n) == "delivered"
    results = apply(db_url, [permanent, delivered])  # a late failure, a re-delivered receipt
    assert (results.applied, results.duplicates, results.status_changes) == (1, 1, 0)
    assert status_of(db, n) == "delivered"
    events = db.execute(
        "select outcome, status_applied from raw.delivery_events where provider_reference = %s "
        "order by delivery_event_id",
        (n["provider_reference"],),
    ).fetchall()
    assert events == [
        ("accepted", "pending"),
        ("delivered", "delivered"),
        ("permanent-failure", None),
    ]
    assert failure_activities(db, tenant) == []


def test_opens_clicks_complaints_are_stored_not_statuses(
    db, db_url, email_tables, generator, tenant
):
    n = store(db_url, generator, tenant, "ses")
    receipts = [receipt_for(generator, n, kind) for kind in ("open", "click", "complaint")]
    results = apply(db_url, receipts)
    assert (results.applied, results.status_changes) == (3, 0)
    assert status_of(db, n) == "sending"
    delivered = receipt_for(generator, n, "delivered")
    apply(db_url, [delivered])
    assert status_of(db, n) == "delivered"


def test_failure_writes_one_system_activity_on_the_ticket(
    db, db_url, email_tables, generator, tenant
):
    n = store(db_url, generator, tenant, "mailgun")
    failure = receipt_for(generator, n, "permanent")
    apply(db_url, [failure])
    apply(db_url, [failure])  # the provider re-sends it
    ((activity_id, actor_type, action, details),) = failure_activities(db, tenant)
    assert (actor_type, action) == ("system", "email_delivery_failed")
    assert details["provider"] == "mailgun"
    assert details["recipient"] == n["recipient"]
    assert "mailbox unavailable" in details["reason"]
    assert status_of(db, n) == "permanent-failure"
    ticket = db.execute(
        "select ticket_id from raw.activities where activity_id = %s", (activity_id,)
    ).fetchone()
    assert ticket == (77,)


def test_concurrent_drains_cannot_change_a_status_twice(
    db, db_url, email_tables, generator, tenant
):
    notifications = [store(db_url, generator, tenant, "sendgrid") for _ in range(20)]
    delivered = [receipt_for(generator, n, "delivered") for n in notifications]
    failed = [receipt_for(generator, n, "permanent") for n in notifications]
    barrier = threading.Barrier(2)
    errors = []

    def drain(receipts):
        barrier.wait()
        for _attempt in range(5):  # as the drain loop does: a failed batch is rolled back, retried
            try:
                with psycopg.connect(db_url) as conn:
                    apply_receipts(conn, receipts, last_attempt=[False] * len(receipts))
                return
            except psycopg.errors.DeadlockDetected:
                continue
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=drain, args=(r,)) for r in (delivered, failed)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = db.execute(
        "select provider_reference, count(status_applied) from raw.delivery_events "
        "where tenant_id = %s group by provider_reference",
        (tenant,),
    ).fetchall()
    assert len(applied) == 20 and all(count == 1 for _, count in applied)
    statuses = [status_of(db, n) for n in notifications]
    activities = failure_activities(db, tenant)
    assert len(activities) == statuses.count("permanent-failure")


def test_missing_notification_retried_then_orphaned_then_adopted(
    db, db_url, email_tables, generator, tenant
):
    n = generator.notification(tenant, 78, "forward", "ses", datetime.now(UTC))
    accepted = receipt_for(generator, n, "accepted", datetime.now(UTC) - timedelta(seconds=5))
    bounce = receipt_for(generator, n, "temporary")
    results = apply(db_url, [accepted, bounce])
    assert results.missing == [0, 1] and results.orphaned == 0
    results = apply(db_url, [accepted, bounce], last=True)
    assert results.orphaned == 2
    assert apply(db_url, [bounce], last=True).duplicates == 1  # a copy of a kept orphan
    orphans = db.execute(
        "select count(*) from raw.delivery_events where orphan and provider_reference = %s",
        (n["provider_reference"],),
    ).fetchone()
    assert orphans == (2,)
    with psycopg.connect(db_url) as conn:
        inserted, adopted, conflicts = store_sent_notifications(conn, [parse_sent_notification(n)])
    assert (inserted, adopted, conflicts) == (1, 2, [])
    assert status_of(db, n) == "temporary-failure"
    assert db.execute(
        "select count(*) from raw.delivery_events where orphan and tenant_id = %s", (tenant,)
    ).fetchone() == (0,)
    assert len(failure_activities(db, tenant)) == 1
    with psycopg.connect(db_url) as conn:  # email_sent re-delivered: nothing new
        assert store_sent_notifications(conn, [parse_sent_notification(n)]) == (0, 0, [])
        imposter = {**n, "notification_id": "someone-else"}
        assert store_sent_notifications(conn, [parse_sent_notification(imposter)]).conflicts == [0]


def test_receipts_for_internal_senders_are_ignored(db, db_url, email_tables, generator, tenant):
    n = store(db_url, generator, tenant, "mailgun", sender=INTERNAL[0])
    results = apply(db_url, [receipt_for(generator, n, "permanent")])
    assert results.ignored == 1 and results.applied == 0
    assert status_of(db, n) == "sending"
    assert db.execute(
        "select count(*) from raw.delivery_events where tenant_id = %s", (tenant,)
    ).fetchone() == (0,)


def test_routing_unknown_tenant_goes_to_the_default_pod(db, email_tables, tenant):
    set_tenant_pod(db, tenant, "eu")
    pods = pods_for_tenants(db, [tenant, "somebody-else", None], "default")
    assert pods == {tenant: "eu", "somebody-else": "default", None: "default"}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"provider": "postmark"}, "provider"),
        ({"recipient": "nobody"}, "recipient"),
        ({"sent_at": "yesterday"}, "sent_at"),
        ({"sent_at": "2026-01-01T00:00:00"}, "sent_at"),
        ({"ticket_id": "abc"}, "ticket_id"),
        ({"tenant_id": "a b"}, "tenant_id"),
        ({"template_id": None}, "template_id"),
    ],
)
def test_bad_sent_notification_names_the_field(generator, change, field):
    n = generator.notification("acme", 1, "reply", "mailgun", datetime.now(UTC))
    with pytest.raises(InvalidMessage, match=field):
        parse_sent_notification({**n, **change})
