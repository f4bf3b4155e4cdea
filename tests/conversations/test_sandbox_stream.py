"""The sandbox's conversation stream generator: reproducible per seed, every body in the queue
formats of issue 12, and the mess it promises (duplicates, bounded reordering, moderation events)
really there, at the benchmark's scale too. No database: the generator is plain Python."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from assets.feedback.rules import score_sentiment
from sandbox.conversations import (
    CHANNELS,
    REVIEW_CHANNELS,
    ConversationStream,
    ThreadKey,
    iso,
    queue_changed_event,
)

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
KINDS = {"customer", "agent_reply", "private_note", "ai_message", "ai_suggestion"}
MODERATION = {"message_removed", "message_hidden", "message_unhidden"}
STATES = {"working", "pending", "solved", "closed", "followup"}
PRIORITIES = {"low", "normal", "high", "urgent"}


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def check_message_body(body: dict[str, Any], origins: dict[str, str]) -> None:
    """Assert one body of queue `messages` has exactly the agreed shape."""
    assert isinstance(body["tenant_id"], str) and body["tenant_id"]
    assert isinstance(body["message_id"], str) and body["message_id"]
    if body["type"] in MODERATION:
        assert set(body) == {"type", "tenant_id", "message_id", "event_id", "occurred_at"}
        assert body["event_id"] and ISO.match(body["occurred_at"])
        return
    assert body["type"] == "message"
    required = {"type", "tenant_id", "message_id", "origin", "author", "kind", "text", "sent_at"}
    optional = {"attachments", "rating", "customer"}
    assert required <= set(body) <= required | optional, set(body) ^ required
    assert origins[body["origin"]] == body["tenant_id"]  # a registered origin of its tenant
    assert set(body["author"]) <= {"external_id", "name"} and body["author"]["external_id"]
    assert body["kind"] in KINDS
    assert isinstance(body["text"], str) and body["text"].strip()
    assert ISO.match(body["sent_at"])
    if body["kind"] == "customer":
        assert "customer" not in body
    else:
        assert isinstance(body["customer"], str) and body["customer"]
        assert body["customer"] != body["author"]["external_id"]
        assert "rating" not in body
    if "rating" in body:
        assert type(body["rating"]) is int and 1 <= body["rating"] <= 5
    for attachment in body.get("attachments", []):
        assert set(attachment) == {"name", "url", "size", "content_type"}
        assert attachment["url"].startswith("https://") and attachment["name"]
        assert type(attachment["size"]) is int and attachment["size"] > 0
        assert "/" in attachment["content_type"]


def check_event_body(body: dict[str, Any], now: datetime, agents: set[str]) -> None:
    """Assert one body of queue `conversation_events` has the agreed shape."""
    common = {"type", "event_id", "tenant_id", "occurred_at", "sequence", "actor"}
    assert common <= set(body)
    assert body["event_id"] and ISO.match(body["occurred_at"]) and parse(body["occurred_at"]) <= now
    assert type(body["sequence"]) is int and body["sequence"] >= 1
    assert body["actor"]["type"] in ("agent", "rule") and body["actor"]["id"]
    if body["actor"]["type"] == "agent":
        assert body["actor"]["id"] in agents
    extra = set(body) - common
    if body["type"] == "set_state":
        assert body["state"] in STATES
        if body["state"] == "followup":
            assert extra == {"state", "until"} and parse(body["until"]) > now
        else:
            assert extra == {"state"}
    elif body["type"] == "assign":
        assert extra and extra <= {"agent", "group"}
        assert body.get("agent", next(iter(agents))) in agents
    elif body["type"] == "set_metadata":
        assert extra == {"tags", "topic", "custom_fields"}
        assert isinstance(body["tags"], list) and all(isinstance(t, str) for t in body["tags"])
        assert isinstance(body["custom_fields"], dict) and isinstance(body["topic"], str)
    elif body["type"] == "escalate":
        assert extra <= {"priority", "group"} and body.get("priority", "high") in PRIORITIES
    else:
        pytest.fail(f"unexpected event type {body['type']}")


def dedup_id(body: dict[str, Any]) -> str:
    return body.get("event_id") or body["message_id"]


@pytest.fixture(scope="module")
def stream() -> ConversationStream:
    return ConversationStream(
        seed=11,
        tenants=("acme", "globex"),
        origins_per_tenant=8,  # channels repeat: a customer can write on two facebook pages
        authors=400,
        messages=5000,
        duplicate_rate=0.05,
        reorder_window=6,
        multi_origin_share=0.2,
    )


def test_same_seed_same_stream_other_seed_other_stream():
    one = ConversationStream(seed=5, authors=50, messages=600)
    two = ConversationStream(seed=5, authors=50, messages=600)
    assert one.origins() == two.origins()
    assert one.messages() == two.messages()
    assert one.truth() == two.truth()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert one.events_for([("acme", 1), ("acme", 2)], now) == two.events_for(
        [("acme", 1), ("acme", 2)], now
    )
    other = ConversationStream(seed=6, authors=50, messages=600)
    assert other.messages() != one.messages()
    # ids differ between seeds, so two streams can share a queue (its dedup ids are global)
    assert not {b["message_id"] for b in other.messages()} & {
        b["message_id"] for b in one.messages()
    }


def test_every_body_matches_the_queue_formats(stream):
    origins = {o.ref: o.tenant_id for o in stream.origins()}
    bodies = stream.messages()
    for body in bodies:
        check_message_body(body, origins)
    now = datetime(2026, 12, 5, tzinfo=UTC)
    agents = {a.external_id for tenant in stream.tenants for a in stream.agents(tenant)}
    events = stream.events_for([(t, n) for t in stream.tenants for n in range(1, 200)], now)
    for body in events:
        check_event_body(body, now, agents)
    assert {b["type"] for b in events} == {"set_state", "assign", "set_metadata", "escalate"}
    assert {b["state"] for b in events if b["type"] == "set_state"} == STATES


def test_origins_cover_the_channels_of_each_tenant(stream):
    origins = stream.origins()
    assert len(origins) == 16 and len({o.ref for o in origins}) == 16
    assert len({(o.tenant_id, o.name) for o in origins}) == 16
    for tenant in ("acme", "globex"):
        assert {o.channel for o in origins if o.tenant_id == tenant} == set(CHANNELS)
    used = Counter((b["tenant_id"], b["origin"]) for b in stream.messages() if "origin" in b)
    assert set(used) == {(o.tenant_id, o.ref) for o in origins}  # every origin gets traffic


def test_threads_authors_and_kinds_as_described(stream):
    truth = stream.truth()
    assert len(truth.planned) == 5000 == sum(truth.messages_per_thread().values())
    assert len({m.message_id for m in truth.planned}) == 5000
    threads = truth.threads()
    customers = {(key.tenant_id, key.customer) for key in threads}
    assert len(customers) == 400
    assert len(threads) > 400  # some customers write on a second origin: a second thread
    start, end = iso(stream.start), iso(stream.end)
    for key, messages in threads.items():
        assert messages[0].kind == "customer" and messages[0].author == key.customer
        assert start <= messages[0].sent_at and messages[-1].sent_at < end
        sent = [m.sent_at for m in messages]
        assert sent == sorted(sent) and len(set(sent)) == len(sent)  # strictly increasing
        for message in messages:
            if message.kind == "customer":
                assert message.author == key.customer
            else:
                assert message.author != key.customer
    assert set(truth.kinds()) == KINDS
    assert truth.kinds()["customer"] > truth.kinds()["agent_reply"] > truth.kinds()["ai_message"]
    per_thread = truth.messages_per_thread()
    assert max(per_thread.values()) >= 5 * (5000 / len(threads))  # chatty customers exist
    # non-customer bodies name the thread's customer
    by_id = {m.message_id: m for m in truth.planned}
    for body in stream.messages():
        if body["type"] == "message":
            planned = by_id[body["message_id"]]
            assert ThreadKey(body["tenant_id"], body["origin"], planned.customer) in threads
            assert body.get("customer", body["author"]["external_id"]) == planned.customer


def test_realistic_texts_ratings_and_attachments(stream):
    truth = stream.truth()
    bodies = [b for b in stream.messages() if b["type"] == "message"]
    languages = Counter(m.language for m in truth.planned if m.kind == "customer")
    assert languages["en"] > sum(languages.values()) / 2 and len(languages) >= 5
    tones = Counter(m.tone for m in truth.planned if m.kind == "customer")
    assert tones["negative"] and tones["positive"] and tones["neutral"]
    rated = [b for b in bodies if "rating" in b]
    assert rated and {b["origin"] for b in rated} <= {
        o.ref for o in stream.origins() if o.channel in REVIEW_CHANNELS
    }
    assert all(b["kind"] == "customer" for b in rated)
    ratings = {m.message_id: (m.tone, m.rating) for m in truth.planned if m.rating}
    assert all(r <= 2 for tone, r in ratings.values() if tone == "negative")
    assert all(r >= 4 for tone, r in ratings.values() if tone == "positive")
    assert any("attachments" in b and b["kind"] == "customer" for b in bodies)
    assert any("attachments" in b and b["kind"] == "agent_reply" for b in bodies)
    x_origins = {o.ref for o in stream.origins() if o.channel == "x"}
    x_customer = [b for b in bodies if b["origin"] in x_origins and b["kind"] == "customer"]
    assert x_customer and all(b["text"].startswith("@") for b in x_customer)
    assert all(len(b["text"]) <= 280 for b in x_customer)
    assert any(not b["text"].isascii() for b in bodies)  # other languages than English


def test_customer_tone_reads_as_meant_to_the_sentiment_engine(stream):
    truth = stream.truth()
    by_id = {m.message_id: m for m in truth.planned}
    texts: dict[str, list[str]] = defaultdict(list)
    for body in stream.messages():
        planned = by_id.get(body["message_id"]) if body["type"] == "message" else None
        if planned and planned.kind == "customer" and planned.language == "en":
            texts[planned.tone].append(body["text"])
    mean = {
        tone: sum(score for score, _ in score_sentiment(items)) / len(items)
        for tone, items in texts.items()
    }
    assert mean["positive"] > mean["neutral"] > mean["negative"]


def test_duplicates_are_real_resends(stream):
    bodies = stream.messages()
    truth = stream.truth()
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for body in bodies:
        groups[dedup_id(body)].append(body)
    resent = {key: copies for key, copies in groups.items() if len(copies) > 1}
    assert len(resent) > 0.03 * len(truth.planned)
    assert truth.duplicates == len(bodies) - len(groups)
    assert truth.deliveries == len(bodies)
    for copies in resent.values():
        assert all(copy == copies[0] for copy in copies)
        assert copies[1] is not copies[0]
        if "author" in copies[0]:
            assert copies[1]["author"] is not copies[0]["author"]
    # some re-sends come right away, some much later
    position = defaultdict(list)
    for index, body in enumerate(bodies):
        position[dedup_id(body)].append(index)
    gaps = [p[1] - p[0] for p in position.values() if len(p) > 1]
    assert min(gaps) <= 3 and max(gaps) > 100
    assert any(b["type"] in MODERATION for copies in resent.values() for b in copies)


def test_reordering_is_real_and_bounded(stream):
    truth = stream.truth()
    planned_rank = {m.message_id: rank for rank, m in enumerate(truth.planned)}
    delivered: list[str] = []
    seen: set[str] = set()
    for body in stream.messages():
        if body["type"] == "message" and body["message_id"] not in seen:
            seen.add(body["message_id"])
            delivered.append(body["message_id"])
    assert seen == set(planned_rank)
    displacement = [abs(rank - planned_rank[mid]) for rank, mid in enumerate(delivered)]
    assert max(displacement) < stream.reorder_window
    assert sum(1 for d in displacement if d) > len(delivered) / 3

    # out of order within a thread: what truth says, recomputed independently
    latest: dict[ThreadKey, str] = {}
    late = set()
    by_id = {m.message_id: m for m in truth.planned}
    for mid in delivered:
        message = by_id[mid]
        if message.sent_at < latest.get(message.thread, ""):
            late.add(mid)
        latest[message.thread] = max(latest.get(message.thread, ""), message.sent_at)
    assert late == truth.out_of_order and len(late) > 20
    assert any(by_id[mid].kind == "customer" for mid in late)

    # an agent's or the bot's message never comes before its session's opening customer message
    first_delivery = {mid: rank for rank, mid in enumerate(delivered)}
    openers = {}
    for message in truth.planned:
        openers.setdefault((message.thread, message.session), message)
    for message in truth.planned:
        opener = openers[(message.thread, message.session)]
        assert opener.kind == "customer"
        if message.kind != "customer":
            assert first_delivery[message.message_id] > first_delivery[opener.message_id]


def test_moderation_events_follow_their_messages(stream):
    truth = stream.truth()
    bodies = stream.messages()
    first_seen: dict[str, int] = {}
    events: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for index, body in enumerate(bodies):
        if body["type"] == "message":
            first_seen.setdefault(body["message_id"], index)
        else:
            events[body["message_id"]].append((index, body))
    assert truth.removed and truth.hidden and truth.unhidden
    sent = {m.message_id: m.sent_at for m in truth.planned}
    final_hidden = set()
    for message_id, items in events.items():
        assert all(index > first_seen[message_id] for index, _ in items)
        assert all(body["occurred_at"] > sent[message_id] for _, body in items)
        unique = {body["event_id"]: body for _, body in items}.values()
        kinds = sorted(unique, key=lambda body: body["occurred_at"])
        if kinds[-1]["type"] == "message_hidden":
            final_hidden.add(message_id)
        first_at = {b["type"]: i for i, b in reversed(items)}
        if "message_unhidden" in first_at:
            assert first_at["message_hidden"] < first_at["message_unhidden"]
    assert {m for m, items in events.items() if items[0][1]["type"] == "message_removed"} == set(
        truth.removed
    )
    assert final_hidden == truth.hidden
    assert not truth.hidden & truth.unhidden


def test_predicted_first_tickets_and_their_events(stream):
    predicted = stream.predicted_first_tickets()
    threads = stream.truth().threads()
    assert sum(len(v) for v in predicted.values()) == len(threads)
    first_customer: dict[ThreadKey, int] = {}
    for index, body in enumerate(stream.messages()):
        if body["type"] == "message" and body["kind"] == "customer":
            key = ThreadKey(body["tenant_id"], body["origin"], body["author"]["external_id"])
            first_customer.setdefault(key, index)
    for tenant, keys in predicted.items():
        assert all(k.tenant_id == tenant for k in keys)
        assert [first_customer[k] for k in keys] == sorted(first_customer[k] for k in keys)

    events = stream.events()
    last_sent = max(parse(m.sent_at) for m in stream.truth().planned)
    assert all(parse(e["occurred_at"]) <= last_sent + timedelta(minutes=1) for e in events)
    targeted = {(e["tenant_id"], e["sequence"]) for e in events}
    assert targeted <= {(t, n + 1) for t, keys in predicted.items() for n in range(len(keys))}
    assert len(targeted) > 0.7 * len(threads)


def test_events_for_a_ticket_do_not_depend_on_the_others(stream):
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    alone = stream.events_for([("globex", 7)], now)
    together = stream.events_for([("acme", 7), ("globex", 7), ("globex", 8)], now)
    assert alone and [e for e in together if (e["tenant_id"], e["sequence"]) == ("globex", 7)] == (
        alone
    )
    # a ticket's events are in time order, at most one set_state each
    for ticket in {(e["tenant_id"], e["sequence"]) for e in together}:
        mine = {e["event_id"]: e for e in together if (e["tenant_id"], e["sequence"]) == ticket}
        stamps = [e["occurred_at"] for e in mine.values()]
        assert stamps == sorted(stamps)
        assert sum(e["type"] == "set_state" for e in mine.values()) <= 1
    with pytest.raises(ValueError, match="initech"):
        stream.events_for([("initech", 1)], now)


def test_events_are_resent_alike_later_and_renewed_by_a_wave(stream):
    tickets = [("acme", n) for n in range(1, 40)]
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    first = stream.events_for(tickets, now)
    later = stream.events_for(tickets, now + timedelta(hours=5))
    assert [e["event_id"] for e in first] == [e["event_id"] for e in later]
    assert all(parse(e["occurred_at"]) > now for e in later)  # times move with now
    for a, b in zip(first, later, strict=True):
        if a["type"] == "set_state" and a["state"] == "followup":
            assert parse(b["until"]) - parse(a["until"]) == timedelta(hours=5)
    second_wave = stream.events_for(tickets, now, wave=1)
    assert not {e["event_id"] for e in first} & {e["event_id"] for e in second_wave}
    assert [(e["type"], e.get("state")) for e in second_wave] != [
        (e["type"], e.get("state")) for e in first
    ]
    ids = Counter(e["event_id"] for e in first)
    assert max(ids.values()) == 2  # some sent twice
    for event_id, copies in ids.items():
        if copies == 2:
            one, two = (e for e in first if e["event_id"] == event_id)
            assert one == two and one is not two


def test_queue_changed_event():
    at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    body = queue_changed_event("acme", "billing-urgent", at)
    assert body == {
        "type": "queue_changed",
        "event_id": "queue-changed:acme:billing-urgent:2026-12-01T09:30:00Z",
        "tenant_id": "acme",
        "queue": "billing-urgent",
        "occurred_at": "2026-12-01T09:30:00Z",
    }
    assert queue_changed_event("acme", "billing-urgent", at, "e1")["event_id"] == "e1"


def test_scale_of_the_benchmark():
    started = time.process_time()
    stream = ConversationStream(seed=3, authors=20_000, messages=200_000)
    bodies = stream.messages()
    elapsed = time.process_time() - started
    truth = stream.truth()
    assert len(truth.planned) == 200_000
    assert len({(k.tenant_id, k.customer) for k in truth.threads()}) == 20_000
    assert len(bodies) > 200_000 and truth.duplicates > 0 and truth.out_of_order
    # generous: a few seconds on a laptop, this bounds only a pathological slowdown
    assert elapsed < 60, f"{elapsed:.1f} s of CPU to generate 200,000 messages"


def test_a_long_thread_is_compressed_into_the_span():
    start = datetime(2026, 11, 20, tzinfo=UTC)
    stream = ConversationStream(seed=2, authors=1, messages=400, start=start, days=0.5)
    planned = stream.truth().planned
    assert planned[0].sent_at >= iso(start) and planned[-1].sent_at < iso(stream.end)
    assert len({m.session for m in planned}) > 10  # many sessions, all in half a day


def test_small_and_invalid_streams():
    tiny = ConversationStream(seed=1, authors=10, messages=4, duplicate_rate=0, reorder_window=0)
    assert [b["kind"] for b in tiny.messages() if b["type"] == "message"] == ["customer"] * 4
    planned = [m.message_id for m in tiny.truth().planned]
    delivered = [b["message_id"] for b in tiny.messages() if b["type"] == "message"]
    assert delivered == planned  # no reordering, no duplicates
    assert not ConversationStream(seed=1, authors=3, messages=0).messages()
    with pytest.raises(ValueError):
        ConversationStream(tenants=())
    with pytest.raises(ValueError):
        ConversationStream(tenants=("a", "a"))
