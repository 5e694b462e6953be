"""Closing a bulk chunk: its listings' suggestions, what changed, its counters, the job's progress."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.models import BulkChunkStatus, BulkJob, BulkJobChunk, Category, Listing, ModelVersion
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services import suggestions
from catalog.services.bulk.reports import (
    SAMPLE_PER_CHUNK,
    Moves,
    bulk_job_finish_if_complete,
    moves_report,
    progress_refresh,
)

if TYPE_CHECKING:
    from catalog.services.top_k import StoredTopK


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
    top_k: StoredTopK,
    counts: ChunkCounts,
) -> None:
    """Derive the chunk's listings' suggestions, record what changed, close the chunk.

    `listing_of`: listing id by image id, for every photo of the chunk; `top_k`: the photos'
    top-k (the stored ones of photos this run skipped, then this run's, in a dry run never
    written). Derived by `listing_top_k.listings_suggestions_derive_arrays`, the upload path's
    rule (`suggestions.listing_suggestions_derive`) over the whole chunk at once. When
    the job applies the active version, the listings' suggestion fields are written and
    auto-accepted as after an upload (`suggestions.listings_suggestion_store`,
    `suggestions.listings_auto_accept`: never over a person's choice). Then the job's counters
    are refreshed and, after its last chunk, the job is finished.
    """
    import numpy as np

    from catalog.services.listing_top_k import listings_suggestions_derive_arrays
    from catalog.services.top_k import StoredTopK

    listing_ids = list(dict.fromkeys(listing_of.values()))
    row_of = {listing_id: row for row, listing_id in enumerate(listing_ids)}
    rows = [row_of.get(listing_of.get(image_id, -1), -1) for image_id in top_k.image_ids.tolist()]
    photo_rows = np.asarray(rows, dtype=np.int64)
    ours = photo_rows >= 0
    photos = StoredTopK(top_k.image_ids[ours], top_k.columns[ours], top_k.rounded[ours], top_k.slugs)
    parents = catalogue_selectors.category_parents() if len(photos) else {}
    derived = listings_suggestions_derive_arrays(
        listing_ids=listing_ids,
        photo_listing=photo_rows[ours],
        photos=photos,
        parents=parents,
        keep=settings.SUGGESTION_TOP_K,
        confident=settings.PHOTO_CONFIDENT_MIN,
    )
    current = {
        pk: (category_id, title)
        for pk, category_id, title in Listing.objects.filter(pk__in=listing_ids).values_list(
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
