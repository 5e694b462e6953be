"""Closing a bulk chunk: its listings' suggestions, what changed, its counters, the job's progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from catalog.models import BulkChunkStatus, BulkJob, BulkJobChunk, Category, Listing, ModelVersion
from catalog.services import suggestions
from catalog.services.bulk.reports import (
    SAMPLE_PER_CHUNK,
    Moves,
    bulk_job_finish_if_complete,
    moves_report,
    progress_refresh,
)


@dataclass
class ChunkCounts:
    """Photos of one chunk run, by outcome (see `BulkJob` for the meaning of each)."""

    processed: int = 0
    suggested: int = 0
    skipped: int = 0
    failed: int = 0
    cached: int = 0
    cnn: int = 0


def chunk_close(
    *,
    job: BulkJob,
    chunk: BulkJobChunk,
    listing_of: Mapping[int, int],
    top_k: Mapping[int, suggestions.TopK],
    counts: ChunkCounts,
) -> None:
    """Derive the chunk's listings' suggestions, record what changed, close the chunk.

    `listing_of`: listing id by image id, for every photo of the chunk; `top_k`: the photos'
    top-k by image id (this run's, in a dry run never written, and the stored ones of photos it
    skipped). Derived by `suggestions.listing_suggestions_derive`, the upload path's rule. When
    the job applies the active version, the listings' suggestion fields are written and
    auto-accepted as after an upload (`suggestions.listings_suggestion_store`,
    `suggestions.listings_auto_accept`: never over a person's choice). Then the job's counters
    are refreshed and, after its last chunk, the job is finished.
    """
    by_listing: dict[int, list[suggestions.TopK]] = {listing_id: [] for listing_id in listing_of.values()}
    for image_id, photo_top_k in top_k.items():
        if image_id in listing_of:
            by_listing[listing_of[image_id]].append(photo_top_k)
    derived = suggestions.listing_suggestions_derive(by_listing)
    current = {
        pk: (category_id, title)
        for pk, category_id, title in Listing.objects.filter(pk__in=by_listing).values_list(
            "pk", "suggested_category_id", "title"
        )
    }
    moves, sample = _moves(derived, current)
    with transaction.atomic():
        version = ModelVersion.objects.get(pk=job.model_version_id)
        if not job.dry_run and version.is_active:
            kept = [entry for entry in derived if entry.listing_id in current]
            suggestions.listings_suggestion_store(suggestions=kept, model_version=version)
            suggestions.listings_auto_accept(suggestions=kept, model_version=version)
        BulkJobChunk.objects.filter(pk=chunk.pk).update(
            status=BulkChunkStatus.DONE,
            inflight_image_ids=[],
            **{f"{name}_images": value for name, value in asdict(counts).items()},
            changed_listings=sum(moves.values()),
            report=moves_report(moves, sample),
            finished_at=timezone.now(),
        )
    progress_refresh(job_id=job.pk)
    bulk_job_finish_if_complete(job_id=job.pk)


def _moves(
    derived: Sequence[suggestions.ListingSuggestionFields], current: Mapping[int, tuple[int | None, str]]
) -> tuple[Moves, list[dict[str, Any]]]:
    """Listings whose suggested category changes, by (before, after), and a sample of them
    (`SAMPLE_PER_CHUNK`, by listing id). `current`: (suggested category id, title) by listing."""
    slugs = dict(Category.objects.values_list("pk", "slug"))
    moves: Moves = Counter()
    sample: list[dict[str, Any]] = []
    for entry in sorted(derived, key=lambda e: e.listing_id):
        if entry.listing_id not in current or entry.slug is None:
            continue
        category_id, title = current[entry.listing_id]
        before = slugs.get(category_id) if category_id else None
        if before == entry.slug:
            continue
        moves[(before, entry.slug)] += 1
        if len(sample) < SAMPLE_PER_CHUNK:
            sample.append(
                {
                    "listing": entry.listing_id,
                    "title": title,
                    "from": before,
                    "to": entry.slug,
                    "confidence": round(entry.confidence or 0.0, 4),
                }
            )
    return moves, sample
