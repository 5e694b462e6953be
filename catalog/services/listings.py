"""Listings, sellers and the taxonomy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet

from catalog.models import Category, CategorySource, Listing, ListingImage
from catalog.services.storage import stored_files_delete
from catalog.taxonomy import taxonomy_sync


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
    listings_delete(listings=Listing.objects.filter(pk=listing.pk))


def listings_delete(*, listings: QuerySet[Listing]) -> int:
    """Delete these listings with their photos, suggestions, stored files and thumbnails (files
    after commit; a storage error is logged and left to the orphan sweep). Returns how many went."""
    with transaction.atomic():
        listing_ids = list(listings.select_for_update().values_list("pk", flat=True))
        stored = list(
            ListingImage.objects.filter(listing_id__in=listing_ids).values_list("file", "pk", "checksum")
        )
        Listing.objects.filter(pk__in=listing_ids).delete()
        transaction.on_commit(lambda: stored_files_delete(stored))
    return len(listing_ids)


def user_create(*, username: str, password: str, email: str = "") -> User:
    """Create a seller account with a usable password (sign-up). The password is hashed."""
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username=username, email=email, password=password)
