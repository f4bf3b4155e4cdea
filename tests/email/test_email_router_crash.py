"""The router's crash safety (README, "Routing"): it sends to the pod queue before it acknowledges
the global message, so a process that dies in between re-sends rather than loses, and the copy is
harmless: the pod's drain stores the provider event once."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from assets.email.rules import parse_sent_notification, receipt_key
from assets.email.store import set_tenant_pod, store_sent_notifications
from resources.queues import PostgresQueues
from tests.email.helpers import email_defs
from webhooks.events import normalise_mailgun


class DiesBeforeAcknowledging(PostgresQueues):
    """The real queues, but the process is gone before it can acknowledge anything."""

    def ack(self, messages):
        raise RuntimeError("the router process was killed before acknowledging")


def test_a_router_killed_between_send_and_ack_resends_and_the_copy_is_harmless(
    db, db_url, email_tables, resources, instance, generator, tenant
):
    queues = resources["queues"]
    set_tenant_pod(db, tenant, "eu-1")
    sent_at = datetime.now(UTC).replace(microsecond=0)
    notification = generator.notification(tenant, 42, "reply", "mailgun", sent_at)
    with psycopg.connect(db_url) as conn:
        store_sent_notifications(conn, [parse_sent_notification(notification)])
    event_data, _ = generator.mailgun_event(notification, "delivered", sent_at)
    [event] = normalise_mailgun({"event-data": event_data})
    queues.send("email_events", [event], dedup_key=receipt_key)

    dying = email_defs({**resources, "queues": DiesBeforeAcknowledging(warehouse=queues.warehouse)})
    crashed = dying.resolve_job_def("email_events_router").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not crashed.success
    assert queues.depth("email_events.eu-1") == 1  # sent before the crash ...
    in_flight = db.execute(
        "select count(*) from control.queue_messages where queue = 'email_events'"
    ).fetchone()[0]
    assert in_flight == 1  # ... and the global message is not lost

    # the dead process's lease runs out, the next router run sends it again and acknowledges
    db.execute("update control.queue_messages set visible_at = now() where queue = 'email_events'")
    router = email_defs(resources)
    assert (
        router.resolve_job_def("email_events_router").execute_in_process(instance=instance).success
    )
    assert queues.depth("email_events") == 0
    assert queues.depth("email_events.eu-1") == 2  # the copy

    pod = email_defs(resources, pod="eu-1")
    assert pod.resolve_job_def("email_receipts_drain").execute_in_process(instance=instance).success
    assert queues.depth("email_events.eu-1") == 0
    stored = db.execute(
        "select count(*) from raw.delivery_events where provider = 'mailgun' "
        "and provider_event_id = %s",
        (event["provider_event_id"],),
    ).fetchone()[0]
    assert stored == 1
    status = db.execute(
        "select status from raw.notifications where notification_id = %s",
        (notification["notification_id"],),
    ).fetchone()[0]
    assert status == "delivered"
