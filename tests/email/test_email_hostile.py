"""Hostile and broken input over HTTP against the real webhook service (issue 14).

Verified input that can never be stored gets a 4xx at once (the provider stops retrying), is
kept with its reason in `control.rejected_input`, queues nothing, and leaves no personal data
or secret in the log. Deep JSON is a 400 with one log line. Wrong field types and absurd
timestamps are a 400 naming the field. A non-finite Mailgun timestamp is refused. SNS signing
certificates come only from the standard HTTPS port, and failed fetches are not repeated.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from webhooks.verify import mailgun_signature

RECIPIENT_MARK = "hostile-recipient"  # every recipient address below contains it


@pytest.fixture
def rejected(db):
    db.execute("truncate control.rejected_input")

    def rows() -> list[tuple[str, str, bytes]]:
        found = db.execute(
            "select source, reason, body from control.rejected_input order by rejected_id"
        ).fetchall()
        return [(source, reason, bytes(body)) for source, reason, body in found]

    return rows


def queued(db) -> list[dict]:
    return [r[0] for r in db.execute("select body from control.queue_messages").fetchall()]


def post(http, request):
    return http.post(request.path, content=request.body, headers=request.headers)


def a_notification(generator, tenant, provider):
    n = generator.notification(tenant, 42, "reply", provider, datetime.now(UTC))
    n["recipient"] = f"{RECIPIENT_MARK}.{tenant}@example.org"
    return n


def mailgun(generator, tenant, change=None, **kwargs):
    data, planned = generator.mailgun_event(
        a_notification(generator, tenant, "mailgun"), "permanent", datetime.now(UTC)
    )
    if change:
        change(data)
    return generator.mailgun_request(data, [planned], **kwargs)


def sendgrid(generator, tenant, change=None):
    data, planned = generator.sendgrid_event(
        a_notification(generator, tenant, "sendgrid"), "delivered", datetime.now(UTC)
    )
    if change:
        change(data)
    return generator.sendgrid_request([(data, planned)])


def ses(generator, tenant, change=None):
    data, planned = generator.ses_event(
        a_notification(generator, tenant, "ses"), "permanent", datetime.now(UTC)
    )
    if change:
        change(data)
    return generator.ses_request(data, planned)


def signed_sendgrid_bytes(generator, body: bytes) -> dict[str, str]:
    """SendGrid headers signing `body` exactly as given."""
    timestamp = str(int(time.time()))
    signature = generator.keys.sendgrid_private_key.sign(
        timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
    )
    return {
        "content-type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def assert_clean_log(caplog, provider_keys):
    """No recipient address, no key, no traceback in anything logged meanwhile."""
    text = caplog.text
    assert RECIPIENT_MARK not in text
    assert provider_keys.mailgun_signing_key not in text
    assert "Traceback" not in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _set(path: str, value):
    def change(data):
        node = data
        *parents, last = path.split(".")
        for name in parents:
            node = node[name]
        node[last] = value

    return change


def _recipient_with(text: str):
    def change(data):
        for key in ("recipient", "email"):
            if key in data:
                data[key] = data[key].replace("@", text + "@")
        if "mail" in data:
            mail = data["mail"]
            mail["destination"] = [d.replace("@", text + "@") for d in mail["destination"]]
            for r in data.get("bounce", {}).get("bouncedRecipients", []):
                r["emailAddress"] = r["emailAddress"].replace("@", text + "@")

    return change


UNSTORABLE = {
    "mailgun NUL in the recipient": (mailgun, _recipient_with("\x00"), "NUL character"),
    "mailgun NaN in user-variables": (
        mailgun,
        lambda d: d["user-variables"].update(score=float("nan")),
        "NaN or Infinity",
    ),
    "mailgun lone surrogate in a header": (
        mailgun,
        _set("message.headers.subject", "Re: \ud800 broken"),
        "lone surrogate",
    ),
    "sendgrid lone surrogate in the address": (sendgrid, _recipient_with("\udc00"), "surrogate"),
    "sendgrid Infinity in a custom arg": (
        sendgrid,
        lambda d: d.update(weight=float("inf")),
        "NaN or Infinity",
    ),
    "ses NUL in the recipient": (ses, _recipient_with("\x00"), "NUL character"),
    "ses NaN in a tag": (
        ses,
        lambda d: d["mail"]["tags"].update(score=[float("nan")]),
        "NaN or Infinity",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSTORABLE))
def test_verified_input_jsonb_cannot_hold_is_400_kept_and_not_logged(
    http, email_tables, generator, tenant, rejected, caplog, provider_keys, case
):
    make, change, reason = UNSTORABLE[case]
    request = make(generator, tenant, change)
    with caplog.at_level(logging.INFO):
        first = post(http, request)
    assert first.status_code == 400, first.text
    assert reason in first.json()["error"] and "cannot store" in first.json()["error"]
    assert queued(email_tables) == []
    [(source, kept_reason, body)] = rejected()
    assert source == request.path and reason in kept_reason
    assert body == request.body  # byte for byte, for inspection
    assert_clean_log(caplog, provider_keys)
    assert "kept as control.rejected_input" in caplog.text


def test_out_of_range_numbers_in_a_signed_body_are_kept(
    http, email_tables, generator, tenant, rejected
):
    """1e400 decodes as infinity; an integer of 5000 digits does not decode at all. Both are
    signed, so both are kept with their reason."""
    data, _ = generator.sendgrid_event(
        a_notification(generator, tenant, "sendgrid"), "delivered", datetime.now(UTC)
    )
    text = json.dumps([data])
    infinite = text.replace('"timestamp": ', '"huge": 1e400, "timestamp": ')
    too_long = text.replace('"timestamp": ', '"huge": ' + "9" * 5000 + ', "timestamp": ')
    for raw in (infinite, too_long):
        body = raw.encode()
        headers = signed_sendgrid_bytes(generator, body)
        response = http.post("/webhooks/sendgrid", content=body, headers=headers)
        assert response.status_code == 400, response.text
    reasons = [reason for _, reason, _ in rejected()]
    assert len(reasons) == 2
    assert "huge: NaN or Infinity (or a number too large)" in reasons[0]
    assert "not valid JSON" in reasons[1] and "digits" in reasons[1]
    assert queued(email_tables) == []


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("path", ["/webhooks/mailgun", "/webhooks/sendgrid", "/webhooks/ses"])
def test_json_nested_100000_levels_is_400_with_one_log_line(
    http, email_tables, generator, rejected, caplog, path
):
    headers = {"content-type": "application/json"}
    if path == "/webhooks/sendgrid":  # correctly signed: the signature is over the raw bytes
        headers = signed_sendgrid_bytes(generator, DEEP)
    with caplog.at_level(logging.INFO):
        started = time.monotonic()
        response = http.post(path, content=DEEP, headers=headers)
        elapsed = time.monotonic() - started
    assert response.status_code == 400, response.text
    assert "nested deeper than 64 levels" in response.json()["error"]
    assert elapsed < 5
    lines = [r for r in caplog.records if r.name.startswith(("supportflow", "uvicorn"))]
    assert len(lines) == 1 and "Traceback" not in caplog.text
    assert queued(email_tables) == []
    # signed (SendGrid): kept; unverifiable (Mailgun, SNS sign inside the body): not kept
    assert len(rejected()) == (1 if path == "/webhooks/sendgrid" else 0)


WRONG_FIELDS = {
    "mailgun message is a string": (
        mailgun,
        _set("message", "headers"),
        "event-data.message must be an object",
    ),
    "mailgun timestamp 1e300": (
        mailgun,
        _set("timestamp", 1e300),
        "event-data.timestamp must be a unix time",
    ),
    "mailgun timestamp is text": (
        mailgun,
        _set("timestamp", "yesterday"),
        "event-data.timestamp must be a number",
    ),
    "mailgun envelope is a list": (
        mailgun,
        _set("envelope", ["x"]),
        "event-data.envelope must be an object",
    ),
    "mailgun recipient is an object": (
        mailgun,
        _set("recipient", {"a": 1}),
        "event-data.recipient must be a string",
    ),
    "mailgun user-variables is a list": (
        mailgun,
        _set("user-variables", [1]),
        "user-variables must be an object",
    ),
    "sendgrid timestamp 1e300": (
        sendgrid,
        _set("timestamp", 1e300),
        "event 0: timestamp must be a unix time",
    ),
    "sendgrid timestamp NaN": (
        sendgrid,
        _set("timestamp", float("nan")),
        "event 0: timestamp must be a unix time",
    ),
    "sendgrid timestamp negative": (
        sendgrid,
        _set("timestamp", -5),
        "event 0: timestamp must be a unix time",
    ),
    "sendgrid email is a list": (
        sendgrid,
        _set("email", ["a@b"]),
        "event 0: email must be a string",
    ),
    "ses far-future timestamp": (
        ses,
        _set("bounce.timestamp", "275760-09-13T00:00:00Z"),
        "SES timestamp",
    ),
    "ses bouncedRecipients is text": (
        ses,
        _set("bounce.bouncedRecipients", "x"),
        "bounce.bouncedRecipients must be a list",
    ),
    "ses tags is a list": (ses, _set("mail.tags", ["a"]), "mail.tags must be an object"),
    "ses destination holds a number": (
        ses,
        _set("mail.destination", [7]),
        "mail.destination must be a list of addresses",
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_FIELDS))
def test_wrong_field_types_and_timestamps_are_400_naming_the_field(
    http, email_tables, generator, tenant, rejected, caplog, provider_keys, case
):
    make, change, message = WRONG_FIELDS[case]
    request = make(generator, tenant, change)
    with caplog.at_level(logging.INFO):
        response = post(http, request)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert queued(email_tables) == []
    assert len(rejected()) == 1  # verified: kept with the reason
    assert_clean_log(caplog, provider_keys)


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "inf", "-inf", "1e999"])
def test_mailgun_non_finite_timestamp_is_refused(
    http, email_tables, generator, tenant, provider_keys, timestamp
):
    """A signature over "nan" + token is valid HMAC, but `abs(now - nan) > window` is false:
    the timestamp must be a finite number."""
    body = json.loads(mailgun(generator, tenant).body)
    token = "t" * 50
    body["signature"] = {
        "timestamp": timestamp,
        "token": token,
        "signature": mailgun_signature(provider_keys.mailgun_signing_key, timestamp, token),
    }
    response = http.post("/webhooks/mailgun", json=body)
    assert response.status_code == 401
    assert "finite" in response.json()["error"]
    assert queued(email_tables) == []


def test_event_over_the_queue_limit_is_413_and_kept(
    http, email_tables, generator, tenant, rejected
):
    request = sendgrid(generator, tenant, lambda d: d.update(padding="x" * (300 * 1024)))
    response = post(http, request)
    assert response.status_code == 413, response.text
    assert "at most 262144" in response.json()["error"]
    assert queued(email_tables) == []
    [(_, reason, body)] = rejected()
    assert "at most 262144" in reason and body == request.body


def test_the_same_limit_holds_for_the_queue_itself(pg_queues):
    from resources.queues import QueueError

    with pytest.raises(QueueError, match="at most 262144"):
        pg_queues.send("email_events", [{"event_id": "big", "x": "y" * (256 * 1024)}])
    with pytest.raises(QueueError, match="NUL character"):
        pg_queues.send("email_events", [{"event_id": "ok"}, {"event_id": "nul", "x": "a\x00"}])
    assert pg_queues.depth("email_events") == 0  # nothing half-sent


# --- SNS signing certificates ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com:80/SimpleNotificationService-abc.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/other/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem?x=1",
    ],
)
def test_sns_certificate_only_https_on_the_standard_port(
    http, email_tables, generator, tenant, aws_host, url
):
    envelope = json.loads(ses(generator, tenant).body)
    envelope["SigningCertURL"] = url  # not a signed field: anyone can change it
    response = http.post("/webhooks/ses", json=envelope)
    assert response.status_code == 401
    assert "standard port" in response.json()["error"]
    assert url not in aws_host.fetched
    assert queued(email_tables) == []


def test_failed_certificate_fetch_is_cached_and_answered_503(
    email_settings, resources, email_tables, generator, tenant
):
    """Anyone who knows an allowed topic ARN can name a certificate URL on the SNS host; a
    failed fetch is remembered, so repeating the request does not fetch again."""
    from webhooks.app import WebhookService, create_app, serve_in_thread

    fetched: list[str] = []

    def unreachable(url: str) -> bytes:
        fetched.append(url)
        raise httpx.ConnectError("no route to host")

    service = WebhookService(
        email_settings,
        resources["queues"],
        resources["warehouse"],
        extras={"aws_fetch": unreachable},
    )
    url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
    with serve_in_thread(create_app(service)) as base:
        for _ in range(4):
            envelope = json.loads(ses(generator, tenant).body)
            envelope["SigningCertURL"] = url
            response = httpx.post(base + "/webhooks/ses", json=envelope)
            assert response.status_code == 503  # SNS retries later
            assert response.headers["Retry-After"]
    assert fetched == [url]
    assert queued(email_tables) == []


def test_certificate_fetches_are_rationed_whatever_the_urls():
    from webhooks.verify import CertificateUnavailable, SnsCertificateCache

    fetched: list[str] = []

    def unreachable(url: str) -> bytes:
        fetched.append(url)
        raise httpx.ConnectError("down")

    clock = [0.0]
    cache = SnsCertificateCache(
        unreachable, max_fetches_per_minute=3, failure_ttl_seconds=300, clock=lambda: clock[0]
    )
    urls = [
        f"https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-{i:04d}.pem"
        for i in range(6)
    ]
    for url in urls:
        with pytest.raises(CertificateUnavailable):
            cache.public_key(url)
    assert fetched == urls[:3]
    clock[0] = 61.0  # a minute later fetching resumes; failed URLs stay failed for 300 s
    with pytest.raises(CertificateUnavailable, match="failed recently"):
        cache.public_key(urls[0])
    with pytest.raises(CertificateUnavailable):
        cache.public_key(urls[3])
    assert fetched == urls[:4]
