"""The email delivery rules as plain functions: event mapping, the status state machine, internal
senders, the 7-days-plus-today window, the retention cutoff, signature helpers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from assets.email.rules import (
    classify_mailgun,
    classify_sendgrid,
    classify_ses,
    failure_activity_id,
    is_internal_sender,
    next_status,
    retention_cutoff,
    stats_days,
)
from webhooks.verify import SignatureError, check_sns_cert_url, sns_string_to_sign


@pytest.mark.parametrize(
    "event,severity,outcome",
    [
        ("delivered", None, "delivered"),
        ("failed", "temporary", "temporary-failure"),
        ("failed", "permanent", "permanent-failure"),
        ("accepted", None, "accepted"),
        ("rejected", None, "technical-failure"),
        ("opened", None, "opened"),
        ("clicked", None, "clicked"),
        ("complained", None, "complained"),
        ("stored", None, "other"),
    ],
)
def test_mailgun_events(event, severity, outcome):
    assert classify_mailgun(event, severity) == outcome


@pytest.mark.parametrize(
    "event,bounce_type,outcome",
    [
        ("delivered", None, "delivered"),
        ("deferred", None, "temporary-failure"),
        ("bounce", "blocked", "temporary-failure"),
        ("blocked", None, "temporary-failure"),
        ("bounce", "bounce", "permanent-failure"),
        ("dropped", None, "permanent-failure"),
        ("processed", None, "accepted"),
        ("open", None, "opened"),
        ("click", None, "clicked"),
        ("spamreport", None, "complained"),
    ],
)
def test_sendgrid_events(event, bounce_type, outcome):
    assert classify_sendgrid(event, bounce_type) == outcome


@pytest.mark.parametrize(
    "event,bounce_type,outcome",
    [
        ("Delivery", None, "delivered"),
        ("Bounce", "Transient", "temporary-failure"),
        ("Bounce", "Undetermined", "temporary-failure"),
        ("Bounce", "Permanent", "permanent-failure"),
        ("Complaint", None, "complained"),
        ("Send", None, "accepted"),
        ("Reject", None, "technical-failure"),
        ("Open", None, "opened"),
    ],
)
def test_ses_events(event, bounce_type, outcome):
    assert classify_ses(event, bounce_type) == outcome


@pytest.mark.parametrize(
    "current,outcome,new",
    [
        ("sending", "delivered", "delivered"),
        ("pending", "delivered", "delivered"),
        ("sending", "accepted", "pending"),
        ("pending", "accepted", None),
        ("delivered", "accepted", None),  # late "accepted" after delivery: no change
        ("pending", "temporary-failure", "temporary-failure"),
        ("sending", "permanent-failure", "permanent-failure"),
        ("delivered", "permanent-failure", None),  # never twice
        ("temporary-failure", "delivered", None),
        ("permanent-failure", "temporary-failure", None),
        ("sending", "complained", None),  # complaints are recorded only
        ("pending", "opened", None),
        ("pending", "clicked", None),
        ("sending", "technical-failure", "technical-failure"),
    ],
)
def test_status_changes_only_while_sending_or_pending(current, outcome, new):
    assert next_status(current, outcome) == new


@pytest.mark.parametrize(
    "sender,internal",
    [
        ("invitations@supportflow.example", True),
        ("Supportflow <Invitations@supportflow.example>", True),
        ("verify@accounts.supportflow.example", True),
        ("support@acme.helpdesk.example", False),
        (None, False),
    ],
)
def test_internal_senders(sender, internal):
    rules = ["invitations@supportflow.example", "@accounts.supportflow.example"]
    assert is_internal_sender(sender, rules) is internal


def test_stats_window_is_last_monday_to_monday():
    monday = date(2026, 11, 23)
    days = stats_days(monday, 7)
    assert days[0] == date(2026, 11, 16) and days[-1] == monday and len(days) == 8
    assert stats_days(monday, 0) == [monday]
    with pytest.raises(ValueError):
        stats_days(monday, 8)


@pytest.mark.parametrize(
    "now,zone,cutoff",
    [
        # 00:30 in Berlin on Nov 24 is still Nov 23 in UTC: the local day decides
        ("2026-11-23T23:30:00+00:00", "Europe/Berlin", "2026-11-16T23:00:00+00:00"),
        ("2026-11-23T22:30:00+00:00", "Europe/Berlin", "2026-11-15T23:00:00+00:00"),
        ("2026-11-24T12:00:00+00:00", "UTC", "2026-11-17T00:00:00+00:00"),
        # across the DST change (Mar 29 2026 in Berlin): still local midnight
        ("2026-04-02T10:00:00+00:00", "Europe/Berlin", "2026-03-25T23:00:00+00:00"),
        ("2026-11-24T03:00:00+00:00", "America/New_York", "2026-11-16T05:00:00+00:00"),
    ],
)
def test_retention_cutoff_is_local_midnight_seven_days_back(now, zone, cutoff):
    moment = datetime.fromisoformat(now)
    assert retention_cutoff(moment, ZoneInfo(zone)) == datetime.fromisoformat(cutoff)
    assert retention_cutoff(moment, ZoneInfo(zone)).astimezone(UTC).tzinfo is UTC


def test_failure_activity_id_is_deterministic():
    assert failure_activity_id("ses", "abc") == failure_activity_id("ses", "abc")
    assert failure_activity_id("ses", "abc") != failure_activity_id("mailgun", "abc")


def test_sns_canonical_string_follows_the_documented_order():
    envelope = {
        "Type": "Notification",
        "MessageId": "m1",
        "TopicArn": "arn:t",
        "Message": "hello",
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
    }
    assert sns_string_to_sign(envelope) == (
        b"Message\nhello\nMessageId\nm1\nTimestamp\n2026-01-01T00:00:00.000Z\n"
        b"TopicArn\narn:t\nType\nNotification\n"
    )
    with_subject = sns_string_to_sign({**envelope, "Subject": "s"})
    assert b"MessageId\nm1\nSubject\ns\nTimestamp" in with_subject


@pytest.mark.parametrize(
    "url,ok",
    [
        ("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("https://sns.eu-west-1.amazonaws.com.evil.example/x.pem", False),
        ("https://evil.example/x.pem", False),
        ("http://sns.eu-west-1.amazonaws.com/x.pem", False),
        ("https://sns.eu-west-1.amazonaws.com/x.txt", False),
    ],
)
def test_sns_certificate_host_pattern(url, ok):
    if ok:
        check_sns_cert_url(url)
    else:
        with pytest.raises(SignatureError):
            check_sns_cert_url(url)
