"""Helpers for the conversations tests: an independent model of the conversation rules, snapshots
of what the warehouse holds, and the Dagster plumbing (sensor ticks, drain runs).

The model is written from the rules as the issue and `assets/conversations/rules.py`'s docstring
state them, in plain Python over dicts, without calling the domain's code: a test compares the
warehouse with it, so a mistake must be made twice to pass unnoticed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from assets.conversations.defs import ConversationSettings, build_defs
from sensors.conversations import defs as sensor_defs

TABLES = (
    "control.origins, control.work_queues, control.enrichment_lists, "
    "control.conversation_settings, raw.conversation_threads, raw.conversation_sequences, "
    "raw.conversation_tickets, raw.conversation_messages, raw.ticket_state_changes, "
    "raw.work_queue_members, raw.conversation_event_ids, analytics.queue_counters, "
    "analytics.conversation_daily, control.queue_messages, control.queue_dead_letters, "
    "control.queue_acks, control.alerts"
)
PRIORITY_LEVELS = ("low", "normal", "high", "urgent")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- Dagster --------------------------------------------------------------------------------------


def conversation_definitions(
    resources: dict, close_after_minutes: int = 180, drain_processes: int = 1
) -> dg.Definitions:
    """The conversations domain (closure period `close_after_minutes`, the messages drain's
    `drain_processes`) and its sensors."""
    domain = build_defs()
    return dg.Definitions.merge(
        dg.Definitions(
            resources={
                **resources,
                "conversation_settings": ConversationSettings(
                    close_after_minutes=close_after_minutes, drain_processes=drain_processes
                ),
            }
        ),
        dg.Definitions(
            assets=domain.assets,
            asset_checks=domain.asset_checks,
            jobs=domain.jobs,
            schedules=domain.schedules,
        ),
        sensor_defs,
    )


def tick(defs: dg.Definitions, instance, resources: dict, sensor: str):
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return defs.resolve_sensor_def(sensor).evaluate_tick(context)


MESSAGES_SENSOR = "conversation_messages_queue_sensor"
EVENTS_SENSOR = "conversation_events_queue_sensor"


def drain_config(job: str, **config: Any) -> dict:
    op = "drain_messages" if job == "conversation_messages_drain" else "drain_conversation_events"
    return {"ops": {op: {"config": {"retry_base_seconds": 0.2, **config}}}}


def run_drain(defs, instance, resources, *, events: bool = False, **config: Any):
    """One sensor tick and the drain run it asks for, in process. Returns the run's result."""
    sensor = EVENTS_SENSOR if events else MESSAGES_SENSOR
    job = "conversation_events_drain" if events else "conversation_messages_drain"
    result = tick(defs, instance, resources, sensor)
    (request,) = result.run_requests
    assert request.tags["supportflow/queue"] == ("conversation_events" if events else "messages")
    run = defs.resolve_job_def(job).execute_in_process(
        instance=instance, tags=request.tags, run_config=drain_config(job, **config)
    )
    assert run.success
    return run


def run_sweep(defs, instance, now: datetime):
    run = defs.resolve_job_def("conversation_closure").execute_in_process(
        instance=instance,
        run_config={"ops": {"close_due_conversations": {"config": {"now": now.isoformat()}}}},
    )
    assert run.success
    return run


# --- the model ------------------------------------------------------------------------------------


@dataclass(eq=False)
class ModelTicket:
    tenant: str
    sequence: int
    thread: tuple[str, str, str]  # (tenant, origin ref, customer)
    state: str
    changed_at: datetime
    created_at: datetime
    closed_at: datetime | None = None
    until: datetime | None = None
    priority: str = "normal"
    tags: tuple[str, ...] = ()
    group: str | None = None
    messages: set[str] = field(default_factory=set)


@dataclass
class ModelOrigin:
    tenant: str
    name: str
    channel: str
    active: bool = True


Condition = Callable[[ModelTicket, str], bool]  # (ticket, channel) -> member?


