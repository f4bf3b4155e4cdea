"""Feedback enrichment: language, sentiment and topics of `raw.feedback_items`.

- Language: py3langid (its model ships inside the package), per item, normalised confidence.
- Sentiment: the engine chosen per tenant (`assets.feedback.sentiment.select_engine`): VADER, or a
  classifier trained on the tenant's satisfaction-rated tickets when it beats VADER held out.
  Each item records the engine that scored it.
- Topics: per workspace, TF-IDF (words and bigrams) + NMF. NMF gives additive, interpretable
  parts whose top terms make readable labels ("refund / charged twice / invoice"), and an item can
  belong to two topics; k-means would force one. The model is refitted on the workspace's most
  recent items whenever something in it changed, and every item is assigned again, so the labels
  are consistent across all days the reports compare.

Language and sentiment run only for items whose content changed since their last enrichment.
Everything except the two per-item libraries (py3langid, VADER) is vectorised.

When a workspace's enrichment is through (topics assigned), the UTC days of the items inserted,
edited or enriched since its previous topic fit are marked changed, in the transaction that
records the fit: the insight reports reading those days are then written again. A refit that
only relabels items does not mark their days (reports keep the labels they were written with).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from functools import lru_cache
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from sklearn.decomposition import NMF
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

from assets.feedback.rules import clean_html
from assets.feedback.sentiment import BASELINE, ENGINES, Selection, score_texts, select_engine
from assets.feedback.store import mark_feedback_days_changed

log = logging.getLogger(__name__)

LANGUAGE_CHARS = 400  # py3langid is sure of a language well within this many characters
TOPIC_FIT_ITEMS = 20_000  # fit the topic model on at most this many recent items
MAX_TOPICS = 10
ITEMS_PER_TOPIC = 40  # about one topic per this many items, between 2 and MAX_TOPICS
MIN_TOPIC_ITEMS = 20  # fewer items in a workspace: no topic model
SECONDARY_TOPIC_SHARE = 0.5  # a second topic counts when its weight is half the first's
MIN_TOPIC_WEIGHT_SHARE = 0.2  # of the median item's top weight: weaker items get no topic
TRAINING_TICKETS = 20_000
# words that say how people feel, not what they talk about: kept out of topic labels
TOPIC_STOP_WORDS = sorted(
    ENGLISH_STOP_WORDS
    | {
        "thanks", "thank", "great", "love", "happy", "terrible", "disappointed", "please",
        "help", "really", "just", "im", "ive", "dont", "hi", "hello", "team", "support",
        "problem", "issue", "still", "works", "working", "work", "also", "new", "use",
    }
)  # fmt: skip


# --- language ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_languages(texts: Sequence[str]) -> tuple[list[str], list[float]]:
    """ISO 639-1 code and confidence per text."""
    identifier = _language_identifier()
    languages, confidences = [], []
    for text in texts:
        language, confidence = identifier.classify(text[:LANGUAGE_CHARS])
        languages.append(language)
        confidences.append(round(float(confidence), 4))
    return languages, confidences


# --- topics --------------------------------------------------------------------------------------


@dataclass
class TopicModel:
    labels: list[str]
    top_terms: list[list[str]]
    assignments: list[list[str]]  # per input text, its topic labels (strongest first)
    sizes: dict[str, int] = field(default_factory=dict)


def topic_count(items: int) -> int:
    return max(2, min(MAX_TOPICS, items // ITEMS_PER_TOPIC))


def readable_label(terms: Sequence[str], size: int = 3) -> str:
    """Top terms joined, skipping a term whose words an earlier (better) term already says."""
    chosen: list[str] = []
    covered: set[str] = set()
    for term in terms:
        words = set(term.split())
        if words <= covered:
            continue
        chosen.append(term)
        covered |= words
        if len(chosen) == size:
            break
    return " / ".join(chosen)


def fit_topics(fit_texts: Sequence[str], assign_texts: Sequence[str]) -> TopicModel | None:
    """TF-IDF + NMF fitted on `fit_texts`; every text of `assign_texts` gets its topics."""
    if len(fit_texts) < MIN_TOPIC_ITEMS:
        return None
    vectorizer = TfidfVectorizer(
        stop_words=TOPIC_STOP_WORDS,
        ngram_range=(1, 2),
        min_df=3,
        max_df=0.3,
        max_features=20_000,
        sublinear_tf=True,
        strip_accents="unicode",
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z-]{2,}\b",
    )
    try:
        matrix = vectorizer.fit_transform(fit_texts)
    except ValueError:  # nothing left after stop words and min_df
        return None
    k = min(topic_count(len(fit_texts)), matrix.shape[1])
    if k < 2:
        return None
    nmf = NMF(n_components=k, init="nndsvda", random_state=0, max_iter=300)
    nmf.fit(matrix)
    vocabulary = vectorizer.get_feature_names_out()
    top_terms = [[vocabulary[i] for i in np.argsort(row)[::-1][:8]] for row in nmf.components_]
    labels = _unique([readable_label(terms) for terms in top_terms])
    weights = nmf.transform(vectorizer.transform(assign_texts))
    order = np.argsort(weights, axis=1)[:, ::-1][:, :2]
    tops = weights.max(axis=1)
    # a text that shares a stray word or two with a topic (another language, an off-topic post)
    # gets a tiny weight: below a fraction of the typical weight it gets no topic
    floor = MIN_TOPIC_WEIGHT_SHARE * float(np.median(tops[tops > 0])) if (tops > 0).any() else 0
    assignments: list[list[str]] = []
    sizes: dict[str, int] = dict.fromkeys(labels, 0)
    for row, (first, second) in zip(weights, order, strict=True):
        top = row[first]
        if top <= 0 or top < floor:
            assignments.append([])
            continue
        chosen = [labels[first]]
        if row[second] >= SECONDARY_TOPIC_SHARE * top:
            chosen.append(labels[second])
        sizes[labels[first]] += 1
        assignments.append(chosen)
    return TopicModel(labels, top_terms, assignments, sizes)


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        result.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return result


# --- sentiment model per tenant ------------------------------------------------------------------


def rated_tickets(conn: psycopg.Connection, tenant_id: str) -> tuple[list[str], list[str]]:
    """(text, rating) of the tenant's tickets rated good/bad: subject, the requester's public
    comments and the satisfaction comment. Empty when the tickets domain is not set up."""
    exists = conn.execute(
        "select to_regclass('raw.zendesk_tickets') is not null "
        "and to_regclass('raw.zendesk_ticket_comments') is not null "
        "and to_regclass('control.desks') is not null"
    ).fetchone()[0]
    if not exists:
        return [], []
    rows = conn.execute(
        """
        select concat_ws(' ', t.subject,
                   (select string_agg(c.body, ' ' order by c.created_at)
                    from raw.zendesk_ticket_comments c
                    where c.desk_id = t.desk_id and c.ticket_id = t.ticket_id
                      and c.public and c.author_id = t.requester_id),
                   t.raw_data->'satisfaction_rating'->>'comment'),
               t.raw_data->'satisfaction_rating'->>'score'
        from raw.zendesk_tickets t join control.desks d on d.desk_id = t.desk_id
        where d.tenant_id = %s and not t.is_deleted
          and t.raw_data->'satisfaction_rating'->>'score' in ('good', 'bad')
        order by t.updated_at desc nulls last
        limit %s
        """,
        (tenant_id, TRAINING_TICKETS),
    ).fetchall()
    pairs = [(clean_html(text or ""), score) for text, score in rows]
    pairs = [(text, score) for text, score in pairs if text]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def record_evaluation(conn: psycopg.Connection, tenant_id: str, selection: Selection) -> None:
    evaluation = selection.evaluation
    if "test" not in evaluation:
        return  # nothing was evaluated (too few ratings): the baseline needs no record
    conn.execute(
        """
        insert into control.sentiment_evaluations
            (tenant_id, chosen_engine, train_size, test_size, figures)
        values (%s, %s, %s, %s, %s)
        """,
        (tenant_id, selection.name, evaluation["train"], evaluation["test"], Jsonb(evaluation)),
    )


# --- the enrichment run --------------------------------------------------------------------------


@dataclass
class EnrichmentReport:
    workspaces: int = 0
    items_enriched: int = 0
    topics_updated: int = 0
    engines: dict[str, str] = field(default_factory=dict)  # tenant -> engine
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # tenant -> figures
    topic_labels: dict[str, list[str]] = field(default_factory=dict)  # workspace -> labels


Connect = Callable[[], Any]  # returns a connection context manager: the block is a transaction


def enrich(
    connect: Connect, workspace: str | None = None, selections: dict[str, Selection] | None = None
) -> EnrichmentReport:
    """Enrich every item that needs it, in every workspace (or one)."""
    report = EnrichmentReport()
    selections = {} if selections is None else selections
    with connect() as conn:
        workspaces = conn.execute(
            "select workspace_id, name, tenant_id from control.workspaces "
            "where %(name)s::text is null or name = %(name)s order by workspace_id",
            {"name": workspace},
        ).fetchall()
    for workspace_id, name, tenant_id in workspaces:
        report.workspaces += 1
        with connect() as conn:
            pending = conn.execute(
                "select exists (select 1 from raw.feedback_items where workspace_id = %s "
                "and enriched_hash is distinct from content_hash)",
                (workspace_id,),
            ).fetchone()[0]
        if pending:
            # the engine is chosen (and a classifier trained) only when there is work for it
            if tenant_id not in selections:
                with connect() as conn:
                    texts, ratings = rated_tickets(conn, tenant_id)
                    selections[tenant_id] = select_engine(texts, ratings)
                    record_evaluation(conn, tenant_id, selections[tenant_id])
            selection = selections[tenant_id]
            report.engines[tenant_id] = selection.name
            if "test" in selection.evaluation:
                report.evaluations[tenant_id] = selection.evaluation
            report.items_enriched += enrich_items(connect, workspace_id, selection)
        updated, labels = assign_topics(connect, workspace_id)
        report.topics_updated += updated
        report.topic_labels[name] = labels
    return report


def enrich_items(connect: Connect, workspace_id: int, selection: Selection) -> int:
    """Language and sentiment for the workspace's items whose content changed; returns count."""
    total = 0
    while True:
        with connect() as conn:
            rows = conn.execute(
                """
                select item_id, text, content_hash from raw.feedback_items
                where workspace_id = %s and enriched_hash is distinct from content_hash
                order by item_id limit 5000
                for update skip locked
                """,
                (workspace_id,),
            ).fetchall()
            if not rows:
                return total
            item_ids, texts, hashes = (list(column) for column in zip(*rows, strict=True))
            languages, confidences = detect_languages(texts)
            labels, scores = score_texts(selection.engine, texts)
            conn.execute(
                "create temp table if not exists feedback_enrichment_stage (item_id text, "
                "language text, language_score float8, label text, score float8, "
                "model text, hash text)"
            )
            conn.execute("truncate feedback_enrichment_stage")
            with conn.cursor().copy("copy feedback_enrichment_stage from stdin") as copy:
                for row in zip(
                    item_ids,
                    languages,
                    confidences,
                    labels.tolist(),
                    np.round(scores, 4).tolist(),
                    [selection.name] * len(rows),
                    hashes,
                    strict=True,
                ):
                    copy.write_row(row)
            conn.execute(
                """
                update raw.feedback_items f set
                    language = s.language, language_score = s.language_score,
                    sentiment_label = s.label, sentiment_score = s.score,
                    sentiment_model = s.model, enriched_hash = s.hash, updated_at = now()
                from feedback_enrichment_stage s where f.item_id = s.item_id
                """
            )
            total += len(rows)


