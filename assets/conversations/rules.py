"""Conversation rules as plain Python: the queue message formats, the ticket state machine, where a
message belongs, the closure and follow-up rules, priorities and the work-queue condition language.

No SQL, no Dagster, no I/O: `store.py` applies these rules to the warehouse, tests check them on
their own.

States: `created`, `working`, `pending`, `followup`, `solved`, `closed` (final).

| event | from | to |
|---|---|---|
| customer message | no active ticket in the thread | new ticket, `created` |
| customer message | `pending`, `solved`, `followup` | `working` (closure/follow-up cancelled) |
| agent reply, AI message | `created` | `working` |
| `set_state` | any but `closed` | as asked (`followup` needs `until` after `occurred_at`) |
| closure schedule | `solved` or `pending`, no customer message for the closure period | `closed` |
| follow-up schedule | `followup` whose `until` has passed | `working` |

Rules decided where the issue is silent (as Chatwoot's users would expect):

1. Out of order. A message or `set_state` older than the ticket's last state change
   (`state_changed_at`) changes no state: it is stored in its place and the derived properties,
   computed from all stored messages, take it into account. A late customer message therefore never
   reopens a ticket that was solved after it was written.
2. A late customer message written while an earlier, now closed ticket of the thread was open
   (`created_at <= sent_at <= closed_at`) is stored in that closed ticket; it opens nothing.
3. Agent replies and AI messages move only `created` to `working`; on `pending`, `followup` and
   `solved` they change nothing (only the customer's reply reopens, as in Chatwoot).
4. Private notes and AI suggestions never change a state and are not a first response.
5. `set_state` to the current state is a no-op (no log row); `set_state` followup on a `followup`
   ticket only moves its `until`.
6. `set_state` (and every other event) on a `closed` ticket is a valid event with no effect: it
   is recorded as applied, so its duplicate is also ignored.
7. The closure period runs from when the ticket entered `solved` or `pending`; a customer message
   in between reopens the ticket to `working`. The period is
   `SUPPORTFLOW_TICKET_CLOSE_AFTER_MINUTES` (default 1440) or the tenant's override. A transition
   takes effect at its due time (closed_at, the log's changed_at), whenever the sweep runs; a
   message or event arriving after the due time first applies it, so the outcome never depends
   on when the sweep ran.
8. Closed tickets belong to no work queue: queues and their counters hold open work only.
9. Enrichment lists apply when a ticket is created (tags, priority, custom fields of the author's
   entry); later agent changes are not overwritten by the customer's next message.
10. Priorities: low < normal < high < urgent, default normal. `escalate` without a priority raises
    one level (urgent stays urgent); with one it raises to it and never lowers.
11. `assign`, `set_metadata` and `escalate` apply in arrival order. `null` agent or group
    unassigns, `tags` replaces the list, `custom_fields` is merged (a `null` value removes the key),
    `topic: null` clears the topic.
12. `message_removed` is final: the message stays stored (flag `deleted`) but leaves every count,
    the rating, the sentiment and the last customer message time. `message_hidden`/`unhidden` is
    moderation: the newest by `occurred_at` wins; a hidden message still counts as visible in
    `visible_message_count` (which counts messages neither shadowed nor deleted). A flag event for
    a message not stored yet is retried (it may have overtaken its message), then dead-lettered.
13. A disabled origin's messages are stored `shadowed` in their thread with no ticket; enabling
    the origin replays them oldest first through the normal path (rules 1-2 apply).
14. A message of another kind names its conversation by `customer` (in that customer's thread on
    the message's origin: the closed ticket that was open when it was written, else the active
    ticket, else the latest), `ticket_id` or `sequence` (a ticket of the message's origin). A
    `customer` with no thread or ticket yet is retried with a growing delay (the reply may have
    overtaken the customer's message) and dead-lettered after its last receive; an unknown
    `ticket_id` or `sequence` is rejected at once.
15. A message sent more than a day after it is received is rejected (`sent_at`): a producer's
    clock error would otherwise freeze its ticket in the future.
16. Derived properties count live messages (neither shadowed nor deleted): `star_rating` is the
    rating of the latest live customer message with one; `first_response_at` the first agent reply
    or AI message at or after the first customer message; the sentiment is the mean VADER score of
    the live customer messages (the feedback domain's engine) labelled with its neutral band; the
    language is that of the ticket's first customer message.
17. A ticket "reopened" (daily figures) when it went from `solved` to `working`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from resources.messages import DedupKey, tenant_id_key

# --- vocabulary ----------------------------------------------------------------------------------

STATES = ("created", "working", "pending", "followup", "solved", "closed")
ACTIVE_STATES = STATES[:-1]
REQUESTABLE_STATES = ("working", "pending", "followup", "solved", "closed")
CLOSABLE_STATES = ("solved", "pending")
CHANNELS = ("facebook", "instagram", "x", "whatsapp", "linkedin", "mail")
KINDS = ("customer", "agent_reply", "private_note", "ai_message", "ai_suggestion")
RESPONSE_KINDS = ("agent_reply", "ai_message")
PRIORITIES = ("low", "normal", "high", "urgent")
DEFAULT_PRIORITY = "normal"
SENTIMENT_LABELS = ("negative", "neutral", "positive")
# |mean score| below this is neutral: the band of the feedback domain's VADER engine (the
# thresholds VADER's authors recommend); a test keeps the two equal.
NEUTRAL_BAND = 0.05
CAUSES = ("message", "agent", "rule", "schedule")
MAX_FUTURE_SKEW = timedelta(days=1)
DEFAULT_CLOSE_AFTER_MINUTES = 24 * 60

State = Literal["created", "working", "pending", "followup", "solved", "closed"]
Kind = Literal["customer", "agent_reply", "private_note", "ai_message", "ai_suggestion"]
Priority = Literal["low", "normal", "high", "urgent"]

TENANT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TenantId = Annotated[str, Meta(pattern=TENANT_ID_PATTERN)]
Identifier = Annotated[str, Meta(min_length=1, max_length=256)]
Name = Annotated[str, Meta(max_length=256)]
PositiveInt = Annotated[int, Meta(ge=1, le=2**63 - 1)]
AwareDatetime = Annotated[datetime, Meta(tz=True)]


class InvalidConversationInput(ValueError):
    """A queue message that does not follow its format; the text names the field and the reason,
    in msgspec's form: "Expected `str`, got `int` - at `$.author.external_id`"."""


