"""Staff review of the model's suggestions: the queue (most uncertain first), one-key actions,
bulk accept, and a listing's category audit trail.

Actions answer JSON to the page's script (`X-Requested-With: fetch`) and redirect back to the
queue otherwise, so every action also works without JavaScript.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from catalog.access import BULK_ACCEPT_PERMISSION, REVIEW_PERMISSION
from catalog.models import Category, CategorySource, Listing, ListingImage, ModelVersion
from catalog.selectors import catalogue as catalogue_selectors
from catalog.selectors import registry as registry_selectors
from catalog.selectors import review as review_selectors
from catalog.selectors import suggestions as suggestions_selectors
from catalog.services import decisions as decisions_services
from catalog.services import labels
from catalog.services.decisions import NO_SUCH_SUGGESTION
from catalog.views.requests import SignedInRequest
from catalog.views.staff import staff_required

REVIEW_PAGE_SIZE = 20
# User-facing messages; tests reuse them.
DECIDED_ACCEPTED = "Accepted {path} for “{title}”."
DECIDED_CORRECTED = "Set {path} for “{title}”."
DECIDED_REJECTED = "Rejected “{title}” as not classifiable."
ALREADY_DECIDED = "“{title}” was already decided by a person; nothing changed."
BULK_ACCEPTED = "Accepted the first suggestion of {count} listing{plural} at {percent}% or more."
BAD_CONFIDENCE = "Give a confidence between 0 and 100."
UNKNOWN_CATEGORY = "Choose a category from the list."
UNDONE = "Undid your decision on “{title}”."
PHOTO_LABELLED = "Photo {number} of “{title}” is labelled {path}."
PHOTO_ALREADY_LABELLED = "Photo {number} of “{title}” already had that label."


def _percent(value: str | None) -> float | None:
    """A 0–100 form value as a 0..1 fraction; None when blank. Raises ValueError when invalid."""
    if value is None or not value.strip():
        return None
    number = float(value)
    if not 0.0 <= number <= 100.0:
        raise ValueError(BAD_CONFIDENCE)
    return number / 100.0


def _filters(params: dict[str, str]) -> tuple[review_selectors.ReviewFilters, list[str]]:
    errors: list[str] = []
    category = None
    if params.get("category", "").isdigit():
        category = Category.objects.filter(pk=int(params["category"])).first()
    version = None
    if params.get("version", "").isdigit():
        version = ModelVersion.objects.filter(pk=int(params["version"])).first()
    bounds: list[float | None] = []
    for key in ("min", "max"):
        try:
            bounds.append(_percent(params.get(key)))
        except ValueError:
            errors.append(BAD_CONFIDENCE)
            bounds.append(None)
    filters = review_selectors.ReviewFilters(
        category=category, model_version=version, min_confidence=bounds[0], max_confidence=bounds[1]
    )
    return filters, errors


def _filter_query(params: dict[str, str]) -> str:
    kept = {key: params[key] for key in ("category", "version", "min", "max") if params.get(key)}
    return urlencode(kept)


def _wants_json(request: SignedInRequest) -> bool:
    return request.headers.get("X-Requested-With") == "fetch"


def _back(request: SignedInRequest) -> HttpResponse:
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = ""
    return HttpResponseRedirect(target or reverse("catalog:review"))


def _answer(request: SignedInRequest, *, message: str, ok: bool = True, status: int = 200) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"ok": ok, "message": message}, status=status)
    (messages.success if ok else messages.error)(request, message)
    return _back(request)


@staff_required(REVIEW_PERMISSION)
@require_GET
def review_queue(request: SignedInRequest) -> HttpResponse:
    """The queue: photos and top-5 of listings no person categorised, smallest margin first."""
    params = request.GET.dict()
    filters, errors = _filters(params)
    page = Paginator(review_selectors.review_queue(filters=filters), REVIEW_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    paths = catalogue_selectors.category_paths()
    by_slug = {c.slug: c for c in Category.objects.all()}
    items = []
    for listing in page.object_list:
        suggestions = []
        for rank, entry in enumerate(listing.suggested_top_k or [], start=1):
            if rank > 1 and float(entry["confidence"]) < settings.SUGGESTION_MIN_CONFIDENCE:
                break  # best first: every later alternative is below it too
            category = by_slug.get(entry["slug"])
            percent = round(float(entry["confidence"]) * 100)
            suggestions.append(
                {
                    "rank": rank,
                    "slug": entry["slug"],
                    "path": paths.get(category.pk, entry["slug"]) if category else entry["slug"],
                    "percent": percent,
                }
            )
        items.append(
            {
                "listing": listing,
                "suggestions": suggestions,
                "photo": next(iter(listing.images.all()), None),
                # Photos that disagree are labelled one by one: each with its own top-1.
                "photos": suggestions_selectors.listing_suggestions(listing=listing).photos
                if listing.photos_disagree
                else [],
            }
        )
    context = {
        "page": page,
        "items": items,
        "errors": errors,
        "filters": filters,
        "params": params,
        "filter_query": _filter_query(params),
        "tree": catalogue_selectors.category_tree(),
        "versions": registry_selectors.model_versions(),
        "paths": paths,
    }
    return render(request, "catalog/staff/review.html", context)


def _reviewable(pk: int) -> Listing:
    return get_object_or_404(catalogue_selectors.listings_published(), pk=pk)


def _path(category: Category) -> str:
    return catalogue_selectors.category_paths().get(category.pk, category.name)


@staff_required(REVIEW_PERMISSION)
@require_POST
def review_accept(request: SignedInRequest, pk: int) -> HttpResponse:
    """Accept suggestion number `rank` (1–5) of the listing (keyboard 1–5)."""
    listing = _reviewable(pk)
    try:
        rank = int(request.POST.get("rank", ""))
        outcome = decisions_services.review_accept(listing=listing, rank=rank, reviewer=request.user)
    except ValueError:
        return _answer(
            request,
            message=NO_SUCH_SUGGESTION.format(rank=request.POST.get("rank")),
            ok=False,
            status=400,
        )
    if not outcome.changed:
        return _answer(request, message=ALREADY_DECIDED.format(title=listing.title), ok=False, status=409)
    assert listing.category is not None
    return _answer(
        request, message=DECIDED_ACCEPTED.format(path=_path(listing.category), title=listing.title)
    )


@staff_required(REVIEW_PERMISSION)
@require_POST
def review_correct(request: SignedInRequest, pk: int) -> HttpResponse:
    """Set a category chosen in the picker (keyboard c)."""
    listing = _reviewable(pk)
    category = Category.objects.filter(pk=request.POST.get("category") or 0, is_active=True).first()
    if category is None:
        return _answer(request, message=UNKNOWN_CATEGORY, ok=False, status=400)
    outcome = decisions_services.review_correct(listing=listing, category=category, reviewer=request.user)
    if not outcome.changed:
        return _answer(request, message=ALREADY_DECIDED.format(title=listing.title), ok=False, status=409)
    return _answer(request, message=DECIDED_CORRECTED.format(path=_path(category), title=listing.title))


@staff_required(REVIEW_PERMISSION)
@require_POST
def review_reject(request: SignedInRequest, pk: int) -> HttpResponse:
    """Reject the listing as not classifiable (keyboard r)."""
    listing = _reviewable(pk)
    outcome = decisions_services.review_reject(listing=listing, reviewer=request.user)
    if not outcome.changed:
        return _answer(request, message=ALREADY_DECIDED.format(title=listing.title), ok=False, status=409)
    return _answer(request, message=DECIDED_REJECTED.format(title=listing.title))


@staff_required(BULK_ACCEPT_PERMISSION)
@require_POST
def review_bulk_accept(request: SignedInRequest) -> HttpResponse:
    """Accept the first suggestion of every listing in the current filter at or above a confidence."""
    params = request.POST.dict()
    filters, errors = _filters(params)
    try:
        threshold = _percent(params.get("threshold"))
    except ValueError:
        threshold = None
    if errors or threshold is None:
        return _answer(request, message=BAD_CONFIDENCE, ok=False, status=400)
    listings = list(
        review_selectors.review_queue(filters=filters).filter(suggested_confidence__gte=threshold)
    )
    count = decisions_services.review_bulk_accept(
        listings=listings,
        min_confidence=threshold,
        reviewer=request.user,
    )
    message = BULK_ACCEPTED.format(
        count=count, plural="" if count == 1 else "s", percent=round(threshold * 100)
    )
    return _answer(request, message=message)


@staff_required(REVIEW_PERMISSION)
@require_GET
def listing_audit(request: SignedInRequest, pk: int) -> HttpResponse:
    """A listing's photos, suggestion and the audit trail of how its category was set."""
    listing = review_selectors.review_listing(listing_id=pk)
    if listing is None:
        raise Http404("no such listing")
    paths = catalogue_selectors.category_paths()
    context = {
        "listing": listing,
        "decisions": review_selectors.listing_decisions(listing=listing),
        "paths": paths,
        "human": listing.category_source in (CategorySource.SELLER, CategorySource.REVIEWER),
        "photo_numbers": {image.pk: number for number, image in enumerate(listing.images.all(), start=1)},
    }
    return render(request, "catalog/staff/listing_audit.html", context)


