"""The Zendesk client and the ticket rules against the example responses Zendesk documents
(tests/fixtures/README.md), not the sandbox's: the cursor-based ticket export, the ticket event
export and a comment in `child_events`. Expected values are read off the documents."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from assets.tickets.rules import comment_rows, next_events_start, ticket_rows
from resources.zendesk import Credentials, ZendeskApi, decode_ticket_page

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zendesk"
TICKETS = (FIXTURES / "incremental_tickets_cursor.json").read_bytes()
EVENTS = (FIXTURES / "incremental_ticket_events.json").read_bytes()
COMMENT_CHILD_EVENTS = json.loads((FIXTURES / "comment_events_child_events.json").read_text())


def documented_api(responses: dict[str, bytes], seen: list[httpx.Request]) -> ZendeskApi:
    """A client whose HTTP answers are Zendesk's documented example responses, by path."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=responses[request.url.path])

    return ZendeskApi(
        desk="docs",
        base_url="https://example.zendesk.com",
        credentials=Credentials("oauth", "token"),
        transport=httpx.MockTransport(answer),
        sleep=lambda _: None,
    )


def test_documented_cursor_export_page():
    page = decode_ticket_page(TICKETS)
    assert page.after_cursor == "MTU3NjYxMzUzOS4wfHw0Njd8"
    assert page.after_url.endswith(
        "/api/v2/incremental/tickets/cursor?cursor=MTU3NjYxMzUzOS4wfHw0Njd8"
    )
    assert page.end_of_stream is True
    assert len(page.tickets) == 1 and page.users == [] and page.metric_sets == []


def test_documented_ticket_becomes_one_row_with_its_exact_json():
    documented = json.loads(TICKETS)["tickets"][0]
    [row] = ticket_rows(decode_ticket_page(TICKETS))
    (ticket_id, status, subject, priority, ticket_type, requester_id, req_name, req_email,
     assignee_id, assignee_name, group_id, group_name, organization_id, created_at, updated_at,
     generated, solved_at, raw_data, metric_set) = row  # fmt: skip
    assert (ticket_id, status, subject) == (35436, "open", "Help, my printer is on fire!")
    assert (priority, ticket_type) == ("high", "incident")
    assert (requester_id, assignee_id, group_id, organization_id) == (
        20978392,
        235323,
        98738,
        509974,
    )
    # no users or groups were sideloaded in the documented response: no names to join
    assert (req_name, req_email, assignee_name, group_name) == (None, None, None, None)
    assert (created_at, updated_at) == ("2009-07-20T22:55:29Z", "2011-05-05T10:38:52Z")
    assert generated == 1304553600  # 2011-05-05T00:00:00Z: later than the last event update
    assert solved_at is None and metric_set is None
    assert json.loads(raw_data) == documented  # every field kept, custom fields included


def test_client_reads_the_documented_export_and_stops_at_the_end_of_the_stream():
    seen: list[httpx.Request] = []
    api = documented_api({"/api/v2/incremental/tickets/cursor.json": TICKETS}, seen)
    pages = list(api.export_tickets(start_time=1332034771, per_page=100))
    assert [len(p.tickets) for p in pages] == [1]
    [request] = seen  # end_of_stream: the after_url is not followed
    assert request.url.params["start_time"] == "1332034771"
    assert request.url.params["per_page"] == "100"
    assert api.stats.requests == {"tickets_export": 1}


def test_documented_ticket_event_export_has_no_comments_and_moves_on_to_its_end_time():
    seen: list[httpx.Request] = []
    api = documented_api({"/api/v2/incremental/ticket_events.json": EVENTS}, seen)
    page = api.ticket_events(1601357000, per_page=1000)
    assert seen[0].url.params["include"] == "comment_events"
    assert page["count"] == 1 and page["end_of_stream"] is True
    # the documented event is a metric event: no child_events, so no comment rows
    assert comment_rows(page["ticket_events"], set()) == []
    # the next page starts at end_time (inclusive): 2020-09-29T05:31:43Z
    assert next_events_start(1601357000, page["end_time"], page["count"]) == 1601357503


def test_documented_comment_child_event_becomes_a_comment_row():
    # the documented `child_events` inside an event of ours (the page documents only the array)
    event = {"id": 91048994468, "ticket_id": 35436, "child_events": COMMENT_CHILD_EVENTS}
    seen: set[int] = set()
    [row] = comment_rows([event], seen)
    comment_id, ticket_id, author_id, public, body, created_at, raw = row
    assert (comment_id, ticket_id, author_id) == (91048994488, 35436, 5031726587)
    assert (public, body, created_at) == (True, "This is a comment", "2009-06-25T10:15:18Z")
    assert json.loads(raw) == {**COMMENT_CHILD_EVENTS[0], "ticket_id": 35436}
    assert seen == {91048994488}
    assert comment_rows([event], seen) == []  # the overlapping next page repeats it: skipped
