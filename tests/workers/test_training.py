"""Training from reviewed labels: embeddings cached per photo and backbone version (the CNN never
runs twice on a photo), a candidate version with its artifact and held-out figures, a comparison
with the active version, and workers that follow activation and rollback."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.db import transaction
from PIL import Image, ImageEnhance

from catalog.models import (
    Category,
    CategorySuggestion,
    ClassificationStatus,
    ImageEmbedding,
    ListingImage,
    ModelComparison,
    ModelVersion,
    TrainingRun,
    TrainingStatus,
)
from catalog.services.images import image_add
from catalog.services.listings import listing_create
from catalog.services.registry import (
    ActivationRefused,
    model_version_activate,
    model_version_rollback,
    training_run_request,
)
from catalog.services.suggestions import model_version_ensure
from tests.conftest import FIXTURE_PHOTOS, WorkerProcess, wait_for
from tests.factories import UserFactory

CATEGORIES = ("shoes", "hat", "dress")


def variants(path: Path, count: int) -> list[bytes]:
    """`count` distinct JPEGs of one real photo: shifted crops, mirrors, brightness steps."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    result = []
    for index in range(count):
        shift = 0.02 * (index % 5)
        box = (
            int(width * shift),
            int(height * shift),
            int(width * (1 - shift / 2)),
            int(height * (1 - shift / 2)),
        )
        variant = image.crop(box)
        if index % 2:
            variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        variant = ImageEnhance.Brightness(variant).enhance(0.85 + 0.03 * (index % 7))
        buffer = io.BytesIO()
        variant.save(buffer, format="JPEG", quality=90)
        result.append(buffer.getvalue())
    return result


def labelled_listings(slugs: Sequence[str], per_category: int) -> list[ListingImage]:
    """One listing per photo, its category chosen by the seller (human labels)."""
    seller = UserFactory.create()
    images = []
    for slug in slugs:
        photo = next((FIXTURE_PHOTOS / slug).glob("*.jpg"), None)
        if photo is None:
            pytest.skip(f"no fixture photo for {slug}")
        category = Category.objects.get(slug=slug)
        for index, data in enumerate(variants(photo, per_category)):
            listing = listing_create(seller=seller, title=f"{slug} {index}", category=category)
            images.append(image_add(listing=listing, upload=data, filename=f"{slug}-{index}.jpg"))
    return images


