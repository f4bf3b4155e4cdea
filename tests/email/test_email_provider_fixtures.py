"""The webhook verifiers and parsers against what Mailgun, SendGrid and AWS published themselves
(tests/fixtures/README.md says where each came from), not against the sandbox's own traffic.
Expected values are read off the published documents, never computed with the code under test."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path

import pytest

from webhooks.events import normalise_mailgun, normalise_sendgrid, normalise_ses
from webhooks.verify import (
    SignatureError,
    SnsCertificateCache,
    load_sendgrid_key,
    mailgun_signature,
    verify_mailgun,
    verify_sendgrid,
    verify_sns,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


# --- Mailgun -----------------------------------------------------------------------------------

MAILGUN = fixture("mailgun/signature_test_vector.json")
SIGNED_AT = 1403645220  # 2014-06-24T21:27:00Z, the vector's timestamp


def test_mailgun_signature_matches_the_published_vector():
    key, ts, token = MAILGUN["signing_key"], MAILGUN["timestamp"], MAILGUN["token"]
    assert mailgun_signature(key, ts, token) == MAILGUN["signature"]
    signature = {"timestamp": ts, "token": token, "signature": MAILGUN["signature"]}
    assert verify_mailgun(key, signature, now=SIGNED_AT + 60) == (ts, token)
    # upper-case hex is the same signature
    shouted = {**signature, "signature": MAILGUN["signature"].upper()}
    assert verify_mailgun(key, shouted, now=SIGNED_AT) == (ts, token)


@pytest.mark.parametrize(
    ("change", "now", "why"),
    [
        ({"token": MAILGUN["bad_token"]}, SIGNED_AT, "does not match"),  # the SDK's bad case
        ({"timestamp": "1403645221"}, SIGNED_AT, "does not match"),
        ({}, SIGNED_AT + 15 * 60 + 1, "replay window"),
        ({}, SIGNED_AT - 15 * 60 - 1, "replay window"),
    ],
)
def test_mailgun_published_vector_altered_or_stale_is_refused(change, now, why):
    signature = {
        "timestamp": MAILGUN["timestamp"],
        "token": MAILGUN["token"],
        "signature": MAILGUN["signature"],
        **change,
    }
    with pytest.raises(SignatureError, match=why):
        verify_mailgun(MAILGUN["signing_key"], signature, now=now)
    with pytest.raises(SignatureError, match="does not match"):
        verify_mailgun("key-another", {**signature, **change}, now=SIGNED_AT)


MAILGUN_EVENTS = {
    # file: (event id, message id, outcome, severity, recipient, sender, occurred_at, reason has)
    "webhook_delivered.json": (
        "hK7mQVt1QtqRiOfQXta4sw",
        "20180622182958.1.48906CB188F1A454@exmple.org",
        "delivered",
        None,
        "john@example.com",
        "sender@example.org",
        "2018-06-22T18:29:59",
        "OK",
    ),
    "webhook_failed_permanent.json": (
        "pl271FzxTTmGRW8Uj3dUWw",
        "20180622211249.1.2A6098970A380E12@example.org",
        "permanent-failure",
        "permanent",
        "slava@mailgun.com",
        "john@example.org",
        "2018-06-22T21:12:49",
        "Not delivering to previously bounced address",
    ),
    "webhook_failed_temporary.json": (
        "xYrATi63Rke8EC_s7EoJeA",
        "20221006142837.1618e01bf42da9fa@test.com",
        "temporary-failure",
        "temporary",
        "test@test.com",
        "test@test.com",
        "2022-10-06T14:28:43",
        "exceeded the maximum number of connections",
    ),
}


@pytest.mark.parametrize("name", sorted(MAILGUN_EVENTS))
def test_mailgun_documented_events_are_parsed(name):
    event_id, reference, outcome, severity, recipient, sender, occurred, reason = MAILGUN_EVENTS[
        name
    ]
    document = fixture(f"mailgun/{name}")
    [message] = normalise_mailgun(document)
    assert message["event_id"] == f"mailgun:{event_id}"
    assert message["provider"] == "mailgun" and message["provider_event_id"] == event_id
    assert message["provider_reference"] == reference
    assert message["event_type"] == document["event-data"]["event"]
    assert (message["outcome"], message["severity"]) == (outcome, severity)
    assert (message["recipient"], message["sender"]) == (recipient, sender)
    assert message["occurred_at"].startswith(occurred) and message["occurred_at"].endswith("+00:00")
    assert reason in message["reason"]
    assert message["tenant_id"] is None and message["custom_params"] == {}
    assert message["payload"] == document["event-data"]


# --- SendGrid ----------------------------------------------------------------------------------

SENDGRID = fixture("sendgrid/signed_event_webhook_test_vector.json")
SENDGRID_SIGNED_AT = 1600112502  # 2020-09-14T19:41:42Z


def test_sendgrid_published_vector_verifies():
    key = load_sendgrid_key(SENDGRID["public_key"])
    body = SENDGRID["payload"].encode()
    verify_sendgrid(key, SENDGRID["signature"], SENDGRID["timestamp"], body, now=SENDGRID_SIGNED_AT)


@pytest.mark.parametrize(
    ("key", "signature", "timestamp", "body", "now", "why"),
    [
        ("other_public_key", "signature", "timestamp", None, SENDGRID_SIGNED_AT, "not match"),
        ("public_key", "other_signature", "timestamp", None, SENDGRID_SIGNED_AT, "not match"),
        ("public_key", "signature", "timestamp", b"payload", SENDGRID_SIGNED_AT, "not match"),
        ("public_key", "signature", "timestamp", "no-crlf", SENDGRID_SIGNED_AT, "not match"),
        ("public_key", "signature", "1600112503", None, SENDGRID_SIGNED_AT, "not match"),
        ("public_key", "signature", "timestamp", None, SENDGRID_SIGNED_AT + 3600, "replay"),
    ],
)
def test_sendgrid_published_vector_altered_or_stale_is_refused(
    key, signature, timestamp, body, now, why
):
    if body is None:
        body = SENDGRID["payload"].encode()
    elif body == "no-crlf":
        body = SENDGRID["payload"].removesuffix("\r\n").encode()
    with pytest.raises(SignatureError, match=why):
        verify_sendgrid(
            load_sendgrid_key(SENDGRID[key]),
            SENDGRID[signature],
            SENDGRID.get(timestamp, timestamp),
            body,
            now=now,
        )


def test_sendgrid_published_event_is_parsed():
    document = json.loads(SENDGRID["payload"])
    [message] = normalise_sendgrid(document)
    assert message["event_id"] == "sendgrid:ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA"
    # sg_message_id is the X-Message-Id returned at send time plus ".filter..." routing
    assert message["provider_reference"] == "LRzXl_NHStOGhQ4kofSm_A"
    assert (message["event_type"], message["outcome"]) == ("dropped", "permanent-failure")
    assert message["reason"] == "Bounced Address"
    assert message["recipient"] == "hello@world.com"
    assert message["occurred_at"] == "2020-09-14T19:41:32+00:00"
    assert message["tenant_id"] is None and message["custom_params"] == {}


# --- Amazon SNS (signatures) and SES (events) -------------------------------------------------

SNS = fixture("sns/signed_notifications.json")["messages"]
CERTIFICATE = (FIXTURES / "sns" / "signing_certificate.pem").read_bytes()


def no_network(url: str) -> bytes:
    raise OSError(f"no certificate fetch in tests: {url}")


def certificates() -> SnsCertificateCache:
    cache = SnsCertificateCache(fetch=no_network)
    cache.add(SNS[0]["SigningCertURL"], CERTIFICATE)
    return cache


@pytest.mark.parametrize("message", SNS, ids=lambda m: f"v{m['SignatureVersion']}-{len(m)}")
def test_sns_published_notifications_verify(message):
    verify_sns(message, certificates(), (message["TopicArn"],), now=epoch(message["Timestamp"]))


def test_the_published_notifications_cover_both_versions_with_and_without_subject():
    kinds = {(m["SignatureVersion"], "Subject" in m) for m in SNS}
    assert kinds == {("1", False), ("1", True), ("2", False), ("2", True)}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"Message": "Hello world!"}, "does not match"),
        ({"MessageId": "792cda85-518f-5dd3-9163-81d851212f3b"}, "does not match"),
        ({"Timestamp": "2022-07-28T21:23:59.317Z"}, "does not match"),
        ({"Subject": "Hello world"}, "does not match"),  # a subject the publisher did not sign
        ({"SignatureVersion": "2"}, "does not match"),  # a v1 signature checked as SHA-256
        ({"SignatureVersion": "3"}, "unsupported"),
        ({"TopicArn": "arn:aws:sns:us-east-2:295079676684:another"}, "not in"),
    ],
)
def test_sns_published_notification_altered_is_refused(change, why):
    original = SNS[0]
    altered = {**original, **change}
    allowed = (original["TopicArn"], altered["TopicArn"]) if why != "not in" else ("x",)
    with pytest.raises(SignatureError, match=why):
        verify_sns(altered, certificates(), allowed, now=epoch(original["Timestamp"]))


def test_sns_published_notification_outside_the_window_is_refused():
    message = SNS[1]
    with pytest.raises(SignatureError, match="replay window"):
        verify_sns(
            message, certificates(), (message["TopicArn"],), now=epoch(message["Timestamp"]) + 7200
        )


def test_sns_signature_of_another_key_is_refused():
    signature = base64.b64decode(SNS[2]["Signature"])
    forged = base64.b64encode(bytes([signature[0] ^ 1]) + signature[1:]).decode()
    message = {**SNS[2], "Signature": forged}
    with pytest.raises(SignatureError, match="does not match"):
        verify_sns(message, certificates(), (message["TopicArn"],), now=epoch(message["Timestamp"]))


SES_MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
BASE_TAGS = {
    "ses:configuration-set": "ConfigSet",
    "ses:source-ip": "192.0.2.0",
    "ses:from-domain": "example.com",
    "ses:caller-identity": "ses_user",
}


def test_ses_documented_bounce_is_a_permanent_failure():
    record = fixture("ses/event_bounce.json")
    [message] = normalise_ses("sns-1", json.dumps(record))
    assert message["event_id"] == "ses:sns-1" and message["provider_reference"] == SES_MESSAGE_ID
    assert (message["event_type"], message["outcome"]) == ("Bounce", "permanent-failure")
    assert message["severity"] == "Permanent"
    assert message["recipient"] == "recipient@example.com"
    assert message["sender"] == "Sender Name <sender@example.com>"
    assert message["occurred_at"] == "2017-08-05T00:41:02.669000+00:00"  # the bounce, not the send
    assert "General" in message["reason"] and "550 5.1.1 user unknown" in message["reason"]
    assert message["custom_params"] == BASE_TAGS  # each tag's one value, not a list


def test_ses_documented_complaint():
    record = fixture("ses/event_complaint.json")
    [message] = normalise_ses("sns-2", json.dumps(record))
    assert (message["event_type"], message["outcome"]) == ("Complaint", "complained")
    assert message["recipient"] == "recipient@example.com"
    assert message["occurred_at"] == "2017-08-05T00:41:02.669000+00:00"
    assert message["provider_reference"] == SES_MESSAGE_ID


def test_ses_documented_delivery_keeps_the_custom_tags():
    record = fixture("ses/event_delivery.json")
    [message] = normalise_ses("sns-3", json.dumps(record))
    assert (message["event_type"], message["outcome"]) == ("Delivery", "delivered")
    assert message["recipient"] == "recipient@example.com"
    assert message["sender"] == "sender@example.com"
    assert message["occurred_at"] == "2016-10-19T23:21:04.133000+00:00"
    assert message["reason"] == "250 2.6.0 Message received"
    assert message["custom_params"] == {
        **BASE_TAGS,
        "ses:outgoing-ip": "192.0.2.0",
        "myCustomTag1": "myCustomTagValue1",
        "myCustomTag2": "myCustomTagValue2",
    }