def _invalid(field_path: str, reason: str) -> InvalidConversationInput:
    return InvalidConversationInput(f"{reason} - at `$.{field_path}`")


# --- queue `messages` ---------------------------------------------------------------------------


class Author(Struct, frozen=True):
    external_id: Identifier
    name: Name | None = None


class Attachment(Struct, frozen=True):
    name: Name
    url: Annotated[str, Meta(min_length=1, max_length=4096)]
    size: Annotated[int, Meta(ge=0)] | None = None
    content_type: Name | None = None


class _MessagesBody(Struct, frozen=True, kw_only=True, tag_field="type"):
    tenant_id: TenantId
    message_id: Identifier


class ChannelMessage(_MessagesBody, tag="message"):
    """A new message of a channel. Kinds other than `customer` name their conversation by exactly
    one of `customer`, `ticket_id`, `sequence`."""

    origin: Identifier
    author: Author
    kind: Kind
    text: str
    sent_at: AwareDatetime
    attachments: list[Attachment] = []
    rating: Annotated[int, Meta(ge=1, le=5)] | None = None
    customer: Identifier | None = None
    ticket_id: PositiveInt | None = None
    sequence: PositiveInt | None = None

    def __post_init__(self) -> None:
        if "\x00" in self.text:
            raise _invalid("text", "Contains a NUL character, which PostgreSQL cannot store")
        if self.customer is None and self.ticket_id is None and self.sequence is None:
            if self.kind != "customer":
                raise _invalid(
                    "customer",
                    f"A message of kind `{self.kind}` needs `customer`, `ticket_id` or `sequence`",
                )
            return
        names = ("customer", "ticket_id", "sequence")
        refs = [name for name in names if getattr(self, name) is not None]
        if self.kind == "customer":
            if refs:
                raise _invalid(refs[0], "A `customer` message names no ticket")
        elif len(refs) > 1:
            raise _invalid(refs[1], f"Give one of `customer`, `ticket_id`, `sequence`, not {refs}")

    @property
    def thread_author(self) -> str:
        """The external id of the customer whose thread this message belongs to (when known)."""
        return self.author.external_id if self.kind == "customer" else (self.customer or "")


