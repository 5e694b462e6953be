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

#: Listings read per planner query.
PLAN_PAGE = 10_000
#: A photo with cached backbone outputs counts as this fraction of one to decode when chunks are
#: laid out: scoring it is ~30x cheaper, so bigger chunks spread the per-chunk queries further.
CACHED_PHOTO_COST = 0.25


def bulk_job_plan(*, job_id: int, page: int = PLAN_PAGE) -> int:
    """Lay out the job's remaining chunks, walking listings by primary key `page` at a time.

    A chunk closes once it holds `chunk_size` photos to decode, a photo whose backbone outputs
    are cached for the version's backbone counting as `CACHED_PHOTO_COST` of one.

    Each page is one transaction holding the job row's lock (concurrent planners of one job
    wait, and never lay out a listing twice); the cursor `planned_until_listing` makes a killed
    planner resume where it stopped. Returns the number of chunks created. An empty scope
    finishes the job at once.
    """
    created = 0
    while True:
        with transaction.atomic():
            job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
            if job is None or job.planning_done or job.status not in ACTIVE_STATES:
                break
            rows = _listing_page(job, page)
            chunks = _chunks_of(job, rows)
            BulkJobChunk.objects.bulk_create(chunks)
            BulkJob.objects.filter(pk=job.pk).update(
                planned_until_listing=rows[-1]["listing_id"] if rows else job.planned_until_listing,
                planning_done=len(rows) < page,
                total_chunks=F("total_chunks") + len(chunks),
                total_images=F("total_images") + sum(chunk.planned_images for chunk in chunks),
                status=BulkJobStatus.RUNNING,
                started_at=job.started_at or timezone.now(),
            )
            created += len(chunks)
            bulk_job_dispatch(job_id=job.pk)
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
            cached=Count("embeddings", filter=Q(embeddings__backbone_version=backbone)),
        )
        .order_by("listing_id")[:page]
    )
    return [dict(row) for row in rows]


def _chunks_of(job: BulkJob, rows: Sequence[Mapping[str, Any]]) -> list[BulkJobChunk]:
    """Unsaved chunks covering `rows` in order, each closed once its cost reaches the job's
    chunk size (the last one at the end of the page)."""
    chunks: list[BulkJobChunk] = []
    first: int | None = None
    photos, cost = 0, 0.0
    for position, row in enumerate(rows):
        first = row["listing_id"] if first is None else first
        photos += row["photos"]
        cost += row["photos"] - row["cached"] + row["cached"] * CACHED_PHOTO_COST
        if cost >= job.chunk_size or position == len(rows) - 1:
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
