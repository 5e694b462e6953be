"""Reads of the review side: the review queue, a listing's audit trail, and the photos people
labelled (with their cached backbone outputs), which are what the next training learns from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Prefetch, QuerySet

from catalog.models import (
    Category,
    CategoryDecision,
    ClassificationStatus,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.selectors import catalogue

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ReviewFilters:
    """Narrow the review queue: the suggested category (or one below it), the model version behind
    the suggestion, and a confidence range (0..1, inclusive)."""

    category: Category | None = None
    model_version: ModelVersion | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None


def review_queue(*, filters: ReviewFilters | None = None) -> QuerySet[Listing]:
    """Listings whose category no person set (none yet, or auto-accepted) and that have a
    suggestion, most uncertain first: smallest margin between the top two suggestions, then oldest.
    Probes are excluded; photos are prefetched in their order."""
    from catalog.models import CategorySource

    filters = filters or ReviewFilters()
    listings = catalogue.listings_published().filter(
        category_source__in=[CategorySource.NONE, CategorySource.AUTO], suggested_margin__isnull=False
    )
    if filters.category is not None:
        listings = listings.filter(
            suggested_category_id__in=catalogue.category_descendant_ids(category=filters.category)
        )
    if filters.model_version is not None:
        listings = listings.filter(suggested_model_version=filters.model_version)
    if filters.min_confidence is not None:
        listings = listings.filter(suggested_confidence__gte=filters.min_confidence)
    if filters.max_confidence is not None:
        listings = listings.filter(suggested_confidence__lte=filters.max_confidence)
    return (
        listings.select_related("category", "suggested_category", "suggested_model_version", "seller")
        .prefetch_related(Prefetch("images", queryset=ListingImage.objects.order_by("position", "id")))
        .order_by("suggested_margin", "created_at", "id")
    )


def review_listing(*, listing_id: int) -> Listing | None:
    """One published listing for the review pages, with what they show."""
    return (
        catalogue.listings_published()
        .select_related("category", "suggested_category", "suggested_model_version", "seller")
        .prefetch_related(Prefetch("images", queryset=ListingImage.objects.order_by("position", "id")))
        .filter(pk=listing_id)
        .first()
    )


def listing_decisions(*, listing: Listing) -> QuerySet[CategoryDecision]:
    """The listing's audit trail: every category decision, oldest first."""
    return (
        CategoryDecision.objects.filter(listing=listing)
        .select_related("category", "previous_category", "actor", "model_version", "undone_by")
        .order_by("created_at", "id")
    )


@dataclass(frozen=True)
class LabelledPhoto:
    """A photo of a listing whose category a person set (seller or reviewer): training data."""

    image_id: int
    slug: str
    checksum: str
    file_name: str


def labelled_photos() -> list[LabelledPhoto]:
    """Training data, in photo id order: every classifiable photo of a listing (not a probe) that
    a person labelled. A photo's label is a reviewer's decision about that photo when there is
    one (`ListingImage.label`), else the category a seller or a reviewer set for its listing, but
    only when the listing's photos agree (`Listing.photos_disagree` is False): "Bags" on a laptop
    + toaster + bag bundle labels none of its photos. Photos that failed to decode are left out."""
    from django.db.models import Q
    from django.db.models.functions import Coalesce

    from catalog.models import CategorySource

    listing_label = Q(
        listing__category__isnull=False,
        listing__category_source__in=[CategorySource.SELLER, CategorySource.REVIEWER],
        listing__photos_disagree=False,
    )
    rows = (
        ListingImage.objects.filter(Q(label__isnull=False) | listing_label, listing__is_probe=False)
        .exclude(status=ClassificationStatus.FAILED)
        .exclude(checksum="")  # a direct upload that no worker has validated yet
        .annotate(slug=Coalesce("label__slug", "listing__category__slug"))
        .order_by("pk")
        .values_list("pk", "slug", "checksum", "file")
    )
    return [
        LabelledPhoto(image_id=pk, slug=slug, checksum=checksum, file_name=name)
        for pk, slug, checksum, name in rows
    ]


def labelled_photo_counts() -> dict[str, int]:
    """Human-labelled photos per category slug (what the next training sees), largest first."""
    from collections import Counter

    counts = Counter(photo.slug for photo in labelled_photos())
    return dict(counts.most_common())


def photos_by_id(*, image_ids: list[int]) -> list[LabelledPhoto]:
    """The photos of `image_ids` that still exist, in id order, with their listing's category
    slug ("" when none)."""
    rows = (
        ListingImage.objects.filter(pk__in=image_ids)
        .order_by("pk")
        .values_list("pk", "listing__category__slug", "checksum", "file")
    )
    return [
        LabelledPhoto(image_id=pk, slug=slug or "", checksum=checksum, file_name=name)
        for pk, slug, checksum, name in rows
    ]


def image_embeddings(
    *, image_ids: list[int], backbone_version: str
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Cached backbone outputs (embedding float32 (1280,), logits float32 (1000,)) by image id,
    for the photos of `image_ids` that have them for `backbone_version` (read by
    `catalog.services.embeddings.embeddings_read`, the cache's one reader)."""
    from catalog.services.embeddings import embeddings_read

    cached = embeddings_read(image_ids=image_ids, backbone_version=backbone_version)
    embeddings, logits = cached.embeddings.astype("float32"), cached.logits.astype("float32")
    return {
        image_id: (embedding, image_logits)
        for image_id, embedding, image_logits in zip(cached.image_ids, embeddings, logits, strict=True)
    }
