"""Benchmark: what a scheduled feedback run costs, measured as a user's run pays it.

A run of `feedback_ingest_job` (every 15 minutes) is one fresh process (the code location uses
the in-process executor): it loads the code location, pulls the sources (`feedback_items`), then
enriches (`feedback_enrichment`: imports scikit-learn and the language model, reads the tenant's
rated tickets, chooses and trains the sentiment engine, scores the changed items with that one
engine, refits the workspace's topics and assigns them to every item, writes). Nothing is cached
across runs, so each measured run here is a fresh child process doing exactly that:

1. start the interpreter and `import orchestration.definitions` (the code location);
2. the pull's own work on the new posts: `post_to_item` (HTML cleaning, ids) then, per page of
   50 posts, `upsert_items` + `save_cursor` in one transaction, as `pull_source` commits a page;
3. `enrich()` as the asset calls it, with its import; its time is split (by wrapping the module's
   functions, which adds no work) into the training data read, engine choice (the held-out
   evaluation of VADER and the classifier, then the classifier refitted on all ratings),
   language, sentiment scoring, topics (TF-IDF + NMF fit on 20,000, assigned to all) and the rest
   (the database reads and writes).

State, as production has it: one tenant whose desk holds `--tickets` tickets (one requester
comment each), a fifth of them rated good/bad, so the engine choice trains on 20,000 rated
tickets (the `TRAINING_TICKETS` cap an established tenant reaches); one workspace whose Discourse
source holds `--items` enriched items with a fitted topic model. Scenarios, each run in a fresh
process: the first run (all `--items` items new, which builds the state; one round: a Discourse
pull brings at most 10,000 a run, so this many at once come from a helpdesk source's first pull
or a backlog of pushed items, its pull stage stands in for theirs), a steady run (`--new` new
posts) and a catch-up run (`--catch-up`, default 10,000 new posts: 200 pages, the most one
Discourse pull brings). Before each round the previous round's new items are deleted and the
table vacuumed, so every round starts from the same state.

Figures are cold: a fresh process each, nothing warmed in it; each round's total is printed and
the stages are medians over rounds, as shares of the run's total (from spawning the process to
its last line). The process's exit after the run (module teardown) is printed apart, with the
run's CPU time (user + sys: steadier than wall time on a shared machine) and peak RSS. The
operating system's file cache and PostgreSQL's buffers are warm after the first run, as on a host
that runs the job every 15 minutes.

Left out: Dagster's run bookkeeping (run and event-log storage, launching the process), the
HTTP requests to the forum (the posts are handed to the child, read before timing), the
Discourse edit sweep, the queue drain, and the insight reports. There is no baseline in this
mode: it compares nothing. The sentiment evaluation the runs record is printed as it came out.

With `--zendesk-source` it measures the pull query of the `zendesk` feedback source instead, on a
desk of 100,000 comments (4 per ticket, half of them the requester's and already items, a fifth
of the tickets rated with a comment) plus 100 new comments: the source's cursor on the change
sequence (now, `KIND.pull`) against the like-for-like pull it replaced (`BEFORE_*_SQL`, the two
anti-joins over every comment and rated ticket of the desk, and cleaning the rows' HTML as the
old pull did); neither writes. In-process, each round runs both (alternating which goes first),
median of the rounds: a query-level comparison with PostgreSQL's buffers warm for both, not a
run's cost.

    .venv/bin/python bench/feedback.py [--items 100000] [--new 200] [--catch-up 10000]
                                       [--tickets 100000] [--rounds 3] [--zendesk-source]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import html
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE_POSTS = 50  # a Discourse search page
RATED_SHARE = 0.2
START = datetime(2026, 1, 1, tzinfo=UTC)

# The stages of `enrich()`, by the enrichment module's function that does them.
ENRICH_STAGES = {
    "rated_tickets": "training data read",
    "select_engine": "engine choice (evaluate + train)",
    "_language_identifier": "language model load",
    "detect_languages": "language (py3langid)",
    "score_texts": "sentiment scoring (chosen engine)",
    "fit_topics": "topics (fit + assign)",
}
FIRST_LINE = time.time()  # when this process (a child run) got to its first line


def make_posts(count: int, first: int = 0, seed: int = 1) -> list[dict]:
    """Search-result posts like the sandbox forum's, numbered from `first` (newer = higher)."""
    from sandbox.feedback_text import feedback_text, username

    rng = random.Random(seed * 1_000_003 + first)
    posts = []
    for n in range(first, first + count):
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
                "created_at": (START + timedelta(seconds=30 * n))
                .isoformat()
                .replace("+00:00", "Z"),
                "cooked": cooked,
                "topic_id": 45_000 + n // 10,
                "topic_slug": "feedback",
                "post_number": n % 10 + 1,
            }
        )
    return posts


