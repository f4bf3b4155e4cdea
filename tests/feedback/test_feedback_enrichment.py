"""Enrichment against the warehouse: only changed items are re-scored, every item records its
engine, and topics are re-assigned when the workspace changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from assets.feedback.enrichment import enrich
from assets.feedback.rules import FeedbackItem
from assets.feedback.store import upsert_items
from sandbox.feedback_text import compose


def _items(source, texts):
    start = datetime(2026, 2, 1, tzinfo=UTC)
    return [
        FeedbackItem(
            source.workspace_id,
            source.tenant_id,
            "webhook",
            source.source_id,
            f"e-{n}",
            None,
            text,
            start + timedelta(hours=n),
        )  # fmt: skip
        for n, text in enumerate(texts)
    ]


def test_changed_items_are_re_enriched_and_unchanged_ones_are_not(
    make_workspace, add_source, warehouse, db
):
    import random

    rng = random.Random(3)
    workspace = make_workspace()
    source, _ = add_source(workspace, "webhook")
    texts = [compose(rng, theme, "positive") for theme in ("billing", "export") for _ in range(20)]
    with warehouse.connection() as conn:
        upsert_items(conn, _items(source, texts))
    first = enrich(warehouse.connection, workspace.name)
    assert first.items_enriched == 40 and first.engines == {workspace.tenant_id: "vader"}
    assert len(first.topic_labels[workspace.name]) >= 2
    again = enrich(warehouse.connection, workspace.name)
    assert again.items_enriched == 0 and again.topics_updated == 0

    edited = list(texts)
    edited[0] = "This is terrible, the invoice is wrong and nobody answers. Awful."
    with warehouse.connection() as conn:
        counts = upsert_items(conn, _items(source, edited))
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 1, 39)
    assert enrich(warehouse.connection, workspace.name).items_enriched == 1
    label, model, language = db.execute(
        "select sentiment_label, sentiment_model, language from raw.feedback_items "
        "where source_id = %s and external_id = 'e-0'",
        (source.source_id,),
    ).fetchone()
    assert (label, model, language) == ("negative", "vader", "en")
