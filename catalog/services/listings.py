"""Listings, sellers and the taxonomy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from catalog.models import Category, CategorySource, Listing
from catalog.taxonomy import taxonomy_sync


def taxonomy_load(*, path: str | None = None) -> int:
    """Create or update categories from the taxonomy data file; returns how many entries."""
    return taxonomy_sync(Category, path or settings.TAXONOMY_PATH)


def listing_create(
    *,
    seller: AbstractBaseUser,
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


def user_get_or_create(*, username: str, **defaults: Any) -> AbstractBaseUser:
    """The user called `username`, created without a usable password when missing."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults=defaults)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
