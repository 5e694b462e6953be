"""Rows for the review and registry tests: listings with classified photos, staff members."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User

from catalog.access import staff_groups_ensure
from catalog.models import Category, Listing, ListingImage, ModelVersion
from catalog.services.decisions import listing_category_set
from catalog.services.images import image_add
from catalog.services.suggestions import ScoredCategory, image_classification_record
from tests.factories import ListingFactory, UserFactory


def photo_bytes(seed: int = 0) -> bytes:
    """Distinct bytes per seed (stored as is; these tests never decode them)."""
    return b"\xff\xd8\xff\xe0" + seed.to_bytes(4, "big") + b"\0" * 64


def slug_of(category: Category | None) -> str | None:
    """The slug of a nullable category field, None when it is empty."""
    return None if category is None else category.slug


def classified_listing(
    scores: list[tuple[str, float]],
    *,
    model_version: ModelVersion,
    title: str = "Item",
    category: str | None = None,
    seed: int = 0,
) -> tuple[Listing, ListingImage]:
    """A listing (optionally with the seller's category) with one photo the model scored."""
    seller = UserFactory.create()
    listing = ListingFactory.create(seller=seller, title=title)
    if category is not None:
        listing_category_set(
            listing=listing, category=Category.objects.get(slug=category), source="seller", actor=seller
        )
    image = image_add(listing=listing, upload=photo_bytes(seed), filename="p.jpg")
    record(image, scores, model_version=model_version)
    listing.refresh_from_db()
    return listing, image


def record(image: ListingImage, scores: list[tuple[str, float]], *, model_version: ModelVersion) -> None:
    """What a worker writes for a photo: its top-k for `model_version`."""
    image_classification_record(
        image=image,
        model_version=model_version,
        top_k=[ScoredCategory(slug=slug, confidence=confidence) for slug, confidence in scores],
    )


def staff_user(
    username: str = "reviewer", *, groups: Sequence[str] = (), can_activate: bool = False, **fields: object
) -> User:
    """A staff member in `groups` (catalog.access names), optionally allowed to activate versions.
    With neither, staff with no rights at all."""
    from django.contrib.auth.models import Group, Permission

    user = UserFactory.create(username=username, is_staff=True, **fields)
    if groups:
        # Transactional tests empty the tables between tests, groups included.
        staff_groups_ensure(Group, Permission)
        user.groups.add(*Group.objects.filter(name__in=groups))
    if can_activate:
        user.user_permissions.add(Permission.objects.get(codename="activate_modelversion"))
    return user
