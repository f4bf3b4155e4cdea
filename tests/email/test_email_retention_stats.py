"""Retention (7 full days in the configured zone, per-tenant override, batches, re-runs),
template statistics partitions and schedule, and the `stats templates` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from assets.email.rules import parse_sent_notification
from assets.email.store import (
    run_retention,
    set_retention_days,
    store_sent_notifications,
    template_stats,
    write_template_stats_day,
)
from orchestration.cli import main
from tests.email.helpers import email_defs

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def seed(db_url, generator, tenant, moments, template="reply"):
    notifications = [
        generator.notification(tenant, 5, template, "sendgrid", moment) for moment in moments
    ]
    with psycopg.connect(db_url) as conn:
        store_sent_notifications(conn, [parse_sent_notification(n) for n in notifications])
    return notifications


def connection_factory(db_url):
    return lambda: psycopg.connect(db_url)


def kept_and_archived(db, tenant):
    kept = db.execute(
        "select sent_at from raw.notifications where tenant_id = %s order by sent_at", (tenant,)
    ).fetchall()
    archived = db.execute(
        "select sent_at from raw.notification_history where tenant_id = %s order by sent_at",
        (tenant,),
    ).fetchall()
    return [r[0] for r in kept], [r[0] for r in archived]


def test_retention_keeps_exactly_seven_full_days_across_a_berlin_midnight(
    db, db_url, email_tables, generator, tenant
):
    # Berlin is UTC+1 in November: local midnight of Nov 17 is 2026-11-16T23:00Z
    last_minute_of_nov_16 = utc("2026-11-16T23:59:59+01:00")
    first_second_of_nov_17 = utc("2026-11-17T00:00:00+01:00")
    late_nov_15 = utc("2026-11-15T23:30:00+01:00")
    recent = utc("2026-11-23T12:00:00+01:00")
    moments = [late_nov_15, last_minute_of_nov_16, first_second_of_nov_17, recent]
    seed(db_url, generator, tenant, moments)
    # a failure receipt stored for the oldest: its payload goes with the notification
    db.execute(
        "insert into raw.delivery_events (provider, provider_event_id, provider_reference, "
        "tenant_id, notification_id, event_type, outcome, occurred_at, payload) "
        "select provider, 'ev-' || notification_id, provider_reference, tenant_id, "
        "notification_id, 'bounce', 'permanent-failure', sent_at, '{\"email\": \"x@y\"}' "
        "from raw.notifications where tenant_id = %s",
        (tenant,),
    )

    # 23:59 local on Nov 23: 7 full days back is Nov 16 00:00 local; nothing of Nov 16 goes yet
    before_midnight = utc("2026-11-23T23:59:00+01:00")
    report = run_retention(connection_factory(db_url), before_midnight, BERLIN, batch_size=1)
    kept, archived = kept_and_archived(db, tenant)
    assert archived == [late_nov_15] and report.archived == 1
    # two minutes later it is Nov 24 in Berlin (still Nov 23 in UTC): Nov 16 goes, Nov 17 stays
    after_midnight = utc("2026-11-24T00:01:00+01:00")
    assert after_midnight.date().isoformat() == "2026-11-23"
    report = run_retention(connection_factory(db_url), after_midnight, BERLIN, batch_size=1)
    kept, archived = kept_and_archived(db, tenant)
    assert archived == [late_nov_15, last_minute_of_nov_16]
    assert kept == [first_second_of_nov_17, recent]
    # re-running changes nothing
    again = run_retention(connection_factory(db_url), after_midnight, BERLIN)
    assert again.archived == 0
    assert kept_and_archived(db, tenant) == (kept, archived)
    # history holds no personal data, and the receipts' payloads went with the notifications
    columns = {
        row[0]
        for row in db.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'raw' and table_name = 'notification_history'"
        )
    }
    assert not columns & {"recipient", "custom_params"}
    assert db.execute(
        "select count(*) from raw.delivery_events where tenant_id = %s", (tenant,)
    ).fetchone() == (2,)


def test_retention_per_tenant_override_and_batches(db, db_url, email_tables, generator, tenant):
    other = tenant + "-short"
    now = utc("2026-11-24T10:00:00+01:00")
    moments = [now - timedelta(days=d, hours=1) for d in range(12)]
    seed(db_url, generator, tenant, moments)
    seed(db_url, generator, other, moments)
    set_retention_days(db, other, 2)
    report = run_retention(connection_factory(db_url), now, BERLIN, batch_size=2)
    assert report.batches >= 4
    local_days = lambda rows: sorted({m.astimezone(BERLIN).date() for m in rows})  # noqa: E731
    kept_default, _ = kept_and_archived(db, tenant)
    kept_short, _ = kept_and_archived(db, other)
    today = now.astimezone(BERLIN).date()
    assert local_days(kept_default)[0] == today - timedelta(days=7)
    assert local_days(kept_short) == [today - timedelta(days=d) for d in (2, 1, 0)]


def test_template_stats_same_rows_after_retention_and_rematerialization(
    db, db_url, email_tables, generator, tenant, resources, instance
):
    zone = BERLIN
    now = datetime.now(UTC)  # one "now" for the test and the retention it runs
    day = now.astimezone(zone).date() - timedelta(days=9)
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    seed(db_url, generator, tenant, [start + timedelta(hours=h) for h in (0, 5, 23)], "reply")
    seed(db_url, generator, tenant, [start - timedelta(seconds=1)], "reply")  # the day before
    db.execute(
        "update raw.notifications set status = 'delivered' where tenant_id = %s and sent_at = %s",
        (tenant, start + timedelta(hours=5)),
    )
    defs = email_defs(resources, timezone="Europe/Berlin")
    job = defs.resolve_job_def("template_stats_daily")

    def rows():
        return db.execute(
            "select day, template_id, status, notification_count from "
            "analytics.template_stats_daily where tenant_id = %s order by 1, 2, 3",
            (tenant,),
        ).fetchall()

    assert job.execute_in_process(instance=instance, partition_key=day.isoformat()).success
    first = rows()
    assert first == [(day, "reply", "delivered", 1), (day, "reply", "sending", 2)]
    run_retention(connection_factory(db_url), now, zone)
    assert db.execute(
        "select count(*) from raw.notifications where tenant_id = %s", (tenant,)
    ).fetchone() == (0,)
    assert job.execute_in_process(instance=instance, partition_key=day.isoformat()).success
    assert rows() == first


def test_stats_window_whole_days_from_partitions_today_live(
    db, db_url, email_tables, generator, tenant
):
    zone = ZoneInfo("UTC")
    now = datetime.now(UTC)
    today = now.date()
    moments = [now - timedelta(days=d) for d in range(0, 10)]
    seed(db_url, generator, tenant, moments, "forward")
    for d in range(1, 10):
        write_template_stats_day(db, today - timedelta(days=d), zone)
    stats = template_stats(db, tenant, 7, zone, now)
    assert [s.day for s in stats] == [today - timedelta(days=d) for d in range(7, -1, -1)]
    seed(db_url, generator, tenant, [now], "forward")  # today is live, not from a partition
    today_count = template_stats(db, tenant, 0, zone, now)
    assert [(s.day, s.notification_count) for s in today_count] == [(today, 2)]


def test_stats_templates_command(db, db_url, email_tables, generator, tenant, capsys):
    now = datetime.now(UTC)
    seed(db_url, generator, tenant, [now, now], "reply")
    seed(db_url, generator, tenant, [now - timedelta(days=1)], "forward")
    write_template_stats_day(db, (now - timedelta(days=1)).date(), ZoneInfo("UTC"))
    # the command takes "today" from the test's moment, so midnight cannot fall in between
    as_of = ["--as-of", now.isoformat()]
    assert main(["stats", "templates", tenant, "--days", "1", "--json", *as_of]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((r["template_id"], r["notification_count"]) for r in lines) == [
        ("forward", 1),
        ("reply", 2),
    ]
    assert main(["stats", "templates", tenant, "--days", "0", *as_of]) == 0
    out = capsys.readouterr().out
    assert "reply" in out and "forward" not in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["stats", "templates", "acme", "--days", "8"], "--days"),
        (["stats", "templates", "acme", "--days", "-1"], "--days"),
        (["stats", "templates", "acme", "--as-of", "2026-11-24T10:00:00"], "--as-of"),
        (["stats", "templates", "not a tenant"], "TENANT"),
        (["email", "pod", "acme", "eu/1"], "POD"),
        (["email", "retention", "acme", "0"], "DAYS"),
        (["webhooks", "serve", "--port", "70000"], "--port"),
    ],
)
def test_bad_arguments_one_line_exit_2(args, message, capsys, db_url):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_schedules_request_recent_partitions_and_retention(
    db, db_url, email_tables, generator, tenant, resources, instance
):
    defs = email_defs(resources, timezone="America/New_York")
    schedule = defs.resolve_schedule_def("template_stats_schedule")
    when = datetime(2026, 11, 24, 0, 20, tzinfo=ZoneInfo("America/New_York"))
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    keys = [r.partition_key for r in schedule.evaluate_tick(context).run_requests]
    assert keys == [f"2026-11-{d:02d}" for d in range(23, 16, -1)]
    retention = defs.resolve_schedule_def("notification_retention_schedule")
    assert retention.execution_timezone == "America/New_York"
    # the job archives by its own clock: 20 days old goes, 1 hour old stays, whenever it runs
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=20), now - timedelta(hours=1)
    seed(db_url, generator, tenant, [old, recent])
    result = defs.resolve_job_def("notification_retention").execute_in_process(instance=instance)
    assert result.success
    assert kept_and_archived(db, tenant) == ([recent], [old])


@pytest.mark.parametrize(
    "address,masked",
    [
        ("jane.doe@example.org", "j***@example.org"),
        ("x@sub.example.co.uk", "x***@sub.example.co.uk"),
        ("odd@name@example.org", "o***@name@example.org"),
        ("no-at-sign", "***"),
    ],
)
def test_masked_address_is_the_same_in_python_and_sql(db, address, masked):
    from assets.email.rules import MASK_ADDRESS_SQL, mask_address

    assert mask_address(address) == masked
    expression = MASK_ADDRESS_SQL.format(column="%(address)s::text")
    assert db.execute(f"select {expression}", {"address": address}).fetchone() == (masked,)


def test_retention_masks_the_recipient_on_the_failure_activity(
    db, db_url, email_tables, generator, tenant
):
    """After the notification's retention, its failure activity keeps `j***@domain` and no
    other trace of the address (the provider's reason quotes it)."""
    from assets.email.rules import parse_receipt
    from assets.email.store import apply_receipts

    db.execute("truncate raw.activities, raw.activity_ids")
    sent = datetime.now(UTC) - timedelta(days=10)
    (notification,) = seed(db_url, generator, tenant, [sent])
    recipient = notification["recipient"]
    data, _ = generator.event(notification, "permanent", sent + timedelta(minutes=1))
    from webhooks.events import normalise_sendgrid

    (message,) = normalise_sendgrid([data])
    message["reason"] = f"550 5.1.1 <{recipient}>: mailbox unavailable"
    with psycopg.connect(db_url) as conn:
        apply_receipts(conn, [parse_receipt(message)], last_attempt=[False], internal_senders=())
    (before,) = db.execute(
        "select details from raw.activities where tenant_id = %s", (tenant,)
    ).fetchone()
    assert before["recipient"] == recipient and recipient in before["reason"]

    report = run_retention(connection_factory(db_url), datetime.now(UTC), BERLIN)
    assert report.archived == 1 and report.activities_masked == 1
    (after,) = db.execute(
        "select details from raw.activities where tenant_id = %s", (tenant,)
    ).fetchone()
    local, domain = recipient.split("@")
    assert after["recipient"] == f"{local[0]}***@{domain}"
    assert recipient not in json.dumps(after)
    assert after["reason"] == f"550 5.1.1 <{local[0]}***@{domain}>: mailbox unavailable"
    assert after["notification_id"] == notification["notification_id"]
    again = run_retention(connection_factory(db_url), datetime.now(UTC), BERLIN)
    assert (again.archived, again.activities_masked) == (0, 0)


def test_template_stats_materialization_previews_the_days_counts(
    db, db_url, email_tables, generator, tenant, resources
):
    day = datetime.now(UTC).date() - timedelta(days=3)
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    seed(db_url, generator, tenant, [start + timedelta(hours=h) for h in (1, 2, 3)], "reply")
    seed(db_url, generator, tenant, [start + timedelta(hours=4)], "welcome")
    db.execute(
        "update raw.notifications set status = 'delivered' where tenant_id = %s and sent_at = %s",
        (tenant, start + timedelta(hours=2)),
    )
    stats = email_defs(resources).resolve_assets_def("template_stats")  # resources bound
    result = dg.materialize([stats], partition_key=day.isoformat())
    assert result.success
    metadata = result.asset_materializations_for_node("template_stats")[0].metadata
    assert metadata["rows_by_day"].value == {day.isoformat(): 3}
    lines = metadata["preview"].value.splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
    # a column per status, the most sent template first
    assert cells[0] == ["tenant", "template", "delivered", "sending", "total"]
    assert cells[2:] == [[tenant, "reply", "1", "2", "3"], [tenant, "welcome", "0", "1", "1"]]
