"""Zendesk API objects -> warehouse rows, and the rules of the incremental exports.

Plain functions, no I/O. Rows are tuples in the column order of the staging tables in
`assets/tickets/store.py`; timestamps stay as Zendesk's ISO strings (PostgreSQL parses them
during COPY). Ticket, user and group `raw_data` is the exact JSON Zendesk sent (msgspec reads
only the indexed fields); comments are re-serialised once with orjson.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import orjson

from resources.zendesk import MetricSet, TicketPage

# Runs tagged with the same desk never overlap (the run coordinator's per-value tag limit).
DESK_TAG = "supportflow/desk"
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
    "metric_set",
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


class TicketFields(msgspec.Struct):
    """The ticket fields that become indexed columns; the rest stays in raw_data."""

    id: int
    generated_timestamp: int
    status: str | None = None
    subject: str | None = None
    priority: str | None = None
    type: str | None = None
    requester_id: int | None = None
    assignee_id: int | None = None
    group_id: int | None = None
    organization_id: int | None = None
    created_at: str | None = None
    updated_at: str | None = None


class UserFields(msgspec.Struct):
    id: int
    name: str | None = None
    email: str | None = None
    role: str | None = None
    external_id: str | int | None = None
    updated_at: str | None = None


class GroupFields(msgspec.Struct):
    id: int
    name: str | None = None
    updated_at: str | None = None


_ticket_fields = msgspec.json.Decoder(TicketFields).decode
_metric_fields = msgspec.json.Decoder(MetricSet).decode
_user_fields = msgspec.json.Decoder(UserFields).decode
_group_fields = msgspec.json.Decoder(GroupFields).decode


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {k: _strip_nul(v) for k, v in value.items()}
    return value


def raw_text(raw: msgspec.Raw | bytes) -> str:
    """The object's JSON text as Zendesk sent it, for a jsonb column (which rejects \\u0000)."""
    data = bytes(raw)
    if b"\\u0000" in data:
        return orjson.dumps(_strip_nul(orjson.loads(data))).decode()
    return data.decode()


def _json_text(obj: dict) -> str:
    return raw_text(orjson.dumps(obj))


def latest_tickets(tickets: Iterable[tuple[TicketFields, msgspec.Raw]]) -> list:
    """One (fields, raw) per ticket id: the highest generated_timestamp (ties: the last)."""
    chosen: dict[int, tuple[TicketFields, msgspec.Raw]] = {}
    for fields, raw in tickets:
        current = chosen.get(fields.id)
        if current is None or fields.generated_timestamp >= current[0].generated_timestamp:
            chosen[fields.id] = (fields, raw)
    return list(chosen.values())


def page_users(page: TicketPage) -> dict[int, tuple[UserFields, msgspec.Raw]]:
    users = {}
    for raw in page.users:
        fields = _user_fields(raw)
        users[fields.id] = (fields, raw)
    return users


def ticket_rows(page: TicketPage, users: dict[int, tuple[UserFields, Any]] | None = None) -> list:
    """Rows for the tickets of one export page, with requester, assignee and group names
    taken from the page's sideloads and solved_at from its metric sets."""
    users = page_users(page) if users is None else users
    groups = {g.id: g.name for g in map(_group_fields, page.groups)}
    metrics = {}
    for raw_metrics in page.metric_sets:
        fields = _metric_fields(raw_metrics)
        metrics[fields.ticket_id] = (fields.solved_at, raw_text(raw_metrics))
    tickets = [(_ticket_fields(raw), raw) for raw in page.tickets]
    if len({fields.id for fields, _ in tickets}) != len(tickets):
        tickets = latest_tickets(tickets)
    nobody = (UserFields(id=0), None)
    rows = []
    for t, raw in tickets:
        requester = users.get(t.requester_id, nobody)[0]
        assignee = users.get(t.assignee_id, nobody)[0]
        rows.append(
            (
                t.id,
                t.status,
                t.subject,
                t.priority,
                t.type,
                t.requester_id,
                requester.name,
                requester.email,
                t.assignee_id,
                assignee.name,
                t.group_id,
                groups.get(t.group_id),
                t.organization_id,
                t.created_at,
                t.updated_at,
                t.generated_timestamp,
                metrics.get(t.id, (None, None))[0],
                raw_text(raw),
                metrics.get(t.id, (None, None))[1],
            )
        )
    return rows


def user_rows(users: dict[int, tuple[UserFields, Any]], written: dict[int, str | None]) -> list:
    """Rows for sideloaded users not yet written in this run at the same `updated_at`.

    The same agents come with almost every page; `written` (user id -> updated_at) remembers
    what this run already wrote so each user version is written once.
    """
    rows = []
    for uid, (u, raw) in users.items():
        if uid in written and written[uid] == u.updated_at:
            continue
        written[uid] = u.updated_at
        external = None if u.external_id is None else str(u.external_id)
        rows.append((uid, u.name, u.email, u.role, external, u.updated_at, raw_text(raw)))
    return rows


def group_rows(groups: Iterable[msgspec.Raw], written: dict[int, str | None]) -> list[tuple]:
    rows = []
    for raw in groups:
        g = _group_fields(raw)
        if g.id in written and written[g.id] == g.updated_at:
            continue
        written[g.id] = g.updated_at
        rows.append((g.id, g.name, g.updated_at, raw_text(raw)))
    return rows


def is_comment_event(child: dict) -> bool:
    return (child.get("event_type") or child.get("type")) == "Comment"


def comment_rows(
    events: Iterable[dict], seen: set[int], page_ids: set[int] | None = None
) -> list[tuple]:
    """Comment rows from ticket events (include=comment_events), skipping ids in `seen`
    (pages overlap at their boundary) and adding the new ones to it. `page_ids`, when given,
    collects every comment id of these events, seen before or not."""
    rows = []
    for event in events:
        ticket_id = event["ticket_id"]
        for child in event.get("child_events") or ():
            if not is_comment_event(child):
                continue
            cid = child["id"]
            if page_ids is not None:
                page_ids.add(cid)
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
