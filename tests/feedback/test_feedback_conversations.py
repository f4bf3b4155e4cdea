"""The `conversations` feedback source: a generated stream of two tenants goes through queue
`messages` and the real drain into raw.conversation_messages; the feedback pull then takes each
counting customer message of the workspace's tenant once (filtered by channel or origin when
asked), with its rating, and enrichment scores it. Half the stream first, then the rest: late
and newly visible messages are picked up, nothing twice. Bad `sources add` input is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest

from orchestration.cli import main
from sandbox.conversations import ConversationStream

pytestmark = pytest.mark.slow


def live_customer_messages(bodies: list[dict[str, Any]], tenant: str) -> dict[str, dict]:
    """The model: customer messages of `tenant` that count after these deliveries (not
    removed; hidden only if the newest hide/unhide by occurred_at is a hide)."""
    messages: dict[str, dict] = {}
    removed: set[str] = set()
    flags: dict[str, dict[str, dict]] = {}  # message id -> event id -> event
    for body in bodies:
        if body["tenant_id"] != tenant:
            continue
        if body["type"] == "message":
            if body["kind"] == "customer":
                messages.setdefault(body["message_id"], body)
        elif body["type"] == "message_removed":
            removed.add(body["message_id"])
        else:
            flags.setdefault(body["message_id"], {})[body["event_id"]] = body
    hidden = {
        message_id
        for message_id, events in flags.items()
        if max(events.values(), key=lambda e: e["occurred_at"])["type"] == "message_hidden"
    }
    return {m: body for m, body in messages.items() if m not in removed and m not in hidden}


@pytest.fixture
def stream() -> ConversationStream:
    suffix = uuid.uuid4().hex[:8]
    return ConversationStream(
        seed=21,
        tenants=(f"cva{suffix}", f"cvb{suffix}"),
        origins_per_tenant=6,
        authors=80,
        messages=900,
        start=datetime.now(UTC) - timedelta(days=3),
        days=2,
        duplicate_rate=0.05,
        hidden_rate=0.05,
        removed_rate=0.02,
    )


@pytest.fixture
def registered(stream, warehouse):
    from assets.conversations.store import add_origin

    with warehouse.connection() as conn:
        for origin in stream.origins():
            add_origin(conn, origin.tenant_id, origin.name, origin.channel, origin.ref)
    return stream


def drain_messages(resources, queues, bodies: list[dict]) -> None:
    from assets.conversations.defs import ConversationSettings, conversation_messages_drain

    queues.send("messages", bodies)
    result = dg.materialize(
        [conversation_messages_drain],
        resources={**resources, "conversation_settings": ConversationSettings()},
    )
    assert result.success
    assert queues.depth("messages") == 0
    assert queues.dead_letters("messages") == []


def pull(dagster_resources, workspace: str) -> dict[str, int]:
    from assets.feedback.defs import feedback_enrichment, feedback_items

    result = dg.materialize(
        [feedback_items, feedback_enrichment],
        resources=dagster_resources,
        run_config={
            "ops": {"feedback_items": {"config": {"workspace": workspace, "drain": False}}}
        },
    )
    assert result.success
    meta = result.asset_materializations_for_node("feedback_items")[0].metadata
    return {key: meta[key].value for key in ("pulled_new", "pulled_updated", "pulled_fetched")}


def items(db, workspace) -> dict[str, tuple]:
    rows = db.execute(
        "select external_id, text, author, rating, created_at, raw_data, language,"
        " sentiment_label from raw.feedback_items where workspace_id = %s",
        (workspace.workspace_id,),
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_customer_messages_feed_the_workspace_once(
    registered, resources, dagster_resources, feedback_queue, make_workspace, add_source, db
):
    stream = registered
    tenant, other = stream.tenants
    origins = {o.name: o for o in stream.origins() if o.tenant_id == tenant}
    every = make_workspace(tenant=tenant)
    add_source(every, "conversations")
    social = make_workspace(tenant=tenant)
    add_source(social, "conversations", channel=["facebook", "instagram"])
    x_origin = next(name for name, o in origins.items() if o.channel == "x")
    only_x = make_workspace(tenant=tenant)
    add_source(only_x, "conversations", origin=[x_origin])

    # first half the stream, less some customers' later messages (with their moderation
    # events), which come with the second half: late, older than much already stored
    bodies = stream.messages()
    half = len(bodies) // 2
    openers = {messages[0].message_id for messages in stream.truth().threads().values()}
    held = {
        body["message_id"]
        for body in bodies[:half]
        if body["type"] == "message" and body["tenant_id"] == tenant
        and body["kind"] == "customer" and body["message_id"] not in openers
    }  # fmt: skip
    held = set(sorted(held)[::4])
    now = [body for body in bodies[:half] if body["message_id"] not in held]
    later = [body for body in bodies[:half] if body["message_id"] in held] + bodies[half:]
    drain_messages(resources, feedback_queue, now)
    first = live_customer_messages(now, tenant)
    assert pull(dagster_resources, every.name)["pulled_new"] == len(first) > 50
    assert set(items(db, every)) == set(first)

    # the rest arrives: later, late (older sent_at) and unhidden messages are picked up
    drain_messages(resources, feedback_queue, later)
    final = live_customer_messages(now + later, tenant)
    new = set(final) - set(first)
    newest_first = max(body["sent_at"] for body in first.values())
    assert len({m for m in new & held if final[m]["sent_at"] < newest_first}) > 5
    counts = pull(dagster_resources, every.name)
    assert (counts["pulled_new"], counts["pulled_updated"]) == (len(new), 0)
    # a message pulled before it was removed or hidden stays, as with the other kinds
    stored = items(db, every)
    assert set(stored) == set(first) | set(final)
    again = pull(dagster_resources, every.name)
    assert (again["pulled_new"], again["pulled_updated"]) == (0, 0)
    assert again["pulled_fetched"] >= len(final)  # every counting message was read again

    # the uniform format: author, time, rating and the message's extras; enrichment ran
    for message_id in final:
        text, author, rating, created_at, raw, language, label = stored[message_id]
        body = final[message_id]
        said = body["text"]
        if (
            raw["channel"] == "mail"
        ):  # the sandbox frames mails: "Hello,\n\n...\n\nBest regards,\nAnn"
            said = said.split("\n\n")[1]
            assert "regards" not in text.lower() and not text.startswith("Hello")
        assert text == " ".join(said.split())
        assert author == body["author"].get("name", body["author"]["external_id"])
        assert rating == (str(body["rating"]) if "rating" in body else None)
        assert created_at == datetime.fromisoformat(body["sent_at"].replace("Z", "+00:00"))
        assert origins[raw["origin"]].ref == body["origin"]
        assert raw["channel"] == origins[raw["origin"]].channel and raw["ticket_sequence"] >= 1
        assert language and label in ("positive", "neutral", "negative")
    assert any(value[2] for value in stored.values())  # some reviews carry a rating

    # filters: channels, one origin; never another tenant's messages
    channel_of = {o.ref: o.channel for o in stream.origins()}
    pull(dagster_resources, social.name)
    assert set(items(db, social)) == {
        m for m, body in final.items() if channel_of[body["origin"]] in ("facebook", "instagram")
    }
    pull(dagster_resources, only_x.name)
    assert set(items(db, only_x)) == {
        m for m, body in final.items() if body["origin"] == origins[x_origin].ref
    }
    assert set(items(db, social)) and set(items(db, only_x))
    others = set(live_customer_messages(bodies, other))
    assert others and not others & set(items(db, every))


@pytest.mark.parametrize(
    ("mail", "body"),
    [
        ("Hello,\n\nThe invoice is wrong.\n\nBest regards,\nAnn", "The invoice is wrong."),
        ("Guten Tag,\n\nDer Export geht nicht.\n\nViele Grüße,\nLena", "Der Export geht nicht."),
        ("Hi team, the export fails.\nThanks,\nBob Smith\nAcme Corp", "Hi team, the export fails."),
        ("Hello,\n\nThanks!\n\nBest regards,\nEmma", "Thanks!"),  # the last sign-off only
        ("Thank you so much, it works now!\nBest,\nAnn", "Thank you so much, it works now!"),
        ("Thanks!", "Thanks!"),  # a one-line mail is all body
        (
            "Hello Bob, the app crashes.\nStill broken.",
            "Hello Bob, the app crashes.\nStill broken.",
        ),
        ("Bonjour,\nÇa ne marche pas.\nA\nB\nC\nCordialement", "Ça ne marche pas.\nA\nB\nC"),
        ("Hi,\nFine.\nCordialement\nA\nB\nC\nD", "Fine.\nCordialement\nA\nB\nC\nD"),  # too far
    ],
)
def test_strip_mail_frame(mail, body):
    from assets.feedback.sources.conversations import strip_mail_frame

    assert strip_mail_frame(mail) == body


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sources_add_conversations_refuses_unknown_origins_and_channels(
    capsys, registered, make_workspace, db
):
    tenant = registered.tenants[0]
    workspace = make_workspace(tenant=tenant)
    origin = registered.origins()[0].name
    code, _, err = run(
        capsys, "sources", "add", workspace.name, "--kind", "conversations", "--origin", "nope"
    )
    assert code == 2 and "has no origin named nope" in err and err.count("\n") == 1
    code, _, err = run(
        capsys, "sources", "add", workspace.name, "--kind", "conversations", "--channel", "fax"
    )
    assert code == 2 and "--channel: unknown fax" in err
    stored = db.execute(
        "select count(*) from control.feedback_sources where workspace_id = %s",
        (workspace.workspace_id,),
    ).fetchone()[0]
    assert stored == 0  # nothing half-written
    code, out, _ = run(
        capsys,
        "sources", "add", workspace.name, "--kind", "conversations", "--origin", origin,
        "--channel", "Facebook",
    )  # fmt: skip
    assert code == 0 and "(conversations) added" in out
    config = db.execute(
        "select config from control.feedback_sources where workspace_id = %s",
        (workspace.workspace_id,),
    ).fetchone()[0]
    assert config == {"origins": [origin], "channels": ["facebook"]}
