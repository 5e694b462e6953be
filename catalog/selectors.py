"""Reads of the catalogue. Writes live in `catalog.services`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Prefetch, QuerySet

from catalog.models import (
    BulkJob,
    BulkJobError,
    BulkJobStatus,
    Category,
    CategoryDecision,
    CategorySuggestion,
    ClassificationStatus,
    Listing,
    ListingImage,
    ModelActivation,
    ModelComparison,
    ModelVersion,
    TrainingRun,
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


# --- marketplace pages and the API ---------------------------------------------------------------

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


def image_public(*, image_id: int, viewer: AbstractBaseUser | None = None) -> ListingImage | None:
    """A photo of a public listing, of a listing of `viewer` (drafts included, probes not), or of
    any published listing when `viewer` reviews (the queue holds listings still without a
    category); else None."""
    from django.db.models import Q

    from catalog.access import REVIEW_PERMISSION

    visible = Q(listing__in=listings_public())
    if viewer is not None and viewer.is_authenticated:
        visible |= Q(listing__seller_id=viewer.pk)
        if viewer.has_perm(REVIEW_PERMISSION):  # type: ignore[attr-defined]
            visible |= Q(listing__in=listings_published())
    return ListingImage.objects.filter(visible, pk=image_id, listing__is_probe=False).first()


def probe_image_of_user(*, user: AbstractBaseUser, image_id: int) -> ListingImage | None:
    """A photo sent by `user` to POST /api/classify, or None (also for another user's photo)."""
    return (
        ListingImage.objects.select_related("listing")
        .filter(pk=image_id, listing__is_probe=True, listing__seller_id=user.pk)
        .first()
    )


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


def category_parents() -> dict[str, str | None]:
    """Every category's parent slug by slug (None for a top-level one), for `catalog.suggestion_tree`."""
    rows = Category.objects.values_list("slug", "parent__slug")
    return {slug: parent for slug, parent in rows}


def listing_suggestions(*, listing: Listing, top: int = 3, raw: bool = False) -> ListingSuggestions:
    """The `top` categories offered for the listing: each photo's latest suggestion (the active
    model version's when there is one), confidences averaged over the photos that have one and
    de-duplicated along the tree, as in `services.listing_suggestion_refresh`; alternatives under
    `SUGGESTION_MIN_CONFIDENCE` left out. `raw=True` skips both (the model's own top-k, for
    `POST /api/classify`). Four queries whatever the number of photos."""
    from django.conf import settings

    from catalog import suggestion_tree
    from catalog.models import CategorySource

    images = list(ListingImage.objects.filter(listing=listing).order_by("position", "id"))
    latest: dict[int, CategorySuggestion] = {}
    rows = (
        CategorySuggestion.objects.filter(image__listing=listing)
        .select_related("model_version")
        .order_by("-model_version__is_active", "-updated_at")
    )
    for suggestion in rows:
        latest.setdefault(suggestion.image_id, suggestion)
    parents = category_parents() if latest else {}
    ranked = suggestion_tree.average_top_k(s.top_k for s in latest.values())
    if not raw:
        ranked = suggestion_tree.along_tree(ranked, parents)
        ranked = suggestion_tree.shown(ranked, min_confidence=settings.SUGGESTION_MIN_CONFIDENCE)
    ranked = ranked[:top]
    firsts = {image_id: s.top_k[0] for image_id, s in latest.items() if s.top_k}
    wanted = {slug for slug, _ in ranked} | {str(entry["slug"]) for entry in firsts.values()}
    by_slug = {c.slug: c for c in Category.objects.filter(slug__in=wanted)}
    paths = category_paths() if by_slug else {}

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
    if not photos:
        state = "empty"
    elif any(photo.status in _WAITING for photo in photos):
        state = "pending"
    elif suggestions:
        state = "done"
    else:
        state = "failed"
    preselected = None
    auto = listing.category_source == CategorySource.AUTO and not disagree
    if auto and suggestions and suggestions[0].category.pk == listing.category_id:
        preselected = suggestions[0].category
    versions = {s.model_version.name for s in latest.values()}
    return ListingSuggestions(
        state=state,
        suggestions=suggestions,
        photos=photos,
        model_version=", ".join(sorted(versions)),
        disagree=disagree,
        preselected=preselected,
    )


# --- review queue, category audit and the model registry -----------------------------------------


@dataclass(frozen=True)
class ReviewFilters:
    """Narrow the review queue: the suggested category (or one below it), the model version behind
    the suggestion, and a confidence range (0..1, inclusive)."""

    category: Category | None = None
    model_version: ModelVersion | None = None
    min_confidence: float | None = None
    max_confidence: float | None = None


def review_queue(*, filters: ReviewFilters | None = None) -> QuerySet[Listing]:
    """Listings whose category no person set (none yet, or auto-accepted) and that have a
    suggestion, most uncertain first: smallest margin between the top two suggestions, then oldest.
    Probes are excluded; photos are prefetched in their order."""
    from catalog.models import CategorySource

    filters = filters or ReviewFilters()
    listings = listings_published().filter(
        category_source__in=[CategorySource.NONE, CategorySource.AUTO], suggested_margin__isnull=False
    )
    if filters.category is not None:
        listings = listings.filter(
            suggested_category_id__in=category_descendant_ids(category=filters.category)
        )
    if filters.model_version is not None:
        listings = listings.filter(suggested_model_version=filters.model_version)
    if filters.min_confidence is not None:
        listings = listings.filter(suggested_confidence__gte=filters.min_confidence)
    if filters.max_confidence is not None:
        listings = listings.filter(suggested_confidence__lte=filters.max_confidence)
    return (
        listings.select_related("category", "suggested_category", "suggested_model_version", "seller")
        .prefetch_related(Prefetch("images", queryset=ListingImage.objects.order_by("position", "id")))
        .order_by("suggested_margin", "created_at", "id")
    )


def review_listing(*, listing_id: int) -> Listing | None:
    """One published listing for the review pages, with what they show."""
    return (
        listings_published()
        .select_related("category", "suggested_category", "suggested_model_version", "seller")
        .prefetch_related(Prefetch("images", queryset=ListingImage.objects.order_by("position", "id")))
        .filter(pk=listing_id)
        .first()
    )


def listing_decisions(*, listing: Listing) -> QuerySet[CategoryDecision]:
    """The listing's audit trail: every category decision, oldest first."""
    return (
        CategoryDecision.objects.filter(listing=listing)
        .select_related("category", "previous_category", "actor", "model_version", "undone_by")
        .order_by("created_at", "id")
    )


def model_versions() -> QuerySet[ModelVersion]:
    """Every model version, newest first, without the artifact bytes."""
    return ModelVersion.objects.defer("head_npz", "held_out_images").order_by("-created_at", "-id")


def model_version_get(*, version_id: int) -> ModelVersion | None:
    return ModelVersion.objects.defer("head_npz").filter(pk=version_id).first()


def model_comparison_with_active(*, version: ModelVersion) -> ModelComparison | None:
    """The latest comparison of `version` with the version active now, if any."""
    active = ModelVersion.objects.filter(is_active=True).only("pk").first()
    if active is None:
        return None
    return ModelComparison.objects.filter(candidate=version, baseline=active).order_by("-pk").first()


def model_rollback_target() -> ModelVersion | None:
    """The version the last activation of the active version replaced, if any."""
    active = ModelVersion.objects.filter(is_active=True).only("pk").first()
    if active is None:
        return None
    last = ModelActivation.objects.filter(model_version=active).select_related("previous").first()
    return last.previous if last is not None else None


def labelled_photo_counts() -> dict[str, int]:
    """Human-labelled photos per category slug (what the next training sees), largest first."""
    from collections import Counter

    counts = Counter(photo.slug for photo in labelled_photos())
    return dict(counts.most_common())


def training_runs(*, limit: int = 10) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.select_related("requested_by", "model_version").order_by("-created_at")[:limit]


def model_activations(*, limit: int = 10) -> QuerySet[ModelActivation]:
    return ModelActivation.objects.select_related("model_version", "previous", "actor").order_by(
        "-created_at", "-id"
    )[:limit]


@dataclass(frozen=True)
class LabelledPhoto:
    """A photo of a listing whose category a person set (seller or reviewer): training data."""

    image_id: int
    slug: str
    checksum: str
    file_name: str


def labelled_photos() -> list[LabelledPhoto]:
    """Training data, in photo id order: every classifiable photo of a listing (not a probe) that
    a person labelled. A photo's label is a reviewer's decision about that photo when there is
    one (`ListingImage.label`), else the category a seller or a reviewer set for its listing, but
    only when the listing's photos agree (`Listing.photos_disagree` is False): "Bags" on a laptop
    + toaster + bag bundle labels none of its photos. Photos that failed to decode are left out."""
    from django.db.models import Q
    from django.db.models.functions import Coalesce

    from catalog.models import CategorySource

    listing_label = Q(
        listing__category__isnull=False,
        listing__category_source__in=[CategorySource.SELLER, CategorySource.REVIEWER],
        listing__photos_disagree=False,
    )
    rows = (
        ListingImage.objects.filter(Q(label__isnull=False) | listing_label, listing__is_probe=False)
        .exclude(status=ClassificationStatus.FAILED)
        .exclude(checksum="")  # a direct upload that no worker has validated yet
        .annotate(slug=Coalesce("label__slug", "listing__category__slug"))
        .order_by("pk")
        .values_list("pk", "slug", "checksum", "file")
    )
    return [
        LabelledPhoto(image_id=pk, slug=slug, checksum=checksum, file_name=name)
        for pk, slug, checksum, name in rows
    ]


def photos_by_id(*, image_ids: list[int]) -> list[LabelledPhoto]:
    """The photos of `image_ids` that still exist, in id order, with their listing's category
    slug ("" when none)."""
    rows = (
        ListingImage.objects.filter(pk__in=image_ids)
        .order_by("pk")
        .values_list("pk", "listing__category__slug", "checksum", "file")
    )
    return [
        LabelledPhoto(image_id=pk, slug=slug or "", checksum=checksum, file_name=name)
        for pk, slug, checksum, name in rows
    ]


def image_embeddings(*, image_ids: list[int], backbone_version: str) -> dict[int, tuple[bytes, bytes]]:
    """Cached backbone outputs (embedding, logits) as raw float32 bytes, by image id, for the
    photos of `image_ids` that have them for `backbone_version`."""
    from catalog.models import ImageEmbedding

    found: dict[int, tuple[bytes, bytes]] = {}
    for start in range(0, len(image_ids), 2000):
        rows = ImageEmbedding.objects.filter(
            image_id__in=image_ids[start : start + 2000], backbone_version=backbone_version
        ).values_list("image_id", "embedding", "logits")
        for image_id, embedding, logits in rows:
            found[image_id] = (bytes(embedding), bytes(logits))
    return found


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


# --- bulk reclassification -------------------------------------------------------------------------


@dataclass(frozen=True)
class BulkJobProgress:
    """Where a bulk job stands. `done` counts photos processed or skipped (they already had a
    suggestion); `rate_per_s` is photos per second since the job started (None before any);
    `eta_s` the seconds left at that rate (None when unknown, 0 when finished)."""

    job: BulkJob
    done: int
    total: int
    percent: float
    rate_per_s: float | None
    eta_s: float | None
    elapsed_s: float


def bulk_job_progress(*, job: BulkJob) -> BulkJobProgress:
    from django.utils import timezone

    done = job.processed_images + job.skipped_images
    total = max(job.total_images, done)
    finished = job.status not in (BulkJobStatus.PLANNING, BulkJobStatus.RUNNING)
    elapsed = 0.0
    if job.started_at is not None:
        end = job.finished_at if finished and job.finished_at else timezone.now()
        elapsed = max(0.0, (end - job.started_at).total_seconds())
    rate = done / elapsed if done and elapsed > 0 else None
    if job.status == BulkJobStatus.DONE:
        eta: float | None = 0.0
    elif finished or rate is None or not job.planning_done:
        eta = None
    else:
        eta = (total - done) / rate
    percent = 100.0 if job.status == BulkJobStatus.DONE else (100.0 * done / total if total else 0.0)
    return BulkJobProgress(
        job=job, done=done, total=total, percent=percent, rate_per_s=rate, eta_s=eta, elapsed_s=elapsed
    )


def bulk_jobs_active() -> QuerySet[BulkJob]:
    """Jobs planning or running, oldest first, with their model version and scope."""
    return (
        BulkJob.objects.filter(status__in=[BulkJobStatus.PLANNING, BulkJobStatus.RUNNING])
        .select_related("model_version", "category")
        .order_by("created_at", "id")
    )


def bulk_job_errors(*, job: BulkJob, limit: int = 100) -> list[BulkJobError]:
    """The first `limit` entries of a job's error ledger, by photo."""
    return list(BulkJobError.objects.filter(job=job).order_by("image_id")[:limit])


def model_version_by_name(*, name: str) -> ModelVersion | None:
    """The version called `name`; "active" names the active one."""
    if name == "active":
        return model_version_active()
    return ModelVersion.objects.filter(name=name).first()


def bulk_job_counts() -> dict[str, int]:
    """Number of bulk jobs in each status (every status present, zero included)."""
    from django.db.models import Count

    counts = dict(BulkJob.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    return {status.value: int(counts.get(status.value, 0)) for status in BulkJobStatus}
