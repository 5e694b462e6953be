"""Bulk reclassification, one chunk at a time in this process (the worker's code, no broker):
planning by listing primary key, dry run, head-only scoring from cached embeddings, the CNN path
and auto-accept (faults: `test_bulk_faults.py`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from django.core.files.storage import default_storage

from catalog.models import (
    BulkJob,
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
from catalog.services.bulk import planning
from catalog.services.bulk.reports import bulk_job_summary
from catalog.services.decisions import listing_category_set
from catalog.services.embeddings import STORED_DTYPE, outputs_pack
from catalog.services.suggestions import (
    ScoredCategory,
    image_classification_record,
    listing_suggestion_refresh,
)
from catalog.tasks_contract import ChunkOutcome
from tests.conftest import stored_name
from tests.workers.bulk_helpers import (
    cache_embeddings,
    expected_category,
    listing_with_photos,
    run_job,
    suggestions_per_photo,
)

pytestmark = pytest.mark.django_db


def test_planning_walks_listings_by_primary_key_in_bounded_chunks(version: ModelVersion) -> None:
    # given seven listings with 1, 3, 1, 2, 1, 1 and 1 photos, and a hidden probe listing
    photo = b"x" * 10
    listings = [listing_with_photos([photo] * n) for n in (1, 3, 1, 2, 1, 1, 1)]
    listing_with_photos([photo], is_probe=True)

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
    cache_embeddings(list(ListingImage.objects.filter(listing__is_probe=False)))
    cached = BulkJob.objects.create(model_version=version, chunk_size=2)
    planning.bulk_job_plan(job_id=cached.pk)
    planned = list(
        cached.chunks.order_by("index").values_list("first_listing_id", "last_listing_id", "planned_images")
    )
    assert planned == [(ids[0], ids[4], 8), (ids[5], ids[6], 2)]


def test_planning_pages_leave_no_partial_chunk_before_the_last(version: ModelVersion) -> None:
    # given the same seven listings (1, 3, 1, 2, 1, 1 and 1 photos)
    photo = b"x" * 10
    listings = [listing_with_photos([photo] * n) for n in (1, 3, 1, 2, 1, 1, 1)]
    ids = [listing.pk for listing in listings]

    # when a job with chunks of 3 photos is planned reading 3 listings per page, again reading
    # pages of 1, 2, 4... listings, and again reading one listing per page (too few photos to
    # fill a chunk)
    by_three = BulkJob.objects.create(model_version=version, chunk_size=3)
    planning.bulk_job_plan(job_id=by_three.pk, page=3, first_page=3)
    by_one = BulkJob.objects.create(model_version=version, chunk_size=3)
    planning.bulk_job_plan(job_id=by_one.pk, page=1, first_page=1)
    growing = BulkJob.objects.create(model_version=version, chunk_size=3)
    planning.bulk_job_plan(job_id=growing.pk, first_page=1)

    # then pages lay out the chunks a single page does: the listings left over at a page's end
    # start the next page
    def layout(job: BulkJob) -> list[tuple[int, int, int]]:
        return list(
            job.chunks.order_by("index").values_list("first_listing_id", "last_listing_id", "planned_images")
        )

    assert layout(by_three) == [(ids[0], ids[1], 4), (ids[2], ids[3], 3), (ids[4], ids[6], 3)]
    assert layout(growing) == layout(by_three)
    # and a page that cannot fill a chunk closes what it has, so planning always advances
    assert sum(images for _, _, images in layout(by_one)) == 10
    assert [first for first, _, _ in layout(by_one)] == ids
    by_three.refresh_from_db()
    assert (by_three.total_images, by_three.planning_done) == (10, True)


def test_a_category_job_covers_only_listings_in_that_subtree(version: ModelVersion) -> None:
    # given listings chosen as shoes and as a dress, one only suggested as shoes, one elsewhere
    fashion, shoes, dress, books = (
        Category.objects.get(slug=s) for s in ("fashion", "shoes", "dress", "books")
    )
    chosen_shoes = listing_with_photos([b"x"], category=shoes)
    chosen_dress = listing_with_photos([b"x", b"y"], category=dress)
    suggested_shoes = listing_with_photos([b"x"], suggested_category=shoes)
    elsewhere = listing_with_photos([b"x"], category=books, suggested_category=shoes)

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
    same, moved, fresh = (listing_with_photos([b"x"]) for _ in range(3))
    images = list(ListingImage.objects.filter(listing__in=[same, moved, fresh]).order_by("listing_id"))
    outputs = cache_embeddings(images)
    expected = {image.listing_id: expected_category(*outputs[image.pk]) for image in images}
    other = Category.objects.exclude(slug=expected[moved.pk]).order_by("slug").first()
    assert other is not None
    Listing.objects.filter(pk=same.pk).update(suggested_category=Category.objects.get(slug=expected[same.pk]))
    Listing.objects.filter(pk=moved.pk).update(suggested_category=other)

    # when a dry run of the whole catalogue finishes
    job = BulkJob.objects.create(model_version=version, dry_run=True, chunk_size=2)
    run_job(job)

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
    listings = [listing_with_photos([b"x"] * n) for n in (3, 2, 2)]
    images = list(ListingImage.objects.order_by("pk"))
    outputs = cache_embeddings(images)
    for image in images:
        default_storage.delete(stored_name(image))
    image_classification_record(image=images[0], model_version=version, top_k=[ScoredCategory("shoes", 0.9)])

    # when the job runs
    job = BulkJob.objects.create(model_version=version, chunk_size=4)
    run_job(job)

    # then every photo has exactly one suggestion for the version, scored by the head alone
    assert suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})
    assert (job.status, job.cached_images, job.cnn_images, job.skipped_images, job.failed_images) == (
        BulkJobStatus.DONE, 6, 0, 1, 0,
    )  # fmt: skip
    for image in images[1:]:
        suggestion = CategorySuggestion.objects.get(image=image, model_version=version)
        assert suggestion.category.slug == expected_category(*outputs[image.pk])
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
    run_job(rerun)
    assert suggestions_per_photo(version) == Counter({image.pk: 1 for image in images})
    assert (rerun.skipped_images, rerun.cached_images) == (7, 0)


def test_a_damaged_cached_embedding_falls_back_to_the_cnn(
    version: ModelVersion, photo_paths: list[Path]
) -> None:
    # given a real photo whose cached backbone outputs are not numbers
    listing_with_photos([photo_paths[0].read_bytes()])
    image = ListingImage.objects.get()
    nan = np.full(1280, np.nan, np.float32)
    ImageEmbedding.objects.create(
        image=image,
        backbone_version=version.backbone_version,
        outputs=outputs_pack(nan, np.zeros(1000, np.float32)),
    )

    # when the job runs, then the photo is classified through the CNN instead, and its cache repaired
    job = BulkJob.objects.create(model_version=version, chunk_size=10)
    assert run_job(job) == [ChunkOutcome.DONE]
    assert (job.cached_images, job.cnn_images, job.failed_images) == (0, 1, 0)
    assert CategorySuggestion.objects.get(image=image).confidence > 0
    repaired = np.frombuffer(ImageEmbedding.objects.get(image=image).outputs, dtype=STORED_DTYPE)
    assert np.isfinite(repaired).all()


def test_a_bulk_job_auto_accepts_as_an_upload_would_and_a_rerun_writes_no_new_decision(
    version: ModelVersion,
) -> None:
    # given three listings whose photos were classified before and have cached embeddings, one of
    # them with a category its seller chose, and the active version accepting every category
    listings = [listing_with_photos([b"x"]) for _ in range(3)]
    ListingImage.objects.update(status=ClassificationStatus.DONE)
    images = list(ListingImage.objects.order_by("pk"))
    cache_embeddings(images, seed=5)
    chosen = Category.objects.get(slug="home")
    listing_category_set(
        listing=listings[2], category=chosen, source=CategorySource.SELLER, actor=listings[2].seller
    )
    slugs = list(Category.objects.values_list("slug", flat=True))
    ModelVersion.objects.filter(pk=version.pk).update(
        auto_accept_thresholds={slug: 0.0 for slug in slugs}, is_active=True
    )

    # when the job runs
    run_job(BulkJob.objects.create(model_version=version, chunk_size=10))

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
    run_job(BulkJob.objects.create(model_version=version, chunk_size=10))
    assert CategoryDecision.objects.count() == decisions