# --- the child: one run in a fresh process -------------------------------------------------------


def child_run(posts_file: str, source_json: str) -> None:
    """One run as the job's process does it; prints its timings as one JSON line."""
    t0 = time.perf_counter()
    posts = json.loads(Path(posts_file).read_text())  # stands in for the forum's HTTP answers
    read = time.perf_counter() - t0
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    import orchestration.definitions  # noqa: F401  (the code location every run loads)

    timings["code location load"] = time.perf_counter() - t0

    from assets.feedback.rules import SourceRef
    from assets.feedback.sources.discourse import post_to_item
    from assets.feedback.store import save_cursor, upsert_items
    from resources.runtime import make_warehouse
    from resources.settings import Settings

    warehouse = make_warehouse(Settings.from_env())
    source = SourceRef(**json.loads(source_json))
    t0 = time.perf_counter()
    for start in range(0, len(posts), PAGE_POSTS):
        page = posts[start : start + PAGE_POSTS]
        items = [post_to_item(source, post, None, "https://forum.example") for post in page]
        with warehouse.connection() as conn:
            upsert_items(conn, [item for item in items if item is not None])
            save_cursor(conn, source.source_id, {"last_post_id": page[-1]["id"], "scan": None})
    timings["pull: parse + upsert per page"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from assets.feedback import enrichment  # the asset imports it when it runs

    timings["enrichment import"] = time.perf_counter() - t0
    spent = dict.fromkeys(ENRICH_STAGES, 0.0)

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t

        return wrapper

    for name in ENRICH_STAGES:  # looked up as module globals at each call: wrapping adds no work
        setattr(enrichment, name, timed(name, getattr(enrichment, name)))
    t0 = time.perf_counter()
    report = enrichment.enrich(warehouse.connection)
    total = time.perf_counter() - t0
    # nested: detect_languages loads the language model on its first call
    spent["detect_languages"] -= spent["_language_identifier"]
    for name, label in ENRICH_STAGES.items():
        timings[f"enrich: {label}"] = spent[name]
    timings["enrich: database reads + writes, rest"] = total - sum(spent.values())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "timings": timings,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "first_line": FIRST_LINE,
        "end": time.time(),
        "read": read,
        "enriched": report.items_enriched,
        "topics_changed": report.topics_updated,
        "engines": report.engines,
        "evaluations": report.evaluations,
    }
    print(json.dumps(result))


def run_child(env: dict[str, str], posts: list[dict], source: dict) -> dict:
    """One run in a fresh process: its stages, its start, its total and its exit."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(posts, file)
    try:
        spawned = time.time()
        command = [sys.executable, str(Path(__file__).resolve()), "--child", file.name,
                   json.dumps(source)]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        exited = time.time()
    finally:
        os.unlink(file.name)
    if done.returncode != 0:
        sys.exit(f"child run failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    timings = result["timings"]
    timings["process start (interpreter)"] = result["first_line"] - spawned
    timings["feedback work (pull + enrichment)"] = sum(
        v for k, v in timings.items() if k.startswith(("pull", "enrich"))
    )
    # the run: from spawning its process to its last line, less reading the posts (the HTTP
    # stand-in); the process's exit afterwards (module teardown) is shown on its own
    timings["run total"] = result["end"] - spawned - result["read"]
    timings["process exit (after the run)"] = exited - result["end"]
    return result


# --- the warehouse and its state -----------------------------------------------------------------


@contextlib.contextmanager
def embedded_warehouse(prefix: str) -> Iterator[tuple[Any, Path]]:
    """A migrated embedded PostgreSQL under a temporary SUPPORTFLOW_HOME, stopped and removed
    afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["SUPPORTFLOW_HOME"] = str(home)
    os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)
    from resources.runtime import make_warehouse, warehouse_url
    from resources.settings import Settings
    from resources.warehouse import close_pools, stop_embedded_server

    settings = Settings.from_env()
    try:
        warehouse_url(settings)
        yield make_warehouse(settings), home
    finally:
        close_pools()
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


