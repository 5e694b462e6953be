"""Suggestions: model versions, recording photos' top-k, deriving listings' suggestions.

One implementation for the upload path and the bulk path, which call the same many-row
functions (the upload path with one row):

- `suggestions_record_many`: upsert photos' top-k for a model version (unknown categories
  dropped, in one place);
- `listing_suggestions_derive`: a listing's suggestion from its photos' top-k, pure;
- `listings_suggestion_store` and `listings_auto_accept`: write what was derived.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from catalog import suggestion_tree
from catalog.models import (
    Category,
    CategorySource,
    CategorySuggestion,
    ClassificationStatus,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.embeddings import embeddings_write
from catalog.services.images import ImageGone, image_classification_fail, image_status_set
from catalog.services.registry import model_version_artifact_attach

if TYPE_CHECKING:
    import numpy as np

    from catalog.services.top_k import ScoredPhotos, StoredTopK

NO_KNOWN_CATEGORY = "None of the suggested categories exist in the taxonomy."

#: A photo's top-k as stored: `[{"slug", "confidence" rounded to 6 places}]`, best first.
TopK = list[dict[str, Any]]


@dataclass(frozen=True)
class ScoredCategory:
    """One entry of a suggestion's top-k."""

    slug: str
    confidence: float


@dataclass(frozen=True)
class PhotoScores:
    """A photo's top-k as `(category slug, confidence)` pairs, best first."""

    image_id: int
    top_k: Sequence[tuple[str, float]]


def model_version_ensure(
    *, name: str, backbone_version: str = "", metrics: dict | None = None
) -> ModelVersion:
    """Return the ModelVersion row called `name`, creating it; the first one becomes active."""
    version, _ = ModelVersion.objects.get_or_create(
        name=name, defaults={"backbone_version": backbone_version, "metrics": metrics or {}}
    )
    if not ModelVersion.objects.filter(is_active=True).exists():
        try:
            with transaction.atomic():
                ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
        except IntegrityError:
            pass  # another worker activated one at the same moment
        version.refresh_from_db()
    return version


def model_version_shipped_register(
    *,
    name: str,
    backbone_version: str,
    head_manifest: dict[str, Any],
    head_npz: bytes,
    metrics: dict[str, Any],
    auto_accept_thresholds: dict[str, float],
    auto_accept_precision: float | None,
) -> ModelVersion:
    """Register the head a worker ships with, once: its version row (the first version becomes
    active, `model_version_ensure`) with its artifact, figures and auto-accept thresholds
    (`model_version_artifact_attach`; never replaced). Then the registry can compare with it,
    show it and activate it again like any trained version."""
    version = model_version_ensure(name=name, backbone_version=backbone_version)
    model_version_artifact_attach(
        version=version,
        head_manifest=head_manifest,
        head_npz=head_npz,
        metrics=metrics,
        auto_accept_thresholds=auto_accept_thresholds,
        auto_accept_precision=auto_accept_precision,
    )
    return version


# --- photos ----------------------------------------------------------------------------------------


def suggestions_record_many(
    *, model_version: ModelVersion, scores: ScoredPhotos | Sequence[PhotoScores], write: bool = True
) -> tuple[StoredTopK, dict[int, str]]:
    """Upsert one suggestion per photo for `model_version`, unique on image + model version, so a
    repeated delivery or run rewrites the same rows.

    `scores`: the photos' top-k as arrays (`top_k.ScoredPhotos`, the bulk path's head-only
    batches) or as `PhotoScores` rows (wrapped into the same arrays). Categories the database
    does not know (taxonomy out of sync) are dropped from each top-k; confidences are kept to 6
    decimals in the top-k, the best one as is in `confidence`. The rows, laid out by numpy
    (`top_k.copy_rows`), go in by one binary COPY into a staging table and one `INSERT ...
    SELECT ... ON CONFLICT DO UPDATE` (`catalog.pgcopy.staged_upsert`), so the cost per photo is
    PostgreSQL's. With `write=False` (a dry run) nothing is written. Returns `(top-k by image id
    (a `top_k.StoredTopK`), reasons by image id for photos with no known category)`.
    """
    from catalog.pgcopy import staged_upsert
    from catalog.services import top_k

    if not isinstance(scores, top_k.ScoredPhotos):
        scores = top_k.ScoredPhotos.from_rows([(photo.image_id, photo.top_k) for photo in scores])
    rows = top_k.known_entries(scores, dict(Category.objects.values_list("slug", "pk")))
    failed = dict.fromkeys(rows.dropped, NO_KNOWN_CATEGORY)
    stored = rows.stored
    if write and len(stored):
        table = CategorySuggestion._meta.db_table
        staged_upsert(
            staging="bulk_suggestion_staging",
            columns=[
                ("image_id", "int8"),
                ("category_id", "int8"),
                ("confidence", "float8"),
                ("top_k", "text"),
            ],
            rows=top_k.copy_rows(rows),
            upsert=f"INSERT INTO {table} "
            "(image_id, model_version_id, category_id, confidence, top_k, created_at, updated_at) "
            "SELECT image_id, %s, category_id, confidence, top_k::jsonb, now(), now() "
            "FROM bulk_suggestion_staging "
            "ON CONFLICT (image_id, model_version_id) DO UPDATE SET category_id = EXCLUDED.category_id, "
            "confidence = EXCLUDED.confidence, top_k = EXCLUDED.top_k, updated_at = EXCLUDED.updated_at",
            params=[model_version.pk],
        )
    return stored, failed


