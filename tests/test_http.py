"""The one HTTP client (resources/http.py): Retry-After in seconds and as an HTTP date, full
jitter, counters, errors without secrets, and the same-origin rule (nothing is sent off-origin)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from resources.discourse import DiscourseClient, DiscourseError
from resources.http import (
    ForeignOriginError,
    HttpClient,
    RetriesExhausted,
    backoff_delay,
    parse_retry_after,
)
from tests.foreign_host import foreign_host

SECRET = "Bearer s3cret-token"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-4", 0.0),
        ("1e9", 1e9),  # the client caps it, the parser reports it
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Sun, 01 Mar 2026 12:00:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: retry now
    ],
)
def test_parse_retry_after_seconds_and_http_date(value, expected):
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize("retry", [0, 1, 2, 3, 10])
def test_backoff_is_full_jitter_growing_and_capped(retry):
    rng = random.Random(retry)
    ceiling = min(60.0, 1.0 * 2**retry)
    delays = [backoff_delay(retry, 1.0, 60.0, rng) for _ in range(400)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # full jitter: the whole range is used, the short waits too (not "half fixed, half random")
    assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def replying(*responses, seen=None):
    """A transport answering with `responses` in order (an exception is raised instead)."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.MockTransport(handler)


def client(transport, sleeps=None, **kwargs) -> HttpClient:
    return HttpClient(
        source="desk 'acme'",
        base_url="https://acme.zendesk.com",
        headers={"Authorization": SECRET},
        transport=transport,
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
        seed=7,
        **kwargs,
    )


def test_retry_after_seconds_and_date_are_honoured_and_counted():
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    sleeps: list[float] = []
    http = client(
        replying(
            httpx.Response(503, headers={"Retry-After": "2"}),
            httpx.Response(429, headers={"Retry-After": later}),
            httpx.Response(500),
            httpx.Response(200, json={"ok": True}),
        ),
        sleeps,
        backoff_base_seconds=0.5,
    )
    response = http.get("tickets_export", http.url("/api/v2/x.json"))
    assert response.json() == {"ok": True}
    assert sleeps[0] == 2.0
    assert 25 < sleeps[1] <= 30  # the HTTP date, ~30 s from now
    assert 0 <= sleeps[2] <= 0.5 * 2**2  # no hint: third retry's full-jitter window
    assert http.stats.requests == {"tickets_export": 4}
    assert http.stats.errors == {"503": 1, "429": 1, "500": 1}
    assert (http.stats.throttled, http.stats.retries) == (1, 3)


def test_retry_after_is_capped():
    sleeps: list[float] = []
    http = client(
        replying(httpx.Response(429, headers={"Retry-After": "86400"}), httpx.Response(200)),
        sleeps,
        retry_after_cap_seconds=120,
    )
    http.get("x", http.url("/x"))
    assert sleeps == [120]


def test_giving_up_names_source_and_endpoint_never_the_credentials():
    http = client(replying(httpx.ConnectTimeout("timed out")), max_attempts=3)
    with pytest.raises(RetriesExhausted) as caught:
        http.get("tickets_export", http.url("/x"))
    message = str(caught.value)
    assert message == "desk 'acme': tickets_export: timeout error (ConnectTimeout) after 3 attempts"
    assert "s3cret" not in message
    failing = client(replying(httpx.Response(502)), max_attempts=2)
    with pytest.raises(RetriesExhausted, match="HTTP 502 after 2 attempts") as caught:
        failing.get("x", failing.url("/x"))
    assert caught.value.status == 502


def test_4xx_is_not_retried_and_redirects_are_not_followed():
    seen: list[httpx.Request] = []
    http = client(replying(httpx.Response(404), seen=seen))
    assert http.get("x", http.url("/x")).status_code == 404
    moved = client(
        replying(httpx.Response(302, headers={"Location": "https://evil.example/"}), seen=seen)
    )
    assert moved.get("x", moved.url("/x")).status_code == 302
    assert [r.url.host for r in seen] == ["acme.zendesk.com", "acme.zendesk.com"]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/api/v2/incremental/tickets/cursor.json?cursor=x",
        "http://acme.zendesk.com/api/v2/x.json",  # scheme
        "https://acme.zendesk.com:8443/api/v2/x.json",  # port
        "https://acme.zendesk.com.evil.example/api/v2/x.json",  # suffix
        "https://evil.example@acme.zendesk.com/api/v2/x.json",  # user info
        "ftp://acme.zendesk.com/x",
        "//evil.example/x",
        "/relative/path",
        "https://acme.zendesk.com:99999/x",
    ],
)
def test_links_off_the_configured_origin_are_refused_before_any_request(url):
    seen: list[httpx.Request] = []
    http = client(replying(httpx.Response(200), seen=seen))
    with pytest.raises(ForeignOriginError) as caught:
        http.get("tickets_export", url)
    assert seen == []
    message = str(caught.value)
    assert message.startswith("desk 'acme': tickets_export: refusing to follow a link")
    assert "https://acme.zendesk.com" in message and "s3cret" not in message
    assert http.stats.requests == {}


def test_same_origin_is_scheme_host_and_port_with_default_ports_explicit():
    seen: list[httpx.Request] = []
    http = client(replying(httpx.Response(200), seen=seen))
    for url in ("https://ACME.zendesk.com:443/api/v2/a.json", "https://acme.zendesk.com/b"):
        assert http.get("x", url).status_code == 200
    assert len(seen) == 2 and all(r.headers["Authorization"] == SECRET for r in seen)


def test_discourse_redirect_to_another_host_is_not_followed():
    with (
        foreign_host() as elsewhere,
        foreign_host(status=302, headers={"Location": "PLACEHOLDER"}) as forum,
    ):
        forum.headers["Location"] = elsewhere.url + "/search.json"
        discourse = DiscourseClient(timeout_seconds=5, max_attempts=2)
        with pytest.raises(DiscourseError, match="HTTP 302"):
            discourse.search(forum.url, "order:latest", 1, api_key="forum-key-1")
    assert len(forum.requests) == 1 and forum.requests[0][1]["Api-Key"] == "forum-key-1"
    assert elsewhere.untouched
    assert discourse.stats.requests == {"search": 1}
