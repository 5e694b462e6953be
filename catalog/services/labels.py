"""Review decisions about one photo, and undoing a reviewer's last decision.

When a listing's photos disagree (a laptop + toaster + bag bundle), its category is no label for
its photos (`selectors.review.labelled_photos`): a reviewer labels each photo on its own instead, with
`review_photo_label`. `review_undo` reverts the reviewer's most recent decision, listing or
photo, and records that in the audit trail as an UNDONE decision pointing at it; it never
reverts a decision that someone else has overtaken since.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from catalog.models import (
    Category,
    CategoryDecision,
    CategorySource,
    CategorySuggestion,
    DecisionAction,
    Listing,
    ListingImage,
)
from catalog.services.decisions import CATEGORY_INACTIVE

logger = logging.getLogger(__name__)

# User-facing messages; tests reuse them.
NOTHING_TO_UNDO = "You have no review decision left to undo."
UNDO_OVERTAKEN = "“{title}” changed after your decision, so it was not undone."

# What the review queue's undo key reverts: one-key decisions, not a bulk accept of many listings.
UNDOABLE_ACTIONS = (
    DecisionAction.ACCEPTED,
    DecisionAction.CORRECTED,
    DecisionAction.REJECTED,
    DecisionAction.PHOTO_LABELLED,
)


def _require_reviewer(user: AbstractBaseUser | None) -> None:
    if user is None or not getattr(user, "is_staff", False):
        raise PermissionDenied("only staff may review")


def _rank(top_k: list[dict], slug: str) -> tuple[int | None, float | None]:
    for position, entry in enumerate(top_k, start=1):
        if entry.get("slug") == slug:
            return position, float(entry["confidence"])
    return None, None


@dataclass(frozen=True)
class PhotoLabelOutcome:
    """What `review_photo_label` did: `changed` False when the photo already had that label."""

    image: ListingImage
    changed: bool


def review_photo_label(
    *, image: ListingImage, category: Category, reviewer: AbstractBaseUser
) -> PhotoLabelOutcome:
    """A reviewer labels one photo (its training label, whatever its listing's category).

    Recorded as a PHOTO_LABELLED decision on the photo's listing with the photo, its previous
    label, and what the model said about this photo (the active version's top-k, else the
    latest). Raises `PermissionDenied` for a non-staff user, `ValueError` with
    `CATEGORY_INACTIVE` for a retired category.
    """
    _require_reviewer(reviewer)
    if not category.is_active:
        raise ValueError(CATEGORY_INACTIVE)
    with transaction.atomic():
        current = ListingImage.objects.select_for_update().filter(pk=image.pk).first()
        if current is None or current.label_id == category.pk:
            return PhotoLabelOutcome(image=image, changed=False)
        suggestion = (
            CategorySuggestion.objects.filter(image_id=image.pk)
            .order_by("-model_version__is_active", "-updated_at")
            .first()
        )
        top_k = list(suggestion.top_k) if suggestion else []
        rank, confidence = _rank(top_k, category.slug)
        ListingImage.objects.filter(pk=image.pk).update(label=category)
        CategoryDecision.objects.create(
            listing_id=current.listing_id,
            image_id=image.pk,
            action=DecisionAction.PHOTO_LABELLED,
            source=CategorySource.REVIEWER,
            category=category,
            previous_category_id=current.label_id,
            previous_source=CategorySource.REVIEWER if current.label_id else CategorySource.NONE,
            actor_id=reviewer.pk,
            model_version_id=suggestion.model_version_id if suggestion else None,
            suggested_top_k=top_k,
            suggestion_rank=rank,
            confidence=confidence,
        )
    image.label = category
    logger.info("image %s labelled %s by user %s", image.pk, category.slug, reviewer.pk)
    return PhotoLabelOutcome(image=image, changed=True)


@dataclass(frozen=True)
class UndoOutcome:
    """The decision `review_undo` reverted and the UNDONE decision that records it."""

    undone: CategoryDecision
    record: CategoryDecision


def review_undo(*, reviewer: AbstractBaseUser) -> UndoOutcome:
    """Revert the reviewer's most recent decision not yet undone (accept, correct, reject or a
    photo's label; pressing again reverts the one before): the listing's category and source, or
    the photo's label, go back to what they were before it.

    Raises `PermissionDenied` for a non-staff user; `ValueError` with `NOTHING_TO_UNDO` when the
    reviewer has no such decision, or with `UNDO_OVERTAKEN` when the listing (or photo) changed
    after it (nothing is reverted then, and the decision stays the one the next undo tries).
    """
    _require_reviewer(reviewer)
    with transaction.atomic():
        undone = CategoryDecision.objects.filter(undoes__isnull=False).values("undoes_id")
        decision = (
            CategoryDecision.objects.select_for_update(of=("self",))
            .filter(actor_id=reviewer.pk, action__in=UNDOABLE_ACTIONS)
            .exclude(pk__in=undone)
            .select_related("listing")
            .order_by("-created_at", "-id")
            .first()
        )
        if decision is None:
            raise ValueError(NOTHING_TO_UNDO)
        overtaken = UNDO_OVERTAKEN.format(title=decision.listing.title)
        if decision.image_id is not None:
            if not _photo_label_restore(decision):
                raise ValueError(overtaken)
        elif not _listing_category_restore(decision):
            raise ValueError(overtaken)
        record = CategoryDecision.objects.create(
            listing_id=decision.listing_id,
            image_id=decision.image_id,
            action=DecisionAction.UNDONE,
            source=decision.previous_source,
            category_id=decision.previous_category_id,
            previous_category_id=decision.category_id,
            previous_source=decision.source,
            actor_id=reviewer.pk,
            model_version_id=decision.model_version_id,
            suggested_top_k=decision.suggested_top_k,
            undoes=decision,
        )
    logger.info("decision %s undone by user %s", decision.pk, reviewer.pk)
    return UndoOutcome(undone=decision, record=record)


def _listing_category_restore(decision: CategoryDecision) -> bool:
    """Put the listing's category and source back to before `decision`, if it still shows it."""
    current = Listing.objects.select_for_update().filter(pk=decision.listing_id).first()
    if current is None:
        return False
    if (current.category_id, current.category_source) != (decision.category_id, decision.source):
        return False
    Listing.objects.filter(pk=current.pk).update(
        category_id=decision.previous_category_id,
        category_source=decision.previous_source,
        updated_at=timezone.now(),
    )
    return True


def _photo_label_restore(decision: CategoryDecision) -> bool:
    """Put the photo's label back to before `decision`, if it is still the one it set."""
    current = ListingImage.objects.select_for_update().filter(pk=decision.image_id or 0).first()
    if current is None or current.label_id != decision.category_id:
        return False
    ListingImage.objects.filter(pk=current.pk).update(label_id=decision.previous_category_id)
    return True
