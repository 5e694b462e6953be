"""Reads of the catalogue. Writes live in `catalog.services`."""

from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import (
    Category,
    CategorySuggestion,
    ClassificationStatus,
    Listing,
    ListingImage,
    ModelVersion,
)


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


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def image_get(*, image_id: int) -> ListingImage | None:
    return ListingImage.objects.select_related("listing").filter(pk=image_id).first()


def image_suggestion(*, image: ListingImage, model_version: ModelVersion) -> CategorySuggestion | None:
    return CategorySuggestion.objects.filter(image=image, model_version=model_version).first()


def images_stuck(*, older_than_s: int) -> QuerySet[ListingImage]:
    """Photos still PENDING or QUEUED `older_than_s` seconds after their last status change."""
    from datetime import timedelta

    from django.utils import timezone

    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    return ListingImage.objects.filter(
        status__in=[ClassificationStatus.PENDING, ClassificationStatus.QUEUED],
        status_changed_at__lt=cutoff,
    ).order_by("pk")


def listing_list_recent(*, limit: int = 50) -> QuerySet[Listing]:
    return (
        Listing.objects.select_related("seller", "category", "suggested_category")
        .prefetch_related("images")
        .order_by("-created_at", "-id")[:limit]
    )


def image_latest_suggestion(*, image: ListingImage) -> CategorySuggestion | None:
    """The suggestion of the active model version, else the most recent one."""
    suggestions = image.suggestions.select_related("category", "model_version")
    return (
        suggestions.filter(model_version__is_active=True).first()
        or suggestions.order_by("-updated_at").first()
    )
