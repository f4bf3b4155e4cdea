"""The hourly notification counts (migration 0302) that today's template statistics read: after
sends, receipts, duplicates, late and orphan receipts, retention, hand-written SQL and TRUNCATE
they equal a recount of the notifications; today's statistics equal `count_day`, also in a zone
whose midnight is not on a UTC hour; writers never wait on each other's counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from assets.email.rules import parse_receipt, parse_sent_notification
from assets.email.store import (
    apply_receipts,
    count_day,
    count_tenant_day,
    fold_notification_counts,
    run_retention,
    store_sent_notifications,
    template_stats,
)
from webhooks.events import normalise_mailgun, normalise_sendgrid

KOLKATA = ZoneInfo("Asia/Kolkata")  # UTC+05:30: local midnight is half past a UTC hour

_RECOUNT_SQL = """
select tenant_id, raw.notification_hour(sent_at), template_id, status, count(*)
from (
    select tenant_id, sent_at, template_id, status from raw.notifications
    union all
    select tenant_id, sent_at, template_id, status from raw.notification_history
) n
group by 1, 2, 3, 4
"""
_KEPT_SQL = """
select tenant_id, sent_hour, template_id, status, sum(n)
from (
    select tenant_id, sent_hour, template_id, status, notification_count as n
    from raw.notification_counts
    union all
    select tenant_id, sent_hour, template_id, status, delta from raw.notification_count_changes
) c
group by 1, 2, 3, 4
having sum(n) <> 0
"""


def kept_equals_recount(db) -> None:
    recount = sorted(db.execute(_RECOUNT_SQL).fetchall())
    kept = sorted(db.execute(_KEPT_SQL).fetchall())
    assert kept == recount


def store(db_url, generator, tenant, moments, template="reply", provider="sendgrid"):
    sent = [generator.notification(tenant, 7, template, provider, m) for m in moments]
    with psycopg.connect(db_url) as conn:
        store_sent_notifications(conn, [parse_sent_notification(n) for n in sent])
    return sent


def receipts(db_url, generator, pairs, *, last=False):
    """Apply (notification, kind, at) receipts in one batch; returns their messages."""
    messages = []
    for notification, kind, at in pairs:
        data, _ = generator.event(notification, kind, at)
        if notification["provider"] == "mailgun":
            messages += normalise_mailgun({"event-data": data})
        else:
            messages += normalise_sendgrid([data])
    apply(db_url, messages, last=last)
    return messages


def apply(db_url, messages, *, last=False):
    with psycopg.connect(db_url) as conn:
        return apply_receipts(
            conn,
            [parse_receipt(m) for m in messages],
            last_attempt=[last] * len(messages),
            internal_senders=(),
        )


def today_stats(db, tenant, zone, now):
    return [
        (s.template_id, s.status, s.notification_count)
        for s in template_stats(db, tenant, 0, zone, now)
    ]


def recount_today(db, tenant, zone, now):
    return [row[1:] for row in count_day(db, now.astimezone(zone).date(), zone, tenant)]


def test_counts_equal_a_recount_through_receipts_duplicates_late_events_and_retention(
    db, db_url, email_tables, generator, tenant
):
    now = datetime.now(UTC)
    zone = ZoneInfo("UTC")
    other = tenant + "-b"
    today = store(db_url, generator, tenant, [now - timedelta(minutes=m) for m in (1, 2, 3)])
    welcome = store(db_url, generator, tenant, [now], template="welcome", provider="mailgun")
    old = store(db_url, generator, tenant, [now - timedelta(days=d) for d in (2, 9, 12)])
    store(db_url, generator, other, [now, now - timedelta(days=10)], template="welcome")
    kept_equals_recount(db)
    assert today_stats(db, tenant, zone, now) == [
        ("reply", "sending", 3),
        ("welcome", "sending", 1),
    ]

    # receipts move statuses; the same receipts again (duplicates) change nothing
    messages = receipts(
        db_url,
        generator,
        [
            (today[0], "delivered", now),
            (today[1], "permanent", now),
            (welcome[0], "accepted", now),
            (old[0], "delivered", now),  # late: sent two days ago
        ],
    )
    kept_equals_recount(db)
    assert apply(db_url, messages).duplicates == len(messages)
    kept_equals_recount(db)
    expected = [
        ("reply", "delivered", 1),
        ("reply", "permanent-failure", 1),
        ("reply", "sending", 1),
        ("welcome", "pending", 1),
    ]
    assert today_stats(db, tenant, zone, now) == expected == recount_today(db, tenant, zone, now)

    # a receipt before its notification: kept as an orphan, applied when the notification comes
    (late,) = [generator.notification(tenant, 8, "reply", "sendgrid", now)]
    data, _ = generator.event(late, "delivered", now)
    apply(db_url, normalise_sendgrid([data]), last=True)
    with psycopg.connect(db_url) as conn:
        assert store_sent_notifications(conn, [parse_sent_notification(late)]).adopted == 1
        # the same notification again (a re-delivered email_sent message): no second count
        store_sent_notifications(conn, [parse_sent_notification(late)])
    kept_equals_recount(db)
    assert ("reply", "delivered", 2) in today_stats(db, tenant, zone, now)

    # retention moves 9 and 12 days old to the history: counted the same, in the same hours
    assert run_retention(lambda: psycopg.connect(db_url), now, zone).archived == 3
    kept_equals_recount(db)
    assert db.execute("select count(*) from raw.notification_count_changes").fetchone() == (0,)

    # hand-written SQL, as an operator might: updates, a moved sent_at, deletes
    db.execute(
        "update raw.notifications set status = 'delivered' where tenant_id = %s "
        "and status = 'sending'",
        (tenant,),
    )
    db.execute(
        "update raw.notification_history set sent_at = sent_at - interval '90 minutes', "
        "template_id = 'moved' where tenant_id = %s",
        (other,),
    )
    db.execute(
        "delete from raw.notifications where notification_id = %s", (today[2]["notification_id"],)
    )
    kept_equals_recount(db)
    assert today_stats(db, tenant, zone, now) == recount_today(db, tenant, zone, now)
    with db.transaction():
        fold_notification_counts(db)
    assert db.execute("select count(*) from raw.notification_count_changes").fetchone() == (0,)
    kept_equals_recount(db)

    # TRUNCATE fires no delete trigger: the counts are recounted from what is left
    db.execute("truncate raw.notifications")
    kept_equals_recount(db)
    assert db.execute(
        "select count(*) from raw.notification_counts where tenant_id = %s", (other,)
    ).fetchone() == (1,)


@pytest.mark.parametrize("zone", [KOLKATA, ZoneInfo("America/New_York"), ZoneInfo("UTC")])
def test_today_equals_count_day_in_any_zone(db, db_url, email_tables, generator, tenant, zone):
    now = datetime.now(UTC)
    today = now.astimezone(zone).date()
    midnight = datetime.combine(today, datetime.min.time(), tzinfo=zone)
    tomorrow = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    # around both midnights, in the partial hours of Kolkata's day and outside the day
    moments = [
        midnight - timedelta(seconds=1),
        midnight,
        midnight + timedelta(minutes=10),
        midnight + timedelta(minutes=40),
        midnight + timedelta(hours=12),
        tomorrow - timedelta(minutes=40),
        tomorrow - timedelta(minutes=10),
        tomorrow - timedelta(microseconds=1),
        tomorrow,
    ]
    sent = store(db_url, generator, tenant, moments)
    store(db_url, generator, tenant, moments[1:3], template="welcome")
    receipts(db_url, generator, [(sent[2], "delivered", now), (sent[6], "permanent", now)])
    expected = recount_today(db, tenant, zone, now)
    assert sum(n for *_, n in expected) == 9
    assert today_stats(db, tenant, zone, now) == expected
    assert count_tenant_day(db, today, zone, tenant) == expected
    kept_equals_recount(db)


def test_writers_never_wait_on_each_others_counts(db, db_url, email_tables, generator, tenant):
    """Two open transactions counting the same tenant, hour, template and status: the second
    neither blocks nor deadlocks (its fold is skipped while the first holds it), and after both
    commit, the next fold leaves the counts equal to a recount."""
    now = datetime.now(UTC)
    first = [parse_sent_notification(generator.notification(tenant, 1, "reply", "ses", now))]
    second = [parse_sent_notification(generator.notification(tenant, 2, "reply", "ses", now))]
    with psycopg.connect(db_url) as one, psycopg.connect(db_url) as two:
        two.execute("set lock_timeout = '2s'")
        store_sent_notifications(one, first)  # folds, holding the fold lock until it commits
        store_sent_notifications(two, second)  # would raise LockNotAvailable if it waited
        assert fold_notification_counts(two) == 0
        two.commit()
        assert today_stats(db, tenant, ZoneInfo("UTC"), now) == [("reply", "sending", 1)]
        one.commit()
    assert today_stats(db, tenant, ZoneInfo("UTC"), now) == [("reply", "sending", 2)]
    with db.transaction():
        assert fold_notification_counts(db) == 1
    kept_equals_recount(db)
