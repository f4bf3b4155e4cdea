"""Plain rules: API objects -> rows, the events export's paging rule, the client's backoff,
Retry-After parsing, request budget and auth header."""

from __future__ import annotations

import base64

import orjson
import pytest

from assets.tickets.rules import (
    TICKET_COLUMNS,
    comment_rows,
    next_events_start,
    page_users,
    raw_text,
    ticket_rows,
    user_rows,
)
from resources.zendesk import (
    Credentials,
    TicketPage,
    TokenBucket,
    budget_rate,
    decode_ticket_page,
)


@pytest.mark.parametrize(
    ("start", "end", "count", "expected"),
    [
        (100, 250, 1000, 250),  # pages overlap: the next one starts at end_time
        (100, 100, 1500, 101),  # the whole page shares one second: move past it
        (100, 100, 0, 100),  # nothing new: stay
        (0, 0, 0, 0),
        (100, 90, 3, 101),  # a clock going backwards never loops
    ],
)
def test_next_events_start(start, end, count, expected):
    assert next_events_start(start, end, count) == expected


def ticket(tid, generated, **extra):
    return {
        "id": tid,
        "generated_timestamp": generated,
        "status": "open",
        "requester_id": 1,
        "assignee_id": 2,
        "group_id": 3,
        **extra,
    }


def page_of(**parts) -> TicketPage:
    return decode_ticket_page(orjson.dumps(parts))


def test_latest_tickets_keeps_the_newest_version():
    page = page_of(
        tickets=[
            ticket(1, 10, subject="old"),
            ticket(2, 5),
            ticket(1, 20, subject="new"),
            ticket(1, 15, subject="middle"),
        ]
    )
    rows = ticket_rows(page)
    subjects = {row[0]: row[TICKET_COLUMNS.index("subject")] for row in rows}
    assert subjects == {1: "new", 2: None}


def test_ticket_rows_take_names_from_sideloads_and_keep_the_exact_object():
    raw = ticket(7, 1700000000, subject="Grüße 🎉", custom_fields=[{"id": 5, "value": "x"}])
    page = page_of(
        tickets=[raw],
        users=[{"id": 1, "name": "Ana", "email": "ana@x"}, {"id": 2, "name": "Ben"}],
        groups=[{"id": 3, "name": "Billing"}],
        metric_sets=[{"ticket_id": 7, "solved_at": "2026-01-01T00:00:00Z"}],
    )
    (row,) = ticket_rows(page)
    values = dict(zip(TICKET_COLUMNS, row, strict=True))
    assert values["req_name"] == "Ana" and values["req_email"] == "ana@x"
    assert values["assignee_name"] == "Ben" and values["group_name"] == "Billing"
    assert values["solved_at"] == "2026-01-01T00:00:00Z"
    assert values["generated_ts"] == 1700000000 and values["subject"] == "Grüße 🎉"
    assert values["raw_data"] == orjson.dumps(raw).decode()
    assert orjson.loads(values["metric_set"]) == {
        "ticket_id": 7,
        "solved_at": "2026-01-01T00:00:00Z",
    }


def test_ticket_rows_without_sideloads_leave_names_empty():
    (row,) = ticket_rows(page_of(tickets=[ticket(1, 1)]))
    values = dict(zip(TICKET_COLUMNS, row, strict=True))
    assert values["req_name"] is None and values["group_name"] is None


@pytest.mark.parametrize(
    ("value", "stored"),
    [("plain", "plain"), ("nul\x00inside", "nulinside"), ("back\\\\u0000slash", None)],
)
def test_raw_text_drops_nul_characters_jsonb_rejects(value, stored):
    text = raw_text(orjson.dumps({"body": value}))
    assert orjson.loads(text)["body"] == (value.replace("\x00", "") if stored is None else stored)


def test_user_rows_write_each_version_once():
    written: dict = {}
    first = page_of(
        users=[
            {"id": 1, "name": "A", "updated_at": "t1"},
            {"id": 2, "name": "B", "updated_at": "t1"},
        ]
    )
    assert len(user_rows(page_users(first), written)) == 2
    assert user_rows(page_users(first), written) == []
    changed = page_of(users=[{"id": 1, "name": "A2", "updated_at": "t2", "external_id": 42}])
    (row,) = user_rows(page_users(changed), written)
    assert row[1] == "A2" and row[4] == "42"


def test_comment_rows_skip_other_events_and_overlaps():
    events = [
        {
            "ticket_id": 9,
            "child_events": [{"id": 1, "event_type": "Comment", "body": "hi", "public": True}],
        },
        {
            "ticket_id": 9,
            "child_events": [{"id": 2, "event_type": "Change", "field_name": "status"}],
        },
        {
            "ticket_id": 8,
            "child_events": [{"id": 3, "type": "Comment", "body": "b", "public": False}],
        },
    ]
    seen: set[int] = set()
    rows = comment_rows(events, seen)
    assert [(r[0], r[1]) for r in rows] == [(1, 9), (3, 8)]
    assert comment_rows(events, seen) == []  # the overlapping page adds nothing
    assert orjson.loads(rows[0][-1])["ticket_id"] == 9


def test_token_bucket_paces_requests_to_the_rate():
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        clock[0] += seconds

    bucket = TokenBucket(60, capacity=1, clock=lambda: clock[0], sleep=sleep)  # 1 per second
    for _ in range(5):
        bucket.acquire()
    assert clock[0] == pytest.approx(4.0)  # first immediate, then one a second


@pytest.mark.parametrize(("plan", "allowed"), [(10, 9.0), (30, 27.0), (700, 630.0), (1, 1.0)])
def test_budget_stays_below_the_plan(plan, allowed):
    assert budget_rate(plan) == pytest.approx(allowed)


def test_credentials_headers_and_repr_hide_the_secret():
    basic = Credentials(kind="token", secret="s3cret", email="a@b.c")
    assert basic.header() == "Basic " + base64.b64encode(b"a@b.c/token:s3cret").decode()
    assert Credentials(kind="oauth", secret="tok").header() == "Bearer tok"
    assert "s3cret" not in repr(basic)
    with pytest.raises(ValueError):
        Credentials(kind="token", secret="x").header()
