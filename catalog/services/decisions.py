"""Category decisions: the one place that sets a listing's category, and its audit trail.

Every path that changes `Listing.category` (the seller's choice in the web UI and the API, a
reviewer's accept / correct / reject, bulk accept, auto-accept after classification) calls
`listing_category_set`, which writes one `CategoryDecision` row per change, in the same
transaction, recording who, when, what the model said and which version said it.

A machine (source AUTO) never replaces a category a person set: the check and the update happen
under a row lock on the listing, so a late task cannot win a race against a reviewer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from catalog.models import (
    Category,
    CategoryDecision,
    CategorySource,
    ClassificationStatus,
    DecisionAction,
    Listing,
    ModelVersion,
)

logger = logging.getLogger(__name__)

# User-facing messages; tests reuse them.
CATEGORY_INACTIVE = "This category is no longer in use; choose another one."
NO_SUCH_SUGGESTION = "This listing has no suggestion number {rank}."
ONLY_REVIEWERS_REJECT = "Only a reviewer can reject a listing as not classifiable."

HUMAN_SOURCES = frozenset({CategorySource.SELLER, CategorySource.REVIEWER})
_WAITING = {ClassificationStatus.PENDING, ClassificationStatus.QUEUED}


def _default_action(*, source: str, category: Category | None, rank: int | None) -> str:
    if source == CategorySource.SELLER:
        return DecisionAction.SELLER_CHOSE
    if source == CategorySource.AUTO:
        return DecisionAction.AUTO_ACCEPTED
    if category is None:
        return DecisionAction.REJECTED
    return DecisionAction.ACCEPTED if rank is not None else DecisionAction.CORRECTED


def _suggestion_rank(top_k: list[dict], slug: str) -> tuple[int | None, float | None]:
    for position, entry in enumerate(top_k, start=1):
        if entry.get("slug") == slug:
            return position, float(entry["confidence"])
    return None, None


def listing_category_set(
    *,
    listing: Listing,
    category: Category | None,
    source: str,
    actor: AbstractBaseUser | None,
    action: str | None = None,
    model_version: ModelVersion | None = None,
    threshold: float | None = None,
    replace_human: bool = True,
) -> bool:
    """Set the listing's category and who chose it, and record the decision.

    `source` is a `CategorySource`: SELLER needs `actor` to be the listing's seller, REVIEWER a
    staff user (else `PermissionDenied`); AUTO (a machine) never replaces a category a person set
    and then returns False. `category=None` is a reviewer's reject (not classifiable): the listing
    keeps no category, and, being a person's decision, no machine sets one later.
    `action` (a `DecisionAction`) defaults from the source and whether the category is among the
    listing's suggestions; `model_version` defaults to the version behind the listing's suggestion;
    `threshold` is the auto-accept threshold an AUTO decision cleared. `replace_human=False` leaves
    a category a person set meanwhile alone (the review queue acts on what it showed); AUTO always
    behaves so.

    Raises `ValueError` with `CATEGORY_INACTIVE` for a retired category. Returns True when the
    listing changed (a `CategoryDecision` was written), False otherwise.
    """
    if category is not None and not category.is_active:
        raise ValueError(CATEGORY_INACTIVE)
    if source == CategorySource.SELLER:
        if actor is None or actor.pk != listing.seller_id:
            raise PermissionDenied("only the seller may choose the category as the seller")
    elif source == CategorySource.REVIEWER:
        if actor is None or not getattr(actor, "is_staff", False):
            raise PermissionDenied("only staff may set a category as reviewer")
    elif source != CategorySource.AUTO:
        raise ValueError(f"unknown category source {source!r}")
    if category is None and source != CategorySource.REVIEWER:
        raise PermissionDenied(ONLY_REVIEWERS_REJECT)

    with transaction.atomic():
        current = Listing.objects.select_for_update().filter(pk=listing.pk).first()
        if current is None:
            return False
        if current.category_source in HUMAN_SOURCES and (source == CategorySource.AUTO or not replace_human):
            return False
        if current.category_id == (category.pk if category else None) and current.category_source == source:
            return False
        top_k = list(current.suggested_top_k or [])
        rank, confidence = _suggestion_rank(top_k, category.slug) if category else (None, None)
        version_id = model_version.pk if model_version else current.suggested_model_version_id
        now = timezone.now()
        Listing.objects.filter(pk=listing.pk).update(
            category=category, category_source=source, updated_at=now
        )
        CategoryDecision.objects.create(
            listing_id=listing.pk,
            action=action or _default_action(source=source, category=category, rank=rank),
            source=source,
            category=category,
            previous_category_id=current.category_id,
            previous_source=current.category_source,
            actor_id=getattr(actor, "pk", None),
            model_version_id=version_id,
            suggested_top_k=top_k,
            suggestion_rank=rank,
            confidence=confidence,
            threshold=threshold,
        )
    listing.category, listing.category_source = category, source
    logger.info(
        "listing %s category %s (%s) by user %s",
        listing.pk,
        category.slug if category else None,
        source,
        getattr(actor, "pk", None),
    )
    return True


def listing_auto_accept(*, listing: Listing, model_version: ModelVersion) -> bool:
    """Set the listing's category from its suggestion when the suggestion clears the auto-accept
    threshold of its category for `model_version` (source AUTO, audited with version and threshold).

    Only the active version auto-accepts, only once no photo of the listing waits for the worker,
    never when its confident photos disagree (they show different things), and never over a
    person's decision. Returns True when the category was set.
    """
    if not settings.AUTO_ACCEPT_ENABLED or not model_version.is_active:
        return False
    current = (
        Listing.objects.filter(pk=listing.pk)
        .values(
            "category_source",
            "suggested_top_k",
            "suggested_confidence",
            "suggested_model_version_id",
            "photos_disagree",
        )
        .first()
    )
    if current is None or current["category_source"] in HUMAN_SOURCES or current["photos_disagree"]:
        return False
    if current["suggested_model_version_id"] != model_version.pk or not current["suggested_top_k"]:
        return False
    if listing.images.filter(status__in=_WAITING).exists():
        return False
    slug = current["suggested_top_k"][0]["slug"]
    threshold = (model_version.auto_accept_thresholds or {}).get(slug)
    confidence = current["suggested_confidence"]
    if threshold is None or confidence is None or confidence < float(threshold):
        return False
    category = Category.objects.filter(slug=slug, is_active=True).first()
    if category is None:
        return False
    return listing_category_set(
        listing=listing,
        category=category,
        source=CategorySource.AUTO,
        actor=None,
        model_version=model_version,
        threshold=float(threshold),
    )


@dataclass(frozen=True)
class ReviewOutcome:
    """What a review action did: `changed` False when the listing already had that decision."""

    listing: Listing
    changed: bool


def _reviewer_sets(
    listing: Listing, category: Category | None, reviewer: AbstractBaseUser, action: str
) -> ReviewOutcome:
    """A reviewer's decision: never replaces a person's earlier choice of the same kind."""
    changed = listing_category_set(
        listing=listing,
        category=category,
        source=CategorySource.REVIEWER,
        actor=reviewer,
        action=action,
        replace_human=False,
    )
    return ReviewOutcome(listing=listing, changed=changed)


def review_accept(*, listing: Listing, rank: int, reviewer: AbstractBaseUser) -> ReviewOutcome:
    """A reviewer accepts suggestion number `rank` (1-based) of the listing's top-k.

    Raises `ValueError` with `NO_SUCH_SUGGESTION` when there is no such suggestion (or its
    category no longer exists), `PermissionDenied` for a non-staff user.
    """
    top_k = list(listing.suggested_top_k or [])
    if not 1 <= rank <= len(top_k):
        raise ValueError(NO_SUCH_SUGGESTION.format(rank=rank))
    category = Category.objects.filter(slug=top_k[rank - 1]["slug"]).first()
    if category is None:
        raise ValueError(NO_SUCH_SUGGESTION.format(rank=rank))
    return _reviewer_sets(listing, category, reviewer, DecisionAction.ACCEPTED)


def review_correct(*, listing: Listing, category: Category, reviewer: AbstractBaseUser) -> ReviewOutcome:
    """A reviewer sets a category of their own choosing (the category picker)."""
    return _reviewer_sets(listing, category, reviewer, DecisionAction.CORRECTED)


def review_reject(*, listing: Listing, reviewer: AbstractBaseUser) -> ReviewOutcome:
    """A reviewer rejects the listing as not classifiable: no category, and no machine sets one."""
    return _reviewer_sets(listing, None, reviewer, DecisionAction.REJECTED)


def review_bulk_accept(*, listings: list[Listing], min_confidence: float, reviewer: AbstractBaseUser) -> int:
    """Accept the first suggestion of every listing in `listings` whose suggested confidence is at
    least `min_confidence`, as the reviewer's decision (action BULK_ACCEPTED, the chosen confidence
    recorded as the threshold). Listings a person decided meanwhile are skipped.

    Returns how many listings changed. Raises `PermissionDenied` for a non-staff user.
    """
    if not getattr(reviewer, "is_staff", False):
        raise PermissionDenied("only staff may review")
    slugs = {
        listing.suggested_top_k[0]["slug"]
        for listing in listings
        if listing.suggested_top_k
        and listing.suggested_confidence is not None
        and listing.suggested_confidence >= min_confidence
    }
    categories = {c.slug: c for c in Category.objects.filter(slug__in=slugs, is_active=True)}
    changed = 0
    for listing in listings:
        if not listing.suggested_top_k or listing.suggested_confidence is None:
            continue
        if listing.suggested_confidence < min_confidence:
            continue
        category = categories.get(listing.suggested_top_k[0]["slug"])
        if category is None or listing.category_source in HUMAN_SOURCES:
            continue
        changed += listing_category_set(
            listing=listing,
            category=category,
            source=CategorySource.REVIEWER,
            actor=reviewer,
            action=DecisionAction.BULK_ACCEPTED,
            threshold=min_confidence,
            replace_human=False,
        )
    return changed
