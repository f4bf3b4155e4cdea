"""The baseline: the VADER lexicon and rules (the lexicon ships inside `vaderSentiment`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from assets.feedback.sentiment.base import SentimentEngine

MAX_CHARS = 2000  # VADER reads every token; long posts say what they mean early


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


class VaderEngine(SentimentEngine):
    name = "vader"
    neutral_band = 0.05  # the thresholds VADER's authors recommend for its compound score

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        analyzer = _analyzer()
        return np.fromiter(
            (analyzer.polarity_scores(text[:MAX_CHARS])["compound"] for text in texts),
            dtype=float,
            count=len(texts),
        )