class _FlagEvent(_MessagesBody, frozen=True, kw_only=True):
    event_id: Identifier
    occurred_at: AwareDatetime


class MessageRemoved(_FlagEvent, tag="message_removed"):
    pass


class MessageHidden(_FlagEvent, tag="message_hidden"):
    pass


class MessageUnhidden(_FlagEvent, tag="message_unhidden"):
    pass


MessagesBody = ChannelMessage | MessageRemoved | MessageHidden | MessageUnhidden
FlagEvent = MessageRemoved | MessageHidden | MessageUnhidden


_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[Any, msgspec.json.Decoder] = {}


def _convert(body: Any, kind: Any, queue: str) -> Any:
    if not isinstance(body, dict | bytes):
        raise InvalidConversationInput(
            f"Expected `object`, got `{type(body).__name__}` - at `$` (queue {queue})"
        )
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS.setdefault(kind, msgspec.json.Decoder(kind))
    try:
        if isinstance(body, bytes):  # its JSON text, as the drains receive it: straight into types
            return decoder.decode(body)
        # Encoding the body back to JSON and decoding that into the typed structs is twice as
        # fast as `msgspec.convert` on the dict (the drain's largest cost per message), with the
        # same validation and the same error paths.
        try:
            encoded = _ENCODER.encode(body)
        except (TypeError, msgspec.EncodeError):  # not from JSON (a caller's own objects)
            return msgspec.convert(body, kind)
        return decoder.decode(encoded)
    except msgspec.ValidationError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, InvalidConversationInput):
            raise cause from None
        raise InvalidConversationInput(str(exc)) from None
    except msgspec.DecodeError as exc:  # text that is not JSON
        raise InvalidConversationInput(f"Not JSON ({exc}) - at `$` (queue {queue})") from None


def parse_messages_body(body: Any) -> ChannelMessage | FlagEvent:
    """Validate one body of queue `messages`. Raises InvalidConversationInput."""
    return _convert(body, MessagesBody, "messages")


def message_key(body: Mapping[str, Any]) -> str | None:
    """Idempotency key of a body of queue `messages`: `message:<tenant>:<message_id>` for a
    message, `<type>:<tenant>:<event_id>` for a moderation event (a hide, an unhide and a second
    hide are three changes). Channel ids are unique only within a tenant."""
    kind = body.get("type") or "message"
    if kind == "message":
        return tenant_id_key("message_id", body, kind)
    return tenant_id_key("event_id", body, str(kind))


def event_key(body: Mapping[str, Any]) -> str | None:
    """Idempotency key of a body of queue `conversation_events`: `event_id:<tenant>:<id>`."""
    return tenant_id_key("event_id", body)


# Each queue's idempotency key, for producers (`queue send`, the demo, the webhook service).
MESSAGE_KEYS: dict[str, DedupKey | None] = {
    "messages": message_key,
    "conversation_events": event_key,
}


def rejects_future(sent_at: datetime, received_at: datetime) -> str | None:
    """Why a message is too far in the future to accept (rule 15), or None."""
    if sent_at - received_at > MAX_FUTURE_SKEW:
        return (
            f"Is more than {MAX_FUTURE_SKEW.days} day ahead of its receipt "
            f"({received_at.isoformat()}) - at `$.sent_at`"
        )
    return None


