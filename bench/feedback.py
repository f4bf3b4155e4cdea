"""Benchmark: feedback items per second through parse + enrichment.

Parse = Discourse search-result posts (cooked HTML) -> uniform `FeedbackItem`s (BeautifulSoup
cleaning, timestamps, ids). Enrichment = language (py3langid, per item), sentiment (VADER per item;
the per-tenant TF-IDF + logistic regression classifier, vectorised) and topics (TF-IDF + NMF fitted
on the 20,000 most recent items, assigned to all). Each stage is timed; the figure is the median of
`--rounds` rounds over `--items` items, single process. With `--db` it also runs the real
warehouse path once (COPY upsert into raw.feedback_items + `enrich()` with its writes) on an
embedded PostgreSQL under a temporary SUPPORTFLOW_HOME.

With `--zendesk-source` it times a pull of the `zendesk` feedback source instead, on 100,000
existing comments (already items) plus 100 new ones: the source's cursor on the change sequence
(now) against the anti-join over every comment of the desk that pulls used before (kept here as
`ANTI_JOIN_SQL` to measure it), medians of `--rounds` rounds, with the comment rows each reads.

    .venv/bin/python bench/feedback.py [--items 100000] [--rounds 3] [--db] [--zendesk-source]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import html
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assets.feedback.enrichment import TOPIC_FIT_ITEMS, detect_languages, fit_topics  # noqa: E402
from assets.feedback.sentiment import evaluate, score_texts  # noqa: E402
from assets.feedback.sentiment.tfidf_logreg import TfidfLogRegEngine  # noqa: E402
from assets.feedback.sentiment.vader import VaderEngine  # noqa: E402
from assets.feedback.sources.base import SourceRef  # noqa: E402
from assets.feedback.sources.discourse import post_to_item  # noqa: E402
from sandbox.feedback_text import feedback_text, rated_tickets, username  # noqa: E402


def make_posts(count: int, seed: int = 1) -> list[dict]:
    """Search-result posts like the sandbox forum's (generated directly: faster for 100k)."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    posts = []
    for n in range(count):
        text = feedback_text(rng).text
        cooked = f"<p>{html.escape(text)}</p>"
        if n % 5 == 0:
            cooked = (
                '<aside class="quote"><blockquote><p>Same here, any update?</p></blockquote>'
                "</aside>\n" + cooked + '\n<p>See <a href="https://example.com">the docs</a>.</p>'
            )
        posts.append(
            {
                "id": 900_000 + n,
                "username": username(rng),
                "created_at": (start + timedelta(seconds=30 * n))
                .isoformat()
                .replace("+00:00", "Z"),
                "cooked": cooked,
                "topic_id": 45_000 + n // 10,
                "topic_slug": "feedback",
                "post_number": n % 10 + 1,
            }
        )
    return posts


SOURCE = SourceRef(1, 1, "bench", "bench", "forum", "discourse", {}, {})


