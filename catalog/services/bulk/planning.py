"""Laying out a bulk job's chunks: listings walked by primary key, whole listings per chunk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from catalog.models import BulkJob, BulkJobChunk, BulkJobStatus
from catalog.services.bulk.jobs import bulk_job_dispatch
from catalog.services.bulk.reports import bulk_job_finish_if_complete
from catalog.services.bulk.scope import ACTIVE_STATES, scope_images

#: Listings read per planner query, at most. Each page's chunks are sent as soon as it commits, so
#: the first page is small (`FIRST_PLAN_PAGE`, ~15 ms for 500 listings of 10 photos) and pages
#: double from there: workers start at once while the planner goes on in a few big pages. (With
#: every page of 10,000, a 100,000-photo catalogue of 10-photo listings was one page, and the
#: workers waited for the whole plan: 0.8 s of a 6.6 s head-only job.)
PLAN_PAGE = 10_000
FIRST_PLAN_PAGE = 500
#: A photo with cached backbone outputs counts as this fraction of one to decode when chunks are
#: laid out: scoring it is ~30x cheaper, so bigger chunks spread the per-chunk queries further.
CACHED_PHOTO_COST = 0.25


def bulk_job_plan(*, job_id: int, page: int = PLAN_PAGE, first_page: int = FIRST_PLAN_PAGE) -> int:
    """Lay out the job's remaining chunks, walking listings by primary key: `first_page` listings,
    then twice as many per page up to `page`.

    A chunk closes once it holds `chunk_size` photos to decode, a photo whose backbone outputs
    are cached for the version's backbone counting as `CACHED_PHOTO_COST` of one. Listings left
    over at the end of a page open the next page (only the last page, or a page of `page`
    listings too small to fill one chunk, closes a partial chunk), so page boundaries add no
    small chunks.

    Each page is one transaction holding the job row's lock (concurrent planners of one job
    wait, and never lay out a listing twice); the cursor `planned_until_listing` makes a killed
    planner resume where it stopped. Returns the number of chunks created. An empty scope
    finishes the job at once.
    """
    created, size = 0, min(first_page, page)
    while True:
        with transaction.atomic():
            job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
            if job is None or job.planning_done or job.status not in ACTIVE_STATES:
                break
            rows = _listing_page(job, size)
            last_page = len(rows) < size
            chunks = _chunks_of(job, rows, close_partial=last_page)
            if not chunks and not last_page and size < page:
                size = min(2 * size, page)  # too few photos to fill a chunk: read more
                continue
            chunks = chunks or _chunks_of(job, rows, close_partial=True)
            BulkJobChunk.objects.bulk_create(chunks)
            BulkJob.objects.filter(pk=job.pk).update(
                planned_until_listing=chunks[-1].last_listing_id if chunks else job.planned_until_listing,
                planning_done=last_page,
                total_chunks=F("total_chunks") + len(chunks),
                total_images=F("total_images") + sum(chunk.planned_images for chunk in chunks),
                status=BulkJobStatus.RUNNING,
                started_at=job.started_at or timezone.now(),
            )
            created += len(chunks)
            bulk_job_dispatch(job_id=job.pk)
        size = min(2 * size, page)
    bulk_job_finish_if_complete(job_id=job_id)
    return created


def _listing_page(job: BulkJob, page: int) -> list[dict[str, Any]]:
    """The next `page` listings after the job's cursor: `{"listing_id", "photos", "cached"}`."""
    backbone = job.model_version.backbone_version
    rows = (
        scope_images(job=job)
        .filter(listing_id__gt=job.planned_until_listing)
        .values("listing_id")
        .annotate(
            photos=Count("id", distinct=True),
            # Counted on the photo id: every column then lies in the cache's unique (photo, backbone
            # version) index, so PostgreSQL reads that index alone (~10 ms per 100,000 photos)
            # instead of the cache's rows, a page per photo (~250 ms).
            cached=Count("embeddings__image_id", filter=Q(embeddings__backbone_version=backbone)),
        )
        .order_by("listing_id")[:page]
    )
    return [dict(row) for row in rows]


def _chunks_of(job: BulkJob, rows: Sequence[Mapping[str, Any]], *, close_partial: bool) -> list[BulkJobChunk]:
    """Unsaved chunks covering `rows` in order, each closed once its cost reaches the job's
    chunk size; the listings after the last full chunk make a partial chunk when
    `close_partial`, else they are left for the next page."""
    chunks: list[BulkJobChunk] = []
    first: int | None = None
    photos, cost = 0, 0.0
    for position, row in enumerate(rows):
        first = row["listing_id"] if first is None else first
        photos += row["photos"]
        cost += row["photos"] - row["cached"] + row["cached"] * CACHED_PHOTO_COST
        if cost >= job.chunk_size or (close_partial and position == len(rows) - 1):
            chunks.append(
                BulkJobChunk(
                    job=job,
                    index=job.total_chunks + len(chunks),
                    first_listing_id=first,
                    last_listing_id=row["listing_id"],
                    planned_images=photos,
                )
            )
            first, photos, cost = None, 0, 0.0
    return chunks
