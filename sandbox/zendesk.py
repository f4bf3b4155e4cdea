"""A local stand-in for the Zendesk Support API: deterministic data, real HTTP behaviour.

`ZendeskSandbox` holds one Zendesk account generated from a seed (tickets with custom fields,
tags, via, satisfaction ratings and unicode text; users, groups, organizations; comments) and
answers the endpoints supportflow uses the way Zendesk does:

- `GET /api/v2/incremental/tickets/cursor.json`: `start_time` then an opaque `cursor`,
  `per_page` <= 1000, `include=users,groups,organizations,metric_sets` sideloads; ordered by
  `generated_timestamp` so a ticket changed during an export comes again later; deleted tickets
  come with `status: "deleted"`; `start_time` within the last minute or in the future is a 400.
- `GET /api/v2/incremental/ticket_events.json?include=comment_events`: time-based pages that
  overlap at their boundary (the next page starts at `end_time`, inclusive). When a whole page
  shares one timestamp it is extended to every event of that second, as Zendesk does, so a
  client that then moves to `end_time + 1` loses nothing.
- `GET /api/v2/tickets/{id}/comments.json`: cursor pagination (`page[size]`, `page[after]`,
  `links.next`, `meta.has_more`), 404 for deleted tickets.

Rate limits per account (exports 10/min, the rest 200/min by default) run on a clock scaled by
`clock_scale` (`clock`: a test may pass a controlled one); 429 carries `Retry-After`. Faults are
injected with `inject_faults` (429 with and without `Retry-After`, 500/503, timeouts);
`upcoming_fault` tells which one the next request gets. `holding(predicate)` stops the requests
the predicate picks until released, so a test can stop a client at a known point.
`link_base` (an origin and path, e.g. another local port) makes every next-page link a response
carries (`after_url`, `next_page`, `links.next`) point there instead of at the account, as a
hostile or misconfigured upstream would: a client must not follow it.
`apply_changes` adds, updates and deletes tickets and adds comments between syncs
(`delete_tickets` deletes chosen ones); `truth_*` give the expected end state for exact
comparisons, and `/_sandbox/zendesk/{account}/truth/ids` every ticket id (deleted or not), every
comment id with its ticket, and the wall-clock time and endpoint of every API request.

Accounts are served at `/api/v2/...` (account "default") and `/accounts/{account}/api/v2/...`;
control endpoints live under `/_sandbox/zendesk/{account}/...` (changes, faults, truth).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

DEFAULT_ACCOUNT = "default"
SANDBOX_EMAIL = "admin@sandbox.example"
SANDBOX_TOKEN = "sandbox-api-token"
SANDBOX_OAUTH_TOKEN = "sandbox-oauth-token"

EXPORT_ENDPOINTS = ("tickets_export", "ticket_events_export")
# path suffix -> endpoint name, for clients that want to know what the sandbox will do next
ENDPOINT_PATHS = (
    ("/api/v2/incremental/tickets/cursor.json", "tickets_export"),
    ("/api/v2/incremental/ticket_events.json", "ticket_events_export"),
    ("/comments.json", "ticket_comments"),
)
FAULT_KINDS = ("429", "429_no_retry_after", "500", "503", "timeout")

_WORDS = (
    "login password reset invoice refund shipping delay broken screen app crash sync export "
    "billing upgrade plan cancel order missing package tracking account locked two-factor "
    "integration webhook api error timeout slow dashboard report permission admin email "
    "notification mobile android ios printer label customs address warranty return"
).split()
_UNICODE = (
    "Café",
    "naïve façade",
    "Grüße aus München",
    "日本語のサポート",
    "Ошибка оплаты",
    "¿Dónde está mi pedido?",
    "emoji 🎉🚚",
    "señal débil",
    "Zürich ⇄ Köln",
    "حساب مغلق",
)
_FIRST = "Ana Ben Chloé Dmitri Eva Farid Greta Hiro Inès João Kai Lena Mateo Nora Olu Priya".split()
_LAST = "Smith Müller García Novak Sato Okafor Rossi Dubois Kowalski Ødegaard Nguyen Silva".split()
_CHANNELS = ("email", "web", "api", "chat", "mobile_sdk")
_STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
_PRIORITIES = ("low", "normal", "high", "urgent", None)
_TYPES = ("question", "incident", "problem", "task", None)
_CUSTOM_FIELDS = (360_000_001, 360_000_002, 360_000_003, 360_000_004, 360_000_005)


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def encode_cursor(generated: int, ticket_id: int) -> str:
    raw = orjson.dumps({"g": generated, "i": ticket_id, "v": 1})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        return int(data["g"]), int(data["i"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc


class SandboxHTTPError(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass
class RateLimits:
    """Requests per sandbox minute; None: unlimited."""

    export_per_minute: int | None = 10
    api_per_minute: int | None = 200


@dataclass
class FaultPlan:
    """Every `every`-th request (of the matching endpoints) gets the next fault of `kinds`."""

    kinds: list[str]
    every: int = 3
    endpoints: tuple[str, ...] | None = None
    remaining: int | None = None  # stop after this many faults
    seen: int = 0
    served: int = 0


class RequestHold:
    """Requests picked by `predicate(endpoint)` wait until `release()` (at most `max_seconds`).
    `held` is set once a request waits."""

    def __init__(self, predicate: Callable[[str], bool], max_seconds: float = 120.0):
        self.predicate = predicate
        self.max_seconds = max_seconds
        self.held = threading.Event()
        self.released = threading.Event()

    def wait(self) -> None:
        self.released.wait(self.max_seconds)

    def release(self) -> None:
        self.released.set()


def endpoint_for_path(path: str) -> str | None:
    """The sandbox's endpoint name for a request path (None: not an API endpoint)."""
    return next((name for suffix, name in ENDPOINT_PATHS if path.endswith(suffix)), None)


