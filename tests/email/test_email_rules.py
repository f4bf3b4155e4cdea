"""The email delivery rules as plain functions: the message formats, event mapping, the status
state machine, internal senders, the 7-days-plus-today window, the retention cutoff, signature
helpers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import get_args
from zoneinfo import ZoneInfo

import pytest

from assets.email.rules import (
    FINAL_STATUSES,
    InvalidMessage,
    Outcome,
    classify_mailgun,
    classify_sendgrid,
    classify_ses,
    failure_activity_id,
    is_internal_sender,
    next_status,
    parse_receipt,
    receipt_key,
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


# Every (status, receipt outcome) pair, written out: the seed's rules (a status changes once,
# from `sending` or `pending`; a temporary failure is `temporary-failure` only from `pending`,
# otherwise `permanent-failure`; `accepted` moves `sending` to `pending`; the rest never change it).
STATUS_TABLE = {
    #                      sending              pending              final statuses
    "delivered":          ("delivered",         "delivered",         None),
    "temporary-failure":  ("permanent-failure", "temporary-failure", None),
    "permanent-failure":  ("permanent-failure", "permanent-failure", None),
    "technical-failure":  ("technical-failure", "technical-failure", None),
    "accepted":           ("pending",           None,                None),
    "opened":             (None,                None,                None),
    "clicked":            (None,                None,                None),
    "complained":         (None,                None,                None),
    "unsubscribed":       (None,                None,                None),
    "other":              (None,                None,                None),
}  # fmt: skip
STATUSES = ("sending", "pending", "delivered", "temporary-failure", "permanent-failure",
            "technical-failure")  # fmt: skip


@pytest.mark.parametrize("current", STATUSES)
@pytest.mark.parametrize("outcome", sorted(STATUS_TABLE))
def test_every_status_and_receipt_pair(current, outcome):
    from_sending, from_pending, from_final = STATUS_TABLE[outcome]
    expected = {"sending": from_sending, "pending": from_pending}.get(current, from_final)
    assert next_status(current, outcome) == expected


# A temporary failure of each provider, as each provider names it, and what it does.
TEMPORARY_EVENTS = [
    ("mailgun", classify_mailgun("failed", "temporary")),
    ("sendgrid", classify_sendgrid("deferred")),
    ("sendgrid", classify_sendgrid("bounce", "blocked")),
    ("ses", classify_ses("Bounce", "Transient")),
    ("ses", classify_ses("DeliveryDelay")),
]


@pytest.mark.parametrize("provider,outcome", TEMPORARY_EVENTS)
def test_a_providers_temporary_failure_follows_the_seed(provider, outcome):
    assert outcome == "temporary-failure", provider
    assert next_status("pending", outcome) == "temporary-failure"
    assert next_status("sending", outcome) == "permanent-failure"
    assert next_status("temporary-failure", outcome) is None


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


RECEIPT = {
    "type": "email_event",
    "event_id": "mailgun:ev-1",
    "provider": "mailgun",
    "provider_event_id": "ev-1",
    "provider_reference": "abc@mg.example",
    "tenant_id": None,
    "event_type": "failed",
    "outcome": "permanent-failure",
    "severity": "permanent",
    "reason": "",
    "recipient": "a@example.com",
    "sender": None,
    "occurred_at": "2026-03-01T10:00:00+00:00",
    "custom_params": {"notification_id": "n-1"},
    "payload": {},
}


def test_receipt_message_is_parsed_and_keyed_by_its_event():
    receipt = parse_receipt(RECEIPT)
    assert (receipt.provider, receipt.outcome, receipt.tenant_id) == (
        "mailgun",
        "permanent-failure",
        None,
    )
    assert (receipt.severity, receipt.reason) == ("permanent", None)  # "" is no reason
    assert receipt_key(RECEIPT) == "event_id:mailgun:ev-1"
    # every final status is an outcome a receipt may carry
    assert set(FINAL_STATUSES) <= set(get_args(Outcome))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"provider": "postmark"}, "provider: expected 'mailgun', 'sendgrid' or 'ses', got"),
        ({"outcome": "bounced"}, "outcome: expected 'delivered', "),
        ({"provider_event_id": " "}, "provider_event_id: missing or not a string"),
        ({"provider_reference": None}, "provider_reference: expected `int | str`, got `null`"),
        ({"event_type": "x" * 65}, "event_type: longer than 64 characters"),
        ({"tenant_id": "a/b"}, "tenant_id: only letters"),
        ({"occurred_at": "2026-03-01T10:00:00"}, "occurred_at: needs a UTC offset"),
        ({"occurred_at": 1700000000}, "occurred_at: expected `str`, got `int`"),
        ({"payload": []}, "payload: expected `object | null`, got `array`"),
    ],
)
def test_malformed_receipts_name_the_field_and_the_reason(change, problem):
    with pytest.raises(InvalidMessage) as caught:
        parse_receipt({**RECEIPT, **change})
    assert str(caught.value).startswith(problem)


def test_a_receipt_missing_a_field_names_it():
    body = {k: v for k, v in RECEIPT.items() if k != "occurred_at"}
    with pytest.raises(InvalidMessage, match="^occurred_at: missing$"):
        parse_receipt(body)
