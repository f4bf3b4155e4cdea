"""Concurrent webhook requests share their writes (`webhooks.service.Batched`): one send of their
messages and one claim and completion of their Mailgun tokens, each request answered only after
its own write committed; a failed shared write answers every request in it; a token claimed
twice in one statement, or replayed concurrently, is accepted once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from resources.queues import PostgresQueues
from webhooks.app import WebhookService, create_app, serve_in_thread
from webhooks.verify import MailgunTokenStore


class Held:
    """What a `slow_queues` backend records: each send's size; sends wait for `release`, so
    the test's other requests must gather behind the first ones; `fail` makes sends raise."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.fail = False


def slow_queues(warehouse, held: Held) -> PostgresQueues:
    class SlowQueues(PostgresQueues):
        def send(self, queue, bodies, delay_seconds=0, *, dedup_key=None):
            held.sizes.append(len(bodies))
            held.release.wait(10)
            if held.fail:
                raise RuntimeError("queue down")
            return super().send(queue, bodies, delay_seconds, dedup_key=dedup_key)

    return SlowQueues(warehouse=warehouse)


@pytest.fixture
def aws_host(provider_keys):
    """The certificate host's stand-in, this test's own (the session's counts its fetches)."""
    from tests.email.conftest import AwsHostStandIn

    return AwsHostStandIn(provider_keys)


def requests_of(generator, tenant, count):
    now = datetime.now(UTC)
    made = []
    for i in range(count):
        provider = ("mailgun", "sendgrid", "ses")[i % 3]
        n = generator.notification(tenant, i, "reply", provider, now)
        made.append(generator.request_for(provider, [generator.event(n, "delivered", now)]))
    return made


def post_concurrently(url, requests, *, then=None):
    """Post every request at once; `then()` runs once they are all sent or waiting."""

    def post(request):
        response = httpx.post(
            url + request.path, content=request.body, headers=request.headers, timeout=30
        )
        return response.status_code

    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(post, r) for r in requests]
        if then is not None:
            time.sleep(1.0)  # all requests in: one send held, the others gathered behind it
            then()
        return [f.result() for f in futures]


def queued(db):
    return db.execute(
        "select body->>'event_id' from control.queue_messages where queue = 'email_events'"
    ).fetchall()


def service(email_settings, resources, aws_host, queues):
    return WebhookService(
        email_settings, queues, resources["warehouse"], extras={"aws_fetch": aws_host}
    )


def test_concurrent_requests_share_a_send_and_are_answered_after_it(
    email_settings, resources, aws_host, email_tables, generator, tenant
):
    held = Held()
    queues = slow_queues(resources["warehouse"], held)
    requests = requests_of(generator, tenant, 9)
    with serve_in_thread(create_app(service(email_settings, resources, aws_host, queues))) as url:
        statuses = post_concurrently(url, requests, then=held.release.set)
    assert statuses == [200] * 9
    # the first sends held, the others gathered behind them (Mailgun's after their claim)
    assert sum(held.sizes) == 9 and len(held.sizes) < 9 and max(held.sizes) > 1
    assert len(queued(email_tables)) == 9


def test_a_failed_shared_send_answers_503_to_each_request_and_releases_their_tokens(
    email_settings, resources, aws_host, email_tables, generator, tenant
):
    held = Held()
    held.fail = True
    queues = slow_queues(resources["warehouse"], held)
    requests = requests_of(generator, tenant, 6)
    with serve_in_thread(create_app(service(email_settings, resources, aws_host, queues))) as url:
        statuses = post_concurrently(url, requests, then=held.release.set)
    assert statuses == [503] * 6 and max(held.sizes) > 1
    assert queued(email_tables) == []
    # the senders' retries are accepted: Mailgun's tokens were released, not taken as replays
    working = service(email_settings, resources, aws_host, resources["queues"])
    with serve_in_thread(create_app(working)) as url:
        assert post_concurrently(url, requests) == [200] * 6
    assert len(queued(email_tables)) == 6


def test_a_mailgun_token_replayed_concurrently_is_accepted_once(
    email_settings, resources, aws_host, email_tables, generator, tenant
):
    (request,) = requests_of(generator, tenant, 1)
    held = Held()
    held.release.set()
    queues = slow_queues(resources["warehouse"], held)
    with serve_in_thread(create_app(service(email_settings, resources, aws_host, queues))) as url:
        statuses = post_concurrently(url, [request] * 8)
    assert sorted(statuses) == [200] + [401] * 7
    assert len(queued(email_tables)) == 1


def test_claim_many_claims_a_token_once_even_twice_in_one_statement(resources, email_tables):
    tokens = MailgunTokenStore(resources["warehouse"].connection)
    assert tokens.claim_many(["a", "b", "a"]) == [True, True, False]
    assert tokens.claim_many(["a", "c"]) == [False, True]  # a fresh claim may be enqueueing
    tokens.complete_many(["a", "b", "c"])
    assert email_tables.execute(
        "select count(*) from control.mailgun_seen_tokens where completed_at is not null"
    ).fetchone() == (3,)
