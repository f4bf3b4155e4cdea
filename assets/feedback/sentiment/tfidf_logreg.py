"""A per-tenant classifier: TF-IDF word and bigram features + logistic regression, trained on
the tenant's tickets with satisfaction ratings. It learns how this tenant's customers say they
are unhappy ("charged twice", "still waiting"), which a general lexicon does not know."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from assets.feedback.sentiment.base import SentimentEngine

if TYPE_CHECKING:  # scikit-learn is imported when a model is trained, not with the registry
    from sklearn.pipeline import Pipeline


class TfidfLogRegEngine(SentimentEngine):
    name = "tenant_tfidf_logreg"
    trainable = True
    neutral_band = 0.2  # P(good) within 0.4..0.6 is neutral

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self._good = list(pipeline.classes_).index("good")

    @classmethod
    def train(cls, texts: Sequence[str], ratings: Sequence[str]) -> TfidfLogRegEngine:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        pipeline = Pipeline(
            [
                (
                    "tfidf",
                    TfidfVectorizer(
                        ngram_range=(1, 2), min_df=2, sublinear_tf=True, strip_accents="unicode"
                    ),
                ),
                ("model", LogisticRegression(max_iter=1000, class_weight="balanced", C=4.0)),
            ]
        )
        pipeline.fit(list(texts), list(ratings))
        return cls(pipeline)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        return self.pipeline.predict_proba(list(texts))[:, self._good] * 2.0 - 1.0