def create_desk(conn: Any) -> int:
    return conn.execute(
        "insert into control.desks (name, tenant_id, subdomain, base_url, auth_kind,"
        " auth_email, token_encrypted, active) values ('bench', 'bench', 'bench',"
        " 'http://127.0.0.1:1', 'token', 'a@example.com', '\\x00', false)"
        " returning desk_id"
    ).fetchone()[0]


def seed_rated_tickets(conn: Any, desk_id: int, tickets: int) -> int:
    """`tickets` tickets with one requester comment each; a fifth rated good/bad (texts from the
    sandbox's rated tickets). Returns how many are rated."""
    from sandbox.feedback_text import feedback_text, rated_tickets

    rated = rated_tickets(int(tickets * RATED_SHARE), seed=5)
    rng = random.Random(11)
    step = round(1 / RATED_SHARE)
    bodies = []
    with conn.cursor().copy(
        "copy raw.zendesk_tickets (desk_id, ticket_id, tenant_id, status, subject, requester_id,"
        " req_name, created_at, updated_at, generated_at, raw_data) from stdin"
    ) as copy:
        for ticket in range(tickets):
            when = START + timedelta(minutes=ticket)
            raw: dict = {}
            if ticket % step == 0 and ticket // step < len(rated):
                text, score = rated[ticket // step]
                raw = {"satisfaction_rating": {"score": score, "comment": ""}}
            else:
                text = feedback_text(rng, foreign_share=0.0).text
            bodies.append(text)
            copy.write_row((desk_id, ticket, "bench", "solved", "Support request",
                            1_000_000 + ticket, "Rita", when, when, when,
                            json.dumps(raw)))  # fmt: skip
    with conn.cursor().copy(
        "copy raw.zendesk_ticket_comments (desk_id, comment_id, tenant_id, ticket_id, author_id,"
        " public, body, created_at, raw_data) from stdin"
    ) as copy:
        for ticket, body in enumerate(bodies):
            copy.write_row((desk_id, ticket, "bench", ticket, 1_000_000 + ticket, True, body,
                            START + timedelta(minutes=ticket), "{}"))  # fmt: skip
    return len(rated)


def run_scenarios(items: int, new: int, catch_up: int, tickets: int, rounds: int) -> None:
    from assets.feedback.store import add_source, create_workspace

    with embedded_warehouse("sf-bench-feedback-") as (warehouse, home):
        with warehouse.connection() as conn:
            desk_id = create_desk(conn)
            rated = seed_rated_tickets(conn, desk_id, tickets)
            workspace = create_workspace(conn, "bench", "bench")
            source_id = add_source(conn, workspace, "forum", "discourse", {})
            conn.execute("analyze raw.zendesk_tickets")
            conn.execute("analyze raw.zendesk_ticket_comments")
        source = {"source_id": source_id, "workspace_id": workspace.workspace_id,
                  "workspace_name": "bench", "tenant_id": "bench", "name": "forum",
                  "kind": "discourse", "config": {}, "cursor": {}}  # fmt: skip
        env = {**os.environ, "SUPPORTFLOW_HOME": str(home)}
        print(
            f"state: desk of {tickets:,} tickets ({rated:,} rated), workspace of {items:,} "
            f"Discourse items; each run a fresh process; load {os.getloadavg()[0]:.2f}"
        )

        first = run_child(env, make_posts(items), source)
        report("first run: all items new", items, [first])

        def scenario(count: int) -> list[dict]:
            results = []
            for r in range(rounds):
                posts = make_posts(count, first=items + 1_000_000 * (r + 1))
                results.append(run_child(env, posts, source))
                with warehouse.connection() as conn:  # back to the state of `items` items
                    conn.execute(
                        "delete from raw.feedback_items where source_id = %s"
                        " and external_id::bigint >= %s",
                        (source_id, 900_000 + items),
                    )
                    left = conn.execute(
                        "select count(*) from raw.feedback_items where source_id = %s",
                        (source_id,),
                    ).fetchone()[0]
                assert left == items, f"{left} items left, expected {items}"
                with warehouse.connection() as conn:
                    conn.autocommit = True
                    conn.execute("vacuum analyze raw.feedback_items")
                    conn.autocommit = False
            return results

        report(f"steady run: {new:,} new posts", new, scenario(new))
        report(f"catch-up run: {catch_up:,} new posts", catch_up, scenario(catch_up))
        evaluation = first["evaluations"].get("bench")
        if evaluation:
            print(
                f"sentiment engine chosen by the runs: {first['engines'].get('bench')}; held-out "
                f"{evaluation['test']:,} of {evaluation['labelled']:,} rated tickets (synthetic):"
            )
            for name in ("majority", "vader", "tenant_tfidf_logreg"):
                print(f"  {name:<22} accuracy {evaluation[name]['accuracy']:.3f}  "
                      f"macro F1 {evaluation[name]['macro_f1']:.3f}")  # fmt: skip


def report(title: str, new: int, results: list[dict]) -> None:
    runs = [r["timings"] for r in results]
    print(
        f"{title}: {len(runs)} fresh process(es), median; enriched "
        f"{results[0]['enriched']:,}, topics changed {results[0]['topics_changed']:,}"
    )
    order = ["process start (interpreter)", "code location load",
             "pull: parse + upsert per page", "enrichment import",
             *[f"enrich: {label}" for label in ENRICH_STAGES.values()],
             "enrich: database reads + writes, rest"]  # fmt: skip
    total = statistics.median(r["run total"] for r in runs)
    for stage in order:
        seconds = statistics.median(r[stage] for r in runs)
        print(f"  {stage:<42} {seconds:8.2f} s  {seconds / total:5.0%}")
    for stage in ("feedback work (pull + enrichment)", "run total"):
        values = [r[stage] for r in runs]
        seconds = statistics.median(values)
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {stage:<42} {seconds:8.2f} s  {new / seconds:>8,.0f} new items/s"
              f"  (rounds: {each})")  # fmt: skip
    seconds = statistics.median(r["process exit (after the run)"] for r in runs)
    print(f"  {'process exit (after the run, not in total)':<42} {seconds:8.2f} s")
    cpu = statistics.median(r["cpu"] for r in results)
    rss = statistics.median(r["peak_rss_mb"] for r in results)
    print(
        f"  {'CPU of the run (user + sys, before exit)':<42} {cpu:8.2f} s  peak RSS {rss:,.0f} MB"
    )


