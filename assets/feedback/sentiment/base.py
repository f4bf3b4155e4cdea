"""What a sentiment engine is: texts in, scores in [-1, 1] out, labels by a neutral band."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np


class SentimentEngine:
    """Scores texts. `neutral_band`: |score| below it is neutral. A trainable engine also has
    `train(texts, ratings)` returning a fitted engine (ratings are 'good' / 'bad')."""

    name: ClassVar[str]
    trainable: ClassVar[bool] = False
    neutral_band: ClassVar[float] = 0.05

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def train(cls, texts: Sequence[str], ratings: Sequence[str]) -> SentimentEngine:
        raise NotImplementedError(f"engine {cls.name} is not trainable")

    def labels(self, scores: np.ndarray) -> np.ndarray:
        return score_labels(scores, self.neutral_band)

    def predict_ratings(self, texts: Sequence[str]) -> np.ndarray:
        """'bad' where the text reads negative, else 'good' (how ratings are compared)."""
        return np.where(self.labels(self.scores(texts)) == "negative", "bad", "good")


def score_labels(scores: np.ndarray, band: float) -> np.ndarray:
    """positive above +band, negative below -band, neutral between (vectorised)."""
    scores = np.asarray(scores, dtype=float)
    return np.where(scores >= band, "positive", np.where(scores <= -band, "negative", "neutral"))
