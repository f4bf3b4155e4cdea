"""Benchmark: feedback items per second through parse + enrichment.

Parse = Discourse search-result posts (cooked HTML) -> uniform `FeedbackItem`s (BeautifulSoup
cleaning, timestamps, ids). Enrichment = language (py3langid, per item), sentiment (VADER per item;
the per-tenant TF-IDF + logistic regression classifier, vectorised) and topics (TF-IDF + NMF fitted
on the 20,000 most recent items, assigned to all). Each stage is timed; the figure is the median of
`--rounds` rounds over `--items` items, single process. With `--db` it also runs the real
warehouse path once (COPY upsert into raw.feedback_items + `enrich()` with its writes) on an
embedded PostgreSQL under a temporary SUPPORTFLOW_HOME.

    .venv/bin/python bench/feedback.py [--items 100000] [--rounds 3] [--db]
"""

from __future__ import annotations

import argparse
import html
import os
import random
import statistics
import sys
import tempfile
import time
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


def run_db(posts: list[dict]) -> dict[str, float]:
    """The warehouse path once: upsert all items, then enrich() with its reads and writes."""
    home = Path(tempfile.mkdtemp(prefix="sf-bench-feedback-"))
    os.environ["SUPPORTFLOW_HOME"] = str(home)
    os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)
    from assets.feedback.enrichment import enrich
    from assets.feedback.store import add_source, create_workspace, upsert_items
    from resources.runtime import build_resources, warehouse_url
    from resources.settings import Settings
    from resources.warehouse import close_pools, stop_embedded_server

    settings = Settings.from_env()
    try:
        warehouse_url(settings)
        warehouse = build_resources(settings, for_dagster=False)["warehouse"]
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
    finally:
        close_pools()
        stop_embedded_server(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", action="store_true", help="also time the warehouse path once")
    args = parser.parse_args()

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
