"""The conversation rules on their own: message formats, the state machine, placement of a
message, closure and follow-up, priorities, and the work-queue condition language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from assets.conversations import rules
from assets.conversations.rules import (
    ChannelMessage,
    ConditionError,
    InvalidConversationInput,
    StateEvent,
    TicketProperties,
    TicketSpan,
    closure_due_at,
    escalated_priority,
    is_closure_due,
    is_followup_due,
    matches,
    next_state,
    parse_event_body,
    parse_messages_body,
    place_message,
    validate_condition,
)

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def message(**overrides) -> dict:
    body = {
        "type": "message",
        "tenant_id": "acme",
        "message_id": "fb-1",
        "origin": "fb-page",
        "author": {"external_id": "u1", "name": "Ann"},
        "kind": "customer",
        "text": "Hello",
        "sent_at": "2026-11-20T10:00:00Z",
    }
    body.update(overrides)
    return body


def event(**overrides) -> dict:
    body = {
        "type": "set_state",
        "event_id": "e1",
        "tenant_id": "acme",
        "occurred_at": "2026-11-20T10:00:00Z",
        "sequence": 1,
        "state": "solved",
    }
    body.update(overrides)
    return body


# --- formats --------------------------------------------------------------------------------------


def test_a_full_message_decodes() -> None:
    parsed = parse_messages_body(
        message(
            attachments=[
                {"name": "a.png", "url": "https://x/a.png", "size": 12, "content_type": "image/png"}
            ],
            rating=5,
        )
    )
    assert isinstance(parsed, ChannelMessage)
    assert parsed.sent_at == T0 and parsed.rating == 5 and parsed.attachments[0].size == 12
    assert parsed.thread_author == "u1"
    reply = parse_messages_body(
        message(kind="agent_reply", customer="u1", author={"external_id": "a"})
    )
    assert reply.thread_author == "u1"


def _without(body: dict, *path: str) -> dict:
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            message(author={"external_id": 3}),
            "Expected `str`, got `int` - at `$.author.external_id`",
        ),
        (_without(message(), "sent_at"), "Object missing required field `sent_at`"),
        (
            _without(message(), "author", "external_id"),
            "missing required field `external_id` - at `$.author`",
        ),
        (message(sent_at="2026-11-20T10:00:00"), "timezone component - at `$.sent_at`"),
        (message(kind="robot"), "Invalid enum value 'robot' - at `$.kind`"),
        (message(type="nope"), "Invalid value 'nope' - at `$.type`"),
        (message(rating=9), "Expected `int` <= 5 - at `$.rating`"),
        (message(rating=True), "at `$.rating`"),
        (message(tenant_id="no spaces"), "at `$.tenant_id`"),
        (message(message_id=""), "at `$.message_id`"),
        (
            message(kind="agent_reply"),
            "needs `customer`, `ticket_id` or `sequence` - at `$.customer`",
        ),
        (message(kind="agent_reply", customer="u1", sequence=2), "- at `$.sequence`"),
        (message(ticket_id=4), "A `customer` message names no ticket - at `$.ticket_id`"),
        (message(text="a\x00b"), "NUL character, which PostgreSQL cannot store - at `$.text`"),
        (
            message(attachments=[{"name": "a.png"}]),
            "missing required field `url` - at `$.attachments[0]`",
        ),
        ({"type": "message_hidden", "tenant_id": "acme", "message_id": "m"}, "field `event_id`"),
        ([1, 2], "Expected `object`, got `list` - at `$`"),
    ],
)
def test_invalid_messages_name_the_field_and_the_reason(body, reason: str) -> None:
    with pytest.raises(InvalidConversationInput) as caught:
        parse_messages_body(body)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (_without(event(), "sequence"), "missing required field `ticket_id` or `sequence`"),
        (event(ticket_id=3), "Give `ticket_id` or `sequence`, not both - at `$.sequence`"),
        (event(state="followup"), "A followup needs `until` - at `$.until`"),
        (event(state="followup", until="2026-11-20T09:00:00Z"),
         "after `occurred_at` - at `$.until`"),
        (event(until="2026-11-21T09:00:00Z"), "Only a followup has `until`"),
        (event(state="created"), "Invalid enum value 'created' - at `$.state`"),
        (event(type="assign"), "missing required field `agent` or `group`"),
        (event(type="set_metadata"), "`tags`, `topic` or `custom_fields`"),
        (event(type="escalate", priority="extreme"), "at `$.priority`"),
        (event(type="set_metadata", tags="vip"), "Expected `array`, got `str` - at `$.tags`"),
        (event(actor={"type": "robot", "id": "x"}), "at `$.actor.type`"),
        ({"type": "queue_changed", "event_id": "q", "tenant_id": "acme",
          "occurred_at": "2026-11-20T10:00:00Z"}, "Object missing required field `queue`"),
    ],
)  # fmt: skip
def test_invalid_events_name_the_field_and_the_reason(body, reason: str) -> None:
    with pytest.raises(InvalidConversationInput) as caught:
        parse_event_body(body)
    assert reason in str(caught.value)


def test_events_decode_with_their_cause() -> None:
    by_rule = parse_event_body(event(actor={"type": "rule", "id": "sla"}))
    assert by_rule.cause == "rule" and parse_event_body(event()).cause == "agent"
    unassign = parse_event_body(event(type="assign", agent=None))
    assert unassign.agent is None and unassign.group is rules.UNSET
    followup = parse_event_body(event(state="followup", until="2026-11-21T10:00:00Z"))
    assert followup.until == T0 + timedelta(days=1)


def test_message_keys_are_scoped_by_tenant() -> None:
    assert rules.message_key(message()) == "message:acme:fb-1"
    hidden = {"type": "message_hidden", "tenant_id": "acme", "message_id": "m", "event_id": "h1"}
    assert rules.message_key(hidden) == "message_hidden:acme:h1"
    assert rules.event_key(event()) == "event_id:acme:e1"
    assert rules.message_key(message(tenant_id="other")) != rules.message_key(message())


def test_a_message_a_day_ahead_of_its_receipt_is_refused() -> None:
    assert rules.rejects_future(T0 + timedelta(hours=23), T0) is None
    assert "at `$.sent_at`" in rules.rejects_future(T0 + timedelta(days=1, seconds=1), T0)


# --- the state machine ----------------------------------------------------------------------------

CUSTOMER = StateEvent("customer_message")
RESPONSE = StateEvent("response")
SILENT = StateEvent("silent_message")


@pytest.mark.parametrize(
    ("current", "event", "expected"),
    [
        ("created", CUSTOMER, None),
        ("working", CUSTOMER, None),
        ("pending", CUSTOMER, "working"),
        ("solved", CUSTOMER, "working"),
        ("followup", CUSTOMER, "working"),
        ("closed", CUSTOMER, None),
        ("created", RESPONSE, "working"),
        ("working", RESPONSE, None),
        ("pending", RESPONSE, None),
        ("solved", RESPONSE, None),
        ("followup", RESPONSE, None),
        ("created", SILENT, None),
        ("pending", SILENT, None),
        ("created", StateEvent("set_state", "pending"), "pending"),
        ("working", StateEvent("set_state", "working"), None),
        ("solved", StateEvent("set_state", "followup"), "followup"),
        ("followup", StateEvent("set_state", "closed"), "closed"),
        ("closed", StateEvent("set_state", "working"), None),
        ("solved", StateEvent("close_due"), "closed"),
        ("pending", StateEvent("close_due"), "closed"),
        ("working", StateEvent("close_due"), None),
        ("followup", StateEvent("close_due"), None),
        ("followup", StateEvent("followup_due"), "working"),
        ("solved", StateEvent("followup_due"), None),
    ],
)
def test_state_machine(current: str, event: StateEvent, expected: str | None) -> None:
    assert next_state(current, event) == expected


@pytest.mark.parametrize(
    ("kind", "trigger"),
    [
        ("customer", "customer_message"),
        ("agent_reply", "response"),
        ("ai_message", "response"),
        ("private_note", "silent_message"),
        ("ai_suggestion", "silent_message"),
    ],
)
def test_kinds_and_their_triggers(kind: str, trigger: str) -> None:
    assert rules.trigger_for_kind(kind) == trigger


def test_set_state_cannot_ask_for_created() -> None:
    with pytest.raises(ValueError, match="created"):
        next_state("working", StateEvent("set_state", "created"))


def test_late_events_are_older_than_the_last_state_change() -> None:
    assert rules.is_late(T0 - timedelta(seconds=1), T0)
    assert not rules.is_late(T0, T0)


ACTIVE = TicketSpan(2, "working", T0 + timedelta(days=2))
CLOSED = TicketSpan(1, "closed", T0, T0 + timedelta(days=1))


@pytest.mark.parametrize(
    ("sent_at", "active", "closed", "expected"),
    [
        (T0 + timedelta(days=3), ACTIVE, CLOSED, "active"),
        (T0 + timedelta(hours=5), ACTIVE, CLOSED, "closed"),  # written while ticket 1 was open
        (T0 + timedelta(days=1), ACTIVE, CLOSED, "closed"),  # at the closing instant
        (T0 + timedelta(days=1, seconds=1), None, CLOSED, "new"),
        (T0 - timedelta(days=1), None, CLOSED, "new"),  # before every ticket: not covered
        (T0 - timedelta(days=1), ACTIVE, None, "active"),
        (T0, None, None, "new"),
    ],
)
def test_where_a_customer_message_goes(sent_at, active, closed, expected) -> None:
    assert place_message(sent_at, active, closed) == expected


def test_closure_is_due_a_period_after_solved_or_pending() -> None:
    assert closure_due_at("solved", T0, 60) == T0 + timedelta(minutes=60)
    assert closure_due_at("pending", T0, 1440) == T0 + timedelta(days=1)
    assert closure_due_at("working", T0, 60) is None
    assert not is_closure_due("solved", T0, 60, T0 + timedelta(minutes=59, seconds=59))
    assert is_closure_due("solved", T0, 60, T0 + timedelta(minutes=60))
    assert is_followup_due("followup", T0, T0) and not is_followup_due(
        "followup", T0, T0 - timedelta(seconds=1)
    )
    assert not is_followup_due("working", None, T0)


@pytest.mark.parametrize(
    ("current", "requested", "expected"),
    [
        ("low", None, "normal"),
        ("normal", None, "high"),
        ("high", None, "urgent"),
        ("urgent", None, "urgent"),
        ("normal", "urgent", "urgent"),
        ("high", "low", "high"),  # escalation never lowers
        ("high", "high", "high"),
    ],
)
def test_escalation(current: str, requested: str | None, expected: str) -> None:
    assert escalated_priority(current, requested) == expected


@pytest.mark.parametrize(
    ("score", "label"), [(None, None), (0.3, "positive"), (0.05, "positive"), (0.0, "neutral"),
                         (-0.049, "neutral"), (-0.05, "negative"), (-0.9, "negative")],
)  # fmt: skip
def test_sentiment_label_by_the_neutral_band(score, label) -> None:
    assert rules.sentiment_label(score, rules.NEUTRAL_BAND) == label


def test_the_neutral_band_is_the_feedback_engines() -> None:
    from assets.feedback.sentiment import VaderEngine

    assert rules.NEUTRAL_BAND == VaderEngine.neutral_band


# --- conditions -----------------------------------------------------------------------------------

TICKET = TicketProperties(
    origin="Acme Facebook",
    channel="facebook",
    state="working",
    priority="high",
    language="de",
    sentiment="negative",
    sentiment_score=-0.6,
    tags=("vip", "refund"),
    topic="billing",
    group="tier2",
    custom_fields={"plan": "pro", "seats": 12, "beta": True, "regions": ["eu", "us"]},
)


def leaf(field: str, op: str, value) -> dict:
    return {"field": field, "op": op, "value": value}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"all": []}, True),
        ({"any": []}, False),
        (leaf("state", "eq", "working"), True),
        (leaf("state", "in", ["pending", "solved"]), False),
        (leaf("channel", "eq", "facebook"), True),
        (leaf("origin", "contains", "facebook"), True),  # case-insensitive substring
        (leaf("priority", "gt", "normal"), True),
        (leaf("priority", "lt", "high"), False),
        (leaf("priority", "in", ["high", "urgent"]), True),
        (leaf("language", "eq", "de"), True),
        (leaf("sentiment", "eq", "negative"), True),
        (leaf("sentiment", "lt", -0.5), True),
        (leaf("sentiment", "gt", 0), False),
        (leaf("tags", "contains", "vip"), True),
        (leaf("tags", "in", ["outage", "refund"]), True),
        (leaf("tags", "eq", ["refund", "vip"]), True),
        (leaf("tags", "eq", ["vip"]), False),
        (leaf("topic", "eq", "billing"), True),
        (leaf("group", "eq", "tier2"), True),
        (leaf("group", "eq", None), False),
        (leaf("custom_fields.plan", "eq", "pro"), True),
        (leaf("custom_fields.seats", "gt", 10), True),
        (leaf("custom_fields.seats", "eq", 12.0), True),
        (leaf("custom_fields.beta", "eq", 1), False),  # true is not 1
        (leaf("custom_fields.seats", "gt", "10"), False),  # a number is not compared to a string
        (leaf("custom_fields.regions", "contains", "eu"), True),
        (leaf("custom_fields.missing", "eq", None), True),
        (leaf("custom_fields.missing", "gt", 1), False),
        ({"not": leaf("state", "eq", "closed")}, True),
        (
            {"all": [leaf("channel", "eq", "facebook"),
                     {"any": [leaf("tags", "contains", "churn-risk"),
                              leaf("priority", "eq", "high")]}]},
            True,
        ),
    ],
)  # fmt: skip
def test_conditions_match_tickets(condition: dict, expected: bool) -> None:
    assert validate_condition(condition) is condition
    assert matches(condition, TICKET) is expected


def test_missing_properties_match_only_eq_null() -> None:
    bare = TicketProperties(origin="o", channel="x", state="created")
    assert matches(leaf("group", "eq", None), bare)
    assert not matches(leaf("sentiment", "lt", 0.5), bare)
    assert not matches(leaf("topic", "contains", "bill"), bare)
    assert not matches(leaf("language", "in", ["en"]), bare)


@pytest.mark.parametrize(
    ("condition", "error"),
    [
        ([], "Expected an object, got list - at `$`"),
        ({}, "Expected `all`, `any`, `not` or a comparison"),
        ({"all": {}}, "`all` needs a list of conditions, got dict - at `$.all`"),
        ({"all": [], "any": []}, "Unexpected key 'any' beside `all` - at `$`"),
        ({"all": [leaf("colour", "eq", "red")]}, "Unknown field 'colour'"),
        ({"all": [{"field": "state", "op": "eq"}]}, "missing required key `value` - at `$.all[0]`"),
        ({"any": [leaf("state", "like", "x")]},
         "Operator 'like' does not apply to state (expected one of eq, in) - at `$.any[0].op`"),
        (leaf("state", "eq", "open"), "Unknown state 'open' (expected one of created,"),
        (leaf("channel", "in", ["facebook", "tiktok"]), "Unknown channel 'tiktok'"),
        (leaf("priority", "gt", "extreme"), "Unknown priority 'extreme'"),
        (leaf("state", "lt", "working"), "does not apply to state"),
        (leaf("sentiment", "lt", 2), "needs a score in [-1, 1] - at `$.value`"),
        (leaf("tags", "in", []), "needs a non-empty list of strings - at `$.value`"),
        (leaf("topic", "eq", 3), "needs a non-empty string - at `$.value`"),
        (leaf("custom_fields.plan", "in", [{"a": 1}]), "non-empty list of values"),
        (leaf("custom_fields.", "eq", "x"), "Unknown field 'custom_fields.'"),
        ({"not": {"not": leaf("state", "eq", "x")}}, "at `$.not.not.value`"),
        ({**leaf("state", "eq", "working"), "extra": 1}, "Unknown key 'extra' in a comparison"),
    ],
)  # fmt: skip
def test_a_bad_condition_gets_one_clear_error(condition, error: str) -> None:
    with pytest.raises(ConditionError) as caught:
        validate_condition(condition)
    assert error in str(caught.value)


def test_conditions_are_bounded() -> None:
    deep: dict = leaf("state", "eq", "working")
    for _ in range(rules.MAX_CONDITION_DEPTH + 1):
        deep = {"not": deep}
    with pytest.raises(ConditionError, match="Nested deeper"):
        validate_condition(deep)
    wide = {"any": [leaf("state", "eq", "working")] * (rules.MAX_CONDITION_NODES + 1)}
    with pytest.raises(ConditionError, match="More than"):
        validate_condition(wide)
