"""Bulk jobs under faults, one chunk at a time in this process (the worker's code, no broker):
resume after a crash, cancel, the error ledger and retrying failed photos, a photo in flight when
the worker died, a version the worker cannot load."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from catalog.models import (
    BulkChunkStatus,
    BulkJob,
    BulkJobChunk,
    BulkJobError,
    BulkJobStatus,
    CategorySuggestion,
    ImageEmbedding,
    ListingImage,
    ModelVersion,
)
from catalog.services.bulk import chunks, planning
from catalog.services.bulk.chunks import WORKER_CRASHED_ON_PHOTO
from catalog.services.bulk.jobs import (
    JOB_NOT_CANCELLABLE,
    JOB_NOTHING_TO_RETRY,
    BulkJobRefused,
    bulk_job_cancel,
    bulk_job_resume,
    bulk_job_retry_failed,
)
from catalog.services.suggestions import (
    ScoredCategory,
    image_classification_record,
)
from catalog.tasks_contract import ChunkOutcome
from tests.conftest import stored_name
from tests.workers.bulk_helpers import (
    NOT_A_PHOTO,
    cache_embeddings,
    listing_with_photos,
    run_job,
    suggestions_per_photo,
)
from workers.bulk import chunk_run

pytestmark = pytest.mark.django_db


def test_a_killed_job_resumes_and_finishes_only_what_is_missing(version: ModelVersion) -> None:
    # given a job over 6 one-photo listings (2 per chunk) whose worker died inside the second
    # chunk after writing one of its two photos
    for _ in range(6):
        listing_with_photos([b"x"])
    images = list(ListingImage.objects.order_by("pk"))
    job = BulkJob.objects.create(model_version=version, chunk_size=2)
    planning.bulk_job_plan(job_id=job.pk)
    cache_embeddings(images)
    first, second, _ = job.chunks.order_by("index")
    assert chunk_run(chunk_id=first.pk) == ChunkOutcome.DONE
    begun = chunks.bulk_chunk_claim(chunk_id=second.pk)
    assert isinstance(begun, chunks.ChunkRun)
    image_classification_record(image=images[2], model_version=version, top_k=[ScoredCategory("shoes", 0.9)])

    # when staff resume it and the chunks are run again
    sent = bulk_job_resume(job=job)
    outcomes = [chunk_run(chunk_id=pk) for pk in job.chunks.order_by("index").values_list("pk", flat=True)]

    # then the finished chunk is skipped, the rest is completed, and every photo has one suggestion
    job.refresh_from_db()
    assert sent == 2
    assert outcomes == [ChunkOutcome.ALREADY_DONE, ChunkOutcome.DONE, ChunkOutcome.DONE]
    assert job.status == BulkJobStatus.DONE
    assert (job.processed_images, job.skipped_images) == (5, 1)
    assert suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})


def test_a_cancelled_job_stops_and_resume_finishes_it(version: ModelVersion) -> None:
    # given a planned job over 4 one-photo listings, 2 per chunk, with the first chunk done
    for _ in range(4):
        listing_with_photos([b"x"])
    images = list(ListingImage.objects.order_by("pk"))
    job = BulkJob.objects.create(model_version=version, chunk_size=2)
    planning.bulk_job_plan(job_id=job.pk)
    cache_embeddings(images)
    first, second = job.chunks.order_by("index")
    chunk_run(chunk_id=first.pk)

    # when staff cancel it, then the next chunk does nothing and cancelling twice is refused
    bulk_job_cancel(job=job)
    assert chunk_run(chunk_id=second.pk) == ChunkOutcome.CANCELLED
    assert set(suggestions_per_photo(version)) == {images[0].pk, images[1].pk}
    with pytest.raises(BulkJobRefused, match=JOB_NOT_CANCELLABLE):
        bulk_job_cancel(job=job)

    # when it is resumed, then it finishes
    bulk_job_resume(job=job)
    assert chunk_run(chunk_id=second.pk) == ChunkOutcome.DONE
    job.refresh_from_db()
    assert job.status == BulkJobStatus.DONE
    assert suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})


def test_a_corrupt_photo_goes_to_the_ledger_and_retry_failed_reruns_only_it(
    version: ModelVersion, photo_paths: list[Path]
) -> None:
    from classifier.preprocess import NOT_AN_IMAGE

    # given a listing with two real photos and a file that is not an image (no cached embeddings)
    listing = listing_with_photos([photo_paths[0].read_bytes(), NOT_A_PHOTO, photo_paths[1].read_bytes()])
    good_one, corrupt, good_two = ListingImage.objects.filter(listing=listing).order_by("pk")

    # when the job runs through the CNN
    job = BulkJob.objects.create(model_version=version, chunk_size=10)
    run_job(job)

    # then the corrupt photo is in the ledger with its reason, the others have suggestions and
    # their backbone outputs are cached for the next reclassification
    assert job.status == BulkJobStatus.DONE
    assert (job.cnn_images, job.failed_images) == (2, 1)
    assert list(BulkJobError.objects.filter(job=job).values_list("image_id", "reason")) == [
        (corrupt.pk, NOT_AN_IMAGE)
    ]
    assert set(suggestions_per_photo(version)) == {good_one.pk, good_two.pk}
    assert ImageEmbedding.objects.filter(image__in=[good_one, good_two]).count() == 2

    # when the file is replaced by a real photo and staff retry the failed photos
    default_storage.delete(stored_name(corrupt))
    default_storage.save(corrupt.file.name, ContentFile(photo_paths[2].read_bytes()))
    assert bulk_job_retry_failed(job=job) == 1
    chunk_run(chunk_id=job.chunks.get().pk)

    # then only that photo was classified, the ledger is empty and the job is done again
    job.refresh_from_db()
    assert job.status == BulkJobStatus.DONE
    assert (job.skipped_images, job.cnn_images, job.failed_images) == (2, 1, 0)
    assert not BulkJobError.objects.filter(job=job).exists()
    assert suggestions_per_photo(version) == Counter({good_one.pk: 1, corrupt.pk: 1, good_two.pk: 1})
    with pytest.raises(BulkJobRefused, match=JOB_NOTHING_TO_RETRY):
        bulk_job_retry_failed(job=job)


def test_a_photo_alone_in_flight_when_the_worker_died_is_set_aside(
    version: ModelVersion, photo_paths: list[Path]
) -> None:
    # given a chunk whose last attempt died while a single photo was in the network
    listing = listing_with_photos([photo_paths[0].read_bytes(), photo_paths[1].read_bytes()])
    poison, fine = ListingImage.objects.filter(listing=listing).order_by("pk")
    job = BulkJob.objects.create(model_version=version, chunk_size=10)
    planning.bulk_job_plan(job_id=job.pk)
    chunk = job.chunks.get()
    BulkJobChunk.objects.filter(pk=chunk.pk).update(
        status=BulkChunkStatus.RUNNING, attempts=2, inflight_image_ids=[poison.pk]
    )

    # when the chunk is delivered again
    assert chunk_run(chunk_id=chunk.pk) == ChunkOutcome.DONE

    # then that photo is in the ledger, unclassified, and the other one is classified
    assert list(BulkJobError.objects.values_list("image_id", "reason")) == [
        (poison.pk, WORKER_CRASHED_ON_PHOTO)
    ]
    assert set(suggestions_per_photo(version)) == {fine.pk}
    assert BulkJobChunk.objects.get(pk=chunk.pk).inflight_image_ids == []


def test_a_version_the_worker_cannot_load_fails_the_job_with_a_reason(version: ModelVersion) -> None:
    # given a job for a version with no head this worker could load
    listing_with_photos([b"x"])
    stranger = ModelVersion.objects.create(name="someone-elses-head", backbone_version="other@0")
    job = BulkJob.objects.create(model_version=stranger, chunk_size=10)

    # when it runs, then it fails with a readable reason and writes nothing
    assert run_job(job) == [ChunkOutcome.FAILED]
    assert job.status == BulkJobStatus.FAILED
    assert "someone-elses-head" in job.failure_reason
    assert not CategorySuggestion.objects.exists()
