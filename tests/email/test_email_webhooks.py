"""The webhook service over real HTTP: each provider's valid requests are queued; every kind of
bad request gets its status code and queues nothing."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sandbox.email_events import EmailEventGenerator, ProviderKeys


def queued(db, queue: str = "email_events") -> list[dict]:
    rows = db.execute(
        "select body from control.queue_messages where queue = %s order by message_id", (queue,)
    ).fetchall()
    return [row[0] for row in rows]


def post(http, request):
    return http.post(request.path, content=request.body, headers=request.headers)


def a_notification(generator, tenant, provider):
    return generator.notification(tenant, 42, "reply", provider, datetime.now(UTC))


def test_healthz(http):
    assert http.get("/healthz").json() == {"status": "ok"}


def test_valid_mailgun_request_is_queued(http, email_tables, generator, tenant):
    n = a_notification(generator, tenant, "mailgun")
    data, planned = generator.mailgun_event(n, "permanent", datetime.now(UTC))
    response = post(http, generator.mailgun_request(data, [planned]))
    assert response.status_code == 200, response.text
    assert response.json() == {"queued": 1}
    (message,) = queued(email_tables)
    assert message["event_id"] == f"mailgun:{planned.provider_event_id}"
    assert message["provider_reference"] == n["provider_reference"]
    assert message["tenant_id"] == tenant
    assert message["outcome"] == "permanent-failure"
    assert message["severity"] == "permanent"
    assert "notification_id" not in message  # would make every event of it one dedup id


def test_valid_sendgrid_batch_is_queued_one_message_per_event(
    http, email_tables, generator, tenant
):
    n = a_notification(generator, tenant, "sendgrid")
    now = datetime.now(UTC)
    items = [generator.sendgrid_event(n, kind, now) for kind in ("accepted", "blocked", "open")]
    response = post(http, generator.sendgrid_request(items))
    assert response.status_code == 200, response.text
    messages = queued(email_tables)
    assert [m["outcome"] for m in messages] == ["accepted", "temporary-failure", "opened"]
    # sg_message_id carries routing suffixes; the reference is the X-Message-Id part
    assert {m["provider_reference"] for m in messages} == {n["provider_reference"]}


@pytest.mark.parametrize("version", ["1", "2"])
def test_valid_ses_notification_is_queued(http, email_tables, generator, tenant, version):
    n = a_notification(generator, tenant, "ses")
    data, planned = generator.ses_event(n, "temporary", datetime.now(UTC))
    response = post(http, generator.ses_request(data, planned, version=version))
    assert response.status_code == 200, response.text
    (message,) = queued(email_tables)
    assert message["provider_event_id"] == planned.provider_event_id
    assert message["outcome"] == "temporary-failure"
    assert message["sender"] == n["custom_params"]["sender"]


def test_sns_certificate_fetched_once_then_cached(http, email_tables, generator, tenant, aws_host):
    # `aws_host` serves the whole session: another test's service may have fetched before
    url = generator.keys.sns_certificate_url
    fetched_before = aws_host.fetched.count(url)
    fetched_after = []
    for _ in range(3):
        n = a_notification(generator, tenant, "ses")
        data, planned = generator.ses_event(n, "delivered", datetime.now(UTC))
        assert post(http, generator.ses_request(data, planned)).status_code == 200
        fetched_after.append(aws_host.fetched.count(url))
    # at most the first request fetched (none when this service had it already), no later one
    assert fetched_after[0] - fetched_before <= 1
    assert fetched_after == [fetched_after[0]] * 3
    assert fetched_after[0] >= 1
    assert len(queued(email_tables)) == 3


def test_sns_subscription_confirmed_only_for_allowed_topics(
    http, email_tables, generator, aws_host
):
    allowed = generator.sns_envelope(
        "You have chosen to subscribe", kind="SubscriptionConfirmation"
    )
    response = http.post("/webhooks/ses", content=json.dumps(allowed),
                         headers={"content-type": "text/plain; charset=UTF-8"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert allowed["SubscribeURL"] in aws_host.fetched
    other = generator.sns_envelope(
        "You have chosen to subscribe",
        kind="SubscriptionConfirmation",
        topic_arn="arn:aws:sns:us-east-1:123456789012:someone-elses-topic",
    )
    response = http.post("/webhooks/ses", content=json.dumps(other),
                         headers={"content-type": "text/plain"})  # fmt: skip
    assert response.status_code == 401
    assert other["SubscribeURL"] not in aws_host.fetched
    assert queued(email_tables) == []


def _mailgun(generator, tenant, **kwargs):
    n = a_notification(generator, tenant, "mailgun")
    data, planned = generator.mailgun_event(n, "delivered", datetime.now(UTC))
    return generator.mailgun_request(data, [planned], **kwargs)


def _sendgrid(generator, tenant, **kwargs):
    n = a_notification(generator, tenant, "sendgrid")
    return generator.sendgrid_request(
        [generator.sendgrid_event(n, "delivered", datetime.now(UTC))], **kwargs
    )


def _ses(generator, tenant, **kwargs):
    n = a_notification(generator, tenant, "ses")
    data, planned = generator.ses_event(n, "delivered", datetime.now(UTC))
    return generator.ses_request(data, planned, **kwargs)


def _tampered(request):
    request.body = request.body.replace(b"delivered", b"Delivered", 1).replace(
        b"Delivery", b"Dxlivery", 1
    )
    return request


BAD_REQUESTS = {
    "mailgun wrong key": (lambda g, t: _mailgun(g, t, key="key-not-the-right-one"), 401),
    "mailgun old timestamp": (lambda g, t: _mailgun(g, t, signed_at=time.time() - 16 * 60), 401),
    "sendgrid wrong key": (
        lambda g, t: _sendgrid(g, t, private_key=ec.generate_private_key(ec.SECP256R1())),
        401,
    ),
    "sendgrid tampered body": (lambda g, t: _tampered(_sendgrid(g, t)), 401),
    "sendgrid old timestamp": (lambda g, t: _sendgrid(g, t, signed_at=time.time() - 3600), 401),
    "ses wrong certificate key": (
        lambda g, t: _ses(g, t, private_key=ProviderKeys.generate().sns_private_key),
        401,
    ),
    "ses tampered message": (lambda g, t: _tampered(_ses(g, t)), 401),
    "ses old timestamp": (
        lambda g, t: _ses(g, t, sent_at=datetime.fromtimestamp(time.time() - 7200, UTC)),
        401,
    ),
    "ses other topic": (lambda g, t: _ses(g, t, topic_arn="arn:aws:sns:us-east-1:1:x"), 401),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_gets_its_status_and_queues_nothing(
    http, email_tables, generator, tenant, case
):
    make, status = BAD_REQUESTS[case]
    response = post(http, make(generator, tenant))
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert queued(email_tables) == []


def test_tampered_mailgun_signature_is_401(http, email_tables, generator, tenant):
    request = _mailgun(generator, tenant)
    body = json.loads(request.body)
    body["event-data"]["event"] = "failed"  # signature covers timestamp+token only ...
    body["signature"]["token"] = "f" * 50  # ... so tamper with what it covers
    response = http.post("/webhooks/mailgun", json=body)
    assert response.status_code == 401
    assert queued(email_tables) == []


def test_missing_signatures_are_401(http, email_tables, generator, tenant):
    mailgun = json.loads(_mailgun(generator, tenant).body)
    del mailgun["signature"]
    assert http.post("/webhooks/mailgun", json=mailgun).status_code == 401
    sendgrid = _sendgrid(generator, tenant)
    headers = {"content-type": "application/json"}
    assert http.post("/webhooks/sendgrid", content=sendgrid.body, headers=headers).status_code == (
        401
    )
    ses = json.loads(_ses(generator, tenant).body)
    del ses["Signature"]
    assert http.post("/webhooks/ses", json=ses).status_code == 401
    assert queued(email_tables) == []


def test_sns_certificate_only_from_the_allowed_host(http, email_tables, generator, tenant):
    envelope = json.loads(_ses(generator, tenant).body)
    for url in (
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
    ):
        envelope["SigningCertURL"] = url
        response = http.post("/webhooks/ses", json=envelope)
        assert response.status_code == 401, url
        assert "SigningCertURL" in response.json()["error"]
    assert queued(email_tables) == []


def test_replayed_mailgun_token_is_401(http, email_tables, generator, tenant):
    request = _mailgun(generator, tenant)
    assert post(http, request).status_code == 200
    again = post(http, request)
    assert again.status_code == 401
    assert "replay" in again.json()["error"]
    assert len(queued(email_tables)) == 1


@pytest.mark.parametrize("path", ["/webhooks/mailgun", "/webhooks/sendgrid", "/webhooks/ses"])
def test_malformed_json_is_400(http, email_tables, generator, path):
    body = b'{"signature": {"timestamp": '
    headers = {"content-type": "application/json"}
    if path == "/webhooks/sendgrid":  # signed correctly: the signature is over the raw bytes
        timestamp = str(int(time.time()))
        signature = generator.keys.sendgrid_private_key.sign(
            timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
        headers["X-Twilio-Email-Event-Webhook-Signature"] = base64.b64encode(signature).decode()
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = timestamp
    response = http.post(path, content=body, headers=headers)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert queued(email_tables) == []


def test_signed_but_not_an_event_is_400(http, email_tables, generator, tenant):
    request = _sendgrid(generator, tenant)
    events = json.loads(request.body)
    del events[0]["sg_event_id"]
    signed = generator.sendgrid_request([(events[0], request.events[0])])
    response = post(http, signed)
    assert response.status_code == 400
    assert "sg_event_id" in response.json()["error"]
    assert queued(email_tables) == []


@pytest.mark.parametrize(
    "path,content_type",
    [
        ("/webhooks/mailgun", "multipart/form-data; boundary=x"),
        ("/webhooks/sendgrid", "text/plain"),
        ("/webhooks/ses", "application/xml"),
    ],
)
def test_wrong_content_type_is_415(http, email_tables, path, content_type):
    response = http.post(path, content=b"{}", headers={"content-type": content_type})
    assert response.status_code == 415
    assert queued(email_tables) == []


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_one_mib_is_413(http, email_tables, generator, tenant, chunked):
    request = _sendgrid(generator, tenant)
    big = request.body[:-1] + b"," + json.dumps({"padding": "x" * (1024 * 1024)}).encode() + b"]"
    content = (big[i : i + 65536] for i in range(0, len(big), 65536)) if chunked else big
    response = http.post("/webhooks/sendgrid", content=content, headers=request.headers)
    assert response.status_code == 413
    assert queued(email_tables) == []


def test_queue_failure_is_503_and_releases_the_mailgun_token(
    email_settings, resources, email_tables, generator, tenant
):
    """2xx only after the event is stored: with a queue that fails, the sender gets 503 and its
    retry (same token) is accepted later."""
    from resources.queues import PostgresQueues
    from webhooks.app import WebhookService, create_app, serve_in_thread

    class BrokenQueues(PostgresQueues):
        def send(self, queue, bodies, delay_seconds=0, *, dedup_key=None):
            raise RuntimeError("queue down")

    broken = WebhookService(
        email_settings, BrokenQueues(warehouse=resources["warehouse"]), resources["warehouse"]
    )
    request = _mailgun(generator, tenant)
    with serve_in_thread(create_app(broken)) as url:
        assert httpx.post(url + request.path, content=request.body,
                          headers=request.headers).status_code == 503  # fmt: skip
    working = WebhookService(email_settings, resources["queues"], resources["warehouse"])
    with serve_in_thread(create_app(working)) as url:
        assert httpx.post(url + request.path, content=request.body,
                          headers=request.headers).status_code == 200  # fmt: skip
    assert len(queued(email_tables)) == 1


def test_mailgun_replay_rejected_across_processes(
    http, email_tables, generator, tenant, sf_home, provider_keys
):
    """A token accepted by `supportflow webhooks serve` in another process is a replay here."""
    from webhooks.app import free_port

    port = free_port()
    env = {**os.environ, **provider_keys.env(), "SUPPORTFLOW_HOME": str(sf_home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "webhooks", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "webhooks serve did not come up"
            time.sleep(0.2)
        request = _mailgun(generator, tenant)
        first = httpx.post(base + request.path, content=request.body, headers=request.headers)
        assert first.status_code == 200, first.text
        assert post(http, request).status_code == 401  # the in-thread service: another process
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert len(queued(email_tables)) == 1


def test_generator_env_matches_settings(provider_keys):
    from resources.settings import Settings

    settings = Settings.from_env({**provider_keys.env(), "SUPPORTFLOW_HOME": "/tmp/x"})
    assert settings.ses_topic_arns == (provider_keys.ses_topic_arn,)
    assert EmailEventGenerator(provider_keys).keys is provider_keys


def test_mailgun_retry_after_a_crash_between_claim_and_enqueue_is_accepted(
    http, email_tables, generator, tenant, db
):
    """A process that died after claiming the token but before enqueueing must not turn
    Mailgun's retry into a 'replay': the events would be lost."""
    request = _mailgun(generator, tenant)
    token = json.loads(request.body)["signature"]["token"]
    # the dead process's claim: recorded, never completed
    db.execute("insert into control.mailgun_seen_tokens (token) values (%s)", (token,))
    in_progress = post(http, request)
    assert in_progress.status_code == 401  # a claim this fresh may still be enqueueing
    db.execute(
        "update control.mailgun_seen_tokens set seen_at = now() - interval '10 minutes' "
        "where token = %s",
        (token,),
    )
    retried = post(http, request)
    assert retried.status_code == 200
    assert len(queued(email_tables)) == 1
    assert post(http, request).status_code == 401  # completed: now it is a replay
