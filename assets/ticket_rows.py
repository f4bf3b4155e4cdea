"""Zendesk API objects -> warehouse rows, and the rules of the incremental exports.

Plain functions, no I/O. Rows are tuples in the column order of the staging tables in
`assets/ticket_load.py`; timestamps stay as Zendesk's ISO strings (PostgreSQL parses them
during COPY) and `raw_data` is the whole API object serialised once with orjson.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

TICKET_COLUMNS = (
    "ticket_id",
    "status",
    "subject",
    "priority",
    "ticket_type",
    "requester_id",
    "req_name",
    "req_email",
    "assignee_id",
    "assignee_name",
    "group_id",
    "group_name",
    "organization_id",
    "created_at",
    "updated_at",
    "generated_ts",
    "solved_at",
    "raw_data",
)
USER_COLUMNS = ("user_id", "name", "email", "role", "external_id", "updated_at", "raw_data")
GROUP_COLUMNS = ("group_id", "name", "updated_at", "raw_data")
COMMENT_COLUMNS = (
    "comment_id",
    "ticket_id",
    "author_id",
    "public",
    "body",
    "created_at",
    "raw_data",
)

_dumps = orjson.dumps


def _json_text(obj: dict) -> str:
    # PostgreSQL's jsonb rejects \u0000; Zendesk bodies occasionally carry it
    text = _dumps(obj).decode()
    return text.replace("\\u0000", "") if "\\u0000" in text else text


def latest_tickets(tickets: Iterable[dict]) -> list[dict]:
    """One object per ticket id, the one with the highest generated_timestamp (ties: last)."""
    chosen: dict[int, dict] = {}
    for ticket in tickets:
        current = chosen.get(ticket["id"])
        if current is None or ticket["generated_timestamp"] >= current["generated_timestamp"]:
            chosen[ticket["id"]] = ticket
    return list(chosen.values())


def ticket_rows(page: dict) -> list[tuple]:
    """Rows for the tickets of one export page, with requester, assignee and group names
    taken from the page's sideloads and solved_at from its metric sets."""
    users = {u["id"]: u for u in page.get("users") or ()}
    groups = {g["id"]: g for g in page.get("groups") or ()}
    solved = {m["ticket_id"]: m.get("solved_at") for m in page.get("metric_sets") or ()}
    tickets = page.get("tickets") or ()
    if len({t["id"] for t in tickets}) != len(tickets):
        tickets = latest_tickets(tickets)
    empty: dict = {}
    rows = []
    for t in tickets:
        requester = users.get(t.get("requester_id"), empty)
        assignee = users.get(t.get("assignee_id"), empty)
        group = groups.get(t.get("group_id"), empty)
        rows.append(
            (
                t["id"],
                t.get("status"),
                t.get("subject"),
                t.get("priority"),
                t.get("type"),
                t.get("requester_id"),
                requester.get("name"),
                requester.get("email"),
                t.get("assignee_id"),
                assignee.get("name"),
                t.get("group_id"),
                group.get("name"),
                t.get("organization_id"),
                t.get("created_at"),
                t.get("updated_at"),
                t["generated_timestamp"],
                solved.get(t["id"]),
                _json_text(t),
            )
        )
    return rows


def user_rows(users: Iterable[dict], written: dict[int, str | None]) -> list[tuple]:
    """Rows for sideloaded users not yet written in this run at the same `updated_at`.

    The same agents come with almost every page; `written` (user id -> updated_at) remembers
    what this run already wrote so each user version is written once.
    """
    rows = []
    for u in users:
        uid = u["id"]
        updated = u.get("updated_at")
        if uid in written and written[uid] == updated:
            continue
        written[uid] = updated
        rows.append(
            (
                uid,
                u.get("name"),
                u.get("email"),
                u.get("role"),
                u.get("external_id"),
                updated,
                _json_text(u),
            )
        )
    return rows


def group_rows(groups: Iterable[dict], written: dict[int, str | None]) -> list[tuple]:
    rows = []
    for g in groups:
        gid = g["id"]
        updated = g.get("updated_at")
        if gid in written and written[gid] == updated:
            continue
        written[gid] = updated
        rows.append((gid, g.get("name"), updated, _json_text(g)))
    return rows


def is_comment_event(child: dict) -> bool:
    return (child.get("event_type") or child.get("type")) == "Comment"


def comment_rows(events: Iterable[dict], seen: set[int]) -> list[tuple]:
    """Comment rows from ticket events (include=comment_events), skipping ids in `seen`
    (pages overlap at their boundary) and adding the new ones to it."""
    rows = []
    for event in events:
        ticket_id = event["ticket_id"]
        for child in event.get("child_events") or ():
            if not is_comment_event(child):
                continue
            cid = child["id"]
            if cid in seen:
                continue
            seen.add(cid)
            raw = {**child, "ticket_id": ticket_id}
            rows.append(
                (
                    cid,
                    ticket_id,
                    child.get("author_id"),
                    child.get("public"),
                    child.get("body"),
                    child.get("created_at") or event.get("created_at"),
                    _json_text(raw),
                )
            )
    return rows


def next_events_start(start_time: int, end_time: int, count: int) -> int:
    """Where the next ticket events page starts.

    Pages overlap: the next one starts at `end_time` (inclusive), and duplicates are dropped.
    When a whole page lies within one second (`end_time == start_time`), Zendesk has returned
    every event of that second, so the next page starts one second later; otherwise the same
    page would come back forever.
    """
    if count and end_time <= start_time:
        return start_time + 1
    return max(end_time, start_time)