def run_round(posts: list[dict], classifier: TfidfLogRegEngine) -> dict[str, float]:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    items = [post_to_item(SOURCE, post, None, "https://forum.example") for post in posts]
    texts = [item.text for item in items if item is not None]
    timings["parse"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    detect_languages(texts)
    timings["language (py3langid)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    score_texts(VaderEngine(), texts)
    timings["sentiment (VADER)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    score_texts(classifier, texts)
    timings["sentiment (tenant classifier)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = fit_topics(texts[-TOPIC_FIT_ITEMS:], texts)
    timings["topics (TF-IDF + NMF)"] = time.perf_counter() - t0
    assert model is not None and len(model.assignments) == len(texts)
    return timings


@contextlib.contextmanager
def embedded_warehouse(prefix: str) -> Iterator:
    """A migrated embedded PostgreSQL under a temporary SUPPORTFLOW_HOME, stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["SUPPORTFLOW_HOME"] = str(home)
    os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)
    from resources.runtime import build_resources, warehouse_url
    from resources.settings import Settings
    from resources.warehouse import close_pools, stop_embedded_server

    settings = Settings.from_env()
    try:
        warehouse_url(settings)
        yield build_resources(settings, for_dagster=False)["warehouse"]
    finally:
        close_pools()
        stop_embedded_server(home)


def run_db(posts: list[dict]) -> dict[str, float]:
    """The warehouse path once: upsert all items, then enrich() with its reads and writes."""
    from assets.feedback.enrichment import enrich
    from assets.feedback.store import add_source, create_workspace, upsert_items

    with embedded_warehouse("sf-bench-feedback-") as warehouse:
        with warehouse.connection() as conn:
            workspace = create_workspace(conn, "bench", "bench")
            source_id = add_source(conn, workspace, "forum", "discourse", {})
        source = SourceRef(source_id, workspace.workspace_id, "bench", "bench", "forum",
                           "discourse", {}, {})  # fmt: skip
        timings = {}
        t0 = time.perf_counter()
        items = [post_to_item(source, post, None, "https://forum.example") for post in posts]
        with warehouse.connection() as conn:
            upsert_items(conn, [item for item in items if item is not None])
        timings["parse + upsert"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = enrich(warehouse.connection)
        timings["enrich (read, language, sentiment, topics, write)"] = time.perf_counter() - t0
        assert report.items_enriched == len(items)
        return timings


# The Zendesk source's comment query before it had a cursor: every comment of the desk,
# anti-joined with the items already written.
ANTI_JOIN_SQL = """
select c.desk_id::text, c.comment_id::text, c.ticket_id, c.body,
       coalesce(c.created_at, t.created_at, c.synced_at), t.subject, t.req_name, t.requester_id
from raw.zendesk_ticket_comments c
join raw.zendesk_tickets t on t.desk_id = c.desk_id and t.ticket_id = c.ticket_id
join control.desks d on d.desk_id = c.desk_id
where (d.name = any(%(desks)s) or d.desk_id::text = any(%(desks)s))
  and c.public and c.author_id = t.requester_id and not t.is_deleted
  and not exists (
      select 1 from raw.feedback_items f
      where f.source_id = %(source_id)s
        and f.external_id = 'comment:' || c.desk_id::text || ':' || c.comment_id::text)
order by c.created_at, c.comment_id
"""


def _copy_comments(conn, desk_id: int, ids: range, start: datetime) -> None:
    with conn.cursor().copy(
        "copy raw.zendesk_ticket_comments (desk_id, comment_id, tenant_id, ticket_id, author_id,"
        " public, body, created_at, raw_data) from stdin"
    ) as copy:
        for n in ids:
            ticket = n // 10
            copy.write_row((desk_id, n, "bench", ticket, 1_000_000 + ticket, True,
                            f"Comment {n}: the export was late again", start
                            + timedelta(seconds=n), "{}"))  # fmt: skip


def run_zendesk_source(comments: int, new: int, rounds: int) -> None:
    """Pull cost of the zendesk source on `comments` existing comments plus `new` new ones."""
    from assets.feedback.sources.base import PullContext
    from assets.feedback.sources.zendesk import KIND
    from assets.feedback.store import add_source, create_workspace, save_cursor, upsert_items

    with embedded_warehouse("sf-bench-zendesk-source-") as warehouse:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        with warehouse.connection() as conn:
            desk_id = conn.execute(
                "insert into control.desks (name, tenant_id, subdomain, base_url, auth_kind,"
                " auth_email, token_encrypted, active) values ('bench', 'bench', 'bench',"
                " 'http://127.0.0.1:1', 'token', 'a@example.com', '\\x00', false)"
                " returning desk_id"
            ).fetchone()[0]
            with conn.cursor().copy(
                "copy raw.zendesk_tickets (desk_id, ticket_id, tenant_id, status, subject,"
                " requester_id, req_name, created_at, updated_at, generated_at, raw_data)"
                " from stdin"
            ) as copy:
                for ticket in range(comments // 10 + new // 10 + 1):
                    row = (desk_id, ticket, "bench", "open", f"Ticket {ticket}",
                           1_000_000 + ticket, "Rita", start, start, start, "{}")  # fmt: skip
                    copy.write_row(row)
            _copy_comments(conn, desk_id, range(comments), start)
            workspace = create_workspace(conn, "bench", "bench")
            config = KIND.build_config({"desk": ["bench"]})
            source_id = add_source(conn, workspace, "helpdesk", "zendesk", config)
        source = SourceRef(source_id, workspace.workspace_id, "bench", "bench", "helpdesk",
                           "zendesk", config, {})  # fmt: skip
        context = PullContext(connection=warehouse.connection)
        t0 = time.perf_counter()
        cursor: dict = {}
        for batch in KIND.pull(source, context):
            with warehouse.connection() as conn:
                upsert_items(conn, batch.items)
                save_cursor(conn, source_id, batch.cursor)
            cursor = batch.cursor
        first = time.perf_counter() - t0
        print(f"zendesk feedback source: {comments:,} existing comments, first pull (all of"
              f" them, with the items' upsert) {first:.2f} s")  # fmt: skip
        with warehouse.connection() as conn:
            _copy_comments(conn, desk_id, range(comments, comments + new), start)
            conn.execute("analyze raw.zendesk_ticket_comments")
            conn.execute("analyze raw.feedback_items")
        source = dataclasses.replace(source, cursor=cursor)

        def after() -> tuple[int, int]:
            batches = list(KIND.pull(source, context))
            return sum(b.fetched for b in batches), sum(len(b.items) for b in batches)

        def before() -> tuple[int, int]:
            with warehouse.connection() as conn:
                rows = conn.execute(
                    ANTI_JOIN_SQL, {"desks": ["bench"], "source_id": source_id}
                ).fetchall()
                scanned = conn.execute(
                    "select count(*) from raw.zendesk_ticket_comments where desk_id = %s",
                    (desk_id,),
                ).fetchone()[0]
            return scanned, len(rows)

        print(f"pull with {new} new comments, median of {rounds} rounds:")
        medians = {}
        for name, pull in (("before: anti-join over the desk", before),
                           ("after: cursor on change_seq", after)):  # fmt: skip
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                read, found = pull()
                times.append(time.perf_counter() - t0)
            medians[name] = statistics.median(times)
            print(f"  {name:<34} {medians[name] * 1000:9.1f} ms  comment rows read {read:>7,}"
                  f"  new items {found}")  # fmt: skip
        first_name, second_name = medians
        print(f"  ratio before/after: {medians[first_name] / medians[second_name]:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", action="store_true", help="also time the warehouse path once")
    parser.add_argument(
        "--zendesk-source",
        action="store_true",
        help="time a zendesk-source pull on 100,000 existing comments + 100 new, before/after",
    )
    args = parser.parse_args()
    if args.zendesk_source:
        run_zendesk_source(100_000, 100, max(args.rounds, 5))
        return

    posts = make_posts(args.items)
    pairs = rated_tickets(2000, seed=5)
    classifier = TfidfLogRegEngine.train([p[0] for p in pairs], [p[1] for p in pairs])
    rounds = [run_round(posts, classifier) for _ in range(args.rounds)]
    stages = list(rounds[0])
    print(f"feedback parse + enrichment: {args.items} items, {args.rounds} round(s), median")
    total = statistics.median(sum(r.values()) for r in rounds)
    for stage in stages:
        seconds = statistics.median(r[stage] for r in rounds)
        print(f"  {stage:<32} {seconds:8.2f} s  {args.items / seconds:>10,.0f} items/s"
              f"  {seconds / total:5.0%}")  # fmt: skip
    print(f"  {'total':<32} {total:8.2f} s  {args.items / total:>10,.0f} items/s")

    result, _ = evaluate([p[0] for p in pairs], [p[1] for p in pairs])
    print(
        f"sentiment evaluation, held-out {result['test']} of {result['labelled']} rated tickets "
        "(synthetic, sandbox.feedback_text):"
    )
    for name in ("majority", "vader", "tenant_tfidf_logreg"):
        print(f"  {name:<22} accuracy {result[name]['accuracy']:.3f}  "
              f"macro F1 {result[name]['macro_f1']:.3f}")  # fmt: skip

    if args.db:
        timings = run_db(posts)
        print(f"warehouse path (embedded PostgreSQL), {args.items} items, one round:")
        for stage, seconds in timings.items():
            print(f"  {stage:<50} {seconds:8.2f} s  {args.items / seconds:>10,.0f} items/s")
        total_db = sum(timings.values())
        print(f"  {'total':<50} {total_db:8.2f} s  {args.items / total_db:>10,.0f} items/s")


if __name__ == "__main__":
    main()
