"""The combined classifier on real and synthetic photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.head import DEFAULT_HEAD_VERSION, ArtifactError, LinearHead
from classifier.model import ImageClassifier, Prediction
from classifier.preprocess import CORRUPT_IMAGE, EMPTY_FILE, ImageRejected, ImageSource
from classifier.taxonomy import load_taxonomy


def imagenet_id(name: str) -> int:
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.IMAGENET1K_V1.meta["categories"].index(name)


def test_each_fixture_photo_gets_its_category(
    image_classifier: ImageClassifier, fixture_photos: dict[str, Path]
) -> None:
    # given one real photo per clothing category
    slugs = sorted(fixture_photos)
    # when classified in one batch
    predictions = image_classifier.predict([Image.open(fixture_photos[s]) for s in slugs])
    # then at least 7 of the 8 top-1 are right and every photo's category is in its top-5
    # (one photo each is no accuracy figure: the floors on real datasets are in test_floors.py)
    right = [p.category == slug for p, slug in zip(predictions, slugs, strict=True)]
    assert sum(right) >= len(slugs) - 1, [p.category for p in predictions]
    assert all(slug in [s.slug for s in p.top_k] for p, slug in zip(predictions, slugs, strict=True))


def test_prediction_shape_and_confidences(
    image_classifier: ImageClassifier, fixture_photos: dict[str, Path]
) -> None:
    (prediction,) = image_classifier.classify([fixture_photos["shoes"]], top_k=5)
    assert isinstance(prediction, Prediction)
    assert len(prediction.top_k) == 5
    confidences = [score.confidence for score in prediction.top_k]
    assert confidences == sorted(confidences, reverse=True)
    assert confidences[-1] >= 0.0 and confidences[0] <= 1.0
    assert prediction.confidence == confidences[0]
    assert prediction.model_version == f"{image_classifier.backbone_version}+{DEFAULT_HEAD_VERSION}"
    assert prediction.embedding.shape == (1280,) and prediction.embedding.dtype == np.float32
    assert prediction.logits is not None and prediction.logits.shape == (1000,)
    assert set(prediction.timings_ms) == {"decode_ms", "preprocess_ms", "inference_ms"}


def test_confidences_over_all_categories_sum_to_at_most_one(
    image_classifier: ImageClassifier, fixture_photos: dict[str, Path]
) -> None:
    results = image_classifier.classify(list(fixture_photos.values()))
    predictions = [p for p in results if isinstance(p, Prediction) and p.logits is not None]
    assert len(predictions) == len(results)
    embeddings = np.stack([p.embedding for p in predictions])
    logits = np.stack([p.logits for p in predictions if p.logits is not None])
    scores = image_classifier.scores_from_outputs(embeddings, logits)
    assert scores.shape == (len(predictions), len(load_taxonomy()))
    assert (scores >= 0).all()
    assert (scores.sum(axis=1) <= 1.0 + 1e-9).all()


def test_one_corrupt_photo_fails_alone(
    image_classifier: ImageClassifier, fixture_photos: dict[str, Path], truncated_jpeg: bytes
) -> None:
    # given a good photo as bytes, a truncated JPEG, an empty file and a good photo as a path
    sources: list[ImageSource] = [
        fixture_photos["pants"].read_bytes(),
        truncated_jpeg,
        b"",
        fixture_photos["hat"],
    ]
    # when classified together
    results = image_classifier.classify(sources)
    # then the bad ones are rejected with their reason and the good ones are classified
    assert isinstance(results[0], Prediction) and results[0].category == "pants"
    assert results[1] == ImageRejected(CORRUPT_IMAGE)
    assert results[2] == ImageRejected(EMPTY_FILE)
    assert isinstance(results[3], Prediction) and results[3].category == "hat"


def test_rescoring_from_stored_outputs_gives_the_same_top_k(
    image_classifier: ImageClassifier, fixture_photos: dict[str, Path]
) -> None:
    (prediction,) = image_classifier.classify([fixture_photos["dress"]], top_k=3)
    assert isinstance(prediction, Prediction)
    scores = image_classifier.scores_from_outputs(prediction.embedding, prediction.logits)  # type: ignore[arg-type]
    (top,) = image_classifier.top_k_from_scores(scores, top_k=3)
    assert [s.slug for s in top] == [s.slug for s in prediction.top_k]
    np.testing.assert_allclose([s.confidence for s in top], [s.confidence for s in prediction.top_k])


def test_more_than_one_batch(image_classifier: ImageClassifier) -> None:
    images = [Image.new("RGB", (64, 64), (i * 6, 100, 200 - i * 4)) for i in range(40)]
    predictions = image_classifier.predict(images, top_k=2)
    assert len(predictions) == 40
    assert all(len(p.top_k) == 2 for p in predictions)


def test_zero_shot_scores_categories_without_training_photos(image_classifier: ImageClassifier) -> None:
    # given backbone outputs of a confident "sports car" with an embedding unlike any clothing
    logits = np.zeros((1, 1000), np.float32)
    logits[0, imagenet_id("sports car")] = 12.0
    embeddings = np.zeros((1, 1280), np.float32)
    # when scored
    (top,) = image_classifier.top_k_from_scores(image_classifier.scores_from_outputs(embeddings, logits))
    # then cars lead and fashion gets next to nothing
    assert top[0].slug == "cars"
    assert top[0].confidence > 0.9
    fashion = set(load_taxonomy().descendants("fashion")) | {"fashion"}
    assert sum(s.confidence for s in top if s.slug in fashion) < 0.01


def test_photo_of_nothing_for_sale_gets_low_confidence(image_classifier: ImageClassifier) -> None:
    # given all ImageNet mass on an unmapped class (a goldfish)
    logits = np.zeros((1, 1000), np.float32)
    logits[0, 1] = 20.0
    scores = image_classifier.scores_from_outputs(np.zeros((1, 1280), np.float32), logits)
    # then no category is confident
    assert scores.sum() < 0.01


def test_head_for_another_backbone_is_refused() -> None:
    head = LinearHead.load()
    head.backbone_version = "efficientnet-lite0@deadbeef"
    with pytest.raises(ArtifactError, match="was trained on backbone 'efficientnet-lite0@deadbeef'"):
        ImageClassifier(head=head, taxonomy=load_taxonomy(), backbone_version="efficientnet-lite0@00000000")


def test_scoring_works_without_a_backbone() -> None:
    head = LinearHead.load()
    classifier = ImageClassifier(head=head, taxonomy=load_taxonomy())
    assert classifier.model_version == f"{head.backbone_version}+{head.version}"
    assert classifier.domain == "fashion"
    with pytest.raises(RuntimeError, match="no backbone"):
        classifier.predict([Image.new("RGB", (32, 32))])
