"""Bulk reclassification, one chunk at a time in this process (the worker's code, no broker):
planning by listing primary key, dry run, head-only scoring from cached embeddings, the CNN path,
resume after a crash, cancel, the error ledger and retrying failed photos."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from catalog.models import (
    BulkChunkStatus,
    BulkJob,
    BulkJobChunk,
    BulkJobError,
    BulkJobStatus,
    Category,
    CategoryDecision,
    CategorySource,
    CategorySuggestion,
    ClassificationStatus,
    ImageEmbedding,
    Listing,
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
from catalog.services.bulk.reports import bulk_job_summary
from catalog.services.decisions import listing_category_set
from catalog.services.images import image_add
from catalog.services.suggestions import (
    ScoredCategory,
    image_classification_record,
    listing_suggestion_refresh,
    model_version_ensure,
)
from catalog.tasks_contract import ChunkOutcome
from tests.factories import ListingFactory, UserFactory
from workers import inference
from workers.bulk import chunk_run

pytestmark = pytest.mark.django_db

NOT_A_PHOTO = b"<html><body>not a photo</body></html>"


@pytest.fixture
def version(verified_model_files: None) -> ModelVersion:
    """The version this process's classifier scores as (active, as the first one)."""
    classifier = inference.get_classifier()
    return model_version_ensure(name=classifier.model_version, backbone_version=classifier.backbone_version)


def _listing(photos: list[bytes], **fields: object) -> Listing:
    listing = ListingFactory(seller=UserFactory(username="bulk-seller"), **fields)
    for number, data in enumerate(photos):
        image_add(listing=listing, upload=data, filename=f"p{number}.jpg")
    return listing


