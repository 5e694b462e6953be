"""Suggestions: model versions, recording a photo's top-k, deriving a listing's suggestion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog import suggestion_tree
from catalog.models import (
    Category,
    CategorySuggestion,
    ClassificationStatus,
    ImageEmbedding,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.images import ImageGone, image_classification_fail, image_status_set

_S = ClassificationStatus
NO_KNOWN_CATEGORY = "None of the suggested categories exist in the taxonomy."


@dataclass(frozen=True)
class ScoredCategory:
    """One entry of a suggestion's top-k."""

    slug: str
    confidence: float


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


def image_classification_record(
    *,
    image: ListingImage,
    model_version: ModelVersion,
    top_k: Sequence[ScoredCategory],
    embedding: bytes | None = None,
    logits: bytes | None = None,
    backbone_version: str = "",
) -> CategorySuggestion | None:
    """Store the top-k suggestion of `model_version` for the photo, idempotently.

    A duplicate delivery updates the same row (unique on image + model version). Categories the
    database does not know (taxonomy out of sync) are dropped from the top-k. Returns None when
    no category of the top-k is known; the photo then fails with a reason.

    Raises `ImageGone` when the photo or its listing was deleted meanwhile (PostgreSQL checks the
    foreign keys at commit, so a seller deleting the listing mid-classification shows up as an
    `IntegrityError` there); nothing is written then.
    """
    known = catalogue_selectors.categories_by_slug()
    entries = [entry for entry in top_k if entry.slug in known]
    if not entries:
        image_classification_fail(image=image, reason=NO_KNOWN_CATEGORY)
        return None
    try:
        return _suggestion_write(
            image=image,
            model_version=model_version,
            entries=entries,
            known=known,
            embedding=embedding,
            logits=logits,
            backbone_version=backbone_version,
        )
    except IntegrityError:
        if not ListingImage.objects.filter(pk=image.pk).exists():
            raise ImageGone(f"image {image.pk} was deleted while it was classified") from None
        raise


def _suggestion_write(
    *,
    image: ListingImage,
    model_version: ModelVersion,
    entries: Sequence[ScoredCategory],
    known: dict[str, Category],
    embedding: bytes | None,
    logits: bytes | None,
    backbone_version: str,
) -> CategorySuggestion:
    best = entries[0]
    with transaction.atomic():
        suggestion, _ = CategorySuggestion.objects.update_or_create(
            image=image,
            model_version=model_version,
            defaults={
                "category": known[best.slug],
                "confidence": float(best.confidence),
                "top_k": [{"slug": e.slug, "confidence": round(float(e.confidence), 6)} for e in entries],
            },
        )
        if embedding is not None and logits is not None and backbone_version:
            ImageEmbedding.objects.update_or_create(
                image=image,
                backbone_version=backbone_version,
                defaults={"embedding": embedding, "logits": logits},
            )
        image_status_set(image_id=image.pk, status=_S.DONE)
        listing_suggestion_refresh(listing=image.listing, model_version=model_version)
    return suggestion


def listing_suggestion_refresh(*, listing: Listing, model_version: ModelVersion) -> None:
    """Derive the listing's suggested category from all its photos' suggestions.

    Each photo's top-k confidences are averaged over the listing's classified photos, so a
    category seen in several photos wins over one photo's strong but lone vote, then
    de-duplicated along the tree (`catalog.suggestion_tree`). Stores the best category and its
    confidence, that top-k, the margin between its first two confidences (the review queue's
    uncertainty order), the model version, and whether confident photos disagree. Never touches
    the category a person chose; when the suggestion clears its category's auto-accept threshold
    for the active version, `listing_auto_accept` sets it (source AUTO, audited).
    """
    from catalog.services.decisions import listing_auto_accept

    top_ks = list(
        CategorySuggestion.objects.filter(image__listing=listing, model_version=model_version).values_list(
            "top_k", flat=True
        )
    )
    derived = suggestion_tree.derive(
        top_ks,
        catalogue_selectors.category_parents() if top_ks else {},
        keep=settings.SUGGESTION_TOP_K,
        confident=settings.PHOTO_CONFIDENT_MIN,
    )
    if derived is None:  # e.g. its classified photos were removed
        Listing.objects.filter(pk=listing.pk).update(
            suggested_category=None,
            suggested_confidence=None,
            suggested_top_k=[],
            suggested_margin=None,
            suggested_model_version=None,
            photos_disagree=False,
            updated_at=timezone.now(),
        )
        return
    Listing.objects.filter(pk=listing.pk).update(
        suggested_category=Category.objects.filter(slug=derived.top_k[0]["slug"]).first(),
        suggested_confidence=derived.confidence,
        suggested_top_k=derived.top_k,
        suggested_margin=derived.margin,
        suggested_model_version=model_version,
        photos_disagree=derived.photos_disagree,
        updated_at=timezone.now(),
    )
    listing_auto_accept(listing=listing, model_version=model_version)
