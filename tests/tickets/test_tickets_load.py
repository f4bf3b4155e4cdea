"""The page loader against the real warehouse: an older ticket version never overwrites a
newer one, a moved cursor rolls the page back, deleted tickets are marked."""

from __future__ import annotations

import orjson
import pytest

from assets.tickets.desks import get_desk
from assets.tickets.store import CursorMoved, TicketSyncStats, load_ticket_page, prepare_ticket_page
from resources.zendesk import decode_ticket_page
from sandbox.zendesk import ZendeskSandbox


def page(tickets, cursor):
    users = [{"id": 1, "name": "Ana", "updated_at": "2026-01-01T00:00:00Z"}]
    body = {"tickets": tickets, "users": users, "after_cursor": cursor, "end_of_stream": True}
    return prepare_ticket_page(decode_ticket_page(orjson.dumps(body)), {}, {})


def version(generated, status, subject, updated="2026-01-01T00:00:00Z"):
    return {
        "id": 77,
        "generated_timestamp": generated,
        "updated_at": updated,
        "status": status,
        "subject": subject,
        "requester_id": 1,
    }


def stored(db, desk):
    return db.execute(
        "select status, subject, is_deleted, extract(epoch from generated_at)::bigint "
        "from raw.zendesk_tickets where desk_id = %s and ticket_id = 77",
        (desk.desk_id,),
    ).fetchone()


def load(db_url, desk, prepared, old_cursor):
    import psycopg

    stats = TicketSyncStats()
    with psycopg.connect(db_url) as conn:
        load_ticket_page(conn, desk, prepared, old_cursor=old_cursor, stats=stats)
    return stats


def test_older_versions_never_overwrite_newer_ones(db, db_url, make_desk):
    desk = make_desk(ZendeskSandbox(seed=81, tickets=1))
    stats = load(db_url, desk, page([version(2000, "open", "v2")], "c1"), None)
    assert (stats.inserted, stats.updated) == (1, 0)
    assert stored(db, desk) == ("open", "v2", False, 2000)

    # the older version arrives late (e.g. a replayed page): skipped, cursor still moves
    stats = load(db_url, desk, page([version(1000, "new", "v1")], "c2"), "c1")
    assert (stats.inserted, stats.updated, stats.skipped_older) == (0, 0, 1)
    assert stored(db, desk) == ("open", "v2", False, 2000)

    # a system update moves only generated_timestamp: it wins
    stats = load(db_url, desk, page([version(3000, "solved", "v3")], "c3"), "c2")
    assert stats.updated == 1 and stored(db, desk) == ("solved", "v3", False, 3000)

    # two versions of one ticket in one page: the newest is kept
    both = [version(5000, "deleted", "v5"), version(4000, "open", "v4")]
    stats = load(db_url, desk, page(both, "c4"), "c3")
    assert stats.deleted == 1 and stored(db, desk) == ("deleted", "v5", True, 5000)
    with db.cursor() as cur:
        cur.execute("select ticket_cursor from control.desks where desk_id = %s", (desk.desk_id,))
        assert cur.fetchone()[0] == "c4"


def test_a_moved_cursor_rolls_the_page_back(db, db_url, make_desk):
    desk = make_desk(ZendeskSandbox(seed=82, tickets=1))
    load(db_url, desk, page([version(1000, "open", "v1")], "c1"), None)
    with pytest.raises(CursorMoved, match="another sync of the desk"):
        load(db_url, desk, page([version(2000, "solved", "v2")], "c9"), "stale-cursor")
    assert stored(db, desk) == ("open", "v1", False, 1000)
    assert get_desk(db, desk.name).ticket_cursor == "c1"


def test_repair_adds_a_tickets_missing_comments(db, make_desk, run_sync, capsys):
    """`supportflow desks repair-comments` re-reads a ticket's comments and adds the missing."""
    from orchestration.cli import main
    from tests.tickets.helpers import assert_matches_truth

    sandbox = ZendeskSandbox(seed=83, tickets=30, comments_per_ticket=3.0)
    desk = make_desk(sandbox)
    run_sync(desk)
    ticket_id = max(sandbox.comments, key=lambda t: len(sandbox.comments[t]))
    lost = db.execute(
        "delete from raw.zendesk_ticket_comments where desk_id = %s and ticket_id = %s",
        (desk.desk_id, ticket_id),
    ).rowcount
    assert lost >= 2
    assert main(["desks", "repair-comments", desk.name, str(ticket_id)]) == 0
    assert f"desk {desk.name}: {lost} comment(s) added from 1 ticket(s)" in capsys.readouterr().out
    assert main(["desks", "repair-comments", desk.name, str(ticket_id)]) == 0
    assert f"desk {desk.name}: 0 comment(s) added" in capsys.readouterr().out
    assert main(["desks", "repair-comments", "no-such-desk", "1"]) == 2
    assert "no-such-desk" in capsys.readouterr().err
    assert_matches_truth(db, desk, sandbox)


def test_comment_writers_sharing_comments_never_deadlock(db, db_url, make_desk):
    """A first sync's two comment writers (per-ticket reading, export pages) may share
    comments; both insert in key order, so one waits for the other and none deadlocks."""
    import threading

    import psycopg

    from assets.tickets.rules import comment_rows
    from assets.tickets.store import _insert_comments

    desk = make_desk(ZendeskSandbox(seed=5, tickets=1))

    def rows(*ids):
        comment = {"event_type": "Comment", "author_id": 1, "public": True, "body": "b"}
        events = [{"ticket_id": 1, "child_events": [{**comment, "id": i} for i in ids]}]
        return comment_rows(events, set())

    errors: list[BaseException] = []
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
        first.execute("set deadlock_timeout = '100ms'")
        second.execute("set deadlock_timeout = '100ms'")
        _insert_comments(first, desk, rows(101, 103))  # holds 101 and 103, not committed

        def other_writer() -> None:
            try:
                with second.transaction():
                    # staged 102 first: in staging order it would take 102, then wait for 103
                    _insert_comments(second, desk, rows(102, 103, 101))
            except psycopg.Error as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join(0.5)  # the other writer now waits for 101 (in key order), holding nothing
        _insert_comments(first, desk, rows(102))  # a cycle here would be a deadlock
        first.commit()
        thread.join(10)
    assert not errors, errors
    stored = db.execute(
        "select comment_id from raw.zendesk_ticket_comments where desk_id = %s order by 1",
        (desk.desk_id,),
    ).fetchall()
    assert stored == [(101,), (102,), (103,)]
