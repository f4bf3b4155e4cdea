"""Declared message formats (resources/messages.py) and every queue's producer-declared key."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import pytest

from orchestration.message_keys import MESSAGE_KEYS, message_key
from resources.messages import decode, id_key, tenant_id_key
from resources.queues import QUEUE_NAMES


class Invalid(ValueError):
    pass


class Sample(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    kind: Literal["user", "system", "bot"]
    count: int = 0
    extra: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise Invalid("name: must not be blank")


GOOD = {"name": "n", "kind": "user"}


@pytest.mark.parametrize(
    ("body", "where", "problem"),
    [
        ({"kind": "user"}, "", "name: missing"),
        ({**GOOD, "colour": "red"}, "", "colour: unknown field"),
        ({**GOOD, "kind": "robot"}, "", "kind: expected 'user', 'system' or 'bot', got 'robot'"),
        ({**GOOD, "count": "3"}, "", "count: expected `int`, got `str`"),
        ({**GOOD, "count": True}, "", "count: expected `int`, got `bool`"),
        ({**GOOD, "extra": [1]}, "", "extra: expected `object | null`, got `array`"),
        ({**GOOD, "name": " "}, "", "name: must not be blank"),  # a __post_init__ check
        ({**GOOD, "name": " "}, "item[2]", "item[2].name: must not be blank"),
        ({"kind": "user"}, "item[2]", "item[2].name: missing"),
        ([GOOD], "", "message: expected a JSON object, got list"),
        ("text", "item", "item: expected a JSON object, got str"),
    ],
)
def test_decode_names_the_field_and_the_reason(body, where, problem):
    with pytest.raises(Invalid) as caught:
        decode(body, Sample, Invalid, where=where)
    assert str(caught.value) == problem


def test_decode_returns_the_struct():
    assert decode({**GOOD, "count": 2}, Sample, Invalid) == Sample(name="n", kind="user", count=2)


@pytest.mark.parametrize(
    ("key", "body", "expected"),
    [
        (lambda b: id_key("activity_id", b), {"activity_id": 7}, "activity_id:7"),
        (lambda b: id_key("activity_id", b), {"activity_id": ""}, None),
        (lambda b: id_key("activity_id", b), {}, None),
        (lambda b: tenant_id_key("event_id", b), {"tenant_id": "t", "event_id": 1}, "event_id:t:1"),
        (lambda b: tenant_id_key("event_id", b), {"event_id": 1}, None),
    ],
)
def test_key_helpers(key, body, expected):
    assert key(body) == expected


def test_every_queue_has_a_declared_key():
    assert set(MESSAGE_KEYS) == set(QUEUE_NAMES)
    assert message_key("email_events.eu-1") is MESSAGE_KEYS["email_events"]
    assert MESSAGE_KEYS["activity_deletes"] is None  # no id: the body's hash serves


@pytest.mark.parametrize(
    ("queue", "body", "expected"),
    [
        ("activities", {"activity_id": "a-1", "tenant_id": "t"}, "activity_id:a-1"),
        ("email_sent", {"notification_id": "n-1"}, "notification_id:n-1"),
        # an email event is one of many of its notification: its own id, never the notification's
        ("email_events.eu-1", {"event_id": "ses:1", "notification_id": "n-1"}, "event_id:ses:1"),
        ("feedback", {"event_id": "e-1", "item_id": "i-1"}, "event_id:e-1"),
        # conversation ids are unique per tenant only
        ("messages", {"type": "message", "tenant_id": "t", "message_id": "m"}, "message:t:m"),
        (
            "messages",
            {"type": "message_hidden", "tenant_id": "t", "message_id": "m", "event_id": "h2"},
            "message_hidden:t:h2",
        ),
        ("conversation_events", {"tenant_id": "t", "event_id": "e"}, "event_id:t:e"),
        ("messages", {"type": "message", "message_id": "m"}, None),
    ],
)
def test_each_queue_keys_its_messages_by_what_makes_them_unique(queue, body, expected):
    key = message_key(queue)
    assert key is not None and key(body) == expected
