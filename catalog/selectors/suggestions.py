"""Reads of what the model suggests for a listing: the seller's suggestion panel, the API's view
of it, and a photo's latest suggestion. Writes live in `catalog.services.suggestions`."""

from __future__ import annotations

from dataclasses import dataclass

from catalog.models import Category, CategorySuggestion, ClassificationStatus, Listing, ListingImage
from catalog.selectors import catalogue


@dataclass(frozen=True)
class SuggestedCategory:
    """A category suggested for a listing, with its path and mean confidence over its photos."""

    category: Category
    path: str
    confidence: float  # 0..1

    @property
    def percent(self) -> int:
        return round(self.confidence * 100)


@dataclass(frozen=True)
class PhotoState:
    """Classification state of one photo of a listing, with its own top-1 once classified."""

    image: ListingImage
    number: int  # 1-based position shown to the seller
    status: str
    failure_reason: str
    top: SuggestedCategory | None = None


@dataclass(frozen=True)
class ListingSuggestions:
    """What the seller's suggestion panel and the API show for one listing.

    `state`: "pending" while any photo waits for the worker (suggestions from the photos already
    classified may be there), "done" when suggestions exist and nothing waits, "failed" when every
    photo failed, "empty" with no photo. `disagree`: confident photos name categories on different
    branches of the tree (each photo's own top-1 is then in `photos`). `preselected`: the
    category auto-accept set, while it is still the first suggestion.
    """

    state: str
    suggestions: list[SuggestedCategory]
    photos: list[PhotoState]
    model_version: str
    disagree: bool = False
    preselected: Category | None = None

    @property
    def pending_count(self) -> int:
        return sum(1 for photo in self.photos if photo.status in _WAITING)

    @property
    def failed(self) -> list[PhotoState]:
        return [photo for photo in self.photos if photo.status == ClassificationStatus.FAILED]


_WAITING = {ClassificationStatus.PENDING, ClassificationStatus.QUEUED}


def listing_suggestions(*, listing: Listing, top: int = 3, raw: bool = False) -> ListingSuggestions:
    """The `top` categories offered for the listing: each photo's latest suggestion (the active
    model version's when there is one), confidences averaged over the photos that have one and
    de-duplicated along the tree, as in `services.suggestions.listing_suggestion_refresh`; alternatives under
    `SUGGESTION_MIN_CONFIDENCE` left out. `raw=True` skips both (the model's own top-k, for
    `POST /api/classify`). Four queries whatever the number of photos."""
    from django.conf import settings

    from catalog import suggestion_tree
    from catalog.models import CategorySource

    images = list(ListingImage.objects.filter(listing=listing).order_by("position", "id"))
    latest = _latest_by_image(listing=listing)
    parents = catalogue.category_parents() if latest else {}
    ranked = suggestion_tree.average_top_k(s.top_k for s in latest.values())
    if not raw:
        ranked = suggestion_tree.along_tree(ranked, parents)
        ranked = suggestion_tree.shown(ranked, min_confidence=settings.SUGGESTION_MIN_CONFIDENCE)
    ranked = ranked[:top]
    firsts = {image_id: s.top_k[0] for image_id, s in latest.items() if s.top_k}
    wanted = {slug for slug, _ in ranked} | {str(entry["slug"]) for entry in firsts.values()}
    by_slug = {c.slug: c for c in Category.objects.filter(slug__in=wanted)}
    paths = catalogue.category_paths() if by_slug else {}

    def offered(slug: str, confidence: float) -> SuggestedCategory | None:
        category = by_slug.get(slug)
        if category is None:
            return None
        return SuggestedCategory(category=category, path=paths.get(category.pk, slug), confidence=confidence)

    suggestions = [s for s in (offered(slug, confidence) for slug, confidence in ranked) if s]
    photos = [
        PhotoState(
            image=image,
            number=i + 1,
            status=image.status,
            failure_reason=image.failure_reason,
            top=offered(str(firsts[image.pk]["slug"]), float(firsts[image.pk]["confidence"]))
            if image.pk in firsts
            else None,
        )
        for i, image in enumerate(images)
    ]
    disagree = suggestion_tree.photos_disagree(
        ((str(e["slug"]), float(e["confidence"])) for e in firsts.values()),
        parents,
        min_confidence=settings.PHOTO_CONFIDENT_MIN,
    )
    preselected = None
    auto = listing.category_source == CategorySource.AUTO and not disagree
    if auto and suggestions and suggestions[0].category.pk == listing.category_id:
        preselected = suggestions[0].category
    versions = {s.model_version.name for s in latest.values()}
    return ListingSuggestions(
        state=_panel_state(photos=photos, suggestions=suggestions),
        suggestions=suggestions,
        photos=photos,
        model_version=", ".join(sorted(versions)),
        disagree=disagree,
        preselected=preselected,
    )


def _latest_by_image(*, listing: Listing) -> dict[int, CategorySuggestion]:
    """Each photo's latest suggestion by image id: the active model version's when there is one,
    else the most recently updated. Photos without one are absent."""
    latest: dict[int, CategorySuggestion] = {}
    rows = (
        CategorySuggestion.objects.filter(image__listing=listing)
        .select_related("model_version")
        .order_by("-model_version__is_active", "-updated_at")
    )
    for suggestion in rows:
        latest.setdefault(suggestion.image_id, suggestion)
    return latest


def _panel_state(*, photos: list[PhotoState], suggestions: list[SuggestedCategory]) -> str:
    """`ListingSuggestions.state` for these photos and the suggestions shown."""
    if not photos:
        return "empty"
    if any(photo.status in _WAITING for photo in photos):
        return "pending"
    return "done" if suggestions else "failed"


def image_latest_suggestion(*, image: ListingImage) -> CategorySuggestion | None:
    """The suggestion of the active model version, else the most recent one."""
    suggestions = image.suggestions.select_related("category", "model_version")
    return (
        suggestions.filter(model_version__is_active=True).first()
        or suggestions.order_by("-updated_at").first()
    )
