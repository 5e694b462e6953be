"""Backbone outputs of labelled photos, and the served model's answer to them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classifier.head import LinearHead
from classifier.model import ImageClassifier
from classifier.taxonomy import Taxonomy


@dataclass
class LabelledOutputs:
    """Backbone outputs of labelled photos, row-aligned: ``embeddings`` float32 (N, D), ``logits``
    float32 (N, 1000), ``labels`` (category slugs) and ``keys`` (e.g. photo ids), length N."""

    embeddings: np.ndarray
    logits: np.ndarray
    labels: list[str]
    keys: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> LabelledOutputs:
        """The rows selected by a boolean mask or an index array."""
        index = np.flatnonzero(rows) if rows.dtype == bool else rows
        return LabelledOutputs(
            embeddings=self.embeddings[index],
            logits=self.logits[index],
            labels=[self.labels[i] for i in index],
            keys=[self.keys[i] for i in index],
        )


def score_head(head: LinearHead, taxonomy: Taxonomy, data: LabelledOutputs) -> tuple[list[str], np.ndarray]:
    """Top-1 category slug and its confidence (float64 (N,)) per row, as the served model (head,
    gate and zero-shot together) would answer from these backbone outputs."""
    classifier = ImageClassifier(head=head, taxonomy=taxonomy)
    scores = classifier.scores_from_outputs(data.embeddings, data.logits)
    columns = scores.argmax(axis=1)
    return [classifier.slugs[column] for column in columns], scores[np.arange(len(columns)), columns]