# --- queue `conversation_events` ----------------------------------------------------------------


class Actor(Struct, frozen=True):
    type: Literal["agent", "rule"]
    id: Identifier


class _Event(Struct, frozen=True, kw_only=True, tag_field="type"):
    event_id: Identifier
    tenant_id: TenantId
    occurred_at: AwareDatetime
    actor: Actor | None = None

    @property
    def cause(self) -> str:
        """The cause logged with a state change: `rule` for the rules engine, else `agent`."""
        return "rule" if self.actor is not None and self.actor.type == "rule" else "agent"


class _TicketEvent(_Event, frozen=True, kw_only=True):
    ticket_id: PositiveInt | None = None
    sequence: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.ticket_id is None and self.sequence is None:
            raise InvalidConversationInput(
                "Object missing required field `ticket_id` or `sequence`"
            )
        if self.ticket_id is not None and self.sequence is not None:
            raise _invalid("sequence", "Give `ticket_id` or `sequence`, not both")


class SetState(_TicketEvent, tag="set_state"):
    state: Literal["working", "pending", "followup", "solved", "closed"]
    until: AwareDatetime | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.state == "followup":
            if self.until is None:
                raise _invalid("until", "A followup needs `until`")
            if self.until <= self.occurred_at:
                raise _invalid("until", "Must be after `occurred_at`")
        elif self.until is not None:
            raise _invalid("until", f"Only a followup has `until`, not `{self.state}`")


class Assign(_TicketEvent, tag="assign"):
    agent: Name | None | UnsetType = UNSET
    group: Name | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.agent is UNSET and self.group is UNSET:
            raise InvalidConversationInput("Object missing required field `agent` or `group`")


class SetMetadata(_TicketEvent, tag="set_metadata"):
    tags: list[Annotated[str, Meta(min_length=1, max_length=128)]] | UnsetType = UNSET
    topic: Name | None | UnsetType = UNSET
    custom_fields: dict[Annotated[str, Meta(min_length=1, max_length=128)], Any] | UnsetType = UNSET

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tags is UNSET and self.topic is UNSET and self.custom_fields is UNSET:
            raise InvalidConversationInput(
                "Object missing required field `tags`, `topic` or `custom_fields`"
            )


class Escalate(_TicketEvent, tag="escalate"):
    priority: Priority | None = None
    group: Name | None | UnsetType = UNSET


class QueueChanged(_Event, tag="queue_changed"):
    queue: Identifier


TicketEvent = SetState | Assign | SetMetadata | Escalate
ConversationEvent = SetState | Assign | SetMetadata | Escalate | QueueChanged


def parse_event_body(body: Any) -> ConversationEvent:
    """Validate one body of queue `conversation_events`. Raises InvalidConversationInput."""
    return _convert(body, ConversationEvent, "conversation_events")


# --- the state machine --------------------------------------------------------------------------

Trigger = Literal[
    "customer_message", "response", "silent_message", "set_state", "close_due", "followup_due"
]


@dataclass(frozen=True)
class StateEvent:
    """What happened to a ticket: `trigger`, and the state asked for by `set_state`."""

    trigger: Trigger
    requested: str | None = None


def trigger_for_kind(kind: str) -> Trigger:
    """The state-machine trigger of a message kind."""
    if kind == "customer":
        return "customer_message"
    if kind in RESPONSE_KINDS:
        return "response"
    return "silent_message"