def image_classification_record(
    *,
    image: ListingImage,
    model_version: ModelVersion,
    top_k: Sequence[ScoredCategory],
    embedding: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    backbone_version: str = "",
) -> TopK | None:
    """Store the top-k suggestion of `model_version` for the photo, idempotently, cache its
    backbone outputs, mark it DONE and refresh its listing's suggestion, in one transaction.

    The same many-row functions as the bulk path, with one row. Returns the stored top-k, or
    None when no category of the top-k is known; the photo then fails with a reason.

    Raises `ImageGone` when the photo or its listing was deleted meanwhile (PostgreSQL checks the
    foreign keys at commit, so a seller deleting the listing mid-classification shows up as an
    `IntegrityError` there); nothing is written then.
    """
    scores = PhotoScores(image.pk, [(entry.slug, float(entry.confidence)) for entry in top_k])
    try:
        with transaction.atomic():
            stored, _ = suggestions_record_many(model_version=model_version, scores=[scores])
            if image.pk in stored:
                if embedding is not None and logits is not None and backbone_version:
                    embeddings_write(backbone_version=backbone_version, rows=[(image.pk, embedding, logits)])
                image_status_set(image_id=image.pk, status=ClassificationStatus.DONE)
                listings_suggestion_refresh(listing_ids=[image.listing_id], model_version=model_version)
    except IntegrityError:
        if not ListingImage.objects.filter(pk=image.pk).exists():
            raise ImageGone(f"image {image.pk} was deleted while it was classified") from None
        raise
    if image.pk not in stored:
        image_classification_fail(image=image, reason=NO_KNOWN_CATEGORY)
        return None
    return stored[image.pk]


# --- listings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListingSuggestionFields:
    """A listing's suggestion fields derived from its photos' top-k: the best category, its mean
    confidence, the averaged top-k (best first), the margin between its first two confidences
    and whether confident photos disagree; `slug` None when no photo has a suggestion (the
    fields are then cleared)."""

    listing_id: int
    slug: str | None
    confidence: float | None
    top_k: TopK = field(default_factory=list)
    margin: float | None = None
    photos_disagree: bool = False


def listing_suggestions_derive(
    top_k_by_listing: Mapping[int, Sequence[Sequence[Mapping[str, Any]]]],
    *,
    parents: Mapping[str, str | None] | None = None,
) -> list[ListingSuggestionFields]:
    """Per listing, its suggestion from its classified photos' top-k (`suggestion_tree.derive`).

    Each photo's top-k confidences are averaged over the listing's classified photos, so a
    category seen in several photos wins over one photo's strong but lone vote, then
    de-duplicated along the tree; the first `SUGGESTION_TOP_K` are kept, and photos whose top-1
    reaches `PHOTO_CONFIDENT_MIN` disagree when they name different branches. Pure given
    `parents` (`{slug: parent slug}`; read from the database when None and needed).
    """
    if parents is None:
        has_photos = any(photos for photos in top_k_by_listing.values())
        parents = catalogue_selectors.category_parents() if has_photos else {}
    derived_fields = []
    for listing_id, photos in top_k_by_listing.items():
        derived = suggestion_tree.derive(
            photos, parents, keep=settings.SUGGESTION_TOP_K, confident=settings.PHOTO_CONFIDENT_MIN
        )
        if derived is None:  # e.g. its classified photos were removed
            derived_fields.append(ListingSuggestionFields(listing_id, None, None))
            continue
        derived_fields.append(
            ListingSuggestionFields(
                listing_id,
                str(derived.top_k[0]["slug"]),
                derived.confidence,
                top_k=list(derived.top_k),
                margin=derived.margin,
                photos_disagree=derived.photos_disagree,
            )
        )
    return derived_fields


