"""Accuracy floors on the shared real-photo datasets (skipped when ../shared/datasets is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.evaluate import evaluate_folder
from classifier.model import ImageClassifier
from tests.classifier.conftest import SHARED_DATASETS

pytestmark = pytest.mark.dataset


def dataset(relative: str) -> Path:
    path = SHARED_DATASETS / relative
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the shared datasets live beside the repository checkout")
    return path


def test_clothing_test_split_floor(image_classifier: ImageClassifier) -> None:
    # given the held-out clothing photos (the head never saw them)
    report = evaluate_folder(dataset("clothing-small/test"), image_classifier)
    # then top-1 accuracy holds the floor
    assert report.n == 372
    assert report.accuracy >= 0.90, report.per_category


def test_marketplace_smoke_floor(image_classifier: ImageClassifier) -> None:
    # given one photo of many kinds of goods, sorted into top-level categories with no training photos
    report = evaluate_folder(dataset("marketplace-smoke"), image_classifier)
    # then the zero-shot path finds the right section (or a subcategory of it)
    assert report.n == 51
    assert report.accuracy >= 0.90, report.mistakes
