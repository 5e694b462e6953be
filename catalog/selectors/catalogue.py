"""Reads of the marketplace itself: the category tree, the listings anyone or their seller may see,
and photos (single, stuck, or about to be classified)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db.models import Prefetch, QuerySet

from catalog.models import (
    Category,
    CategorySuggestion,
    ClassificationStatus,
    Listing,
    ListingImage,
    ModelVersion,
)

PATH_SEPARATOR = " › "


@dataclass(frozen=True)
class CategoryNode:
    """One row of the category tree in display order: depth 0 for a top-level category."""

    category: Category
    depth: int
    path: str  # "Fashion › Shoes"


def category_tree(*, active_only: bool = True) -> list[CategoryNode]:
    """Every category, parents before their children, siblings by name, with its path label."""
    categories = Category.objects.all()
    if active_only:
        categories = categories.filter(is_active=True)
    children: dict[int | None, list[Category]] = defaultdict(list)
    for category in categories:
        children[category.parent_id].append(category)
    nodes: list[CategoryNode] = []

    def walk(parent_id: int | None, depth: int, prefix: str) -> None:
        for category in sorted(children.get(parent_id, []), key=lambda c: c.name.lower()):
            path = f"{prefix}{PATH_SEPARATOR}{category.name}" if prefix else category.name
            nodes.append(CategoryNode(category=category, depth=depth, path=path))
            walk(category.pk, depth + 1, path)

    walk(None, 0, "")
    return nodes


def category_paths() -> dict[int, str]:
    """Path label of every category by primary key (inactive ones included)."""
    return {node.category.pk: node.path for node in category_tree(active_only=False)}


def category_path(*, category: Category) -> list[Category]:
    """Ancestors of `category` from the root down to itself (e.g. [Fashion, Shoes])."""
    path = [category]
    seen = {category.pk}
    node = category
    while node.parent_id is not None and node.parent_id not in seen:
        node = Category.objects.get(pk=node.parent_id)
        seen.add(node.pk)
        path.append(node)
    return list(reversed(path))


def category_descendant_ids(*, category: Category) -> set[int]:
    """Primary keys of `category` and everything below it."""
    ids = {category.pk}
    frontier = [category.pk]
    while frontier:
        children = list(Category.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
        frontier = [pk for pk in children if pk not in ids]
        ids.update(frontier)
    return ids


def categories_by_slug() -> dict[str, Category]:
    return {category.slug: category for category in Category.objects.all()}


def category_parents() -> dict[str, str | None]:
    """Every category's parent slug by slug (None for a top-level one), for `catalog.suggestion_tree`."""
    rows = Category.objects.values_list("slug", "parent__slug")
    return {slug: parent for slug, parent in rows}


def taxonomy_entries() -> list[dict[str, object]]:
    """Every category as a taxonomy entry ({"slug", "name", "parent", "imagenet_ids"}), for a
    worker to build the classifier's taxonomy from the database (staff may have added categories
    since the data file was loaded)."""
    categories = list(Category.objects.select_related("parent").order_by("pk"))
    return [
        {
            "slug": category.slug,
            "name": category.name,
            "parent": category.parent.slug if category.parent else None,
            "imagenet_ids": list(category.imagenet_ids or []),
        }
        for category in categories
    ]


def listings_published() -> QuerySet[Listing]:
    """Listings their sellers published (no drafts, no hidden probes of POST /api/classify),
    with or without a category: what reviewers see."""
    return Listing.objects.filter(is_probe=False, published_at__isnull=False)


def listings_public() -> QuerySet[Listing]:
    """Listings anyone may see: published ones that have a category (chosen by a person or
    auto-accepted). A published listing without one waits, unseen, until it gets one."""
    return listings_published().filter(category__isnull=False)


def listing_search(*, category: Category | None = None, query: str = "") -> QuerySet[Listing]:
    """Public listings, newest first, in `category` or any category below it, whose title contains
    `query` (case-insensitive). Photos are prefetched in their order."""
    listings = listings_public()
    if category is not None:
        listings = listings.filter(category_id__in=category_descendant_ids(category=category))
    if query.strip():
        listings = listings.filter(title__icontains=query.strip())
    return (
        listings.select_related("category", "seller")
        .prefetch_related(Prefetch("images", queryset=ListingImage.objects.order_by("position", "id")))
        .order_by("-created_at", "-id")
    )


def listings_of_seller(*, seller: AbstractBaseUser) -> QuerySet[Listing]:
    """The seller's own listings, drafts included (probes excluded), newest first, photos
    prefetched in order.

    Views look listings up in this queryset only, so another seller's listing is a 404.
    """
    return (
        Listing.objects.filter(is_probe=False, seller_id=seller.pk)
        .select_related("category", "suggested_category")
        .prefetch_related(Prefetch("images", queryset=ListingImage.objects.order_by("position", "id")))
        .order_by("-created_at", "-id")
    )


def image_public(*, image_id: int, viewer: User | AnonymousUser | None = None) -> ListingImage | None:
    """A photo of a public listing, of a listing of `viewer` (drafts included, probes not), or of
    any published listing when `viewer` reviews (the queue holds listings still without a
    category); else None."""
    from django.db.models import Q

    from catalog.access import REVIEW_PERMISSION

    visible = Q(listing__in=listings_public())
    if viewer is not None and viewer.is_authenticated:
        visible |= Q(listing__seller_id=viewer.pk)
        if viewer.has_perm(REVIEW_PERMISSION):
            visible |= Q(listing__in=listings_published())
    return ListingImage.objects.filter(visible, pk=image_id, listing__is_probe=False).first()


def probe_image_of_user(*, user: AbstractBaseUser, image_id: int) -> ListingImage | None:
    """A photo sent by `user` to POST /api/classify, or None (also for another user's photo)."""
    return (
        ListingImage.objects.select_related("listing")
        .filter(pk=image_id, listing__is_probe=True, listing__seller_id=user.pk)
        .first()
    )


def images_stuck(*, older_than_s: int) -> QuerySet[ListingImage]:
    """Photos still PENDING or QUEUED `older_than_s` seconds after their last status change."""
    from datetime import timedelta

    from django.utils import timezone

    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    return ListingImage.objects.filter(
        status__in=[ClassificationStatus.PENDING, ClassificationStatus.QUEUED],
        status_changed_at__lt=cutoff,
    ).order_by("pk")


def images_for_classification(*, image_ids: Sequence[int]) -> dict[int, ListingImage]:
    """The photos of `image_ids` that still exist, with their listings, by primary key."""
    images = ListingImage.objects.select_related("listing").filter(pk__in=image_ids)
    return {image.pk: image for image in images}


def images_with_suggestion(*, image_ids: Sequence[int], model_version: ModelVersion) -> set[int]:
    """Which of `image_ids` have a suggestion of `model_version`."""
    return set(
        CategorySuggestion.objects.filter(image_id__in=image_ids, model_version=model_version).values_list(
            "image_id", flat=True
        )
    )
