"""Listings, sellers and the taxonomy."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from django.db import transaction

from catalog.models import Category, CategorySource, Listing
from catalog.taxonomy import taxonomy_sync

logger = logging.getLogger(__name__)


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
    """Create a published listing (the API and `import_photos`; the web form goes through a
    draft, `listing_draft_create` then `listing_publish`). It is public once it has a category:
    one given here is the seller's choice (source SELLER), recorded as a `CategoryDecision` like
    every other category change; without one, it waits for an auto-accepted or a reviewer's."""
    from django.utils import timezone

    from catalog.services.decisions import listing_category_set

    with transaction.atomic():
        listing = Listing.objects.create(
            seller=seller, title=title, description=description, price=price, published_at=timezone.now()
        )
        if category is not None:
            listing_category_set(
                listing=listing, category=category, source=CategorySource.SELLER, actor=seller
            )
    return listing


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


def user_create(*, username: str, password: str, email: str = "") -> User:
    """Create a seller account with a usable password (sign-up). The password is hashed."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username=username, email=email, password=password)
