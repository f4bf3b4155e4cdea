"""JSON the platform can take (resources/payloads.py): the depth limit before decoding, what
PostgreSQL jsonb cannot store (checked against PostgreSQL itself), and the one message limit."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

from resources.payloads import (
    MAX_MESSAGE_BYTES,
    MessageTooLarge,
    PayloadError,
    encode_message,
    exceeds_depth,
    loads,
    unstorable,
)


@pytest.mark.parametrize(
    ("raw", "deeper"),
    [
        (b"[" * 64 + b"]" * 64, False),
        (b"[" * 65 + b"]" * 65, True),
        (b"[{" * 32 + b"}]" * 32, False),
        (b"[{" * 33 + b"}]" * 33, True),
        (b'{"a": "' + b"[" * 500 + b'"}', False),  # brackets inside a string do not count
        (b'{"a": "\\"[[[[", "b": [[1]]}', False),  # nor after an escaped quote
        (b"[[]" * 1000, True),  # no long run of openers, still deep
        (b"[" + b"[]," * 100_000 + b"[]]", False),  # many brackets, shallow
        (b"[[[1,2", False),  # malformed: the decoder says where
    ],
)
def test_depth_limit(raw, deeper):
    assert exceeds_depth(raw, 64) is deeper


def test_hundred_thousand_levels_are_refused_before_decoding_and_fast():
    started = time.monotonic()
    with pytest.raises(PayloadError, match="nested deeper than 64 levels"):
        loads(b"[" * 100_000 + b"]" * 100_000)
    assert time.monotonic() - started < 1


def test_loads_reports_malformed_json_without_values():
    for raw, message in [
        (b'{"a": ', "not valid JSON: Expecting value"),
        (b"\xff\xfe", "not valid JSON: not UTF-8"),
        (b"9" * 5000, "not valid JSON: Exceeds the limit"),
    ]:
        with pytest.raises(PayloadError, match=message):
            loads(raw)
    # NaN and Infinity decode, so verified input holding them can be kept and named
    assert str(loads(b"[NaN, -Infinity, 1e400]")) == "[nan, -inf, inf]"


HOSTILE = [
    ({"text": "a\x00b"}, "text: holds a NUL character"),
    ({"k\x00": 1}, "a key holds a NUL character"),
    ({"a": [{"b": "\ud800"}]}, "a[0].b: holds a lone surrogate"),
    ({"score": float("nan")}, "score: NaN or Infinity"),
    ({"score": float("inf")}, "score: NaN or Infinity"),
    ({"n": 10**200_000}, "n: number out of range"),
]


@pytest.mark.parametrize(("value", "reason"), HOSTILE)
def test_what_jsonb_cannot_store_is_named_and_postgres_agrees(db, value, reason):
    assert reason in unstorable(value)
    with pytest.raises((psycopg.DataError, ValueError)):
        db.execute("select %s::jsonb", (Jsonb(value),))


@pytest.mark.parametrize(
    "value",
    [{"emoji": "🎉 ok", "n": 10**4000, "f": 1e300, "deep": [[[["x"]]]], "t": True, "z": None}],
)
def test_what_jsonb_can_store_passes_and_postgres_agrees(db, value):
    assert unstorable(value) is None
    assert db.execute("select %s::jsonb is not null", (Jsonb(value),)).fetchone()[0]
    assert json.loads(encode_message(value, "id"))["emoji"] == "🎉 ok"


def test_one_message_limit_counts_body_and_idempotency_id():
    body = {"pad": ""}
    overhead = len(encode_message(body, "key:1")) + len("key:1") + len("dedup_id") + 6
    body["pad"] = "x" * (MAX_MESSAGE_BYTES - overhead)
    encode_message(body, "key:1")  # exactly at the limit
    body["pad"] += "x"
    with pytest.raises(MessageTooLarge, match="262145 bytes; a queue message takes at most"):
        encode_message(body, "key:1")