def next_state(current: str, event: StateEvent) -> str | None:
    """The state a ticket moves to, or None when the event changes no state.

    A customer message on a ticket with no active one creates a ticket; that choice is
    `place_message`'s, not this function's.
    """
    if current == "closed":
        return None
    match event.trigger:
        case "customer_message":
            return "working" if current in ("pending", "solved", "followup") else None
        case "response":
            return "working" if current == "created" else None
        case "set_state":
            if event.requested not in REQUESTABLE_STATES:
                raise ValueError(f"set_state cannot ask for {event.requested!r}")
            return None if event.requested == current else event.requested
        case "close_due":
            return "closed" if current in CLOSABLE_STATES else None
        case "followup_due":
            return "working" if current == "followup" else None
        case _:
            return None


def is_late(at: datetime, state_changed_at: datetime) -> bool:
    """An event older than the ticket's last state change changes no state (rule 1)."""
    return at < state_changed_at


@dataclass(frozen=True)
class TicketSpan:
    """What `place_message` needs to know of a ticket of the thread."""

    ticket_id: int
    state: str
    created_at: datetime
    closed_at: datetime | None = None

    def covers(self, at: datetime) -> bool:
        return self.closed_at is not None and self.created_at <= at <= self.closed_at


Placement = Literal["active", "closed", "new"]


def place_message(
    sent_at: datetime, active: TicketSpan | None, covering_closed: TicketSpan | None
) -> Placement:
    """Where a customer message goes: into the closed ticket that was open when it was written
    (rule 2), into the thread's active ticket, or into a new ticket."""
    if covering_closed is not None and covering_closed.covers(sent_at):
        return "closed"
    return "active" if active is not None else "new"


# --- closure and follow-up ----------------------------------------------------------------------


def closure_due_at(
    state: str, state_changed_at: datetime, close_after_minutes: int
) -> datetime | None:
    """When a `solved` or `pending` ticket closes (rule 7); None for other states.

    "No customer message for the closure period" is the same as "the period since the ticket
    entered the state": a newer customer message would have moved it to `working`, and an older
    one arriving late changes no state.
    """
    if state not in CLOSABLE_STATES:
        return None
    return state_changed_at + timedelta(minutes=close_after_minutes)


def is_closure_due(
    state: str, state_changed_at: datetime, close_after_minutes: int, now: datetime
) -> bool:
    due = closure_due_at(state, state_changed_at, close_after_minutes)
    return due is not None and due <= now


def is_followup_due(state: str, followup_until: datetime | None, now: datetime) -> bool:
    return state == "followup" and followup_until is not None and followup_until <= now


# --- priorities, sentiment ----------------------------------------------------------------------


def priority_rank(priority: str) -> int:
    return PRIORITIES.index(priority)


def escalated_priority(current: str, requested: str | None = None) -> str:
    """One level up without a request; the requested level when higher (never lower)."""
    if requested is None:
        return PRIORITIES[min(priority_rank(current) + 1, len(PRIORITIES) - 1)]
    return requested if priority_rank(requested) > priority_rank(current) else current


def sentiment_label(score: float | None, neutral_band: float) -> str | None:
    """The label of a ticket's mean sentiment score, by the engine's neutral band."""
    if score is None:
        return None
    if score >= neutral_band:
        return "positive"
    if score <= -neutral_band:
        return "negative"
    return "neutral"


# --- work-queue conditions ----------------------------------------------------------------------


class ConditionError(ValueError):
    """A work-queue condition that is not valid; the text says what and where."""


OPERATORS = ("eq", "in", "contains", "lt", "gt")
FIELDS = (
    "origin",
    "channel",
    "state",
    "priority",
    "language",
    "sentiment",
    "tags",
    "topic",
    "group",
    "custom_fields.<name>",
)
# operators each field accepts; custom fields accept all
_FIELD_OPS: dict[str, tuple[str, ...]] = {
    "origin": ("eq", "in", "contains"),
    "channel": ("eq", "in"),
    "state": ("eq", "in"),
    "priority": ("eq", "in", "lt", "gt"),
    "language": ("eq", "in"),
    "sentiment": ("eq", "in", "lt", "gt"),
    "tags": ("eq", "in", "contains"),
    "topic": ("eq", "in", "contains"),
    "group": ("eq", "in", "contains"),
}
_ENUMS: dict[str, tuple[str, ...]] = {
    "channel": CHANNELS,
    "state": STATES,
    "priority": PRIORITIES,
    "sentiment": SENTIMENT_LABELS,
}
_NULLABLE = ("language", "topic", "group", "sentiment")
_CUSTOM_FIELD_RE = re.compile(r"^custom_fields\.([A-Za-z0-9_-]{1,128})$")
MAX_CONDITION_DEPTH = 16
MAX_CONDITION_NODES = 500