class Model:
    """The conversation rules, applied one body at a time in delivery order."""

    def __init__(self, close_after: dict[str, int], default_close_after: int) -> None:
        self.origins: dict[str, ModelOrigin] = {}
        self.close_after = close_after
        self.default_close_after = default_close_after
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.threads: dict[tuple[str, str, str], list[ModelTicket]] = {}
        self.tickets: dict[tuple[str, int], ModelTicket] = {}
        self.sequences: Counter[str] = Counter()
        self.shadowed: dict[str, list[dict]] = defaultdict(list)
        self.events_seen: set[tuple[str, str]] = set()
        self.rejected: list[dict] = []
        self.queues: dict[str, dict[str, Condition]] = defaultdict(dict)

    def period(self, tenant: str) -> timedelta:
        return timedelta(minutes=self.close_after.get(tenant, self.default_close_after))

    def _move(self, ticket: ModelTicket, state: str, when: datetime, until=None) -> None:
        ticket.state, ticket.changed_at = state, when
        ticket.until = until if state == "followup" else None
        if state == "closed":
            ticket.closed_at = when

    def _due(self, ticket: ModelTicket, when: datetime) -> None:
        if ticket.state == "followup" and ticket.until <= when:
            self._move(ticket, "working", ticket.until)
        if ticket.state in ("solved", "pending"):
            due = ticket.changed_at + self.period(ticket.tenant)
            if due <= when:
                self._move(ticket, "closed", due)

    # messages -------------------------------------------------------------------------------------

    def feed(self, bodies: Iterable[dict]) -> None:
        for body in bodies:
            if body["type"] == "message":
                self.message(body)
            else:
                self.flag(body)

    def message(self, body: dict, flags: dict | None = None) -> None:
        tenant, message_id = body["tenant_id"], body["message_id"]
        if (tenant, message_id) in self.messages:
            return
        ref, kind = body["origin"], body["kind"]
        sent = at(body["sent_at"])
        customer = body["author"]["external_id"] if kind == "customer" else body["customer"]
        key = (tenant, ref, customer)
        if kind != "customer" and key not in self.threads:
            self.rejected.append(body)
            return
        record = {"kind": kind, "ticket": None, "deleted": False, "hidden": False,
                  "hidden_at": None, "sent": sent, "body": body, **(flags or {})}  # fmt: skip
        tickets = self.threads.setdefault(key, [])
        if not self.origins[ref].active:
            self.messages[(tenant, message_id)] = record
            self.shadowed[ref].append(body)
            return
        if tickets and tickets[-1].state != "closed":
            self._due(tickets[-1], sent)
        covering = [
            t for t in tickets if t.state == "closed" and t.created_at <= sent <= t.closed_at
        ]
        if covering:
            ticket = max(covering, key=lambda t: t.created_at)
        elif tickets and tickets[-1].state != "closed":
            ticket = tickets[-1]
        elif kind == "customer":
            self.sequences[tenant] += 1
            ticket = ModelTicket(tenant, self.sequences[tenant], key, "created", sent, sent)
            tickets.append(ticket)
            self.tickets[(tenant, ticket.sequence)] = ticket
        elif tickets:
            ticket = tickets[-1]
        else:
            self.rejected.append(body)
            return
        record["ticket"] = ticket
        self.messages[(tenant, message_id)] = record
        ticket.messages.add(message_id)
        if ticket.state == "closed" or sent < ticket.changed_at:
            return
        if kind == "customer" and ticket.state in ("pending", "solved", "followup"):
            self._move(ticket, "working", sent)
        elif kind in ("agent_reply", "ai_message") and ticket.state == "created":
            self._move(ticket, "working", sent)

    def flag(self, body: dict) -> None:
        if (body["tenant_id"], body["event_id"]) in self.events_seen:
            return
        self.events_seen.add((body["tenant_id"], body["event_id"]))
        record = self.messages[(body["tenant_id"], body["message_id"])]
        occurred = at(body["occurred_at"])
        if body["type"] == "message_removed":
            record["deleted"] = True
        elif record["hidden_at"] is None or occurred >= record["hidden_at"]:
            record["hidden"] = body["type"] == "message_hidden"
            record["hidden_at"] = occurred

    def enable(self, ref: str) -> None:
        """Enable an origin: its shadowed messages, oldest first, through the normal path."""
        self.origins[ref].active = True
        waiting = sorted(
            self.shadowed.pop(ref, []), key=lambda b: (at(b["sent_at"]), b["message_id"])
        )
        kept = {}
        for body in waiting:
            record = self.messages.pop((body["tenant_id"], body["message_id"]))
            kept[body["message_id"]] = {k: record[k] for k in ("deleted", "hidden", "hidden_at")}
        for body in waiting:
            self.message(body, kept[body["message_id"]])

    # events and the schedule ----------------------------------------------------------------------

    def events(self, bodies: Iterable[dict]) -> None:
        for body in bodies:
            pair = (body["tenant_id"], body["event_id"])
            if pair in self.events_seen:
                continue
            self.events_seen.add(pair)
            if body["type"] == "queue_changed":
                continue
            ticket = self.tickets[(body["tenant_id"], body["sequence"])]
            occurred = at(body["occurred_at"])
            if ticket.state != "closed":
                self._due(ticket, occurred)
            if ticket.state == "closed":
                continue
            kind = body["type"]
            if kind == "set_state":
                state = body["state"]
                until = at(body["until"]) if body.get("until") else None
                if occurred < ticket.changed_at:
                    continue
                if state == "followup" and ticket.state == "followup":
                    ticket.until = until
                elif state != ticket.state:
                    self._move(ticket, state, occurred, until)
            elif kind == "assign":
                if "group" in body:
                    ticket.group = body["group"]
            elif kind == "set_metadata":
                if "tags" in body:
                    ticket.tags = tuple(dict.fromkeys(body["tags"]))
            elif kind == "escalate":
                level = PRIORITY_LEVELS.index(ticket.priority)
                wanted = body.get("priority")
                if wanted is None:
                    level = min(level + 1, 3)
                else:
                    level = max(level, PRIORITY_LEVELS.index(wanted))
                ticket.priority = PRIORITY_LEVELS[level]
                if "group" in body:
                    ticket.group = body["group"]

    def due_times(self) -> list[datetime]:
        """When each open ticket's next scheduled transition is due, earliest first."""
        times = []
        for ticket in self.tickets.values():
            if ticket.state == "followup":
                times.append(ticket.until)
            elif ticket.state in ("solved", "pending"):
                times.append(ticket.changed_at + self.period(ticket.tenant))
        return sorted(times)

    def sweep(self, now: datetime) -> None:
        for ticket in self.tickets.values():
            if ticket.state != "closed":
                self._due(ticket, now)

    # what the warehouse should hold ---------------------------------------------------------------

    def tickets_of(self, tenant: str) -> dict[int, tuple]:
        return {
            t.sequence: (
                t.thread[1],
                t.thread[2],
                t.state,
                sum(not self.messages[(tenant, m)]["deleted"] for m in t.messages),
                tuple(sorted(t.messages)),
            )
            for (owner, _), t in self.tickets.items()
            if owner == tenant
        }

    def members_of(self, tenant: str) -> set[tuple[str, int]]:
        found = set()
        for (owner, sequence), ticket in self.tickets.items():
            if owner != tenant or ticket.state == "closed":
                continue
            channel = self.origins[ticket.thread[1]].channel
            for name, condition in self.queues[tenant].items():
                if condition(ticket, channel):
                    found.add((name, sequence))
        return found

    def counters_of(self, tenant: str) -> dict[tuple[str, str], int]:
        counts: Counter[tuple[str, str]] = Counter()
        for name, sequence in self.members_of(tenant):
            counts[(name, self.tickets[(tenant, sequence)].state)] += 1
        return dict(counts)

    def shadowed_count(self, tenant: str) -> int:
        return sum(
            1 for bodies in self.shadowed.values() for b in bodies if b["tenant_id"] == tenant
        )


