"""The README's topic promise: the model is refitted when the workspace's items change (and only
then), and every item is re-assigned with the new labels."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from assets.feedback.enrichment import enrich
from assets.feedback.rules import FeedbackItem
from assets.feedback.store import upsert_items
from sandbox.feedback_text import compose


def _items(source, texts, first: int = 0):
    start = datetime(2026, 2, 1, tzinfo=UTC)
    return [
        FeedbackItem(
            source.workspace_id,
            source.tenant_id,
            "webhook",
            source.source_id,
            f"e-{first + n}",
            None,
            text,
            start + timedelta(hours=first + n),
        )  # fmt: skip
        for n, text in enumerate(texts)
    ]


def _model(db, workspace_id):
    return db.execute(
        "select fitted_at, items, topics from control.topic_models where workspace_id = %s",
        (workspace_id,),
    ).fetchone()


def test_topics_are_refitted_when_items_change_and_every_item_reassigned(
    make_workspace, add_source, warehouse, db
):
    rng = random.Random(5)
    workspace = make_workspace()
    source, _ = add_source(workspace, "webhook")
    themes = ("billing", "export")
    texts = [compose(rng, theme, "negative") for theme in themes for _ in range(30)]
    with warehouse.connection() as conn:
        upsert_items(conn, _items(source, texts))
    first = enrich(warehouse.connection, workspace.name)
    fitted_at, items, topics = _model(db, workspace.workspace_id)
    assert items == 60
    assert not any("dark" in t["label"] for t in topics)

    # nothing changed: no refit, nothing re-assigned
    again = enrich(warehouse.connection, workspace.name)
    assert again.topics_updated == 0
    assert _model(db, workspace.workspace_id)[0] == fitted_at

    # a new theme arrives: the model is refitted on all items and finds it
    dark = [compose(rng, "dark_mode", "negative") for _ in range(30)]
    with warehouse.connection() as conn:
        upsert_items(conn, _items(source, dark, first=60))
    refit = enrich(warehouse.connection, workspace.name)
    new_fitted_at, new_items, new_topics = _model(db, workspace.workspace_id)
    assert new_fitted_at > fitted_at and new_items == 90
    labels = [t["label"] for t in new_topics]
    assert (
        labels == refit.topic_labels[workspace.name]
        and labels != first.topic_labels[workspace.name]
    )
    dark_labels = [label for label in labels if "dark" in label or "theme" in label]
    assert dark_labels, labels
    # every item carries labels of the new model only, the new ones included
    assigned = db.execute(
        "select external_id, topics from raw.feedback_items where source_id = %s",
        (source.source_id,),
    ).fetchall()
    assert len(assigned) == 90
    assert all(set(topics) <= set(labels) for _, topics in assigned)
    new_item_topics = [topics for external_id, topics in assigned if int(external_id[2:]) >= 60]
    assert sum(bool(set(t) & set(dark_labels)) for t in new_item_topics) >= 25