@dataclass(frozen=True)
class TicketProperties:
    """The ticket as conditions see it. `origin` is the origin's name, `group` the owner group,
    `sentiment` the label and `sentiment_score` the mean score."""

    origin: str
    channel: str
    state: str
    priority: str = DEFAULT_PRIORITY
    language: str | None = None
    sentiment: str | None = None
    sentiment_score: float | None = None
    tags: tuple[str, ...] = ()
    topic: str | None = None
    group: str | None = None
    custom_fields: Mapping[str, Any] = field(default_factory=dict)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_leaf(node: Mapping[str, Any], path: str) -> None:
    unknown = sorted(set(node) - {"field", "op", "value"})
    if unknown:
        raise ConditionError(f"Unknown key {unknown[0]!r} in a comparison - at `{path}`")
    for key in ("field", "op", "value"):
        if key not in node:
            raise ConditionError(f"Comparison missing required key `{key}` - at `{path}`")
    name, op, value = node["field"], node["op"], node["value"]
    if not isinstance(name, str):
        raise ConditionError(f"Expected a field name, got {name!r:.60} - at `{path}.field`")
    custom = _CUSTOM_FIELD_RE.match(name)
    if name not in _FIELD_OPS and not custom:
        raise ConditionError(
            f"Unknown field {name!r:.60} (expected one of {', '.join(FIELDS)}) - at `{path}.field`"
        )
    allowed = OPERATORS if custom else _FIELD_OPS[name]
    if op not in allowed:
        raise ConditionError(
            f"Operator {op!r:.30} does not apply to {name} (expected one of "
            f"{', '.join(allowed)}) - at `{path}.op`"
        )
    where = f"{path}.value"
    if custom:
        if op == "in":
            if not isinstance(value, list) or not value or not all(map(_is_scalar, value)):
                raise ConditionError(f"`in` needs a non-empty list of values - at `{where}`")
        elif op in ("lt", "gt"):
            if not (_is_number(value) or isinstance(value, str)):
                raise ConditionError(f"`{op}` needs a number or a string - at `{where}`")
        elif not _is_scalar(value) or (op == "contains" and value is None):
            raise ConditionError(f"`{op}` needs a string, number or boolean - at `{where}`")
        return
    enum = _ENUMS.get(name)
    if name == "sentiment" and op in ("lt", "gt"):
        if not _is_number(value) or not -1 <= value <= 1:
            raise ConditionError(f"`{op}` on sentiment needs a score in [-1, 1] - at `{where}`")
        return
    if op == "in" or (name == "tags" and op == "eq"):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConditionError(
                f"`{op}` on {name} needs a non-empty list of strings - at `{where}`"
            )
        items = value
    elif value is None and op == "eq" and name in _NULLABLE:
        return
    elif not isinstance(value, str) or not value:
        raise ConditionError(f"`{op}` on {name} needs a non-empty string - at `{where}`")
    else:
        items = [value]
    if enum is not None:
        bad = [v for v in items if v not in enum]
        if bad:
            raise ConditionError(
                f"Unknown {name} {bad[0]!r:.40} (expected one of {', '.join(enum)}) - at `{where}`"
            )