def listings_suggestion_store(
    *, suggestions: Sequence[ListingSuggestionFields], model_version: ModelVersion
) -> None:
    """Write the listings' suggestion fields (category, confidence, top-k, margin, whether
    photos disagree, model version; all cleared for a listing without one) in one UPDATE. Never
    touches the category a person chose."""
    import psycopg

    if not suggestions:
        return
    slugs = {entry.slug for entry in suggestions if entry.slug}
    categories = dict(Category.objects.filter(slug__in=slugs).values_list("slug", "pk")) if slugs else {}
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"UPDATE {Listing._meta.db_table} AS l SET suggested_category_id = v.category_id, "
            "suggested_confidence = v.confidence, suggested_top_k = v.top_k::jsonb, "
            "suggested_margin = v.margin, photos_disagree = v.disagree, suggested_model_version_id = "
            "CASE WHEN v.category_id IS NULL THEN NULL ELSE %s::bigint END, updated_at = now() "
            "FROM unnest(%b::bigint[], %b::bigint[], %b::float8[], %b::text[], %b::float8[], %b::bool[]) "
            "AS v(id, category_id, confidence, top_k, margin, disagree) WHERE l.id = v.id",
            [
                model_version.pk,
                [entry.listing_id for entry in suggestions],
                [categories.get(entry.slug) if entry.slug else None for entry in suggestions],
                [entry.confidence for entry in suggestions],
                [json.dumps(entry.top_k) for entry in suggestions],
                [entry.margin for entry in suggestions],
                [entry.photos_disagree for entry in suggestions],
            ],
        )


def listings_auto_accept(
    *, suggestions: Sequence[ListingSuggestionFields], model_version: ModelVersion
) -> None:
    """Auto-accept the stored suggestions that clear their category's threshold for
    `model_version` (`decisions.listing_auto_accept`: source AUTO, audited, never over a
    person's choice). Listings where it could change nothing are left out in one query: a person
    chose their category, or it already holds that category by auto-accept."""
    from catalog.services.decisions import HUMAN_SOURCES, listing_auto_accept

    thresholds = model_version.auto_accept_thresholds or {}
    if not settings.AUTO_ACCEPT_ENABLED or not thresholds:
        return
    suggested: dict[int, str] = {
        entry.listing_id: entry.slug
        for entry in suggestions
        if entry.slug is not None
        and entry.slug in thresholds
        and entry.confidence is not None
        and entry.confidence >= float(thresholds[entry.slug])
        and not entry.photos_disagree
    }
    if not suggested:
        return
    categories = dict(Category.objects.filter(slug__in=set(suggested.values())).values_list("slug", "pk"))
    unchanged = {
        pk
        for pk, category_id, source in Listing.objects.filter(pk__in=suggested).values_list(
            "pk", "category_id", "category_source"
        )
        if source in HUMAN_SOURCES
        or (source == CategorySource.AUTO and category_id == categories.get(suggested[pk]))
    }
    for listing in Listing.objects.filter(pk__in=set(suggested) - unchanged):
        listing_auto_accept(listing=listing, model_version=model_version)


def listings_suggestion_refresh(*, listing_ids: Sequence[int], model_version: ModelVersion) -> None:
    """Derive the listings' suggestions from all their photos' suggestions for `model_version`
    (`listing_suggestions_derive`), store them and auto-accept those that clear their
    category's threshold (`listings_auto_accept`)."""
    top_k_by_listing: dict[int, list[TopK]] = {listing_id: [] for listing_id in listing_ids}
    rows = CategorySuggestion.objects.filter(
        image__listing_id__in=listing_ids, model_version=model_version
    ).values_list("image__listing_id", "top_k")
    for listing_id, top_k in rows:
        top_k_by_listing[listing_id].append(top_k)
    suggestions = listing_suggestions_derive(top_k_by_listing)
    listings_suggestion_store(suggestions=suggestions, model_version=model_version)
    listings_auto_accept(suggestions=suggestions, model_version=model_version)


def listing_suggestion_refresh(*, listing: Listing, model_version: ModelVersion) -> None:
    """`listings_suggestion_refresh` for one listing."""
    listings_suggestion_refresh(listing_ids=[listing.pk], model_version=model_version)