@staff_required(REVIEW_PERMISSION)
@require_POST
def review_undo(request: SignedInRequest) -> HttpResponse:
    """Undo the reviewer's last decision (keyboard u); the audit trail keeps both."""
    try:
        outcome = labels.review_undo(reviewer=request.user)
    except ValueError as error:
        return _answer(request, message=str(error), ok=False, status=409)
    message = UNDONE.format(title=outcome.undone.listing.title)
    if _wants_json(request):
        return JsonResponse({"ok": True, "message": message, "listing": outcome.undone.listing_id})
    return _answer(request, message=message)


@staff_required(REVIEW_PERMISSION)
@require_POST
def review_photo_label(request: SignedInRequest, image_id: int) -> HttpResponse:
    """Label one photo of a listing whose photos disagree (its training label)."""
    image = get_object_or_404(
        ListingImage.objects.select_related("listing").filter(
            listing__in=catalogue_selectors.listings_published()
        ),
        pk=image_id,
    )
    category = Category.objects.filter(pk=request.POST.get("category") or 0, is_active=True).first()
    if category is None:
        return _answer(request, message=UNKNOWN_CATEGORY, ok=False, status=400)
    outcome = labels.review_photo_label(image=image, category=category, reviewer=request.user)
    number = (
        list(image.listing.images.order_by("position", "id").values_list("pk", flat=True)).index(image.pk) + 1
    )
    title = image.listing.title
    if not outcome.changed:
        return _answer(request, message=PHOTO_ALREADY_LABELLED.format(number=number, title=title))
    return _answer(request, message=PHOTO_LABELLED.format(number=number, title=title, path=_path(category)))
