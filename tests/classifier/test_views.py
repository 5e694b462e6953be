"""The view policy: the head's other views run only for photos the first view leaves uncertain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.model import ImageClassifier
from classifier.outputs import at_stored_precision
from classifier.preprocess import load_image
from classifier.views import MARGIN_ENVIRONMENT, BackboneRun, ViewPolicy, run_views, top2_margin


def test_top2_margin_is_first_minus_second_confidence() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.45, 0.05, 0.5]])
    np.testing.assert_allclose(top2_margin(scores), [0.5, 0.05])


def test_policy_picks_photos_below_the_margin_and_the_extremes_mean_always_or_never() -> None:
    # given three photos whose first view leaves margins 0.5, 0.05 and 0.25
    scores = np.array([[0.75, 0.25], [0.525, 0.475], [0.625, 0.375]])
    # then a margin of 0.2 picks only the photo below it
    assert ViewPolicy(second_view_margin=0.2).needs_more_views(scores).tolist() == [False, True, False]
    assert ViewPolicy(second_view_margin=1.0).needs_more_views(scores).tolist() == [True, True, True]
    assert ViewPolicy(second_view_margin=0.0).needs_more_views(scores).tolist() == [False, False, False]


def test_margin_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MARGIN_ENVIRONMENT, "0.35")
    assert ViewPolicy.from_environment().second_view_margin == 0.35
    monkeypatch.setenv(MARGIN_ENVIRONMENT, "")
    assert ViewPolicy.from_environment() == ViewPolicy()
    monkeypatch.setenv(MARGIN_ENVIRONMENT, "often")
    with pytest.raises(ValueError, match=MARGIN_ENVIRONMENT):
        ViewPolicy.from_environment()


def _fake_backbone(calls: list[int]) -> BackboneRun:
    """A 'network' whose embedding is the first pixel of each input (so each view is told apart)."""

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(batch))
        pixel = batch[:, 0, 0, :1].astype(np.float32)
        return pixel, -pixel

    return run


def _score(embeddings: np.ndarray, logits: np.ndarray) -> np.ndarray:
    # confidence of the first of two categories is the embedding itself
    first = np.clip(embeddings[:, 0].astype(np.float64), 0.0, 1.0)
    return np.stack([first, 1.0 - first], axis=1)


def test_other_views_run_once_for_the_uncertain_photos_and_are_averaged() -> None:
    # given three photos whose first views score margins 0.8, 0.1 and 0.4 (first pixel 0.9, 0.55, 0.3)
    first = np.zeros((3, 3, 2, 2), np.float32)
    first[:, 0, 0, 0] = [0.9, 0.55, 0.3]
    asked: list[list[int]] = []

    def other_views(rows: Sequence[int]) -> np.ndarray:
        asked.append(list(rows))
        batch = np.zeros((len(rows), 3, 2, 2), np.float32)
        batch[:, 0, 0, 0] = 0.15  # the second view sees something else
        return batch

    calls: list[int] = []
    # when run with a margin of 0.5
    outputs = run_views(
        first,
        other_views,
        view_count=2,
        run=_fake_backbone(calls),
        score=_score,
        policy=ViewPolicy(second_view_margin=0.5),
    )
    # then only the photos with margins 0.1 and 0.4 got the second view, in one backbone call
    assert asked == [[1, 2]] and calls == [3, 2]
    assert outputs.views.tolist() == [1, 2, 2]
    # and their outputs and scores are the means over both views; the certain photo's are untouched
    means = [0.9, (0.55 + 0.15) / 2, (0.3 + 0.15) / 2]
    np.testing.assert_allclose(outputs.embeddings[:, 0], means, rtol=2**-10)
    np.testing.assert_allclose(outputs.logits[:, 0], np.negative(means), rtol=2**-10)
    # at the precision the cache keeps (float16), and scored as they are kept
    for values in (outputs.embeddings, outputs.logits):
        np.testing.assert_array_equal(values, at_stored_precision(values))
    np.testing.assert_array_equal(outputs.scores[:, 0], outputs.embeddings[:, 0])


def test_a_head_with_one_view_never_runs_more(image_classifier: ImageClassifier) -> None:
    calls: list[int] = []
    outputs = run_views(
        np.zeros((2, 3, 2, 2), np.float32),
        lambda rows: pytest.fail("no other view exists"),
        view_count=1,
        run=_fake_backbone(calls),
        score=_score,
        policy=ViewPolicy(second_view_margin=1.0),
    )
    assert calls == [2] and outputs.views.tolist() == [1, 1]


@pytest.fixture
def photos(fixture_photos: dict[str, Path]) -> list[Image.Image]:
    return [load_image(path) for path in fixture_photos.values()]


def test_margin_one_gives_the_outputs_of_every_view_averaged(
    image_classifier: ImageClassifier, photos: list[Image.Image]
) -> None:
    # given the classifier told to run every view for every photo
    always = replace_policy(image_classifier, ViewPolicy(second_view_margin=1.0))
    assert image_classifier.backbone is not None and len(image_classifier.head.views) == 2
    # when it predicts
    predictions = always.predict(photos)
    # then the outputs are those of both views averaged, as before the policy existed, to the
    # precision they are kept at (float16, rounded once per view and once after averaging)
    embeddings, logits = image_classifier.backbone.embed(photos, image_classifier.head.views)
    predicted = np.stack([p.embedding for p in predictions])
    np.testing.assert_allclose(predicted, embeddings, rtol=2**-9, atol=1e-5)
    # (a prediction without logits would leave a row out, and the shapes would differ)
    predicted_logits = np.stack([p.logits for p in predictions if p.logits is not None])
    np.testing.assert_allclose(predicted_logits, logits, rtol=2**-9, atol=1e-4)
    assert {p.views for p in predictions} == {2}


def test_margin_zero_runs_the_first_view_only(
    image_classifier: ImageClassifier, photos: list[Image.Image]
) -> None:
    once = replace_policy(image_classifier, ViewPolicy(second_view_margin=0.0))
    assert image_classifier.backbone is not None
    predictions = once.predict(photos)
    embeddings, _ = image_classifier.backbone.embed(photos, image_classifier.head.views[:1])
    predicted = np.stack([p.embedding for p in predictions])
    np.testing.assert_array_equal(predicted, at_stored_precision(embeddings))
    assert {p.views for p in predictions} == {1}


def test_a_margin_gives_uncertain_photos_both_views(
    image_classifier: ImageClassifier, photos: list[Image.Image]
) -> None:
    # given a policy with a margin, and the first-view margins of the photos
    assert image_classifier.backbone is not None
    policy = ViewPolicy(second_view_margin=0.2)
    embeddings, logits = image_classifier.backbone.embed(photos, image_classifier.head.views[:1])
    margins = top2_margin(image_classifier.scores_from_outputs(embeddings, logits))
    # when predicted
    predictions = replace_policy(image_classifier, policy).predict(photos)
    # then exactly the photos below the margin got both views
    assert [p.views for p in predictions] == [2 if m < policy.second_view_margin else 1 for m in margins]


def replace_policy(classifier: ImageClassifier, policy: ViewPolicy) -> ImageClassifier:
    """A classifier sharing `classifier`'s head, taxonomy and backbone, with another policy."""
    return ImageClassifier(
        head=replace(classifier.head),
        taxonomy=classifier.taxonomy,
        backbone=classifier.backbone,
        view_policy=policy,
    )