# --- what the warehouse holds ---------------------------------------------------------------------


def stored_tickets(db, tenant: str) -> dict[int, tuple]:
    rows = db.execute(
        """
        select t.sequence, o.ref, th.author_external_id, t.state, t.visible_message_count,
               array(select m.message_id from raw.conversation_messages m
                     where m.ticket_id = t.ticket_id order by m.message_id)
        from raw.conversation_tickets t
        join raw.conversation_threads th on th.thread_id = t.thread_id
        join control.origins o on o.origin_id = t.origin_id
        where t.tenant_id = %s
        """,
        (tenant,),
    ).fetchall()
    return {
        seq: (ref, author, state, count, tuple(ids)) for seq, ref, author, state, count, ids in rows
    }


def stored_members(db, tenant: str) -> set[tuple[str, int]]:
    rows = db.execute(
        """
        select q.name, t.sequence from raw.work_queue_members m
        join control.work_queues q on q.queue_id = m.queue_id
        join raw.conversation_tickets t on t.ticket_id = m.ticket_id
        where m.tenant_id = %s
        """,
        (tenant,),
    ).fetchall()
    return {(name, seq) for name, seq in rows}


def stored_counters(db, tenant: str) -> dict[tuple[str, str], int]:
    rows = db.execute(
        """
        select q.name, c.state, c.ticket_count from analytics.queue_counters c
        join control.work_queues q on q.queue_id = c.queue_id
        where c.tenant_id = %s and c.ticket_count <> 0
        """,
        (tenant,),
    ).fetchall()
    return {(name, state): count for name, state, count in rows}


def counters_equal_recount(db) -> bool:
    mismatched = db.execute(
        """
        select count(*) from analytics.queue_counters c
        full join (select queue_id, state, count(*) as n from raw.work_queue_members
                   group by 1, 2) r on r.queue_id = c.queue_id and r.state = c.state
        where coalesce(c.ticket_count, 0) <> coalesce(r.n, 0)
        """
    ).fetchone()[0]
    return mismatched == 0


def assert_matches_model(db, model: Model, tenants: Iterable[str]) -> None:
    """Every ticket (sequence, thread, state, visible count, messages), every queue membership
    and every counter of `tenants` equal the model's; counters equal a recount."""
    assert counters_equal_recount(db)
    for tenant in tenants:
        stored, expected = stored_tickets(db, tenant), model.tickets_of(tenant)
        wrong = {
            seq: (stored.get(seq), expected.get(seq))
            for seq in set(stored) | set(expected)
            if stored.get(seq) != expected.get(seq)
        }
        examples = list(wrong.items())[:3]
        assert not wrong, f"{tenant}: {len(wrong)} ticket(s) differ, e.g. {examples}"
        assert stored_members(db, tenant) == model.members_of(tenant), tenant
        assert stored_counters(db, tenant) == model.counters_of(tenant), tenant
        shadowed = db.execute(
            "select count(*) from raw.conversation_messages where tenant_id = %s and shadowed",
            (tenant,),
        ).fetchone()[0]
        assert shadowed == model.shadowed_count(tenant), tenant