# --- zendesk source ------------------------------------------------------------------------------

# The zendesk source's pull before it had a cursor (before 34c5fac): every requester comment and
# rated ticket of the desk, anti-joined with the items already written.
BEFORE_COMMENTS_SQL = """
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

BEFORE_SATISFACTION_SQL = """
select t.desk_id::text, t.ticket_id, t.raw_data->'satisfaction_rating'->>'score',
       t.raw_data->'satisfaction_rating'->>'comment',
       coalesce(t.updated_at, t.created_at, t.synced_at), t.subject, t.req_name,
       t.requester_id
from raw.zendesk_tickets t
join control.desks d on d.desk_id = t.desk_id
where (d.name = any(%(desks)s) or d.desk_id::text = any(%(desks)s)) and not t.is_deleted
  and t.raw_data->'satisfaction_rating'->>'score' in ('good', 'bad')
  and coalesce(t.raw_data->'satisfaction_rating'->>'comment', '') <> ''
  and not exists (
      select 1 from raw.feedback_items f
      where f.source_id = %(source_id)s
        and f.external_id = 'satisfaction:' || t.desk_id::text || ':' || t.ticket_id::text
        and f.rating = t.raw_data->'satisfaction_rating'->>'score')
order by t.ticket_id
"""

COMMENTS_PER_TICKET = 4


def _copy_comments(conn: Any, desk_id: int, ids: range) -> None:
    """Comments, 4 a ticket; even ones written by the requester, odd ones by an agent."""
    with conn.cursor().copy(
        "copy raw.zendesk_ticket_comments (desk_id, comment_id, tenant_id, ticket_id, author_id,"
        " public, body, created_at, raw_data) from stdin"
    ) as copy:
        for n in ids:
            ticket = n // COMMENTS_PER_TICKET
            author = 1_000_000 + ticket if n % 2 == 0 else 7
            copy.write_row((desk_id, n, "bench", ticket, author, True,
                            f"Comment {n}: the export was late again", START
                            + timedelta(seconds=n), "{}"))  # fmt: skip


def run_zendesk_source(comments: int, new: int, rounds: int) -> None:
    """Pull cost of the zendesk source on `comments` existing comments plus `new` new ones."""
    from assets.feedback.rules import SourceRef, clean_html
    from assets.feedback.sources.base import PullContext
    from assets.feedback.sources.zendesk import KIND
    from assets.feedback.store import add_source, create_workspace, save_cursor, upsert_items

    with embedded_warehouse("sf-bench-zendesk-source-") as (warehouse, _home):
        with warehouse.connection() as conn:
            desk_id = create_desk(conn)
            with conn.cursor().copy(
                "copy raw.zendesk_tickets (desk_id, ticket_id, tenant_id, status, subject,"
                " requester_id, req_name, created_at, updated_at, generated_at, raw_data)"
                " from stdin"
            ) as copy:
                for ticket in range((comments + new) // COMMENTS_PER_TICKET + 1):
                    raw = {}
                    if ticket % 5 == 0:
                        score = "bad" if ticket % 3 == 0 else "good"
                        raw = {"satisfaction_rating": {"score": score, "comment": "Slow reply"}}
                    row = (desk_id, ticket, "bench", "open", f"Ticket {ticket}",
                           1_000_000 + ticket, "Rita", START, START, START,
                           json.dumps(raw))  # fmt: skip
                    copy.write_row(row)
            _copy_comments(conn, desk_id, range(comments))
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
        with warehouse.connection() as conn:
            held = conn.execute(
                "select count(*) from raw.feedback_items where source_id = %s", (source_id,)
            ).fetchone()[0]
        print(
            f"zendesk feedback source: {comments:,} existing comments, first pull (with the"
            f" items' upsert, {held:,} items) {first:.2f} s; load {os.getloadavg()[0]:.2f}"
        )
        with warehouse.connection() as conn:
            _copy_comments(conn, desk_id, range(comments, comments + new))
            conn.execute("analyze raw.zendesk_ticket_comments")
            conn.execute("analyze raw.zendesk_tickets")
            conn.execute("analyze raw.feedback_items")
        source = dataclasses.replace(source, cursor=cursor)

        def after() -> tuple[int, int]:
            batches = list(KIND.pull(source, context))
            return sum(b.fetched for b in batches), sum(len(b.items) for b in batches)

        def before() -> tuple[int, int]:
            params = {"desks": ["bench"], "source_id": source_id}
            with warehouse.connection() as conn:
                comment_rows = conn.execute(BEFORE_COMMENTS_SQL, params).fetchall()
                rating_rows = conn.execute(BEFORE_SATISFACTION_SQL, params).fetchall()
            texts = [clean_html(row[3] or "") for row in comment_rows]
            texts += [clean_html(row[3] or "") for row in rating_rows]
            return len(comment_rows) + len(rating_rows), len([t for t in texts if t])

        pulls = {"before: anti-joins over the desk": before, "after: cursor on change_seq": after}
        times: dict[str, list[float]] = {name: [] for name in pulls}
        found: dict[str, int] = {}
        for r in range(rounds):
            for name in list(pulls)[:: 1 if r % 2 == 0 else -1]:
                t0 = time.perf_counter()
                _rows, found[name] = pulls[name]()
                times[name].append(time.perf_counter() - t0)
        with warehouse.connection() as conn:
            scanned = conn.execute(
                "select (select count(*) from raw.zendesk_ticket_comments where desk_id = %s),"
                " (select count(*) from raw.zendesk_tickets where desk_id = %s)",
                (desk_id, desk_id),
            ).fetchone()
        read = {
            "before: anti-joins over the desk": f"{scanned[0]:,} comments + {scanned[1]:,} tickets",
            "after: cursor on change_seq": f"{new:,} comments",
        }
        print(f"pull with {new} new comments (in-process, both warm), median of {rounds} rounds:")
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, seconds in medians.items():
            print(f"  {name:<34} {seconds * 1000:9.1f} ms  reads {read[name]:<28}"
                  f"  new items {found[name]}")  # fmt: skip
        first_name, second_name = medians
        print(f"  ratio before/after: {medians[first_name] / medians[second_name]:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items the workspace holds")
    parser.add_argument("--new", type=int, default=200, help="new posts of a steady run")
    parser.add_argument(
        "--catch-up", type=int, help="new posts of a catch-up run (default: one pull's most)"
    )
    parser.add_argument("--tickets", type=int, default=100_000, help="the tenant's tickets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--zendesk-source",
        action="store_true",
        help="time a zendesk-source pull on 100,000 existing comments + 100 new, before/after",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_run(*args.child)
    elif args.zendesk_source:
        run_zendesk_source(100_000, 100, max(args.rounds, 5))
    else:
        from assets.feedback.sources.discourse import MAX_PAGES_PER_PULL

        # the most one Discourse pull brings: MAX_PAGES_PER_PULL pages of 50
        args.catch_up = args.catch_up or MAX_PAGES_PER_PULL * PAGE_POSTS
        run_scenarios(args.items, args.new, args.catch_up, args.tickets, args.rounds)


if __name__ == "__main__":
    main()
