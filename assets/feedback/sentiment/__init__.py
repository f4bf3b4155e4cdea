"""Sentiment engines, registered in one place, and how one is chosen per tenant.

`vader` is the baseline and needs no data. A trainable engine is trained on a tenant's rated
tickets when there are at least `MIN_LABELLED` of them (and `MIN_PER_CLASS` of each rating), and
used only when it beats the baseline's macro F1 on a held-out split (stratified, 25 %). The
evaluation figures (accuracy and macro F1 of every engine and of always-predicting-the-majority)
come back with the choice, so runs can record them.

To add an engine: write `assets/feedback/sentiment/<engine>.py` with a `SentimentEngine`
subclass and add it to `ENGINES` below.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assets.feedback.sentiment.base import SentimentEngine, score_labels
from assets.feedback.sentiment.tfidf_logreg import TfidfLogRegEngine
from assets.feedback.sentiment.vader import VaderEngine

ENGINES: dict[str, type[SentimentEngine]] = {
    engine.name: engine for engine in (VaderEngine, TfidfLogRegEngine)
}
BASELINE = VaderEngine.name
MIN_LABELLED = 100
MIN_PER_CLASS = 20
TEST_SHARE = 0.25
RATINGS = ("bad", "good")


@dataclass
class Selection:
    """The engine to score a tenant's items with, and the evidence for the choice."""

    engine: SentimentEngine
    evaluation: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.engine.name


def figures(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    # scikit-learn is imported where engines are evaluated: scoring with the baseline (every
    # conversations drain) must not pay seconds of its imports
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": round(float(accuracy_score(truth, predicted)), 4),
        "macro_f1": round(
            float(f1_score(truth, predicted, labels=list(RATINGS), average="macro")), 4
        ),
    }


def evaluate(
    texts: Sequence[str], ratings: Sequence[str], seed: int = 0
) -> tuple[dict[str, Any], dict[str, SentimentEngine]]:
    """Train every trainable engine on 75 % of the rated texts and score every engine on the
    held-out 25 %. Returns (figures by engine + majority baseline, fitted engines)."""
    from sklearn.model_selection import train_test_split

    train_x, test_x, train_y, test_y = train_test_split(
        list(texts), list(ratings), test_size=TEST_SHARE, random_state=seed, stratify=ratings
    )
    majority = Counter(train_y).most_common(1)[0][0]
    result: dict[str, Any] = {
        "labelled": len(texts),
        "train": len(train_x),
        "test": len(test_x),
        "majority": {"label": majority, **figures(test_y, [majority] * len(test_y))},
    }
    fitted: dict[str, SentimentEngine] = {}
    for name, engine_cls in ENGINES.items():
        engine = engine_cls.train(train_x, train_y) if engine_cls.trainable else engine_cls()
        fitted[name] = engine
        result[name] = figures(test_y, list(engine.predict_ratings(test_x)))
    return result, fitted


def enough_ratings(ratings: Sequence[str]) -> bool:
    counts = Counter(ratings)
    return len(ratings) >= MIN_LABELLED and all(counts[r] >= MIN_PER_CLASS for r in RATINGS)


def select_engine(texts: Sequence[str], ratings: Sequence[str]) -> Selection:
    """The baseline, or the best trained engine when it beats the baseline on held-out data.

    The chosen trainable engine is refitted on all rated texts before use.
    """
    if not enough_ratings(ratings):
        return Selection(
            ENGINES[BASELINE](),
            {
                "chosen": BASELINE,
                "reason": f"fewer than {MIN_LABELLED} usable ratings",
                "labelled": len(ratings),
            },
        )
    result, _ = evaluate(texts, ratings)
    best = max(
        (name for name, cls in ENGINES.items() if cls.trainable),
        key=lambda name: result[name]["macro_f1"],
        default=None,
    )
    if best is not None and result[best]["macro_f1"] > result[BASELINE]["macro_f1"]:
        result["chosen"] = best
        return Selection(ENGINES[best].train(texts, ratings), result)
    result["chosen"] = BASELINE
    result["reason"] = "no trained engine beat the baseline on the held-out split"
    return Selection(ENGINES[BASELINE](), result)


def score_texts(engine: SentimentEngine, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) for texts with one engine."""
    scores = engine.scores(texts)
    return score_labels(scores, engine.neutral_band), scores


__all__ = ["BASELINE", "ENGINES", "Selection", "SentimentEngine", "evaluate", "select_engine"]
