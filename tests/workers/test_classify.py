"""The event path with a real worker, real Redis and real PostgreSQL:
photo stored → task queued after commit → worker runs the CNN → suggestion row."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction

from catalog.models import (
    CategorySource,
    CategorySuggestion,
    ClassificationStatus,
    ImageEmbedding,
    Listing,
    ListingImage,
)
from catalog.queueing import send_task
from catalog.services.images import WORKER_CRASHED_REPEATEDLY, image_add
from catalog.tasks_contract import TaskName
from tests.conftest import WorkerProcess, wait_for
from tests.factories import ListingFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]

FINISHED = {ClassificationStatus.DONE, ClassificationStatus.FAILED}


def _wait_finished(*image_ids: int, timeout: float = 120.0) -> list[ListingImage]:
    def finished() -> list[ListingImage] | None:
        images = list(ListingImage.objects.filter(pk__in=image_ids).order_by("pk"))
        return images if all(image.status in FINISHED for image in images) else None

    return wait_for(finished, timeout=timeout)


def test_uploaded_photos_get_a_suggestion_from_the_worker(
    celery_worker_process: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a listing with two real photos, added in one transaction
    listing = ListingFactory.create()
    with transaction.atomic():
        first = image_add(listing=listing, upload=photo_paths[0].read_bytes(), filename="a.jpg")
        second = image_add(listing=listing, upload=photo_paths[1].read_bytes(), filename="b.jpg")
        # then nothing is queued before the commit
        assert ListingImage.objects.get(pk=first.pk).status == ClassificationStatus.PENDING

    # when the worker has processed them
    images = _wait_finished(first.pk, second.pk)

    # then each photo has one suggestion with a calibrated top-5, stamped with the model version
    assert [image.status for image in images] == [ClassificationStatus.DONE] * 2
    for image in images:
        suggestion = CategorySuggestion.objects.get(image=image)
        confidences = [entry["confidence"] for entry in suggestion.top_k]
        assert len(suggestion.top_k) == 5
        assert confidences == sorted(confidences, reverse=True)
        assert 0.0 < sum(confidences) <= 1.0 + 1e-6
        assert suggestion.category.slug == suggestion.top_k[0]["slug"]
        assert suggestion.model_version.name
        assert ImageEmbedding.objects.filter(image=image).count() == 1
    # and the listing's suggested category is derived from its photos, its own category untouched
    listing.refresh_from_db()
    assert listing.suggested_category is not None
    assert listing.category is None
    assert listing.category_source == CategorySource.NONE


def test_a_photo_that_is_not_an_image_fails_alone_with_a_reason(
    celery_worker_process: WorkerProcess, photo_paths: list[Path]
) -> None:
    from classifier.preprocess import NOT_AN_IMAGE

    # given a listing with a real photo and an HTML page renamed .jpg
    listing = ListingFactory.create()
    good = image_add(listing=listing, upload=photo_paths[0].read_bytes(), filename="good.jpg")
    bad = image_add(listing=listing, upload=b"<html><body>hello</body></html>", filename="bad.jpg")

    # when both are processed
    good, bad = _wait_finished(good.pk, bad.pk)

    # then the bad one failed with a readable reason and was not retried; the good one is done
    assert bad.status == ClassificationStatus.FAILED
    assert bad.failure_reason == NOT_AN_IMAGE
    assert bad.deliveries == 1
    assert not CategorySuggestion.objects.filter(image=bad).exists()
    assert good.status == ClassificationStatus.DONE
    assert CategorySuggestion.objects.filter(image=good).count() == 1


def test_duplicate_deliveries_leave_exactly_one_suggestion(
    celery_worker_process: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a photo already classified
    image = image_add(listing=ListingFactory.create(), upload=photo_paths[0].read_bytes(), filename="x.jpg")
    _wait_finished(image.pk)
    before = CategorySuggestion.objects.get(image=image)

    # when the same task is delivered three more times, and the image is marked for redo
    ListingImage.objects.filter(pk=image.pk).update(status=ClassificationStatus.QUEUED)
    for _ in range(3):
        assert send_task(TaskName.IMAGE_CLASSIFY, args=[image.pk])
    _wait_finished(image.pk)
    wait_for(lambda: not _queue_length("classify"), timeout=60)

    # then there is still exactly one suggestion row for this model version
    after = CategorySuggestion.objects.filter(image=image)
    assert after.count() == 1
    assert after.get().pk == before.pk


def test_a_photo_that_keeps_killing_workers_is_set_aside(celery_worker_process: WorkerProcess) -> None:
    # given a photo whose task has already been delivered the maximum number of times
    from django.conf import settings

    image = image_add(listing=ListingFactory.create(), upload=b"\xff\xd8\xff" + b"0" * 64, filename="p.jpg")
    ListingImage.objects.filter(pk=image.pk).update(deliveries=settings.CLASSIFY_MAX_DELIVERIES)

    # when it is delivered once more
    (image,) = _wait_finished(image.pk)

    # then it is FAILED with the poison reason, without another classification attempt
    assert image.status == ClassificationStatus.FAILED
    assert image.failure_reason == WORKER_CRASHED_REPEATEDLY.format(
        deliveries=settings.CLASSIFY_MAX_DELIVERIES
    )


def test_a_deleted_listing_makes_its_queued_task_a_no_op(
    celery_worker_process: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a photo whose listing is deleted right after the upload
    listing = ListingFactory.create()
    image = image_add(listing=listing, upload=photo_paths[0].read_bytes(), filename="gone.jpg")
    image_id = image.pk
    Listing.objects.filter(pk=listing.pk).delete()

    # when the worker gets to it, then nothing is created and the worker stays healthy
    follower = image_add(
        listing=ListingFactory.create(), upload=photo_paths[1].read_bytes(), filename="n.jpg"
    )
    _wait_finished(follower.pk)
    assert not CategorySuggestion.objects.filter(image_id=image_id).exists()
    assert celery_worker_process.process.poll() is None


def _queue_length(queue: str) -> int:
    from config.celery import app

    with app.connection_for_read() as connection:
        return int(connection.default_channel.client.llen(queue))
