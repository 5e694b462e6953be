"""Drafts and publishing: the seller's listing form.

Photos upload the moment the seller adds them, into a draft listing created with the first one,
so the worker's suggestions (and an auto-accepted category) reach the form before it is sent. A
draft is seen by its seller only. `listing_publish` is the form's one way into the catalogue: it
needs a photo and a category, chosen by the seller or auto-accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import IO

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from catalog.models import Category, CategorySource, Listing
from catalog.services.decisions import listing_category_set
from catalog.services.images import ListingRuleBroken, PhotoBatch, listing_photos_add

logger = logging.getLogger(__name__)

# User-facing messages; tests reuse them.
LISTING_NEEDS_A_CATEGORY = "Choose a category: your listing is shown under it."
LISTING_NEEDS_PHOTOS = "Add at least one photo."
LISTING_ALREADY_PUBLISHED = "This listing is already published."


def listing_draft_create(
    *,
    seller: AbstractBaseUser,
    files: Sequence[tuple[str, bytes | IO[bytes]]] = (),
    upload_tokens: Sequence[str] = (),
) -> tuple[Listing | None, PhotoBatch]:
    """Create a draft listing of `seller` holding the valid photos of `files` (filename, bytes or
    file) or, with S3 storage, of the browser's direct uploads (`upload_tokens`, see
    `listing_uploads_register`), each queued for classification after commit.

    Returns (the draft, the batch with the refused files and their messages); with no valid photo
    nothing is created and the draft is None.
    """
    from catalog.services.direct_uploads import listing_uploads_register

    with transaction.atomic():
        listing = Listing.objects.create(seller_id=seller.pk, title="")
        if upload_tokens:
            batch = listing_uploads_register(listing=listing, tokens=upload_tokens)
        else:
            batch = listing_photos_add(listing=listing, files=files)
        if not batch.added:
            transaction.set_rollback(True)
            return None, batch
    logger.info("draft listing %s created by user %s", listing.pk, seller.pk)
    return listing, batch


def listing_publish(
    *,
    listing: Listing,
    seller: AbstractBaseUser,
    title: str,
    description: str,
    price: Decimal | None,
    category: Category | None,
) -> Listing:
    """Publish the seller's draft with its details and category.

    `category` is the seller's choice (source SELLER); the category auto-accept already set stays
    AUTO when the seller keeps it, or when `category` is None. Raises `PermissionDenied` for
    anyone but the listing's seller, and `ListingRuleBroken` with `LISTING_ALREADY_PUBLISHED`,
    `LISTING_NEEDS_PHOTOS` or `LISTING_NEEDS_A_CATEGORY` (nothing changes then); `ValueError`
    with `CATEGORY_INACTIVE` for a retired category.
    """
    if seller.pk != listing.seller_id:
        raise PermissionDenied("only the seller may publish a listing")
    with transaction.atomic():
        current = Listing.objects.select_for_update().filter(pk=listing.pk).first()
        if current is None or current.published_at is not None:
            raise ListingRuleBroken(LISTING_ALREADY_PUBLISHED)
        if not current.images.exists():
            raise ListingRuleBroken(LISTING_NEEDS_PHOTOS)
        if category is None and current.category_id is None:
            raise ListingRuleBroken(LISTING_NEEDS_A_CATEGORY)
        kept_auto = (
            category is not None
            and category.pk == current.category_id
            and current.category_source == CategorySource.AUTO
        )
        if category is not None and not kept_auto:
            listing_category_set(
                listing=current, category=category, source=CategorySource.SELLER, actor=seller
            )
        now = timezone.now()
        Listing.objects.filter(pk=listing.pk).update(
            title=title, description=description, price=price, published_at=now, updated_at=now
        )
    listing.refresh_from_db()
    logger.info("listing %s published by user %s", listing.pk, seller.pk)
    return listing