def assign_topics(connect: Connect, workspace_id: int) -> tuple[int, list[str]]:
    """Refit the workspace's topic model when its items changed since the last fit; assign
    topics to every item. Returns (items whose topics changed, topic labels)."""
    with connect() as conn:
        fitted = conn.execute(
            "select fitted_at, topics from control.topic_models where workspace_id = %s",
            (workspace_id,),
        ).fetchone()
        changed = conn.execute(
            "select max(updated_at) from raw.feedback_items where workspace_id = %s",
            (workspace_id,),
        ).fetchone()[0]
        if changed is None:
            return 0, []
        if fitted is not None and fitted[0] >= changed:
            return 0, [t["label"] for t in fitted[1]]
        rows = conn.execute(
            "select item_id, text, topics, created_at, updated_at from raw.feedback_items "
            "where workspace_id = %s order by created_at desc, item_id",
            (workspace_id,),
        ).fetchall()
    item_ids = [r[0] for r in rows]
    texts = [r[1] for r in rows]
    previous_fit = fitted[0] if fitted is not None else None
    changed_days = {
        created_at.astimezone(UTC).date()
        for _, _, _, created_at, updated_at in rows
        if previous_fit is None or updated_at > previous_fit
    }
    model = fit_topics(texts[:TOPIC_FIT_ITEMS], texts)
    assignments = model.assignments if model else [[] for _ in rows]
    changes = [
        (item_id, Jsonb(topics))
        for item_id, topics, (_, _, old, _, _) in zip(item_ids, assignments, rows, strict=True)
        if topics != old
    ]
    topics_doc = (
        [
            {"label": label, "top_terms": terms, "items": model.sizes.get(label, 0)}
            for label, terms in zip(model.labels, model.top_terms, strict=True)
        ]
        if model
        else []
    )
    with connect() as conn:
        if changes:
            conn.execute(
                "create temp table if not exists feedback_topic_stage (item_id text, t jsonb)"
            )
            conn.execute("truncate feedback_topic_stage")
            with conn.cursor().copy("copy feedback_topic_stage from stdin") as copy:
                for row in changes:
                    copy.write_row(row)
            # topics are derived, not content: updated_at stays, so the next run does not refit.
            # fitted_at is the newest change this fit saw; anything written later refits.
            conn.execute(
                "update raw.feedback_items f set topics = s.t "
                "from feedback_topic_stage s where f.item_id = s.item_id"
            )
        conn.execute(
            """
            insert into control.topic_models (workspace_id, fitted_at, items, topics)
            values (%s, %s, %s, %s)
            on conflict (workspace_id) do update set fitted_at = excluded.fitted_at,
                items = excluded.items, topics = excluded.topics
            """,
            (workspace_id, changed, len(rows), Jsonb(topics_doc)),
        )
        mark_feedback_days_changed(conn, changed_days)
    return len(changes), [t["label"] for t in topics_doc]


__all__ = ["BASELINE", "ENGINES", "detect_languages", "enrich", "fit_topics", "readable_label"]
