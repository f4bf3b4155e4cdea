"""The success paths of `supportflow email pod` and `email retention` through the real CLI: what
they print, what they store, and that the stored setting is the one the pipeline then uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from assets.email.rules import parse_sent_notification
from assets.email.store import run_retention, store_sent_notifications
from orchestration.cli import main


def test_email_pod_routes_the_tenant_and_can_move_it(db, email_tables, tenant, capsys):
    assert main(["email", "pod", tenant, "eu-1"]) == 0
    assert capsys.readouterr().out.strip() == f"tenant {tenant} -> email_events.eu-1"
    assert main(["email", "pod", tenant, "us-2"]) == 0
    assert capsys.readouterr().out.strip() == f"tenant {tenant} -> email_events.us-2"
    rows = db.execute(
        "select pod from control.email_tenant_pods where tenant_id = %s", (tenant,)
    ).fetchall()
    assert rows == [("us-2",)]  # moved, not added twice


def test_email_retention_override_is_stored_and_honoured(
    db, db_url, email_tables, generator, tenant, capsys
):
    other = tenant + "-default"
    assert main(["email", "retention", tenant, "30"]) == 0
    assert capsys.readouterr().out.strip() == f"tenant {tenant}: notifications kept 30 full days"
    assert db.execute(
        "select retention_days from control.notification_retention where tenant_id = %s",
        (tenant,),
    ).fetchall() == [(30,)]

    # ten days old: kept for the tenant with 30 days, archived for one with the default 7
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    sent = now - timedelta(days=10)
    with psycopg.connect(db_url) as conn:
        store_sent_notifications(
            conn,
            [
                parse_sent_notification(generator.notification(t, 5, "reply", "mailgun", sent))
                for t in (tenant, other)
            ],
        )
    run_retention(lambda: psycopg.connect(db_url), now, ZoneInfo("UTC"))
    live = dict(
        db.execute(
            "select tenant_id, count(*) from raw.notifications where tenant_id in (%s, %s) "
            "group by tenant_id",
            (tenant, other),
        ).fetchall()
    )
    assert live == {tenant: 1}
