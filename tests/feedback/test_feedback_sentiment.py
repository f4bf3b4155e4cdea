"""Sentiment: the evaluation on a labelled held-out set (accuracy, macro F1) beats always
predicting the majority class; a tenant with enough rated tickets gets its own classifier, which
scores its items, and the Zendesk source reads end-user comments for the chosen desks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pytest
from psycopg.types.json import Jsonb

from assets.feedback.sentiment import BASELINE, ENGINES, evaluate, select_engine
from assets.feedback.sentiment.base import score_labels
from sandbox.feedback_text import rated_tickets


def test_held_out_evaluation_beats_the_majority_class():
    pairs = rated_tickets(800, seed=3)
    texts, ratings = [p[0] for p in pairs], [p[1] for p in pairs]
    result, _ = evaluate(texts, ratings)
    assert result["test"] == 200 and result["train"] == 600
    for engine in ENGINES:  # an accuracy is a count of right answers out of the 200 held out
        right = result[engine]["accuracy"] * 200
        assert right == pytest.approx(round(right), abs=1e-6) and 0 < right <= 200
    # always answering the majority: its accuracy is the majority's share of the (stratified)
    # held-out set, and its macro F1 is share / (1 + share) (F1 2p/(1+p) and 0, averaged)
    share = max(ratings.count("good"), ratings.count("bad")) / len(ratings)
    majority_figures = result["majority"]
    assert majority_figures["accuracy"] == pytest.approx(share, abs=1 / 200)
    accuracy = majority_figures["accuracy"]
    assert majority_figures["macro_f1"] == pytest.approx(accuracy / (1 + accuracy), abs=1e-3)
    selection = select_engine(texts, ratings)
    chosen = selection.evaluation[selection.name]
    majority = selection.evaluation["majority"]
    assert chosen["accuracy"] > majority["accuracy"]
    assert chosen["macro_f1"] > majority["macro_f1"]
    # on this tenant's words the trained classifier beats the lexicon, so it is chosen
    assert selection.name == "tenant_tfidf_logreg"
    assert chosen["macro_f1"] > result[BASELINE]["macro_f1"]


def test_too_few_ratings_keep_the_baseline():
    pairs = rated_tickets(60)
    selection = select_engine([p[0] for p in pairs], [p[1] for p in pairs])
    assert selection.name == BASELINE and "fewer than" in selection.evaluation["reason"]


@pytest.mark.parametrize(
    ("score", "band", "label"),
    [(0.9, 0.05, "positive"), (0.05, 0.05, "positive"), (0.0, 0.05, "neutral"),
     (-0.04, 0.05, "neutral"), (-0.05, 0.05, "negative"), (-0.5, 0.2, "negative"),
     (0.1, 0.2, "neutral")],
)  # fmt: skip
def test_score_labels(score, band, label):
    assert score_labels(np.array([score]), band).tolist() == [label]


def _insert_desk(db, tenant: str) -> tuple[int, str]:
    name = f"desk-{uuid.uuid4().hex[:8]}"
    desk_id = db.execute(
        """
        insert into control.desks (name, tenant_id, subdomain, base_url, auth_kind, auth_email,
                                   token_encrypted)
        values (%s, %s, %s, 'http://127.0.0.1:1', 'token', 'a@example.com', '\\x00')
        returning desk_id
        """,
        (name, tenant, name),
    ).fetchone()[0]
    return desk_id, name


def _insert_rated_tickets(db, desk_id: int, tenant: str, count: int) -> dict[str, int]:
    """Tickets with satisfaction ratings; each has a requester comment, an agent reply and a
    private note. Returns how many feedback items the zendesk source should find."""
    now = datetime.now(UTC)
    expected = {"comments": 0, "satisfaction": 0}
    tickets, comments = [], []
    for n, (text, rating) in enumerate(rated_tickets(count, seed=21)):
        ticket_id, requester = 1000 + n, 50_000 + n
        created = now - timedelta(hours=count - n)
        score = rating if n % 10 else "offered"  # some tickets were offered a survey only
        satisfaction = {"score": score, "comment": text if n % 3 == 0 else ""}
        tickets.append(
            (desk_id, ticket_id, tenant, "solved", f"Ticket {n}", requester, f"Customer {n}",
             created, created + timedelta(minutes=30), created,
             Jsonb({"id": ticket_id, "satisfaction_rating": satisfaction}))
        )  # fmt: skip
        comments.append((desk_id, 10 * ticket_id + 1, tenant, ticket_id, requester, True,
                         f"<p>{text}</p>", created))  # fmt: skip
        comments.append((desk_id, 10 * ticket_id + 2, tenant, ticket_id, 7, True,
                         "Thanks for reaching out, we are looking into it.", created))  # fmt: skip
        comments.append((desk_id, 10 * ticket_id + 3, tenant, ticket_id, requester, False,
                         "internal", created))  # fmt: skip
        expected["comments"] += 1
        if score in ("good", "bad") and satisfaction["comment"]:
            expected["satisfaction"] += 1
    with db.cursor() as cur:
        cur.executemany(
            """
            insert into raw.zendesk_tickets (desk_id, ticket_id, tenant_id, status, subject,
                requester_id, req_name, created_at, updated_at, generated_at, raw_data)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            """,
            tickets,
        )
        cur.executemany(
            """
            insert into raw.zendesk_ticket_comments (desk_id, comment_id, tenant_id, ticket_id,
                author_id, public, body, created_at, raw_data)
            values (%s, %s, %s, %s, %s, %s, %s, %s, '{}')
            """,
            comments,
        )
    return expected


@pytest.mark.slow
def test_tenant_classifier_scores_zendesk_feedback(
    make_workspace, add_source, dagster_resources, db
):
    from assets.feedback.defs import feedback_enrichment, feedback_items

    tenant = f"tenant-{uuid.uuid4().hex[:8]}"
    desk_id, desk_name = _insert_desk(db, tenant)
    expected = _insert_rated_tickets(db, desk_id, tenant, 400)
    workspace = make_workspace(tenant=tenant)
    add_source(workspace, "zendesk", "helpdesk", desk=[desk_name])

    results = []
    for _ in range(2):  # a second pull finds nothing new, and there is nothing to enrich
        results.append(
            dg.materialize(
                [feedback_items, feedback_enrichment],
                resources=dagster_resources,
                run_config={"ops": {"feedback_items": {"config": {"workspace": workspace.name}}}},
            )
        )
        assert results[-1].success
    second = results[1].asset_materializations_for_node("feedback_items")[0].metadata
    assert second["pulled_new"].value == 0 and second["pulled_updated"].value == 0
    rows = db.execute(
        """
        select split_part(external_id, ':', 1), count(*), count(distinct sentiment_model),
               min(sentiment_model), count(*) filter (where rating in ('good', 'bad'))
        from raw.feedback_items where workspace_id = %s group by 1 order by 1
        """,
        (workspace.workspace_id,),
    ).fetchall()
    assert rows == [
        ("comment", expected["comments"], 1, "tenant_tfidf_logreg", 0),
        ("satisfaction", expected["satisfaction"], 1, "tenant_tfidf_logreg",
         expected["satisfaction"]),
    ]  # fmt: skip
    text = db.execute(
        "select text from raw.feedback_items where workspace_id = %s limit 1",
        (workspace.workspace_id,),
    ).fetchone()[0]
    assert "<p>" not in text

    # the evaluation is recorded as run metadata and in control.sentiment_evaluations
    first = results[0].asset_materializations_for_node("feedback_enrichment")[0]
    figures = first.metadata["sentiment_evaluation"].value[tenant]
    assert figures["chosen"] == "tenant_tfidf_logreg"
    assert figures["tenant_tfidf_logreg"]["macro_f1"] > figures["majority"]["macro_f1"]
    assert figures["tenant_tfidf_logreg"]["accuracy"] > figures["majority"]["accuracy"]
    assert "macro F1" in first.metadata["sentiment_evaluation_table"].value
    stored = db.execute(
        "select chosen_engine, figures from control.sentiment_evaluations where tenant_id = %s "
        "order by evaluated_at desc limit 1",
        (tenant,),
    ).fetchone()
    assert stored[0] == "tenant_tfidf_logreg" and stored[1]["test"] == figures["test"]

    # agreement with the ratings on the satisfaction items themselves
    agree = db.execute(
        """
        select avg(case when (sentiment_label = 'negative') = (rating = 'bad') then 1 else 0 end)
        from raw.feedback_items where workspace_id = %s and rating in ('good', 'bad')
        """,
        (workspace.workspace_id,),
    ).fetchone()[0]
    assert agree > 0.75


# Hand-labelled sentiment words of general English, each used once (kept to words a general
# lexicon knows): the labels come from these lists, not from any engine.
PRAISE = """excellent wonderful fantastic superb great amazing awesome brilliant delightful lovely
perfect outstanding impressive pleasant helpful friendly happy glad thrilled grateful thankful
marvelous terrific splendid fabulous magnificent remarkable superior admirable charming cheerful
elegant enjoyable gorgeous graceful joyful kind nice pleased satisfied sweet wise clever
comfortable generous beautiful best valuable efficient useful effective""".split()
COMPLAINT = """terrible horrible awful dreadful useless bad poor disappointing annoying frustrating
angry upset worst pathetic ridiculous unacceptable miserable nasty rude lousy sad painful broken
hopeless careless confusing crappy cruel disgusting dismal dumb evil fail failure faulty gross
hostile ignorant inadequate inferior insulting lame messy offensive outrageous stupid ugly
unhappy unpleasant weak wrong worthless""".split()
FRAMES = (
    "The new export is {}.",
    "Our billing page is {}.",
    "The mobile app update is {}.",
    "This ticket was {}.",
    "The reply from your team was {}.",
)


def test_baseline_kept_when_the_classifier_does_not_beat_it():
    """Each rating rests on a word seen once: a general lexicon knows every one of them, a
    classifier trained on the other texts has never seen the held-out ones, so it cannot beat
    the lexicon and the baseline stays."""
    texts, ratings = [], []
    for rating, words in (("good", PRAISE), ("bad", COMPLAINT)):
        for n, word in enumerate(words):
            texts.append(FRAMES[n % len(FRAMES)].format(word))
            ratings.append(rating)
    assert len(set(PRAISE + COMPLAINT)) == len(texts) == 103
    selection = select_engine(texts, ratings)
    assert selection.name == BASELINE
    assert selection.evaluation[BASELINE]["macro_f1"] == 1.0
    assert selection.evaluation["tenant_tfidf_logreg"]["macro_f1"] < 1.0
    assert selection.evaluation["reason"].startswith("no trained engine beat the baseline")


def test_scoring_with_the_baseline_does_not_load_scikit_learn():
    """Every conversations drain scores customer texts with the baseline: it must not pay the
    seconds of scikit-learn's imports that only training and evaluating engines need."""
    import subprocess
    import sys
    from pathlib import Path

    probe = (
        "import sys\n"
        "from assets.feedback.rules import score_sentiment\n"
        "from assets.conversations.store import Engines\n"
        "((score, label),) = score_sentiment(['Thanks, that fixed it!'])\n"
        "assert score > 0 and label == 'positive', (score, label)\n"
        "assert Engines.default().sentiment(['this is awful'])[0] < 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