def validate_condition(condition: Any) -> dict[str, Any]:
    """Check a work-queue condition; returns it unchanged when valid, else raises one
    ConditionError naming what is wrong and where (a JSON path such as `$.all[1].op`).

    Forms: `{"all": [c, ...]}`, `{"any": [c, ...]}`, `{"not": c}` and comparisons
    `{"field": f, "op": "eq|in|contains|lt|gt", "value": v}`.
    """
    nodes = 0

    def check(node: Any, path: str, depth: int) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_CONDITION_NODES:
            raise ConditionError(f"More than {MAX_CONDITION_NODES} conditions - at `{path}`")
        if depth > MAX_CONDITION_DEPTH:
            raise ConditionError(f"Nested deeper than {MAX_CONDITION_DEPTH} levels - at `{path}`")
        if not isinstance(node, dict):
            raise ConditionError(f"Expected an object, got {type(node).__name__} - at `{path}`")
        combinators = [key for key in ("all", "any", "not") if key in node]
        if not combinators:
            if "field" in node or "op" in node:
                _check_leaf(node, path)
                return
            raise ConditionError(
                f"Expected `all`, `any`, `not` or a comparison (field, op, value) - at `{path}`"
            )
        key = combinators[0]
        extra = sorted(set(node) - {key})
        if extra:
            raise ConditionError(f"Unexpected key {extra[0]!r} beside `{key}` - at `{path}`")
        inner = node[key]
        if key == "not":
            check(inner, f"{path}.not", depth + 1)
            return
        if not isinstance(inner, list):
            raise ConditionError(
                f"`{key}` needs a list of conditions, got {type(inner).__name__}"
                f" - at `{path}.{key}`"
            )
        for n, child in enumerate(inner):
            check(child, f"{path}.{key}[{n}]", depth + 1)

    check(condition, "$", 0)
    return condition


def _same(actual: Any, value: Any) -> bool:
    """JSON equality: numbers by value, otherwise equal values of one type (so `true` is not 1)."""
    if _is_number(actual) and _is_number(value):
        return actual == value
    return type(actual) is type(value) and actual == value


def _property(ticket: TicketProperties, name: str) -> Any:
    custom = _CUSTOM_FIELD_RE.match(name)
    if custom:
        return ticket.custom_fields.get(custom.group(1))
    return getattr(ticket, name)


def _compare(name: str, op: str, actual: Any, value: Any, ticket: TicketProperties) -> bool:
    if name == "tags":
        tags = set(actual)
        if op == "contains":
            return value in tags
        if op == "in":
            return not tags.isdisjoint(value)
        return tags == set(value)  # eq: exactly these tags
    if name == "sentiment" and op in ("lt", "gt"):
        score = ticket.sentiment_score
        if score is None:
            return False
        return score < value if op == "lt" else score > value
    if name == "priority" and op in ("lt", "gt"):
        diff = priority_rank(actual) - priority_rank(value)
        return diff < 0 if op == "lt" else diff > 0
    if op == "eq":
        return _same(actual, value)
    if op == "in":
        return actual is not None and any(_same(actual, v) for v in value)
    if op == "contains":
        if isinstance(actual, list):
            return value in actual
        if isinstance(actual, str) and isinstance(value, str):
            return value.casefold() in actual.casefold()
        return False
    # lt / gt on custom fields: numbers with numbers, strings with strings, else no match
    if (
        _is_number(actual)
        and _is_number(value)
        or (isinstance(actual, str) and isinstance(value, str))
    ):
        return actual < value if op == "lt" else actual > value
    return False


def matches(condition: Mapping[str, Any], ticket: TicketProperties) -> bool:
    """Whether a ticket satisfies a (validated) condition. `all` of nothing is true, `any` of
    nothing is false; a comparison with a missing property is false (except `eq null`)."""
    if "all" in condition:
        return all(matches(child, ticket) for child in condition["all"])
    if "any" in condition:
        return any(matches(child, ticket) for child in condition["any"])
    if "not" in condition:
        return not matches(condition["not"], ticket)
    name, op, value = condition["field"], condition["op"], condition["value"]
    return _compare(name, op, _property(ticket, name), value, ticket)
