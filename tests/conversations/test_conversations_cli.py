"""`supportflow origins`, `work-queues` and `conversations`: what they print and store, and bad
input (one stderr line, exit 2, nothing written)."""

from __future__ import annotations

import json

from orchestration.cli import main
from tests.conversations.helpers import run_drain


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1, (code, out, err)
    return err


def test_origins_and_work_queues(capsys, conv_tables, tmp_path):
    db = conv_tables
    assert run(capsys, "origins", "add", "acme", "Acme FB", "--channel", "facebook",
               "--ref", "fb-1")[0] == 0  # fmt: skip
    assert (
        run(capsys, "origins", "add", "globex", "Acme FB", "--channel", "x", "--ref", "x-1")[0] == 0
    )
    assert "already has an origin with name 'Acme FB'" in refused(
        capsys, "origins", "add", "acme", "Acme FB", "--channel", "mail", "--ref", "m-1"
    )
    assert "ref 'fb-1'" in refused(
        capsys, "origins", "add", "acme", "Other", "--channel", "mail", "--ref", "fb-1"
    )
    assert (
        "Invalid value for '--channel'"
        in run(capsys, "origins", "add", "acme", "T", "--channel", "tiktok", "--ref", "t")[2]
    )
    code, out, _ = run(capsys, "origins", "list", "acme")
    assert code == 0 and out.splitlines() == ["acme\tAcme FB\tfacebook\tref=fb-1\tactive"]
    assert "give --tenant" in refused(capsys, "origins", "disable", "Acme FB")
    assert "no origin named 'Nope'" in refused(capsys, "origins", "enable", "Nope")
    code, out, _ = run(capsys, "origins", "disable", "Acme FB", "--tenant", "acme")
    assert code == 0 and "disabled" in out
    code, out, _ = run(capsys, "origins", "enable", "Acme FB", "--tenant", "acme")
    assert code == 0 and "0 shadowed message(s) replayed" in out

    condition = tmp_path / "vip.json"
    condition.write_text(json.dumps({"field": "tags", "op": "contains", "value": "vip"}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"any": [{"field": "state", "op": "like", "value": "x"}]}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    added = run(
        capsys,
        "work-queues",
        "add",
        "acme",
        "VIP",
        "--condition",
        condition,
        "--priority",
        10,
        "--visible-to",
        "group:tier2",
        "--visible-to",
        "agent:ann",
    )
    assert added[0] == 0  # fmt: skip
    err = refused(capsys, "work-queues", "add", "acme", "Bad", "--condition", bad)
    assert "--condition: Operator 'like' does not apply to state" in err and "$.any[0].op" in err
    assert "is not JSON" in refused(
        capsys, "work-queues", "add", "acme", "B", "--condition", broken
    )
    assert "cannot read" in refused(
        capsys, "work-queues", "add", "acme", "B", "--condition", tmp_path / "missing.json"
    )
    assert "expected group:NAME or agent:NAME" in refused(
        capsys, "work-queues", "add", "acme", "B", "--condition", condition, "--visible-to", "x"
    )
    assert "already has a work queue 'VIP'" in refused(
        capsys, "work-queues", "add", "acme", "VIP", "--condition", condition
    )
    assert "nothing to update" in refused(capsys, "work-queues", "update", "acme", "VIP")
    assert "has no work queue 'Nope'" in refused(
        capsys, "work-queues", "update", "acme", "Nope", "--priority", 1
    )
    assert run(capsys, "work-queues", "update", "acme", "VIP", "--priority", 3)[0] == 0
    code, out, _ = run(capsys, "work-queues", "list", "acme")
    assert code == 0
    (line,) = out.splitlines()
    assert line.startswith("acme\tVIP\tpriority=3\t")
    assert '"agents": ["ann"], "groups": ["tier2"]' in line and '"value": "vip"' in line
    assert db.execute("select count(*) from control.work_queues").fetchone()[0] == 1
    assert "MINUTES" in refused(capsys, "conversations", "close-after", "acme", "soon")
    assert run(capsys, "conversations", "close-after", "acme", 30)[0] == 0
    assert db.execute(
        "select close_after_minutes from control.conversation_settings where tenant_id = 'acme'"
    ).fetchone() == (30,)


def test_show_counters_and_search(capsys, conv_tables, conv_defs, instance, resources, tmp_path):
    assert run(capsys, "origins", "add", "acme", "Acme WA", "--channel", "whatsapp",
               "--ref", "wa-1")[0] == 0  # fmt: skip
    condition = tmp_path / "open.json"
    condition.write_text(
        json.dumps({"field": "state", "op": "in", "value": ["created", "working"]})
    )
    assert run(capsys, "work-queues", "add", "acme", "Open", "--condition", condition)[0] == 0
    base = {"type": "message", "tenant_id": "acme", "origin": "wa-1"}
    resources["queues"].send(
        "messages",
        [
            {**base, "message_id": "w1", "kind": "customer", "author": {"external_id": "u1",
             "name": "Ann"}, "text": "My parcel never arrived", "sent_at": "2026-11-20T10:00:00Z",
             "rating": 2},
            {**base, "message_id": "w2", "kind": "agent_reply", "author": {"external_id": "ag"},
             "customer": "u1", "text": "We are resending the parcel today",
             "sent_at": "2026-11-20T10:05:00Z"},
            {**base, "message_id": "w3", "kind": "customer", "author": {"external_id": "u2"},
             "text": "Where is my invoice?", "sent_at": "2026-11-20T11:00:00Z"},
        ],
    )  # fmt: skip
    run_drain(conv_defs, instance, resources)
    code, out, _ = run(capsys, "conversations", "show", "acme", 1)
    assert code == 0
    assert "ticket 1 of acme  [working]" in out and "customer u1 (Ann)" in out
    assert "rating 2" in out and "queues: Open" in out
    assert "-> created" in out and "created -> working" in out and "(message, w2)" in out
    assert out.index("My parcel never arrived") < out.index("We are resending")
    assert "has no ticket 9" in refused(capsys, "conversations", "show", "acme", 9)
    code, out, _ = run(capsys, "conversations", "counters", "acme")
    assert code == 0
    assert out.splitlines() == [
        "queue\tpriority\tcreated\tworking\tpending\tfollowup\tsolved\ttotal",
        "Open\t0\t1\t1\t0\t0\t0\t2",
    ]
    code, out, _ = run(capsys, "conversations", "search", "acme", "parcel")
    assert code == 0 and len(out.splitlines()) == 2 and "#1" in out
    code, out, _ = run(capsys, "conversations", "search", "acme", '"parcel never"', "-resending")
    assert code == 0 and out.splitlines()[0].startswith("#1") and len(out.splitlines()) == 1
    code, out, _ = run(capsys, "conversations", "search", "acme", "umbrella")
    assert code == 0 and out.strip() == "no messages match"
    # a tenant the platform has never heard of is refused, not answered with nothing
    assert "unknown tenant 'globex'" in refused(capsys, "conversations", "search", "globex", "x")
