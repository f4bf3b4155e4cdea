"""The Zendesk client against the sandbox over real HTTP: Retry-After, backoff on bare 429s,
5xx and timeouts, the request budget, auth errors and the per-ticket repair endpoint."""

from __future__ import annotations

import time

import pytest

from resources.zendesk import (
    Credentials,
    StartTimeTooRecent,
    ZendeskApi,
    ZendeskAuthError,
    ZendeskError,
)
from sandbox.zendesk import (
    SANDBOX_EMAIL,
    SANDBOX_OAUTH_TOKEN,
    SANDBOX_TOKEN,
    RateLimits,
    ZendeskSandbox,
)
from tests.tickets.helpers import StallAwareTransport

TOKEN = Credentials(kind="token", secret=SANDBOX_TOKEN, email=SANDBOX_EMAIL)


@pytest.fixture
def account(sandbox_host):
    def make(**kwargs):
        kwargs.setdefault("rate_limits", RateLimits(None, None))
        sandbox = ZendeskSandbox(seed=61, tickets=300, **kwargs)
        _, base_url = sandbox_host.add(sandbox)
        return sandbox, base_url

    return make


def api(base_url, sleeps=None, **kwargs):
    def sleep(seconds):
        if sleeps is not None:
            sleeps.append(seconds)
        time.sleep(min(seconds, 0.01))  # record the wait, keep the test fast

    kwargs.setdefault("credentials", TOKEN)
    return ZendeskApi(
        desk="acme",
        base_url=base_url,
        sleep=sleep,
        seed=1,
        export_rate_per_minute=100000,
        api_rate_per_minute=100000,
        **kwargs,
    )


def test_retry_after_is_honoured_and_bare_429s_back_off(account):
    sandbox, base_url = account()
    sandbox.inject_faults(["429", "429_no_retry_after"], every=1, limit=2)
    sleeps: list[float] = []
    client = api(base_url, sleeps, backoff_base_seconds=0.2)
    page = client.ticket_events(0, per_page=50)
    assert page["count"] >= 50
    waits = [s for s in sleeps if s > 0.0001]
    assert waits[0] == 1.0  # the sandbox's Retry-After: 1
    assert 0 < waits[1] <= 0.4  # second attempt: backoff with full jitter, up to 2 x base
    assert client.stats.throttled == 2 and client.stats.requests["ticket_events_export"] == 3


def test_5xx_and_timeouts_are_retried_then_fail_naming_the_desk(account):
    # The stalled request (held 30 s by the sandbox) alone gets a 0.2 s read timeout; every
    # other request the default 30 s, so a busy machine cannot add a timeout of its own.
    sandbox, base_url = account(timeout_delay=30.0)
    sandbox.inject_faults(["500", "timeout", "503"], every=1, limit=3)
    client = api(base_url, backoff_base_seconds=0.01, transport=StallAwareTransport(sandbox, 0.2))
    pages = list(client.export_tickets(start_time=0, per_page=100))
    assert sum(len(p.tickets) for p in pages) == 300
    assert client.stats.errors == {"500": 1, "timeout": 1, "503": 1}

    sandbox.inject_faults(["503"], every=1)
    failing = api(base_url, max_attempts=3, backoff_base_seconds=0.01)
    with pytest.raises(
        ZendeskError, match=r"desk 'acme': tickets_export: HTTP 503 after 3 attempts"
    ):
        next(failing.export_tickets(start_time=0))
    sandbox.clear_faults()


@pytest.mark.parametrize(
    "credentials",
    [Credentials("token", "wrong-token", SANDBOX_EMAIL), Credentials("oauth", "wrong")],
)
def test_wrong_credentials_fail_at_once_without_the_token(account, credentials):
    _, base_url = account()
    client = api(base_url, credentials=credentials)
    with pytest.raises(ZendeskAuthError) as caught:
        client.ticket_events(0)
    assert "desk 'acme'" in str(caught.value) and "401" in str(caught.value)
    assert "wrong" not in str(caught.value)
    assert sum(client.stats.requests.values()) == 1  # no retries on 401


def test_oauth_and_the_start_time_rule(account):
    sandbox, base_url = account()
    client = api(base_url, credentials=Credentials("oauth", SANDBOX_OAUTH_TOKEN))
    with pytest.raises(StartTimeTooRecent):
        client.ticket_events(sandbox.now() - 30)
    with pytest.raises(StartTimeTooRecent):
        next(client.export_tickets(start_time=sandbox.now() + 3600))


class ManualClock:
    """Seconds that pass only when the client sleeps: the client's budget and the sandbox's
    rate-limit window read the same clock, so pacing is exact however busy the machine is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_budget_keeps_below_the_sandbox_rate_limit(account):
    # 10 export requests per sandbox minute; a sandbox minute lasts 0.5 s of the shared clock
    clock = ManualClock()
    sandbox, base_url = account(rate_limits=RateLimits(10, 200), clock_scale=120, clock=clock)

    def client(export_rate_per_minute):
        return ZendeskApi(
            desk="acme",
            base_url=base_url,
            credentials=TOKEN,
            export_rate_per_minute=export_rate_per_minute,
            clock=clock,
            sleep=clock.sleep,
        )

    paced = client(10 * 120)  # the budget: 90% of the limit, one request per 1/18 s
    for _ in range(25):
        paced.ticket_events(0, per_page=10)
    assert paced.stats.throttled == 0
    assert sandbox.responses["429_rate_limit"] == 0
    assert paced.stats.waited_seconds == pytest.approx(24 / 18)

    # without a budget the same burst trips the limit after 10 requests; Retry-After (1 s)
    # empties the window, so 25 requests take two 429s; the client still gets through
    clock.sleep(1.0)  # the paced requests leave the window
    unpaced = client(10**6)
    for _ in range(25):
        unpaced.ticket_events(0, per_page=10)
    assert unpaced.stats.throttled == 2 and sandbox.responses["429_rate_limit"] == 2
    assert unpaced.stats.requests["ticket_events_export"] == 27


def test_ticket_comments_repair_path(account):
    sandbox, base_url = account()
    client = api(base_url)
    tid = max(sandbox.comments, key=lambda t: len(sandbox.comments[t]))
    comments = client.ticket_comments(tid, page_size=2)
    assert [c["id"] for c in comments] == [c["id"] for c in sandbox.comments[tid]]
    assert client.stats.requests["ticket_comments"] == -(-len(comments) // 2)
    deleted = sandbox.apply_changes(deleted=1).deleted_ticket_ids[0]
    with pytest.raises(ZendeskError, match="HTTP 404"):
        client.ticket_comments(deleted)
