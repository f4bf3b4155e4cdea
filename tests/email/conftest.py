"""Fixtures for the email delivery tests: provider keys, the webhook service over real HTTP in a
background thread, clean email tables, Dagster definitions bound to the test warehouse."""

from __future__ import annotations

import dataclasses
import itertools
import uuid

import pytest

_tenants = itertools.count(1)

EMAIL_TABLES = (
    "raw.notifications, raw.notification_history, raw.delivery_events, "
    "analytics.template_stats_daily, control.email_tenant_pods, control.notification_retention, "
    "control.mailgun_seen_tokens, control.queue_messages, control.queue_dead_letters, "
    "control.queue_acks"
)


@pytest.fixture
def tenant() -> str:
    return f"t{next(_tenants)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def email_tables(db):
    """Empty email delivery and queue tables (ours only)."""
    db.execute(f"truncate {EMAIL_TABLES}")
    return db


@pytest.fixture(scope="session")
def provider_keys():
    from sandbox.email_events import ProviderKeys

    return ProviderKeys.generate()


@pytest.fixture(scope="session")
def email_settings(settings, provider_keys):
    """The test settings with the providers' keys, as the env vars would give them."""
    return dataclasses.replace(
        settings,
        mailgun_signing_key=provider_keys.mailgun_signing_key,
        sendgrid_public_key=provider_keys.sendgrid_public_key_b64,
        ses_topic_arns=(provider_keys.ses_topic_arn,),
    )


class AwsHostStandIn:
    """THE ONE MOCK: the real sns.<region>.amazonaws.com cannot be reached from here, so the
    fetcher the service uses for SigningCertURL and SubscribeURL is this stand-in, serving the
    test's self-signed certificate and recording subscription confirmations. Everything else
    (signature checks, host pattern, caching) is the real code."""

    def __init__(self, keys):
        self.keys = keys
        self.fetched: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == self.keys.sns_certificate_url:
            return self.keys.sns_certificate_pem
        if "Action=ConfirmSubscription" in url:
            return b"<ConfirmSubscriptionResponse/>"
        raise AssertionError(f"unexpected fetch of {url}")


@pytest.fixture(scope="session")
def aws_host(provider_keys):
    return AwsHostStandIn(provider_keys)


def _webhook_service(email_settings, resources, aws_host):
    from webhooks.app import WebhookService

    return WebhookService(
        settings=email_settings,
        queues=resources["queues"],
        warehouse=resources["warehouse"],
        extras={"aws_fetch": aws_host},
    )


@pytest.fixture(scope="session")
def webhook_service(email_settings, embedded_resources, aws_host):
    return _webhook_service(email_settings, embedded_resources, aws_host)


@pytest.fixture(scope="session")
def embedded_webhook_url(webhook_service):
    """The webhook service on a free port, served by uvicorn in a background thread."""
    from webhooks.app import create_app, serve_in_thread

    with serve_in_thread(create_app(webhook_service)) as url:
        yield url


@pytest.fixture
def webhook_url(request, email_settings, aws_host):
    """The embedded default's webhook service; for a test in both shapes (`platform`), one
    serving that shape's queues."""
    if "platform" not in request.fixturenames:
        yield request.getfixturevalue("embedded_webhook_url")
        return
    from webhooks.app import create_app, serve_in_thread

    resources = request.getfixturevalue("platform").resources
    service = _webhook_service(email_settings, resources, aws_host)
    with serve_in_thread(create_app(service)) as url:
        yield url


@pytest.fixture
def http(webhook_url):
    import httpx

    with httpx.Client(base_url=webhook_url, timeout=30) as client:
        yield client


@pytest.fixture
def generator(provider_keys):
    from sandbox.email_events import EmailEventGenerator

    return EmailEventGenerator(provider_keys, seed=uuid.uuid4().int % 10**6)


@pytest.fixture
def instance():
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield instance
