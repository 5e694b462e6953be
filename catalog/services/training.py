"""The rules of training and of comparing model versions; workers compute, these decide.

A fixed share of labelled photos is held out of training (by checksum, so the same photo always
falls on the same side, and duplicates with it) for a version's metrics and for comparisons.
Photos a backbone's tuned tail trained on are never held out and never calibrate a head: their
embeddings look easier than new photos'. The worker passes their checksums in
(``classifier.backbone.tail_trained_on``), as catalog never loads the classifier.

Two versions are compared on the same held-out photos: top-1 accuracy of each, recall and photo
count per category, and the categories each serves (what ``catalog.activation`` checks before
activation).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from django.conf import settings

from catalog.models import ModelComparison, ModelVersion
from catalog.selectors import review as review_selectors
from catalog.services.registry import model_comparison_record

# User-facing message; tests reuse it.
NO_HELD_OUT_PHOTOS = "{name} has no held-out photos to compare on."


def photo_held_out(*, checksum: str) -> bool:
    """Whether training holds a photo out: the first 8 hex digits of its SHA-256, modulo 100,
    below `settings.TRAINING_HELD_OUT_PERCENT`. Stable across trainings, and duplicates of a
    photo fall on the same side."""
    return int(checksum[:8], 16) % 100 < settings.TRAINING_HELD_OUT_PERCENT


@dataclass(frozen=True)
class TrainingSplit:
    """Per photo, in the order given: ``held_out`` (scored, never trained on) and ``calibrating``
    (may choose a head's settings: not a photo the backbone's tail trained on)."""

    held_out: list[bool]
    calibrating: list[bool]


def training_split(
    *, photos: Sequence[review_selectors.LabelledPhoto], tail_trained_on: Collection[str]
) -> TrainingSplit:
    """Which of `photos` training holds out and which calibrate (see the module docstring);
    `tail_trained_on`: SHA-256 (hex) of the photos the serving backbone's tail trained on."""
    calibrating = [photo.checksum not in tail_trained_on for photo in photos]
    held_out = [
        unbiased and photo_held_out(checksum=photo.checksum)
        for photo, unbiased in zip(photos, calibrating, strict=True)
    ]
    return TrainingSplit(held_out=held_out, calibrating=calibrating)


def model_comparison_photos(
    *, version_ids: Sequence[int], tail_trained_on: Collection[str]
) -> list[tuple[int, str]]:
    """The held-out photos two versions (`version_ids`) are compared on, as (image id, label), in
    id order: every labelled photo that training holds out (`photo_held_out`; never one in
    `tail_trained_on`), with its label now, so every category sellers or reviewers labelled is
    covered, whichever categories the candidate was trained on; plus the held-out photos stored
    with either version that are not labelled any more."""
    pairs = {
        photo.image_id: photo.slug
        for photo in review_selectors.labelled_photos()
        if photo.checksum not in tail_trained_on and photo_held_out(checksum=photo.checksum)
    }
    stored = dict(ModelVersion.objects.filter(pk__in=list(version_ids)).values_list("pk", "held_out_images"))
    for version_id in version_ids:  # (the first version's label wins for a photo stored with both)
        for image_id, slug in stored.get(version_id) or []:
            pairs.setdefault(int(image_id), str(slug))
    return sorted(pairs.items())


def model_comparison_score(
    *,
    candidate_id: int,
    baseline_id: int,
    labels: Sequence[str],
    predicted: dict[str, Sequence[str]],
    served: dict[str, Sequence[str]],
) -> ModelComparison:
    """Score and record a comparison of versions `candidate_id` and `baseline_id` from each
    version's top-1 answers on the same photos.

    `labels`: the photos' categories; `predicted` and `served`: for `"candidate"` and
    `"baseline"`, the top-1 slug per photo and the categories the version's head serves.
    Records accuracy per version, `details["recall_by_category"]` ({slug: {"photos", "candidate",
    "baseline"}}), `details["served"]` and `details["uncovered"]` (baseline categories no photo
    covers). Raises `ValueError` when there are no photos, `ModelVersion.DoesNotExist` when a
    version is gone."""
    candidate = ModelVersion.objects.defer("head_npz").get(pk=candidate_id)
    baseline = ModelVersion.objects.defer("head_npz").get(pk=baseline_id)
    if not labels:
        raise ValueError(NO_HELD_OUT_PHOTOS.format(name=candidate.name))
    accuracy: dict[str, float] = {}
    per_category: dict[str, dict[str, float]] = {}
    for role in ("candidate", "baseline"):
        right = [p == t for p, t in zip(predicted[role], labels, strict=True)]
        accuracy[role] = sum(right) / len(right)
        for slug in sorted(set(labels)):
            hits = [ok for ok, label in zip(right, labels, strict=True) if label == slug]
            per_category.setdefault(slug, {"photos": len(hits)})[role] = round(sum(hits) / len(hits), 4)
    classes = {role: sorted(slugs) for role, slugs in served.items()}
    return model_comparison_record(
        candidate=candidate,
        baseline=baseline,
        photos=len(labels),
        candidate_accuracy=round(accuracy["candidate"], 4),
        baseline_accuracy=round(accuracy["baseline"], 4),
        details={
            "recall_by_category": per_category,
            "served": classes,
            "uncovered": [slug for slug in classes["baseline"] if slug not in per_category],
        },
    )
