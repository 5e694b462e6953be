"""Listings, sellers and the taxonomy."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, User
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from catalog.models import Category, CategorySource, Listing
from catalog.taxonomy import taxonomy_sync

logger = logging.getLogger(__name__)

# User-facing messages; tests reuse them.
CATEGORY_INACTIVE = "This category is no longer in use; choose another one."


def taxonomy_load(*, path: str | None = None) -> int:
    """Create or update categories from the taxonomy data file; returns how many entries."""
    return taxonomy_sync(Category, path or settings.TAXONOMY_PATH)


def listing_create(
    *,
    seller: User,
    title: str,
    description: str = "",
    price: Decimal | None = None,
    category: Category | None = None,
) -> Listing:
    """Create a listing. A category given here is the seller's choice (source SELLER)."""
    return Listing.objects.create(
        seller=seller,
        title=title,
        description=description,
        price=price,
        category=category,
        category_source=CategorySource.SELLER if category else CategorySource.NONE,
    )


def user_get_or_create(*, username: str, **defaults: Any) -> User:
    """The user called `username`, created without a usable password when missing."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults=defaults)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def listing_update(*, listing: Listing, title: str, description: str, price: Decimal | None) -> Listing:
    """Change a listing's title, description and price; returns the refreshed listing."""
    listing.title = title
    listing.description = description
    listing.price = price
    listing.save(update_fields=["title", "description", "price", "updated_at"])
    return listing


def listing_delete(*, listing: Listing) -> None:
    """Delete a listing with its photos, suggestions, stored files and thumbnails (after commit)."""
    from catalog.thumbnails import thumbnails_delete

    stored = list(listing.images.values_list("file", "pk", "checksum"))
    with transaction.atomic():
        listing.delete()

        def delete_files() -> None:
            for name, image_id, checksum in stored:
                try:
                    default_storage.delete(name)
                    thumbnails_delete(image_id=image_id, checksum=checksum)
                except OSError:
                    logger.warning("could not delete %s from storage", name, exc_info=True)

        transaction.on_commit(delete_files)


def listing_category_set(
    *, listing: Listing, category: Category, source: str, actor: AbstractBaseUser | None
) -> bool:
    """Set the listing's category and who chose it, as one conditional UPDATE.

    `source` is a `CategorySource`: SELLER needs `actor` to be the listing's seller, REVIEWER a staff
    user (else `PermissionDenied`); AUTO (a machine) never replaces a category a person set and then
    returns False. Raises `ValueError` with `CATEGORY_INACTIVE` for a retired category.
    Returns True when the listing changed.
    """
    if not category.is_active:
        raise ValueError(CATEGORY_INACTIVE)
    if source == CategorySource.SELLER:
        if actor is None or actor.pk != listing.seller_id:
            raise PermissionDenied("only the seller may choose the category as the seller")
    elif source == CategorySource.REVIEWER:
        if actor is None or not getattr(actor, "is_staff", False):
            raise PermissionDenied("only staff may set a category as reviewer")
    elif source != CategorySource.AUTO:
        raise ValueError(f"unknown category source {source!r}")
    rows = Listing.objects.filter(pk=listing.pk)
    if source == CategorySource.AUTO:
        rows = rows.filter(category_source__in=[CategorySource.NONE, CategorySource.AUTO])
    changed = rows.update(category=category, category_source=source, updated_at=timezone.now())
    if changed:
        listing.category, listing.category_source = category, source
        logger.info(
            "listing %s category %s (%s) by user %s",
            listing.pk,
            category.slug,
            source,
            getattr(actor, "pk", None),
        )
    return bool(changed)


def user_create(*, username: str, password: str, email: str = "") -> User:
    """Create a seller account with a usable password (sign-up). The password is hashed."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username=username, email=email, password=password)