def _cache_embeddings(images: list[ListingImage], seed: int = 0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Store synthetic backbone outputs for the photos; returns them by image id."""
    rng = np.random.default_rng(seed)
    backbone = inference.get_classifier().backbone_version
    outputs = {}
    for image in images:
        embedding = rng.gamma(1.0, 0.5, 1280).astype(np.float32)
        logits = rng.normal(0.0, 3.0, 1000).astype(np.float32)
        outputs[image.pk] = (embedding, logits)
        ImageEmbedding.objects.create(
            image=image, backbone_version=backbone, embedding=embedding.tobytes(), logits=logits.tobytes()
        )
    return outputs


def _expected_category(embedding: np.ndarray, logits: np.ndarray) -> str:
    classifier = inference.get_classifier()
    scores = classifier.scores_from_outputs(embedding[None], logits[None])
    return classifier.top_k_from_scores(scores, 5)[0][0].slug


def _run(job: BulkJob) -> list[ChunkOutcome]:
    """Plan the job, then run each of its chunks as a worker would; returns the outcomes."""
    planning.bulk_job_plan(job_id=job.pk)
    outcomes = [chunk_run(chunk_id=pk) for pk in job.chunks.order_by("index").values_list("pk", flat=True)]
    job.refresh_from_db()
    return outcomes


def _suggestions_per_photo(version: ModelVersion) -> Counter[int]:
    return Counter(
        CategorySuggestion.objects.filter(model_version=version).values_list("image_id", flat=True)
    )


def test_planning_walks_listings_by_primary_key_in_bounded_chunks(version: ModelVersion) -> None:
    # given seven listings with 1, 3, 1, 2, 1, 1 and 1 photos, and a hidden probe listing
    photo = b"x" * 10
    listings = [_listing([photo] * n) for n in (1, 3, 1, 2, 1, 1, 1)]
    _listing([photo], is_probe=True)

    # when a job with chunks of 3 photos to decode is planned, twice (a re-run after a crash)
    job = BulkJob.objects.create(model_version=version, chunk_size=3)
    created = planning.bulk_job_plan(job_id=job.pk)
    again = planning.bulk_job_plan(job_id=job.pk)

    # then whole listings are laid out in primary-key order, each chunk closed once it holds at
    # least 3 photos, the probe is left out, and the second run lays out nothing
    ids = [listing.pk for listing in listings]
    chunks = list(
        job.chunks.order_by("index").values_list("first_listing_id", "last_listing_id", "planned_images")
    )
    assert chunks == [(ids[0], ids[1], 4), (ids[2], ids[3], 3), (ids[4], ids[6], 3)]
    assert (created, again) == (3, 0)
    job.refresh_from_db()
    assert (job.total_chunks, job.total_images, job.planning_done, job.status) == (
        3,
        10,
        True,
        BulkJobStatus.RUNNING,
    )

    # when the photos' backbone outputs are cached, then a chunk holds four times as many photos
    _cache_embeddings(list(ListingImage.objects.filter(listing__is_probe=False)))
    cached = BulkJob.objects.create(model_version=version, chunk_size=2)
    planning.bulk_job_plan(job_id=cached.pk)
    planned = list(
        cached.chunks.order_by("index").values_list("first_listing_id", "last_listing_id", "planned_images")
    )
    assert planned == [(ids[0], ids[4], 8), (ids[5], ids[6], 2)]


def test_a_category_job_covers_only_listings_in_that_subtree(version: ModelVersion) -> None:
    # given listings chosen as shoes and as a dress, one only suggested as shoes, one elsewhere
    fashion, shoes, dress, books = (
        Category.objects.get(slug=s) for s in ("fashion", "shoes", "dress", "books")
    )
    chosen_shoes = _listing([b"x"], category=shoes)
    chosen_dress = _listing([b"x", b"y"], category=dress)
    suggested_shoes = _listing([b"x"], suggested_category=shoes)
    elsewhere = _listing([b"x"], category=books, suggested_category=shoes)

    # when jobs for the shoes and the fashion subtrees are planned
    jobs = {}
    for category in (shoes, fashion):
        jobs[category.slug] = BulkJob.objects.create(model_version=version, category=category, chunk_size=1)
        planning.bulk_job_plan(job_id=jobs[category.slug].pk)

    # then each covers the listings whose category (or, without one, suggestion) lies in it
    def listings(job: BulkJob) -> list[int]:
        return list(job.chunks.order_by("index").values_list("first_listing_id", flat=True))

    assert listings(jobs["shoes"]) == [chosen_shoes.pk, suggested_shoes.pk]
    assert listings(jobs["fashion"]) == [chosen_shoes.pk, chosen_dress.pk, suggested_shoes.pk]
    assert elsewhere.pk not in listings(jobs["fashion"])
    assert BulkJob.objects.get(pk=jobs["fashion"].pk).total_images == 4


def test_dry_run_reports_exactly_the_listings_that_would_change_and_writes_nothing(
    version: ModelVersion,
) -> None:
    # given three one-photo listings with cached embeddings: one already suggested what the model
    # will say, one suggested something else, one never suggested
    same, moved, fresh = (_listing([b"x"]) for _ in range(3))
    images = list(ListingImage.objects.filter(listing__in=[same, moved, fresh]).order_by("listing_id"))
    outputs = _cache_embeddings(images)
    expected = {image.listing_id: _expected_category(*outputs[image.pk]) for image in images}
    other = Category.objects.exclude(slug=expected[moved.pk]).order_by("slug").first()
    assert other is not None
    Listing.objects.filter(pk=same.pk).update(suggested_category=Category.objects.get(slug=expected[same.pk]))
    Listing.objects.filter(pk=moved.pk).update(suggested_category=other)

    # when a dry run of the whole catalogue finishes
    job = BulkJob.objects.create(model_version=version, dry_run=True, chunk_size=2)
    _run(job)

    # then the report names exactly the two listings that would change, from what to what
    assert job.status == BulkJobStatus.DONE
    summary = bulk_job_summary(job=job)
    assert summary.listings == 2
    assert sorted(summary.moves, key=str) == sorted(
        [(other.slug, expected[moved.pk], 1), (None, expected[fresh.pk], 1)], key=str
    )
    assert summary.lines()[0] == "2 listings would change category"
    assert {entry["listing"] for entry in summary.sample} == {moved.pk, fresh.pk}
    # and nothing was written: no suggestion, listings as they were
    assert not CategorySuggestion.objects.exists()
    assert Listing.objects.get(pk=moved.pk).suggested_category == other
    assert Listing.objects.get(pk=fresh.pk).suggested_category is None
    assert (job.cached_images, job.cnn_images, job.changed_listings) == (3, 0, 2)


def test_apply_from_cached_embeddings_writes_one_suggestion_per_photo_without_decoding(
    version: ModelVersion,
) -> None:
    # given 7 photos in 3 listings with cached embeddings whose files are gone from storage (so a
    # decode would fail), one of them already suggested by this version
    listings = [_listing([b"x"] * n) for n in (3, 2, 2)]
    images = list(ListingImage.objects.order_by("pk"))
    outputs = _cache_embeddings(images)
    for image in images:
        default_storage.delete(image.file.name)
    image_classification_record(image=images[0], model_version=version, top_k=[ScoredCategory("shoes", 0.9)])

    # when the job runs
    job = BulkJob.objects.create(model_version=version, chunk_size=4)
    _run(job)

    # then every photo has exactly one suggestion for the version, scored by the head alone
    assert _suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})
    assert (job.status, job.cached_images, job.cnn_images, job.skipped_images, job.failed_images) == (
        BulkJobStatus.DONE, 6, 0, 1, 0,
    )  # fmt: skip
    for image in images[1:]:
        suggestion = CategorySuggestion.objects.get(image=image, model_version=version)
        assert suggestion.category.slug == _expected_category(*outputs[image.pk])
        assert len(suggestion.top_k) == 5
    # and, the version being active, each listing's suggestion is derived from them exactly as
    # the upload path derives it (refreshing it through that path changes nothing)
    fields = ("suggested_category_id", "suggested_confidence", "suggested_top_k", "suggested_margin",
              "suggested_model_version_id", "photos_disagree")  # fmt: skip
    for listing in listings:
        after_job = Listing.objects.values(*fields).get(pk=listing.pk)
        listing_suggestion_refresh(listing=listing, model_version=version)
        assert Listing.objects.values(*fields).get(pk=listing.pk) == after_job
        assert after_job["suggested_model_version_id"] == version.pk
        assert len(after_job["suggested_top_k"]) == 5

    # when the same job is run again, then nothing is written twice
    rerun = BulkJob.objects.create(model_version=version, chunk_size=4)
    _run(rerun)
    assert _suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})
    assert (rerun.skipped_images, rerun.cached_images) == (7, 0)


def test_a_damaged_cached_embedding_falls_back_to_the_cnn(
    version: ModelVersion, photo_paths: list[Path]
) -> None:
    # given a real photo whose cached backbone outputs are not numbers
    _listing([photo_paths[0].read_bytes()])
    image = ListingImage.objects.get()
    nan = np.full(1280, np.nan, np.float32).tobytes()
    ImageEmbedding.objects.create(
        image=image,
        backbone_version=version.backbone_version,
        embedding=nan,
        logits=np.zeros(1000, np.float32).tobytes(),
    )

    # when the job runs, then the photo is classified through the CNN instead, and its cache repaired
    job = BulkJob.objects.create(model_version=version, chunk_size=10)
    assert _run(job) == [ChunkOutcome.DONE]
    assert (job.cached_images, job.cnn_images, job.failed_images) == (0, 1, 0)
    assert CategorySuggestion.objects.get(image=image).confidence > 0
    repaired = np.frombuffer(ImageEmbedding.objects.get(image=image).embedding, dtype=np.float32)
    assert np.isfinite(repaired).all()


def test_a_killed_job_resumes_and_finishes_only_what_is_missing(version: ModelVersion) -> None:
    # given a job over 6 one-photo listings (2 per chunk) whose worker died inside the second
    # chunk after writing one of its two photos
    for _ in range(6):
        _listing([b"x"])
    images = list(ListingImage.objects.order_by("pk"))
    job = BulkJob.objects.create(model_version=version, chunk_size=2)
    planning.bulk_job_plan(job_id=job.pk)
    _cache_embeddings(images)
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
    assert _suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})


def test_a_cancelled_job_stops_and_resume_finishes_it(version: ModelVersion) -> None:
    # given a planned job over 4 one-photo listings, 2 per chunk, with the first chunk done
    for _ in range(4):
        _listing([b"x"])
    images = list(ListingImage.objects.order_by("pk"))
    job = BulkJob.objects.create(model_version=version, chunk_size=2)
    planning.bulk_job_plan(job_id=job.pk)
    _cache_embeddings(images)
    first, second = job.chunks.order_by("index")
    chunk_run(chunk_id=first.pk)

    # when staff cancel it, then the next chunk does nothing and cancelling twice is refused
    bulk_job_cancel(job=job)
    assert chunk_run(chunk_id=second.pk) == ChunkOutcome.CANCELLED
    assert set(_suggestions_per_photo(version)) == {images[0].pk, images[1].pk}
    with pytest.raises(BulkJobRefused, match=JOB_NOT_CANCELLABLE):
        bulk_job_cancel(job=job)

    # when it is resumed, then it finishes
    bulk_job_resume(job=job)
    assert chunk_run(chunk_id=second.pk) == ChunkOutcome.DONE
    job.refresh_from_db()
    assert job.status == BulkJobStatus.DONE
    assert _suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})


def test_a_corrupt_photo_goes_to_the_ledger_and_retry_failed_reruns_only_it(
    version: ModelVersion, photo_paths: list[Path]
) -> None:
    from classifier.preprocess import NOT_AN_IMAGE

    # given a listing with two real photos and a file that is not an image (no cached embeddings)
    listing = _listing([photo_paths[0].read_bytes(), NOT_A_PHOTO, photo_paths[1].read_bytes()])
    good_one, corrupt, good_two = ListingImage.objects.filter(listing=listing).order_by("pk")

    # when the job runs through the CNN
    job = BulkJob.objects.create(model_version=version, chunk_size=10)
    _run(job)

    # then the corrupt photo is in the ledger with its reason, the others have suggestions and
    # their backbone outputs are cached for the next reclassification
    assert job.status == BulkJobStatus.DONE
    assert (job.cnn_images, job.failed_images) == (2, 1)
    assert list(BulkJobError.objects.filter(job=job).values_list("image_id", "reason")) == [
        (corrupt.pk, NOT_AN_IMAGE)
    ]
    assert set(_suggestions_per_photo(version)) == {good_one.pk, good_two.pk}
    assert ImageEmbedding.objects.filter(image__in=[good_one, good_two]).count() == 2

    # when the file is replaced by a real photo and staff retry the failed photos
    default_storage.delete(corrupt.file.name)
    default_storage.save(corrupt.file.name, ContentFile(photo_paths[2].read_bytes()))
    assert bulk_job_retry_failed(job=job) == 1
    chunk_run(chunk_id=job.chunks.get().pk)

    # then only that photo was classified, the ledger is empty and the job is done again
    job.refresh_from_db()
    assert job.status == BulkJobStatus.DONE
    assert (job.skipped_images, job.cnn_images, job.failed_images) == (2, 1, 0)
    assert not BulkJobError.objects.filter(job=job).exists()
    assert _suggestions_per_photo(version) == Counter({good_one.pk: 1, corrupt.pk: 1, good_two.pk: 1})
    with pytest.raises(BulkJobRefused, match=JOB_NOTHING_TO_RETRY):
        bulk_job_retry_failed(job=job)


def test_a_photo_alone_in_flight_when_the_worker_died_is_set_aside(
    version: ModelVersion, photo_paths: list[Path]
) -> None:
    # given a chunk whose last attempt died while a single photo was in the network
    listing = _listing([photo_paths[0].read_bytes(), photo_paths[1].read_bytes()])
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
    assert set(_suggestions_per_photo(version)) == {fine.pk}
    assert BulkJobChunk.objects.get(pk=chunk.pk).inflight_image_ids == []


def test_a_version_the_worker_cannot_load_fails_the_job_with_a_reason(version: ModelVersion) -> None:
    # given a job for a version with no head this worker could load
    _listing([b"x"])
    stranger = ModelVersion.objects.create(name="someone-elses-head", backbone_version="other@0")
    job = BulkJob.objects.create(model_version=stranger, chunk_size=10)

    # when it runs, then it fails with a readable reason and writes nothing
    assert _run(job) == [ChunkOutcome.FAILED]
    assert job.status == BulkJobStatus.FAILED
    assert "someone-elses-head" in job.failure_reason
    assert not CategorySuggestion.objects.exists()


def test_a_bulk_job_auto_accepts_as_an_upload_would_and_a_rerun_writes_no_new_decision(
    version: ModelVersion,
) -> None:
    # given three listings whose photos were classified before and have cached embeddings, one of
    # them with a category its seller chose, and the active version accepting every category
    listings = [_listing([b"x"]) for _ in range(3)]
    ListingImage.objects.update(status=ClassificationStatus.DONE)
    images = list(ListingImage.objects.order_by("pk"))
    _cache_embeddings(images, seed=5)
    chosen = Category.objects.get(slug="home")
    listing_category_set(
        listing=listings[2], category=chosen, source=CategorySource.SELLER, actor=listings[2].seller
    )
    slugs = list(Category.objects.values_list("slug", flat=True))
    ModelVersion.objects.filter(pk=version.pk).update(
        auto_accept_thresholds={slug: 0.0 for slug in slugs}, is_active=True
    )

    # when the job runs
    _run(BulkJob.objects.create(model_version=version, chunk_size=10))

    # then the two unchosen listings took their suggested category (source AUTO, audited with the
    # version), and the seller's choice stayed
    for listing in listings[:2]:
        listing.refresh_from_db()
        assert listing.category_source == CategorySource.AUTO
        assert listing.category_id == listing.suggested_category_id
        assert (
            listing.category_decisions.filter(source=CategorySource.AUTO, model_version=version).count() == 1
        )
    listings[2].refresh_from_db()
    assert (listings[2].category_id, listings[2].category_source) == (chosen.pk, CategorySource.SELLER)

    # when the job runs again from scratch, then no listing changes and no decision is added
    CategorySuggestion.objects.filter(model_version=version).delete()
    decisions = CategoryDecision.objects.count()
    _run(BulkJob.objects.create(model_version=version, chunk_size=10))
    assert CategoryDecision.objects.count() == decisions
