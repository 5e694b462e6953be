"""Training's rules in the catalog: which photos are held out and calibrate, and how two versions'
answers on the same held-out photos become a recorded comparison."""

from __future__ import annotations

from typing import Any

import pytest

from catalog.selectors.review import LabelledPhoto
from catalog.services.training import model_comparison_score, photo_held_out, training_split
from tests.factories import ModelVersionFactory

# Checksums whose first 8 hex digits are 0 and 99 modulo 100.
LOW = "00000000" + "a" * 56
HIGH = f"{99:08x}" + "b" * 56


def _photo(image_id: int, checksum: str, slug: str = "shoes") -> LabelledPhoto:
    return LabelledPhoto(image_id=image_id, slug=slug, checksum=checksum, file_name=f"{image_id}.jpg")


def test_the_held_out_share_follows_the_checksum_and_the_setting(settings: Any) -> None:
    settings.TRAINING_HELD_OUT_PERCENT = 15
    assert photo_held_out(checksum=LOW)
    assert not photo_held_out(checksum=HIGH)
    settings.TRAINING_HELD_OUT_PERCENT = 100
    assert photo_held_out(checksum=HIGH)


def test_photos_the_tail_trained_on_are_never_held_out_nor_calibrate(settings: Any) -> None:
    # given three photos the checksum rule would all hold out, one of them in the tail's training set
    settings.TRAINING_HELD_OUT_PERCENT = 100
    photos = [_photo(1, LOW), _photo(2, HIGH), _photo(3, "c" * 64)]

    # when training splits them
    split = training_split(photos=photos, tail_trained_on={"c" * 64})

    # then the tail's photo trains only
    assert split.held_out == [True, True, False]
    assert split.calibrating == [True, True, False]


@pytest.mark.django_db
def test_a_comparison_records_accuracy_recall_per_category_and_what_each_version_serves() -> None:
    # given two versions' answers on the same five photos
    candidate = ModelVersionFactory.create(name="lite0+new")
    baseline = ModelVersionFactory.create(name="lite0+old", is_active=True)
    labels = ["shoes", "shoes", "hat", "hat", "dress"]

    # when the comparison is scored
    comparison = model_comparison_score(
        candidate_id=candidate.pk,
        baseline_id=baseline.pk,
        labels=labels,
        predicted={
            "candidate": ["shoes", "shoes", "hat", "shoes", "hat"],
            "baseline": ["shoes", "hat", "hat", "hat", "dress"],
        },
        served={"candidate": ["shoes", "hat"], "baseline": ["shoes", "skirt", "hat", "dress"]},
    )

    # then both accuracies, per-category recall and the uncovered categories are recorded
    assert (comparison.photos, comparison.candidate_accuracy, comparison.baseline_accuracy) == (5, 0.6, 0.8)
    assert comparison.details["recall_by_category"] == {
        "dress": {"photos": 1, "candidate": 0.0, "baseline": 1.0},
        "hat": {"photos": 2, "candidate": 0.5, "baseline": 1.0},
        "shoes": {"photos": 2, "candidate": 1.0, "baseline": 0.5},
    }
    assert comparison.details["served"] == {
        "candidate": ["hat", "shoes"],
        "baseline": ["dress", "hat", "shoes", "skirt"],
    }
    assert comparison.details["uncovered"] == ["skirt"]


@pytest.mark.django_db
def test_a_comparison_without_photos_is_refused_and_records_nothing() -> None:
    candidate = ModelVersionFactory.create(name="lite0+new")
    baseline = ModelVersionFactory.create(name="lite0+old", is_active=True)
    with pytest.raises(ValueError, match="no held-out photos"):
        model_comparison_score(
            candidate_id=candidate.pk, baseline_id=baseline.pk, labels=[], predicted={}, served={}
        )
    assert not candidate.comparisons.exists()