@dataclass
class ChangeSummary:
    new_ticket_ids: list[int] = field(default_factory=list)
    updated_ticket_ids: list[int] = field(default_factory=list)
    deleted_ticket_ids: list[int] = field(default_factory=list)
    new_comment_ids: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "new": len(self.new_ticket_ids),
            "updated": len(self.updated_ticket_ids),
            "deleted": len(self.deleted_ticket_ids),
            "comments": len(self.new_comment_ids),
        }


class ZendeskSandbox:
    """One Zendesk account, generated deterministically from `seed`."""

    def __init__(
        self,
        *,
        seed: int = 1,
        tickets: int = 1000,
        comments_per_ticket: float = 4.0,
        rate_limits: RateLimits | None = None,
        clock_scale: float = 1.0,
        email: str = SANDBOX_EMAIL,
        api_token: str = SANDBOX_TOKEN,
        oauth_token: str = SANDBOX_OAUTH_TOKEN,
        timeout_delay: float = 3.0,
        now: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        json_cache: bool = True,
    ):
        self.seed = seed
        self.rng = random.Random(seed)
        self.rate_limits = rate_limits if rate_limits is not None else RateLimits()
        self.clock_scale = clock_scale
        self.clock = clock  # seconds, for the rate-limit windows
        self.email, self.api_token, self.oauth_token = email, api_token, oauth_token
        self.timeout_delay = timeout_delay
        self.lock = threading.RLock()
        self._offset = 0.0
        self._last_now = 0
        self.tickets: dict[int, dict] = {}
        self.users: dict[int, dict] = {}
        self.groups: dict[int, dict] = {}
        self.organizations: dict[int, dict] = {}
        self.comments: dict[int, list[dict]] = {}  # ticket_id -> comments in order
        self.metric_sets: dict[int, dict] = {}
        self._order: list[tuple[int, int]] = []  # (generated_timestamp, ticket_id), sorted
        self._event_keys: list[tuple[int, int]] = []  # (timestamp, audit id), sorted
        self._events: list[dict] = []
        self._next_ticket = 1
        self._next_comment = 10_000_001
        self._next_audit = 50_000_001
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        # wall-clock time (unix s) of the first and last API request, to time a whole sync
        self.first_request_at: float | None = None
        self.last_request_at: float | None = None
        self.request_log: list[tuple[float, str]] = []  # (wall-clock time, endpoint)
        self._windows: dict[str, deque[float]] = {"export": deque(), "api": deque()}
        self.fault_plan: FaultPlan | None = None
        self._hold: RequestHold | None = None
        self.link_base: str | None = None  # next-page links point here when set
        self._text_pools: dict[tuple[int, int], list[str]] = {}
        # ticket id -> serialised public ticket; without `json_cache` every page serialises its
        # tickets again, as a server without such a cache does (a benchmark's like-for-like runs)
        self._json_cache: dict[int, bytes] = {}
        self.json_cache = json_cache
        if now is not None:
            self._offset = now - time.time()
        self._generate(tickets, comments_per_ticket)

    # --- clock ----------------------------------------------------------------------------

    def now(self) -> int:
        """Sandbox time in unix seconds: real time plus whatever `advance` added; monotonic."""
        current = int(time.time() + self._offset)
        self._last_now = max(self._last_now, current)
        return self._last_now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self._offset += seconds

    # --- generation -----------------------------------------------------------------------

    def _make_user(self, role: str) -> dict:
        uid = 900_000 + len(self.users) + 1
        rng = self.rng
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        user = {
            "id": uid,
            "url": f"https://sandbox.zendesk.com/api/v2/users/{uid}.json",
            "name": name,
            "email": f"user{uid}@{'agents' if role != 'end-user' else 'customers'}.example",
            "role": role,
            "external_id": f"ext-{uid}" if rng.random() < 0.5 else None,
            "created_at": iso(1_600_000_000 + uid),
            "updated_at": iso(1_600_000_000 + uid),
            "time_zone": rng.choice(("Europe/Berlin", "America/New_York", "Asia/Tokyo")),
            "locale": rng.choice(("en-US", "de", "ja", "fr", "es")),
            "organization_id": None,
            "tags": [],
            "user_fields": {"tier": rng.choice(("free", "pro", "enterprise"))},
            "active": True,
            "verified": True,
        }
        self.users[uid] = user
        return user

    def _text(self, low: int, high: int) -> str:
        """Seeded text with some unicode; drawn from a pool so large sandboxes build fast."""
        rng = self.rng
        pool = self._text_pools.get((low, high))
        if pool is None:
            pool = []
            for _ in range(256):
                words = rng.choices(_WORDS, k=rng.randint(low, high))
                words.insert(rng.randrange(len(words) + 1), rng.choice(_UNICODE))
                pool.append(" ".join(words).capitalize())
            self._text_pools[(low, high)] = pool
        return f"{pool[int(rng.random() * 256)]} #{rng.randint(1, 99999)}."

    def _generate(self, tickets: int, comments_per_ticket: float) -> None:
        rng = self.rng
        for gid, name in enumerate(("Support", "Billing", "Shipping", "Tier 2", "Ops"), 1):
            self.groups[gid * 1000] = {
                "id": gid * 1000,
                "name": name,
                "description": f"{name} team",
                "default": gid == 1,
                "deleted": False,
                "created_at": iso(1_500_000_000),
                "updated_at": iso(1_500_000_000),
            }
        for oid in range(1, 21):
            self.organizations[7000 + oid] = {
                "id": 7000 + oid,
                "name": f"Customer {oid} GmbH" if oid % 3 else f"Client {oid} S.à r.l.",
                "domain_names": [f"customer{oid}.example"],
                "created_at": iso(1_500_000_000),
                "updated_at": iso(1_500_000_000),
            }
        self._agents = [self._make_user("agent") for _ in range(12)]
        self._customers = [self._make_user("end-user") for _ in range(max(10, tickets // 4))]
        now = self.now()
        span_end = now - 3600
        span_start = span_end - 90 * 86400
        step = (span_end - span_start) / max(tickets, 1)
        total_comments = int(tickets * comments_per_ticket)
        created_times = [int(span_start + i * step) for i in range(tickets)]
        ticket_ids = [self._new_ticket_shell(ts) for ts in created_times]
        # comments: each ticket gets its first comment (the description); the rest spread
        # randomly after the ticket's creation. A bulk import stamps ~5% at one second, so
        # more than one page of events can share a timestamp.
        extra = max(0, total_comments - tickets)
        burst_ts = span_start + int((span_end - span_start) * 0.6)
        pending: list[tuple[int, int, int]] = []  # (ts, ticket_id, order)
        for tid, created in zip(ticket_ids, created_times, strict=True):
            pending.append((created, tid, 0))
        for n in range(extra):
            tid = ticket_ids[rng.randrange(tickets)] if tickets else None
            if tid is None:
                break
            created = self.tickets[tid]["_created"]
            if n % 20 == 0 and created < burst_ts:
                ts = burst_ts
            else:
                ts = created + rng.randint(60, 86400 * 5)
                ts = min(ts, span_end)
            pending.append((ts, tid, n + 1))
        pending.sort()
        for ts, tid, _ in pending:
            self._add_comment(tid, ts)
        for tid in ticket_ids:
            ticket = self.tickets[tid]
            last = ticket["_updated"]
            # some tickets were touched by the system later (only generated_timestamp moves)
            generated = last + (rng.randint(1, 3600) if rng.random() < 0.1 else 0)
            self._stamp(ticket, updated=last, generated=min(generated, span_end))
            self._maybe_solve(ticket)
            self._order.append((ticket["generated_timestamp"], tid))
        self._order.sort()

    def _new_ticket_shell(self, created: int) -> int:
        rng = self.rng
        tid = self._next_ticket
        self._next_ticket += 1
        requester = rng.choice(self._customers)
        assignee = rng.choice(self._agents) if rng.random() < 0.85 else None
        group_id = rng.choice(list(self.groups)) if assignee or rng.random() < 0.5 else None
        channel = rng.choice(_CHANNELS)
        subject = self._text(3, 8)
        ticket = {
            "id": tid,
            "url": f"https://sandbox.zendesk.com/api/v2/tickets/{tid}.json",
            "external_id": f"ORD-{rng.randint(100000, 999999)}" if rng.random() < 0.3 else None,
            "via": {
                "channel": channel,
                "source": {
                    "from": {"address": requester["email"], "name": requester["name"]},
                    "to": {"address": "support@sandbox.example", "name": "Support"},
                    "rel": None,
                },
            },
            "created_at": iso(created),
            "updated_at": iso(created),
            "generated_timestamp": created,
            "type": rng.choice(_TYPES),
            "subject": subject,
            "raw_subject": subject,
            "description": self._text(25, 90),
            "priority": rng.choice(_PRIORITIES),
            "status": rng.choice(_STATUSES[:4]),
            "recipient": "support@sandbox.example",
            "requester_id": requester["id"],
            "submitter_id": requester["id"],
            "assignee_id": assignee["id"] if assignee else None,
            "organization_id": rng.choice(list(self.organizations)) if rng.random() < 0.6 else None,
            "group_id": group_id,
            "collaborator_ids": [],
            "follower_ids": [assignee["id"]] if assignee and rng.random() < 0.3 else [],
            "email_cc_ids": [],
            "forum_topic_id": None,
            "problem_id": None,
            "has_incidents": False,
            "is_public": True,
            "due_at": None,
            "tags": sorted(set(rng.choices(_WORDS, k=rng.randint(0, 5)))),
            "custom_fields": [
                {"id": _CUSTOM_FIELDS[0], "value": rng.choice(("eu", "us", "apac"))},
                {"id": _CUSTOM_FIELDS[1], "value": rng.randint(1, 500)},
                {"id": _CUSTOM_FIELDS[2], "value": rng.random() < 0.5},
                {"id": _CUSTOM_FIELDS[3], "value": rng.choice(_UNICODE)},
                {"id": _CUSTOM_FIELDS[4], "value": None},
            ],
            "satisfaction_rating": {"score": "unoffered"},
            "sharing_agreement_ids": [],
            "custom_status_id": 1,
            "fields": [],
            "followup_ids": [],
            "brand_id": 360_000_100,
            "allow_channelback": False,
            "allow_attachments": True,
            "from_messaging_channel": False,
            "_created": created,
            "_updated": created,
        }
        ticket["fields"] = ticket["custom_fields"]
        self.tickets[tid] = ticket
        self.comments[tid] = []
        self.metric_sets[tid] = {
            "id": 80_000_000 + tid,
            "ticket_id": tid,
            "created_at": iso(created),
            "updated_at": iso(created),
            "solved_at": None,
            "reopens": 0,
            "replies": 0,
            "reply_time_in_minutes": {"calendar": None, "business": None},
        }
        return tid

    def _stamp(self, ticket: dict, *, updated: int, generated: int) -> None:
        self._json_cache.pop(ticket["id"], None)
        ticket["_updated"] = updated
        ticket["updated_at"] = iso(updated)
        ticket["generated_timestamp"] = generated

    def _maybe_solve(self, ticket: dict) -> None:
        rng = self.rng
        if ticket["status"] in ("solved", "closed") or rng.random() < 0.45:
            ticket["status"] = rng.choice(("solved", "closed"))
            solved = ticket["_updated"]
            self.metric_sets[ticket["id"]]["solved_at"] = iso(solved)
            self.metric_sets[ticket["id"]]["updated_at"] = iso(solved)
            if rng.random() < 0.6:
                score = rng.choice(("good", "good", "bad", "offered"))
                ticket["satisfaction_rating"] = {
                    "id": 60_000_000 + ticket["id"],
                    "score": score,
                    "comment": rng.choice(("Merci beaucoup!", "Too slow 😞", "Great help", ""))
                    if score != "offered"
                    else None,
                    "reason": "No reason provided" if score == "bad" else None,
                }

    def _add_comment(self, ticket_id: int, ts: int) -> dict:
        rng = self.rng
        ticket = self.tickets[ticket_id]
        first = not self.comments[ticket_id]
        if first:
            author = ticket["requester_id"]
            body = ticket["description"]
        else:
            author = (
                ticket["assignee_id"] or self._agents[0]["id"]
                if rng.random() < 0.5
                else ticket["requester_id"]
            )
            body = self._text(8, 60)
        cid = self._next_comment
        self._next_comment += 1
        public = first or rng.random() < 0.8
        comment = {
            "id": cid,
            "type": "Comment",
            "event_type": "Comment",
            "author_id": author,
            "body": body,
            "html_body": f'<div class="zd-comment"><p>{body}</p></div>',
            "plain_body": body,
            "public": public,
            "attachments": [],
            "audit_id": self._next_audit,
            "via": {"channel": ticket["via"]["channel"], "source": {"rel": None}},
            "created_at": iso(ts),
        }
        if rng.random() < 0.05:
            comment["attachments"] = [
                {
                    "id": 70_000_000 + cid,
                    "file_name": "screenshot.png",
                    "content_type": "image/png",
                    "size": rng.randint(1000, 900_000),
                }
            ]
        self.comments[ticket_id].append(comment)
        self._add_event(ticket_id, ts, author, comment)
        ticket["_updated"] = max(ticket["_updated"], ts)
        return comment

    def _add_event(self, ticket_id: int, ts: int, updater: int, child: dict) -> None:
        audit_id = self._next_audit
        self._next_audit += 1
        event = {
            "id": audit_id,
            "ticket_id": ticket_id,
            "timestamp": ts,
            "created_at": iso(ts),
            "updater_id": updater,
            "via": child.get("via", {"channel": "web"}),
            "event_type": "Audit",
            "child_events": [child],
        }
        key = (ts, audit_id)
        if self._event_keys and key < self._event_keys[-1]:
            index = bisect.bisect_left(self._event_keys, key)
            self._event_keys.insert(index, key)
            self._events.insert(index, event)
        else:
            self._event_keys.append(key)
            self._events.append(event)

    def _reorder(self, ticket: dict, old_generated: int | None) -> None:
        self._json_cache.pop(ticket["id"], None)
        if old_generated is not None:
            index = bisect.bisect_left(self._order, (old_generated, ticket["id"]))
            del self._order[index]
        self._order.append((ticket["generated_timestamp"], ticket["id"]))
        if len(self._order) > 1 and self._order[-2] > self._order[-1]:
            self._order.sort()

    # --- changes between syncs ------------------------------------------------------------

    def apply_changes(
        self,
        *,
        new: int = 0,
        updated: int = 0,
        deleted: int = 0,
        comments: int = 0,
        advance_seconds: int = 61,
    ) -> ChangeSummary:
        """New, updated and deleted tickets and new comments, all stamped "now"; then the
        clock moves on by `advance_seconds` so the changes are past Zendesk's one-minute rule."""
        with self.lock:
            rng = self.rng
            ts = self.now()
            summary = ChangeSummary()
            live = [tid for tid, t in self.tickets.items() if t["status"] != "deleted"]
            for _ in range(new):
                tid = self._new_ticket_shell(ts)
                self._add_comment(tid, ts)
                self._stamp(self.tickets[tid], updated=ts, generated=ts)
                self._reorder(self.tickets[tid], None)
                summary.new_ticket_ids.append(tid)
            for tid in rng.sample(live, min(updated, len(live))):
                ticket = self.tickets[tid]
                old = ticket["generated_timestamp"]
                ticket["status"] = rng.choice(("open", "pending", "solved"))
                ticket["priority"] = rng.choice(_PRIORITIES)
                ticket["tags"] = sorted(set(ticket["tags"]) | {"updated"})
                ticket["custom_fields"][1]["value"] = rng.randint(1, 500)
                self._add_event(
                    tid,
                    ts,
                    self._agents[0]["id"],
                    {
                        "id": self._next_audit + 5_000_000,
                        "event_type": "Change",
                        "field_name": "status",
                        "value": ticket["status"],
                    },
                )
                self._stamp(ticket, updated=ts, generated=ts)
                self._maybe_solve(ticket)
                self._reorder(ticket, old)
                summary.updated_ticket_ids.append(tid)
            touched = set(summary.updated_ticket_ids)
            candidates = [tid for tid in live if tid not in touched]
            for tid in rng.sample(candidates, min(deleted, len(candidates))):
                ticket = self.tickets[tid]
                old = ticket["generated_timestamp"]
                ticket["status"] = "deleted"
                self._stamp(ticket, updated=ts, generated=ts)
                self._reorder(ticket, old)
                summary.deleted_ticket_ids.append(tid)
            live = [tid for tid, t in self.tickets.items() if t["status"] != "deleted"]
            for _ in range(comments):
                tid = rng.choice(live)
                comment = self._add_comment(tid, ts)
                ticket = self.tickets[tid]
                old = ticket["generated_timestamp"]
                self._stamp(ticket, updated=ts, generated=ts)
                self._reorder(ticket, old)
                summary.new_comment_ids.append(comment["id"])
            self._offset += advance_seconds
            return summary

    def delete_tickets(self, ticket_ids: list[int], advance_seconds: int = 61) -> None:
        """Delete the given tickets now (they come again from the export, `status: deleted`;
        their comments stay in the events export and are gone from the per-ticket endpoint)."""
        with self.lock:
            ts = self.now()
            for tid in ticket_ids:
                ticket = self.tickets[tid]
                old = ticket["generated_timestamp"]
                ticket["status"] = "deleted"
                self._stamp(ticket, updated=ts, generated=ts)
                self._reorder(ticket, old)
            self._offset += advance_seconds

    # --- ground truth ---------------------------------------------------------------------

    def public_ticket(self, ticket: dict) -> dict:
        return {k: v for k, v in ticket.items() if not k.startswith("_")}

    def _ticket_fragment(self, ticket_id: int) -> orjson.Fragment:
        """The ticket's JSON, serialised once per version (keeps a 100k sandbox fast)."""
        data = self._json_cache.get(ticket_id)
        if data is None:
            data = orjson.dumps(self.public_ticket(self.tickets[ticket_id]))
            if self.json_cache:
                self._json_cache[ticket_id] = data
        return orjson.Fragment(data)

    def truth_tickets(self) -> dict[int, dict]:
        """Every ticket in its latest state (deleted ones with status "deleted")."""
        with self.lock:
            return {tid: self.public_ticket(t) for tid, t in self.tickets.items()}

    def truth_comments(self) -> dict[int, dict]:
        """Every comment by id, with its ticket_id."""
        with self.lock:
            return {
                c["id"]: {**c, "ticket_id": tid}
                for tid, comments in self.comments.items()
                for c in comments
            }

    def truth_users(self) -> dict[int, dict]:
        """Users referenced by a ticket as requester, submitter or assignee."""
        with self.lock:
            ids = set()
            for t in self.tickets.values():
                ids.update((t["requester_id"], t["submitter_id"], t["assignee_id"]))
            ids.discard(None)
            return {uid: self.users[uid] for uid in ids}

    # --- faults and rate limits -----------------------------------------------------------

    def inject_faults(
        self,
        kinds: list[str],
        *,
        every: int = 3,
        endpoints: tuple[str, ...] | None = None,
        limit: int | None = None,
    ) -> None:
        """From now on every `every`-th request gets the next fault of `kinds` (cycling)."""
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds or every < 1:
            raise ValueError(f"faults must be a non-empty list of {FAULT_KINDS}, every >= 1")
        with self.lock:
            self.fault_plan = FaultPlan(list(kinds), every, endpoints, limit)

    def clear_faults(self) -> None:
        with self.lock:
            self.fault_plan = None

    def upcoming_fault(self, endpoint: str) -> str | None:
        """The fault the next request of `endpoint` will get (None: it is served normally)."""
        with self.lock:
            return self._fault_of_next(endpoint)

    def _active_plan(self, endpoint: str) -> FaultPlan | None:
        plan = self.fault_plan
        if plan is None or (plan.endpoints and endpoint not in plan.endpoints):
            return None
        if plan.remaining is not None and plan.served >= plan.remaining:
            return None
        return plan

    def _fault_of_next(self, endpoint: str) -> str | None:
        plan = self._active_plan(endpoint)
        if plan is None or (plan.seen + 1) % plan.every:
            return None
        return plan.kinds[plan.served % len(plan.kinds)]

    def _next_fault(self, endpoint: str) -> str | None:
        kind = self._fault_of_next(endpoint)
        plan = self._active_plan(endpoint)
        if plan is not None:
            plan.seen += 1
            plan.served += kind is not None
        return kind

    @contextmanager
    def holding(
        self, predicate: Callable[[str], bool], max_seconds: float = 120.0
    ) -> Iterator[RequestHold]:
        """While inside, every request with `predicate(endpoint)` true waits (before it is
        admitted) until the hold is released; leaving the block releases it."""
        hold = RequestHold(predicate, max_seconds)
        with self.lock:
            self._hold = hold
        try:
            yield hold
        finally:
            with self.lock:
                if self._hold is hold:
                    self._hold = None
            hold.release()

    def hold_for(self, endpoint: str) -> RequestHold | None:
        """The hold this request must wait on, if any."""
        with self.lock:
            hold = self._hold
            if hold is None or hold.released.is_set() or not hold.predicate(endpoint):
                return None
            hold.held.set()
            return hold

    def _rate_limited(self, endpoint: str) -> float | None:
        """Seconds until the window frees a slot, or None when this request may pass."""
        category = "export" if endpoint in EXPORT_ENDPOINTS else "api"
        limit = (
            self.rate_limits.export_per_minute
            if category == "export"
            else self.rate_limits.api_per_minute
        )
        if limit is None:
            return None
        window = 60.0 / self.clock_scale
        stamps = self._windows[category]
        now = self.clock()
        while stamps and stamps[0] <= now - window:
            stamps.popleft()
        if len(stamps) >= limit:
            return stamps[0] + window - now
        stamps.append(now)
        return None

    def admit(self, endpoint: str, authorization: str | None) -> tuple[str, float] | None:
        """Auth, injected faults and rate limits for one request: None to serve it, else
        (fault kind or "401", retry-after seconds)."""
        with self.lock:
            self.requests[endpoint] += 1
            self.last_request_at = time.time()
            self.request_log.append((self.last_request_at, endpoint))
            if self.first_request_at is None:
                self.first_request_at = self.last_request_at
            if not self._authorized(authorization):
                self.responses["401"] += 1
                return ("401", 0.0)
            fault = self._next_fault(endpoint)
            if fault:
                self.responses[fault] += 1
                return (fault, 1.0)
            wait = self._rate_limited(endpoint)
            if wait is not None:
                self.responses["429_rate_limit"] += 1
                return ("429", wait)
            self.responses["200"] += 1
            return None

    def _authorized(self, header: str | None) -> bool:
        if not header:
            return False
        kind, _, value = header.partition(" ")
        if kind.lower() == "bearer":
            return value == self.oauth_token
        if kind.lower() == "basic":
            try:
                decoded = base64.b64decode(value).decode()
            except (ValueError, UnicodeDecodeError):
                return False
            return decoded == f"{self.email}/token:{self.api_token}"
        return False

    # --- API ------------------------------------------------------------------------------

    def _check_start_time(self, start_time: int) -> None:
        if start_time > self.now() - 60:
            raise SandboxHTTPError(
                400,
                "InvalidValue",
                "Too recent start_time. Use a start_time older than one minute (start_time)",
            )

    def export_tickets(
        self,
        *,
        base: str,
        start_time: int | None = None,
        cursor: str | None = None,
        per_page: int = 1000,
        include: tuple[str, ...] = (),
        serialised: bool = False,
    ) -> dict:
        """One page of the cursor-based incremental ticket export. With `serialised`, tickets
        are pre-serialised `orjson.Fragment`s (for the HTTP handler)."""
        with self.lock:
            if cursor:
                try:
                    key = decode_cursor(cursor)
                except ValueError as exc:
                    raise SandboxHTTPError(400, "InvalidCursor", "cursor is not valid") from exc
                index = bisect.bisect_right(self._order, key)
            elif start_time is not None:
                self._check_start_time(start_time)
                index = bisect.bisect_left(self._order, (start_time, -1))
            else:
                raise SandboxHTTPError(400, "InvalidValue", "start_time or cursor is required")
            chunk = self._order[index : index + per_page]
            page_tickets = [self.tickets[tid] for _, tid in chunk]
            end_of_stream = index + per_page >= len(self._order)
            if chunk:
                after = encode_cursor(*chunk[-1])
            else:
                after = cursor or encode_cursor(*(self._order[index - 1] if index else (0, 0)))
            before = encode_cursor(*self._order[index]) if index < len(self._order) else None
            inc = "&include=" + ",".join(include) if include else ""
            page: dict[str, Any] = {
                "tickets": [self._ticket_fragment(t["id"]) for t in page_tickets]
                if serialised
                else [self.public_ticket(t) for t in page_tickets],
                "after_cursor": after,
                "before_cursor": before,
                "after_url": f"{base}/api/v2/incremental/tickets/cursor.json?"
                f"cursor={after}&per_page={per_page}{inc}",
                "before_url": f"{base}/api/v2/incremental/tickets/cursor.json?"
                f"cursor={before}&per_page={per_page}{inc}"
                if before
                else None,
                "end_of_stream": end_of_stream,
            }
            tickets = page_tickets
            if "users" in include:
                ids = {
                    uid
                    for t in tickets
                    for uid in (t["requester_id"], t["submitter_id"], t["assignee_id"])
                    if uid is not None
                }
                page["users"] = [self.users[uid] for uid in sorted(ids)]
            if "groups" in include:
                gids = sorted({t["group_id"] for t in tickets if t["group_id"] is not None})
                page["groups"] = [self.groups[g] for g in gids]
            if "organizations" in include:
                oids = {t["organization_id"] for t in tickets if t["organization_id"]}
                page["organizations"] = [self.organizations[o] for o in sorted(oids)]
            if "metric_sets" in include:
                page["metric_sets"] = [self.metric_sets[t["id"]] for t in tickets]
            return page

    def ticket_events(self, *, base: str, start_time: int, per_page: int = 1000) -> dict:
        """One page of the time-based ticket events export with comment events."""
        with self.lock:
            self._check_start_time(start_time)
            index = bisect.bisect_left(self._event_keys, (start_time, -1))
            stop = min(index + per_page, len(self._events))
            if stop > index and self._event_keys[stop - 1][0] == self._event_keys[index][0]:
                # the whole page shares one second: extend to every event of that second
                second = self._event_keys[index][0]
                while stop < len(self._events) and self._event_keys[stop][0] == second:
                    stop += 1
            events = self._events[index:stop]
            end_time = events[-1]["timestamp"] if events else start_time
            return {
                "ticket_events": events,
                "count": len(events),
                "end_time": end_time,
                "next_page": f"{base}/api/v2/incremental/ticket_events.json?"
                f"start_time={end_time}&include=comment_events&per_page={per_page}",
                "end_of_stream": stop >= len(self._events),
            }

    def ticket_comments(
        self, *, base: str, ticket_id: int, size: int = 100, after: str | None = None
    ) -> dict:
        """One page of a ticket's comments (cursor pagination); 404 for deleted tickets."""
        with self.lock:
            ticket = self.tickets.get(ticket_id)
            if ticket is None or ticket["status"] == "deleted":
                raise SandboxHTTPError(404, "RecordNotFound", "Not found")
            comments = self.comments[ticket_id]
            start = 0
            if after:
                try:
                    start = decode_cursor(after)[1]
                except ValueError as exc:
                    raise SandboxHTTPError(400, "InvalidCursor", "cursor is not valid") from exc
            chunk = comments[start : start + size]
            has_more = start + size < len(comments)
            next_cursor = encode_cursor(ticket_id, start + size) if has_more else None
            return {
                "comments": chunk,
                "meta": {"has_more": has_more, "after_cursor": next_cursor},
                "links": {
                    "next": f"{base}/api/v2/tickets/{ticket_id}/comments.json?"
                    f"page[size]={size}&page[after]={next_cursor}"
                    if has_more
                    else None
                },
            }


# --- HTTP ---------------------------------------------------------------------------------


def _json(data: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        orjson.dumps(data), status_code=status, media_type="application/json", headers=headers
    )


def _error(status: int, error: str, description: str, headers: dict | None = None) -> Response:
    return _json({"error": error, "description": description}, status, headers)


def _int_param(request: Request, name: str, default: int | None = None) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise SandboxHTTPError(400, "InvalidValue", f"{name} must be an integer") from exc


def routes(config: Any) -> list[BaseRoute]:
    """Route provider (see sandbox/server.py). Accounts come from
    `config.extra["zendesk_accounts"]` or one "default" account built from the config."""
    if "zendesk_accounts" in config.extra:
        # the caller's dict, kept by reference: accounts may be added while serving
        accounts: dict[str, ZendeskSandbox] = config.extra["zendesk_accounts"]
    else:
        accounts = {}
        accounts[DEFAULT_ACCOUNT] = ZendeskSandbox(
            seed=config.seed,
            tickets=config.tickets,
            comments_per_ticket=config.comments_per_ticket,
            clock_scale=config.clock_scale,
            rate_limits=RateLimits() if config.rate_limits else RateLimits(None, None),
        )
        config.extra["zendesk_accounts"] = accounts

    def account_of(request: Request) -> tuple[ZendeskSandbox, str]:
        name = request.path_params.get("account", DEFAULT_ACCOUNT)
        sandbox = accounts.get(name)
        if sandbox is None:
            raise SandboxHTTPError(404, "RecordNotFound", f"no sandbox account {name!r}")
        root = str(request.base_url).rstrip("/")
        base = f"{root}/accounts/{name}" if "account" in request.path_params else root
        return sandbox, sandbox.link_base or base

    def api(endpoint: str, handler):
        async def endpoint_fn(request: Request) -> Response:
            try:
                sandbox, base = account_of(request)
                hold = sandbox.hold_for(endpoint)
                if hold is not None:
                    await asyncio.to_thread(hold.wait)
                verdict = sandbox.admit(endpoint, request.headers.get("authorization"))
                if verdict is not None:
                    kind, wait = verdict
                    if kind == "401":
                        return _error(401, "Couldn't authenticate you", "Unauthorized")
                    if kind == "429":
                        retry = str(max(1, math.ceil(wait)))
                        return _error(
                            429, "TooManyRequests", "Rate limited", {"Retry-After": retry}
                        )
                    if kind == "429_no_retry_after":
                        return _error(429, "TooManyRequests", "Rate limited at the edge")
                    if kind in ("500", "503"):
                        return _error(int(kind), "ServerError", "injected server error")
                    if kind == "timeout":
                        # stalled for timeout_delay, or until the client has given up
                        deadline = time.monotonic() + sandbox.timeout_delay
                        while time.monotonic() < deadline:
                            if await request.is_disconnected():
                                break
                            await asyncio.sleep(0.02)
                        return _error(503, "ServerError", "injected slow response")
                return _json(handler(request, sandbox, base))
            except SandboxHTTPError as exc:
                return _error(exc.status, exc.error, exc.description)

        return endpoint_fn

    def tickets_export(request: Request, sandbox: ZendeskSandbox, base: str) -> dict:
        include = tuple(
            part for part in (request.query_params.get("include") or "").split(",") if part
        )
        per_page = min(_int_param(request, "per_page", 1000) or 1000, 1000)
        return sandbox.export_tickets(
            base=base,
            start_time=_int_param(request, "start_time"),
            cursor=request.query_params.get("cursor"),
            per_page=per_page,
            include=include,
            serialised=True,
        )

    def ticket_events_export(request: Request, sandbox: ZendeskSandbox, base: str) -> dict:
        start_time = _int_param(request, "start_time")
        if start_time is None:
            raise SandboxHTTPError(400, "InvalidValue", "start_time is required")
        per_page = min(_int_param(request, "per_page", 1000) or 1000, 1000)
        return sandbox.ticket_events(base=base, start_time=start_time, per_page=per_page)

    def ticket_comments(request: Request, sandbox: ZendeskSandbox, base: str) -> dict:
        size = min(_int_param(request, "page[size]", 100) or 100, 100)
        return sandbox.ticket_comments(
            base=base,
            ticket_id=int(request.path_params["ticket_id"]),
            size=size,
            after=request.query_params.get("page[after]"),
        )

    async def control_changes(request: Request) -> Response:
        try:
            sandbox, _ = account_of(request)
            body = orjson.loads(await request.body() or b"{}")
            counts = {k: int(body.get(k, 0)) for k in ("new", "updated", "deleted", "comments")}
        except (SandboxHTTPError, orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            return _error(400, "InvalidValue", "body must be {new, updated, deleted, comments}")
        if any(v < 0 for v in counts.values()):
            return _error(400, "InvalidValue", "counts must be >= 0")
        summary = await asyncio.to_thread(sandbox.apply_changes, **counts)
        return _json(summary.as_dict())

    async def control_faults(request: Request) -> Response:
        try:
            sandbox, _ = account_of(request)
            body = orjson.loads(await request.body() or b"{}")
            kinds = list(body.get("kinds") or [])
            if kinds:
                sandbox.inject_faults(kinds, every=int(body.get("every", 3)))
            else:
                sandbox.clear_faults()
        except (SandboxHTTPError, orjson.JSONDecodeError, ValueError, TypeError, AttributeError):
            return _error(400, "InvalidValue", f"body must be {{kinds: {list(FAULT_KINDS)}}}")
        return _json({"kinds": kinds})

    async def control_truth(request: Request) -> Response:
        try:
            sandbox, _ = account_of(request)
        except SandboxHTTPError as exc:
            return _error(exc.status, exc.error, exc.description)
        tickets = sandbox.truth_tickets()
        return _json(
            {
                "tickets": len(tickets),
                "deleted": sum(1 for t in tickets.values() if t["status"] == "deleted"),
                "comments": len(sandbox.truth_comments()),
                "users": len(sandbox.truth_users()),
                "requests": dict(sandbox.requests),
                "responses": dict(sandbox.responses),
            }
        )

    async def control_truth_ids(request: Request) -> Response:
        try:
            sandbox, _ = account_of(request)
        except SandboxHTTPError as exc:
            return _error(exc.status, exc.error, exc.description)
        with sandbox.lock:
            tickets = [[tid, t["status"] == "deleted"] for tid, t in sandbox.tickets.items()]
            comments = [[c["id"], tid] for tid, cs in sandbox.comments.items() for c in cs]
            span = [sandbox.first_request_at, sandbox.last_request_at]
            log = list(sandbox.request_log)
        return _json(
            {"tickets": tickets, "comments": comments, "request_span": span, "requests": log}
        )

    api_routes = [
        (
            "/api/v2/incremental/tickets/cursor.json",
            api("tickets_export", tickets_export),
        ),
        (
            "/api/v2/incremental/ticket_events.json",
            api("ticket_events_export", ticket_events_export),
        ),
        (
            "/api/v2/tickets/{ticket_id:int}/comments.json",
            api("ticket_comments", ticket_comments),
        ),
    ]
    result: list[BaseRoute] = []
    for path, fn in api_routes:
        result.append(Route(path, fn, methods=["GET"]))
        result.append(Route("/accounts/{account}" + path, fn, methods=["GET"]))
    result += [
        Route("/_sandbox/zendesk/{account}/changes", control_changes, methods=["POST"]),
        Route("/_sandbox/zendesk/{account}/faults", control_faults, methods=["POST"]),
        Route("/_sandbox/zendesk/{account}/truth", control_truth, methods=["GET"]),
        Route("/_sandbox/zendesk/{account}/truth/ids", control_truth_ids, methods=["GET"]),
    ]
    return result