class CountingBackbone:
    """The real ONNX backbone, counting the photos it runs on."""

    def __init__(self, backbone: Any) -> None:
        self.backbone = backbone
        self.version = backbone.version
        self.photos = 0

    def embed(self, images: Sequence[Any], views: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        self.photos += len(images)
        return self.backbone.embed(images, views)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.backbone.run(batch)


def _train(classifier: Any) -> ModelVersion:
    """A training run from request to candidate, by the worker's code in this process."""
    from workers import training

    trained = training.train(run_id=training_run_request(requested_by=None).pk, classifier=classifier)
    assert trained is not None
    return ModelVersion.objects.get(pk=trained.pk)


@pytest.fixture(scope="module")
def counting_classifier(verified_model_files: None) -> Any:
    from django.conf import settings

    from classifier.model import ImageClassifier

    base = ImageClassifier.load(cache_dir=settings.CLASSIFIER_CACHE_DIR or None, num_threads=2)
    counting: Any = CountingBackbone(base.backbone)  # duck-typed: run() and version, as OnnxBackbone
    return ImageClassifier(head=base.head, taxonomy=base.taxonomy, backbone=counting)


@pytest.mark.django_db
def test_training_reuses_cached_embeddings_and_runs_the_cnn_only_on_new_photos(
    counting_classifier: Any, settings: Any
) -> None:

    # given 3 categories × 6 seller-labelled photos, and the shipped version active
    settings.TRAINING_MIN_PHOTOS_PER_CATEGORY = 4
    settings.TRAINING_HELD_OUT_PERCENT = 20
    settings.AUTO_ACCEPT_MIN_SUPPORT = 1
    images = labelled_listings(CATEGORIES, 6)
    shipped = model_version_ensure(
        name=counting_classifier.model_version, backbone_version=counting_classifier.backbone_version
    )
    backbone = counting_classifier.backbone
    backbone.photos = 0

    # when a first training run starts from nothing cached
    first = _train(counting_classifier)

    # then the CNN ran once per photo, and every photo's outputs are cached for this backbone
    assert backbone.photos == len(images) == 18
    assert ImageEmbedding.objects.filter(backbone_version=backbone.version).count() == 18
    run = TrainingRun.objects.get(model_version=first)
    assert (run.status, run.report["embedded"], run.report["cached"]) == (TrainingStatus.DONE, 18, 0)

    # when one photo is added and a second run starts
    extra = labelled_listings(["hat"], 1)[0]
    backbone.photos = 0
    second = _train(counting_classifier)

    # then the CNN ran on the new photo only
    assert backbone.photos == 1
    report = TrainingRun.objects.get(model_version=second).report
    assert (report["embedded"], report["cached"], report["photos"]) == (1, 18, 19)
    assert ImageEmbedding.objects.filter(image=extra).count() == 1

    # and the candidate is stored inactive with a loadable head, held-out figures and a comparison
    from classifier.head import LinearHead

    second.refresh_from_db()
    assert not second.is_active and shipped.is_active
    head = LinearHead.from_bytes(second.head_manifest, bytes(second.head_npz))
    assert head.classes == sorted(CATEGORIES)
    assert head.backbone_version == backbone.version
    held_out = second.metrics["held_out"]
    assert held_out["n"] == second.held_out_photos == len(second.held_out_images) > 0
    assert {"accuracy", "per_category", "confusion", "reliability", "ece", "auto_accept"} <= set(held_out)
    assert set(second.auto_accept_thresholds) <= set(CATEGORIES)
    assert second.hyperparameters["C"] in second.hyperparameters["C_grid"]
    comparison = ModelComparison.objects.get(candidate=second)
    assert (comparison.baseline, comparison.photos) == (shipped, held_out["n"])


@pytest.mark.django_db
def test_a_run_with_too_few_labelled_photos_fails_with_a_reason(counting_classifier: Any) -> None:
    from workers import training

    # given two labelled photos only (fewer than TRAINING_MIN_PHOTOS_PER_CATEGORY)
    labelled_listings(["shoes", "hat"], 1)
    run = training_run_request(requested_by=None)

    # when the task runs
    outcome = training.model_train_task.apply(args=[run.pk]).get()

    # then the run failed with a readable reason and no version was made
    run.refresh_from_db()
    assert outcome == "failed"
    assert run.status == TrainingStatus.FAILED
    assert "at least two categories" in run.failure_reason
    assert not ModelVersion.objects.exclude(head_npz=b"").exists()


def _suggestion_version(image_id: int) -> str:
    suggestion = wait_for(
        lambda: CategorySuggestion.objects.select_related("model_version").filter(image_id=image_id).first(),
        timeout=120,
    )
    return suggestion.model_version.name


@pytest.mark.worker
@pytest.mark.usefixtures("taxonomy")
def test_train_activate_and_roll_back_through_the_queue(celery_worker_process: WorkerProcess) -> None:
    # given 2 categories × 20 seller-labelled photos, classified by the worker
    images = labelled_listings(["shoes", "hat"], 20)
    wait_for(
        lambda: (
            ListingImage.objects.filter(
                pk__in=[i.pk for i in images], status=ClassificationStatus.DONE
            ).count()
            == len(images)
        ),
        timeout=300,
    )
    shipped = ModelVersion.objects.get(is_active=True)
    assert ImageEmbedding.objects.filter(image__in=images).count() == len(images)
    # and one cached embedding lost
    ImageEmbedding.objects.filter(image=images[0]).delete()

    # when staff start training (the training queue)
    staff = UserFactory.create(username="trainer", is_staff=True, is_superuser=True)
    with transaction.atomic():
        run = training_run_request(requested_by=staff)
    run = wait_for(
        lambda: TrainingRun.objects.filter(
            pk=run.pk, status__in=[TrainingStatus.DONE, TrainingStatus.FAILED]
        ).first(),
        timeout=300,
    )

    # then the worker embedded only the lost photo and stored a candidate compared with the active one
    assert run.status == TrainingStatus.DONE, run.failure_reason
    assert (run.report["embedded"], run.report["cached"]) == (1, 39)
    candidate = run.model_version
    assert candidate is not None
    assert ModelComparison.objects.filter(candidate=candidate, baseline=shipped).exists()

    # when staff activate it, a new photo is classified by the trained version
    model_version_activate(version=candidate, actor=staff)
    # (workers look the active version up every ACTIVE_MODEL_CHECK_S, so a photo may still be
    # classified by the old one for those few seconds)
    new_photo = variants(next((FIXTURE_PHOTOS / "shoes").glob("*.jpg")), 1)[0]
    listing = listing_create(seller=staff, title="new boots")

    def classified_by() -> str:
        image = image_add(listing=listing, upload=new_photo, filename="new.jpg")
        return _suggestion_version(image.pk)

    assert wait_for(lambda: classified_by() == candidate.name, timeout=60, interval=1.0)

    # when staff roll back, new photos are classified by the shipped version again
    model_version_rollback(actor=staff)
    assert wait_for(lambda: classified_by() == shipped.name, timeout=60, interval=1.0)


@pytest.mark.django_db
def test_a_comparison_covers_every_labelled_category_and_refuses_a_candidate_that_drops_one(
    counting_classifier: Any, settings: Any
) -> None:
    from catalog.activation import DROPS_A_CATEGORY
    from workers import training

    # given a candidate trained on shoes and hats only, while the shipped version serves ten
    # categories, and dresses labelled by sellers since
    settings.TRAINING_MIN_PHOTOS_PER_CATEGORY = 4
    settings.AUTO_ACCEPT_MIN_SUPPORT = 1
    labelled_listings(["shoes", "hat"], 6)
    shipped = model_version_ensure(
        name=counting_classifier.model_version, backbone_version=counting_classifier.backbone_version
    )
    candidate = _train(counting_classifier)
    dresses = labelled_listings(["dress"], 4)
    # (every labelled photo counts as held out here: with a few photos the checksum split could
    # leave a category without any)
    settings.TRAINING_HELD_OUT_PERCENT = 100

    # when the worker compares it with the active version
    comparison = training.compare(
        candidate=candidate, baseline=shipped, base=counting_classifier, taxonomy=counting_classifier.taxonomy
    )

    # then both are scored on the same photos, dresses included though the candidate never saw one
    recall = comparison.details["recall_by_category"]
    assert comparison.photos == 16
    assert {slug: row["photos"] for slug, row in recall.items()} == {"dress": 4, "hat": 6, "shoes": 6}
    assert comparison.details["served"] == {
        "candidate": ["hat", "shoes"],
        "baseline": sorted(counting_classifier.head.classes),
    }
    assert {dress.pk for dress in dresses} <= {
        int(pk) for pk, _ in training.comparison_photos(candidate=candidate, baseline=shipped)
    }

    # and activation is refused: it drops dresses, which have published listings
    staff = UserFactory.create(username="activator", is_staff=True, is_superuser=True)
    with pytest.raises(ActivationRefused) as refused:
        model_version_activate(version=candidate, actor=staff)
    drop = DROPS_A_CATEGORY.format(
        candidate=candidate.name,
        category="Fashion › Dresses",
        active=shipped.name,
        listings=4,
        plural="s",
        verb="are",
    )
    assert drop in refused.value.objections
