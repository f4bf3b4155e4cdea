"""The feedback domain rules as plain functions: ids, HTML cleaning, pushed-item validation,
source configs, Discourse query parsing and Retry-After, topic labels and the anomaly rule."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from assets.feedback.enrichment import detect_languages, fit_topics, readable_label
from assets.feedback.insights import (
    DayStats,
    day_anomalies,
    negative_spike,
    topic_anomalies,
    volume_anomaly,
)
from assets.feedback.rules import (
    FeedbackValidationError,
    SourceConfigError,
    clean_html,
    make_item_id,
)
from assets.feedback.sources import SOURCE_KINDS, source_kind
from assets.feedback.sources.discourse import search_query
from assets.feedback.sources.webhook import (
    feedback_message_key,
    item_from_message,
    validate_item,
    validate_payload,
)
from assets.feedback.store import hash_token, token_matches
from sandbox.discourse import parse_query


def test_item_id_is_stable_and_distinguishes_workspace_source_and_id():
    assert make_item_id(1, 2, "abc") == make_item_id(1, 2, "abc")
    ids = {make_item_id(1, 2, "abc"), make_item_id(2, 2, "abc"), make_item_id(1, 3, "abc"),
           make_item_id(1, 2, "abd")}  # fmt: skip
    assert len(ids) == 4


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Export is <b>broken</b> &amp; slow</p>", "Export is broken & slow"),
        ('<aside class="quote"><blockquote><p>old</p></blockquote></aside><p>new</p>', "new"),
        ("<p>see</p><pre><code>trace</code></pre>", "see"),
        ("plain   text\nwith  spaces", "plain text with spaces"),
        ("<p>  </p>", ""),
    ],
)
def test_clean_html(html, text):
    assert clean_html(html) == text


GOOD = {"external_id": 7, "text": "<p>Nice</p>", "author": None,
        "created_at": "2026-03-01T10:00:00Z"}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"external_id": None}, "external_id"),
        ({"external_id": ""}, "external_id"),
        ({"text": ""}, "text"),
        ({"text": "<p> </p>"}, "text"),
        ({"text": 5}, "text"),
        ({"author": 3}, "author"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": "2026-03-01T10:00:00"}, "time zone"),
        ({"rating": True}, "rating"),
        ({"metadata": [1]}, "metadata"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_validate_item_names_the_problem(change, message):
    with pytest.raises(FeedbackValidationError, match=message):
        validate_item({**GOOD, **change})


def test_validate_item_requires_author_key_and_normalises():
    without_author = {k: v for k, v in GOOD.items() if k != "author"}
    with pytest.raises(FeedbackValidationError, match="author"):
        validate_item(without_author)
    item = validate_item({**GOOD, "rating": 4.5})
    assert item["external_id"] == "7" and item["rating"] == "4.5"
    assert item["created_at"] == "2026-03-01T10:00:00+00:00"


@pytest.mark.parametrize(
    ("document", "message"),
    [("text", "object or an array"), ([], "empty"), ([GOOD, {"text": "x"}], r"item\[1\]")],
)
def test_validate_payload(document, message):
    with pytest.raises(FeedbackValidationError, match=message):
        validate_payload(document)


MESSAGE = {"type": "feedback_item", "tenant_id": "acme", "workspace_id": 3, "source_id": 4,
           "event_id": "e-1", "item_id": "i-1", **validate_item(GOOD)}  # fmt: skip


def test_feedback_message_to_item_and_its_key():
    item = item_from_message(MESSAGE)
    assert (item.workspace_id, item.source_id, item.tenant_id) == (3, 4, "acme")
    assert (item.external_id, item.text, item.source) == ("7", "Nice", "webhook")
    assert feedback_message_key(MESSAGE) == "event_id:e-1"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"type": "activity"}, "type: expected 'feedback_item', got 'activity'"),
        ({"tenant_id": ""}, "tenant_id: expected `str` of length >= 1"),
        ({"workspace_id": "3"}, "workspace_id: expected `int`, got `str`"),
        ({"source_id": None}, "source_id: expected `int`, got `null`"),
        ({"text": " "}, "message.text: required, a non-empty string"),
        ({"created_at": "2026-03-01"}, "message.created_at: timestamp needs a time zone"),
    ],
)
def test_malformed_feedback_messages_name_the_field_and_the_reason(change, problem):
    with pytest.raises(FeedbackValidationError) as caught:
        item_from_message({**MESSAGE, **change})
    assert str(caught.value).startswith(problem)


def test_token_hash_comparison():
    stored = hash_token("secret-token")
    assert token_matches("secret-token", stored)
    assert not token_matches("secret-token2", stored)
    assert not token_matches("secret-token", None)


def test_registry_has_the_three_kinds_and_refuses_others():
    assert set(SOURCE_KINDS) >= {"discourse", "zendesk", "webhook"}
    with pytest.raises(SourceConfigError, match="unknown source kind"):
        source_kind("twitter")


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("discourse", {}, "--base-url is required"),
        ("discourse", {"base-url": "ftp://x"}, "http"),
        ("discourse", {"base-url": "https://f.example", "since": "01/02/2026"}, "YYYY-MM-DD"),
        ("zendesk", {}, "--desk is required"),
    ],
)
def test_source_config_errors(kind, options, message):
    with pytest.raises(SourceConfigError, match=message):
        source_kind(kind).build_config(options)


def test_discourse_config_and_query():
    config = source_kind("discourse").build_config(
        {"base-url": "https://meta.discourse.org/", "query": "export", "since": "2026-01-01"}
    )
    assert config == {"base_url": "https://meta.discourse.org", "query": "export",
                      "since": "2026-01-01"}  # fmt: skip
    assert search_query("export", "2026-01-01") == "export after:2026-01-01 order:latest"
    assert search_query("", "2026-01-01") == "after:2026-01-01 order:latest"
    terms, after, before, latest = parse_query("Export csv after:2026-01-02 order:latest #bugs")
    assert terms == ["export", "csv", "#bugs"] and latest and before is None
    assert after == datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("terms", "label"),
    [
        (["dark", "theme", "dark mode", "contrast"], "dark / theme / dark mode"),
        (["dark mode", "dark", "mode", "theme"], "dark mode / theme"),
        (["refund", "charged twice", "twice", "invoice"], "refund / charged twice / invoice"),
    ],
)
def test_readable_label(terms, label):
    assert readable_label(terms) == label


def test_topics_separate_themes_with_readable_labels():
    from random import Random

    from sandbox.feedback_text import compose

    rng = Random(1)
    texts = [compose(rng, theme, "negative") for theme in ("billing", "mobile") for _ in range(40)]
    model = fit_topics(texts, texts)
    assert model is not None and len(model.labels) == 2
    billing = Counter(tuple(t) for t in model.assignments[:40]).most_common(1)[0][0][0]
    mobile = Counter(tuple(t) for t in model.assignments[40:]).most_common(1)[0][0][0]
    assert billing != mobile
    assert any(w in billing for w in ("invoice", "refund", "charge", "billing", "subscription"))
    assert any(w in mobile for w in ("app", "iphone", "android", "mobile", "notifications"))
    assert fit_topics(texts[:5], texts[:5]) is None  # too few items for a topic model


def test_languages():
    languages, confidences = detect_languages(
        ["The export stopped working after the update, please help us quickly.",
         "Der Export funktioniert seit dem Update nicht mehr, bitte helfen Sie uns schnell.",
         "La exportación del informe no funciona desde la actualización."]
    )  # fmt: skip
    assert languages == ["en", "de", "es"]
    assert all(0 < c <= 1 for c in confidences)


def _days(items: list[int], negative: list[int]) -> list[DayStats]:
    return [DayStats(items=i, negative=n) for i, n in zip(items, negative, strict=True)]


@pytest.mark.parametrize(
    ("today", "trailing", "flagged"),
    [
        (DayStats(40, negative=20), _days([40] * 7, [10, 8, 12, 9, 11, 10, 10]), True),
        (DayStats(40, negative=15), _days([40] * 7, [10, 8, 12, 9, 11, 10, 10]), False),
        (DayStats(8, negative=8), _days([40] * 7, [10] * 7), False),  # too few items today
        (DayStats(40, negative=30), _days([0] * 5 + [40] * 2, [0] * 5 + [10] * 2), False),
        # a noisy week needs more: 2 sd above the mean
        (DayStats(40, negative=24), _days([40] * 7, [4, 20, 6, 22, 5, 21, 8]), False),
    ],
)
def test_negative_spike_rule(today, trailing, flagged):
    assert (negative_spike(today, trailing) is not None) is flagged


@pytest.mark.parametrize(
    ("today", "counts", "kind"),
    [
        (100, [40, 42, 38, 41, 39, 40, 40], "volume_spike"),
        (55, [40, 42, 38, 41, 39, 40, 40], None),  # within 3 x sqrt(40)
        (5, [40, 42, 38, 41, 39, 40, 40], "volume_drop"),
        (100, [0, 0, 0, 0, 0, 40, 40], None),  # too little history
    ],
)
def test_volume_rule(today, counts, kind):
    found = volume_anomaly(DayStats(today), _days(counts, [0] * 7))
    assert (found or {}).get("kind") == kind


def test_topic_rules():
    trailing = [Counter({"billing": 5, "login": 3})] * 7
    items = [40] * 7
    found = topic_anomalies(Counter({"dark mode": 4, "billing": 11, "login": 4}), trailing, items)
    assert [(a["kind"], a["topic"]) for a in found] == [
        ("growing_topic", "billing"),
        ("new_topic", "dark mode"),
    ]
    assert topic_anomalies(Counter({"dark mode": 2}), trailing, items) == []  # too few items
    assert topic_anomalies(Counter({"dark mode": 9}), trailing[:2], items[:2]) == []  # no history


def test_day_anomalies_combines_rules():
    trailing = _days([40] * 7, [8] * 7)
    found = day_anomalies(DayStats(41, negative=30), trailing, Counter(), [Counter()] * 7)
    assert [a["kind"] for a in found] == ["negative_spike"]


def test_report_escapes_customer_html():
    from datetime import date

    from assets.feedback.insights import WorkspaceReport, render_html, render_markdown

    report = WorkspaceReport(1, "ws", "t", date(2026, 3, 1))
    example = {"item_id": "x", "text": "<script>alert(1)</script> *bold* a|b", "sentiment": None}
    report.rows["all"] = {
        "items": 1, "positive": 0, "neutral": 1, "negative": 0, "avg_sentiment": 0.0,
        "top_topics": [{"topic": "export / csv", "items": 1, "example": example}],
        "anomalies": [],
    }  # fmt: skip
    report.history = [(date(2026, 3, 1), DayStats(items=1))]
    page = render_html(render_markdown(report), "t")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "export / csv" in page and "data:image/png;base64," in page
