"""Backbone outputs at the precision they are kept at: what a photo scores at upload, it scores
again from its cached outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from classifier.model import ImageClassifier
from classifier.outputs import STORED_DTYPE, STORED_MAX, at_stored_precision
from classifier.preprocess import load_image
from classifier.views import ViewPolicy


def test_rounding_keeps_float16_values_and_clips_the_out_of_range() -> None:
    values = np.array([0.1, 6.0, -3.3, 1e-6, 7e4, -7e4, np.nan], np.float32)
    rounded = at_stored_precision(values)
    assert rounded.dtype == np.float32
    np.testing.assert_array_equal(rounded[:4], values[:4].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(rounded[4:6], [STORED_MAX, -STORED_MAX])
    assert np.isnan(rounded[6])
    np.testing.assert_array_equal(at_stored_precision(rounded), rounded)


def test_a_photo_scores_the_same_from_its_cached_outputs_as_when_it_was_classified(
    image_classifier: ImageClassifier, fixture_photos: dict[str, Path]
) -> None:
    # given predictions with one view and with both (the second view averages the outputs)
    photos = [load_image(path) for path in fixture_photos.values()]
    for margin in (0.0, 1.0):
        classifier = ImageClassifier(
            head=replace(image_classifier.head),
            taxonomy=image_classifier.taxonomy,
            backbone=image_classifier.backbone,
            view_policy=ViewPolicy(second_view_margin=margin),
        )
        predictions = classifier.predict(photos)

        # when their outputs go through the cache's element type and are scored again
        embeddings = np.stack([p.embedding for p in predictions]).astype(STORED_DTYPE)
        logits = np.stack([p.logits for p in predictions if p.logits is not None]).astype(STORED_DTYPE)
        again = classifier.top_k_from_scores(classifier.scores_from_outputs(embeddings, logits), 5)

        # then every photo gets the same top-k, confidences bit for bit
        assert [[(s.slug, s.confidence) for s in top] for top in again] == [
            [(s.slug, s.confidence) for s in p.top_k] for p in predictions
        ]
