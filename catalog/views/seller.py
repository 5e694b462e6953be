"""The seller's pages: "My listings", edit a listing with its photos, the suggestion panel
(polled by htmx while the worker runs) and the category choice. The listing form of a new
listing (a draft until it is published) lives in `catalog.views.drafts`.

Every listing is looked up in `selectors.catalogue.listings_of_seller(seller=request.user)`, so another
seller's listing or photo answers 404, never 403.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from catalog.forms import PHOTOS_REQUIRED, TOO_MANY_PHOTOS, ListingForm
from catalog.models import Category, CategorySource, ClassificationStatus, Listing
from catalog.selectors import catalogue as catalogue_selectors
from catalog.selectors import suggestions as suggestions_selectors
from catalog.services import images
from catalog.services import listings as listings_services
from catalog.services.decisions import listing_category_set
from catalog.services.direct_uploads import (
    direct_uploads_enabled,
    listing_uploads_register,
    photo_upload_presign,
)
from catalog.services.images import (
    ListingRuleBroken,
    PhotoBatch,
    RejectedPhoto,
    listing_image_delete,
    listing_images_reorder,
    listing_photos_add,
)
from catalog.services.listings import listing_update
from catalog.uploads import UploadRejected
from catalog.views.requests import SignedInRequest

_WAITING = {ClassificationStatus.PENDING, ClassificationStatus.QUEUED}
PHOTO_ERROR_TAG = "photo-error"
PHOTO_ERROR_SEPARATOR = ": "  # a photo-error message reads "<file name>: <reason>"
# Milliseconds between two polls of the suggestion panel while the worker has not answered:
# every 300 ms for the first 10 s, then less often, so a stopped worker costs the site little.
SUGGESTION_POLL_MS = 300
SUGGESTION_POLL_BACKOFF: tuple[tuple[float, int], ...] = ((10.0, SUGGESTION_POLL_MS), (120.0, 2_000))
SUGGESTION_POLL_SLOW_MS = 10_000

# The suggestion panel of a published listing, and of a draft (the listing form's category field).
SUGGESTION_TEMPLATES = {
    False: "catalog/seller/_suggestions.html",
    True: "catalog/seller/_category_field.html",
}

# User-facing messages; tests reuse them.
LISTING_SAVED = "Changes saved."
LISTING_DELETED = "Listing deleted."
CATEGORY_SAVED = "Category saved: {path}."
CATEGORY_UNKNOWN = "Choose a category from the list."
UPLOAD_REQUEST_MALFORMED = "Describe the photos to upload as JSON: files with name, type and size."


def _own_listing(request: SignedInRequest, pk: int) -> Listing:
    return get_object_or_404(catalogue_selectors.listings_of_seller(seller=request.user), pk=pk)


def uploaded_files(request: SignedInRequest) -> list[tuple[str, UploadedFile]]:
    """The form's photo files as (filename, file) pairs."""
    return [(upload.name or "photo", upload) for upload in request.FILES.getlist("photos")]


def photo_count(request: SignedInRequest) -> int:
    """Photos sent with the form: direct-upload tokens with S3 storage, else files."""
    if direct_uploads_enabled():
        return len(request.POST.getlist("uploads"))
    return len(request.FILES.getlist("photos"))


def photos_store(request: SignedInRequest, listing: Listing) -> PhotoBatch:
    """Add the form's photos to `listing`. With S3 storage the browser has uploaded them to the
    bucket and sends one token each (the web app never receives the bytes); else they are files."""
    if direct_uploads_enabled():
        return listing_uploads_register(listing=listing, tokens=request.POST.getlist("uploads"))
    return listing_photos_add(listing=listing, files=uploaded_files(request))


def direct_upload_url() -> str:
    """Where the photo forms ask for presigned uploads ("" when photos go through the web app)."""
    return reverse("catalog:photo-uploads") if direct_uploads_enabled() else ""


@login_required
@require_GET
def dashboard(request: SignedInRequest) -> HttpResponse:
    """ "My listings": each listing with its category (or suggestion) and its photos' status."""
    listings = list(catalogue_selectors.listings_of_seller(seller=request.user))
    paths = catalogue_selectors.category_paths()
    return render(request, "catalog/seller/dashboard.html", {"listings": listings, "paths": paths})


def edit_context(request: SignedInRequest, listing: Listing, **extra: object) -> dict[str, object]:
    """What the edit page (and a draft's listing form) shows: photos, suggestions, category."""
    return {
        "listing": listing,
        "photos": list(listing.images.order_by("position", "id")),
        "max_photos": images.LISTING_MAX_PHOTOS,
        "remaining": max(0, images.LISTING_MAX_PHOTOS - listing.images.count()),
        "direct_upload_url": direct_upload_url(),
        **suggestion_context(request, listing),
        **extra,
    }


def suggestion_context(request: SignedInRequest, listing: Listing) -> dict[str, object]:
    """The suggestion panel's context. A draft's panel is the listing form's category field:
    `selected_id` is the category the seller picked there (sent back by each poll and photo
    change), else the category auto-accept preselected."""
    listing.refresh_from_db(fields=["category", "category_source", "published_at"])
    paths = catalogue_selectors.category_paths()
    panel = suggestions_selectors.listing_suggestions(listing=listing, top=3)
    picked = request.POST.get("category") or request.GET.get("category") or ""
    selected_id = int(picked) if picked.isdigit() else (panel.preselected.pk if panel.preselected else None)
    return {
        "listing": listing,
        "panel": panel,
        "tree": catalogue_selectors.category_tree(),
        "current_path": paths.get(listing.category_id) if listing.category_id else "",
        "form_mode": listing.published_at is None,
        "selected_id": selected_id,
        "selected_suggested": selected_id in {s.category.pk for s in panel.suggestions},
        **_poll_interval(panel),
    }


def _poll_interval(panel: suggestions_selectors.ListingSuggestions) -> dict[str, object]:
    """How long the page waits before asking again, from how long the oldest photo has waited."""
    waiting = [photo.image.status_changed_at for photo in panel.photos if photo.status in _WAITING]
    if not waiting:
        return {"poll_ms": SUGGESTION_POLL_MS, "slow": False}
    waited_s = (timezone.now() - min(waiting)).total_seconds()
    for limit_s, interval_ms in SUGGESTION_POLL_BACKOFF:
        if waited_s < limit_s:
            return {"poll_ms": interval_ms, "slow": interval_ms != SUGGESTION_POLL_MS}
    return {"poll_ms": SUGGESTION_POLL_SLOW_MS, "slow": True}


@login_required
@require_http_methods(["GET", "POST"])
def listing_edit(request: SignedInRequest, pk: int) -> HttpResponse:
    """Edit page: details form, photo manager, suggestion panel and category choice."""
    listing = _own_listing(request, pk)
    if listing.published_at is None:
        from catalog.views.drafts import draft_form

        return draft_form(request, listing)
    initial = {"title": listing.title, "description": listing.description, "price": listing.price}
    form = ListingForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        listing_update(
            listing=listing,
            title=form.cleaned_data["title"],
            description=form.cleaned_data["description"],
            price=form.cleaned_data["price"],
        )
        messages.success(request, LISTING_SAVED)
        return redirect("catalog:listing-edit", pk=listing.pk)
    status = 400 if form.errors else 200
    context = edit_context(request, listing, form=form, rejected=photo_errors_kept(request))
    return render(request, "catalog/seller/listing_edit.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def listing_delete(request: SignedInRequest, pk: int) -> HttpResponse:
    """Confirm, then delete the listing with its photos."""
    listing = _own_listing(request, pk)
    if request.method == "POST":
        listings_services.listing_delete(listing=listing)
        messages.success(request, LISTING_DELETED)
        return redirect("catalog:seller-dashboard")
    return render(request, "catalog/seller/listing_confirm_delete.html", {"listing": listing})


def photo_errors_keep(request: SignedInRequest, rejected: list[RejectedPhoto]) -> None:
    """Carry refused files across a redirect, as messages the next page lists by the photos."""
    for item in rejected:
        messages.error(
            request, f"{item.filename}{PHOTO_ERROR_SEPARATOR}{item.message}", extra_tags=PHOTO_ERROR_TAG
        )


def photo_errors_kept(request: SignedInRequest) -> list[RejectedPhoto]:
    """The refused files `photo_errors_keep` carried over (read once)."""
    return [
        RejectedPhoto(filename=name, message=text)
        for message in messages.get_messages(request)
        if PHOTO_ERROR_TAG in message.tags
        for name, _, text in [str(message).partition(PHOTO_ERROR_SEPARATOR)]
    ]


def _photos_response(
    request: SignedInRequest, listing: Listing, rejected: list[RejectedPhoto]
) -> HttpResponse:
    """The photo manager partial for htmx (with the suggestion panel swapped out of band), else a
    redirect to the edit page with the errors as messages."""
    if request.htmx:
        context = edit_context(request, listing, rejected=rejected, oob=True)
        return render(request, "catalog/seller/_photos_update.html", context)
    photo_errors_keep(request, rejected)
    return redirect("catalog:listing-edit", pk=listing.pk)


@login_required
@require_POST
def photos_add(request: SignedInRequest, pk: int) -> HttpResponse:
    """Add photos to a listing; each refused file gets its own message, the valid ones are kept."""
    listing = _own_listing(request, pk)
    rejected = photos_store(request, listing).rejected
    if not photo_count(request):
        rejected = [RejectedPhoto(filename="", message=PHOTOS_REQUIRED)]
    return _photos_response(request, listing, rejected)


@login_required
@require_POST
def photo_uploads(request: SignedInRequest) -> JsonResponse:
    """Presigned POSTs for photos the browser sends straight to the bucket (S3 storage only).

    Body: JSON `{"files": [{"name": str, "type": str, "size": int}, ...]}`, at most
    LISTING_MAX_PHOTOS files. Answers `{"uploads": [...]}` in the same order, each
    `{"url", "fields", "token"}` or `{"error": message}` for a file that could never be accepted
    (type, size). 404 when photos are stored locally, 400 for a malformed body.
    """
    if not direct_uploads_enabled():
        raise Http404("photos are uploaded through the web app")
    try:
        files = json.loads(request.body)["files"]
        described = [(str(f["name"]), str(f["type"]), int(f["size"])) for f in files]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": UPLOAD_REQUEST_MALFORMED}, status=400)
    if len(described) > images.LISTING_MAX_PHOTOS:
        return JsonResponse({"error": TOO_MANY_PHOTOS}, status=400)
    uploads: list[dict[str, object]] = []
    for name, content_type, size in described:
        try:
            upload = photo_upload_presign(
                seller=request.user,
                filename=name,
                content_type=content_type,
                size=size,
            )
        except UploadRejected as error:
            uploads.append({"error": str(error)})
            continue
        uploads.append({"url": upload.url, "fields": upload.fields, "token": upload.token})
    return JsonResponse({"uploads": uploads})


@login_required
@require_POST
def photo_delete(request: SignedInRequest, pk: int, image_id: int) -> HttpResponse:
    """Remove one photo (not the last one)."""
    listing = _own_listing(request, pk)
    image = get_object_or_404(listing.images, pk=image_id)
    rejected: list[RejectedPhoto] = []
    try:
        listing_image_delete(image=image)
    except ListingRuleBroken as error:
        rejected = [RejectedPhoto(filename="", message=str(error))]
    return _photos_response(request, listing, rejected)


@login_required
@require_POST
def photo_move(request: SignedInRequest, pk: int, image_id: int) -> HttpResponse:
    """Move one photo one place earlier or later (`direction` = "earlier" or "later")."""
    listing = _own_listing(request, pk)
    order = list(listing.images.order_by("position", "id").values_list("pk", flat=True))
    if image_id not in order:
        return _photos_response(request, listing, [])
    index = order.index(image_id)
    target = index - 1 if request.POST.get("direction") == "earlier" else index + 1
    if 0 <= target < len(order):
        order[index], order[target] = order[target], order[index]
        listing_images_reorder(listing=listing, image_ids=order)
    return _photos_response(request, listing, [])


@login_required
@require_POST
def photos_reorder(request: SignedInRequest, pk: int) -> HttpResponse:
    """Put the photos in the order given as `order` = comma-separated photo ids (drag and drop)."""
    listing = _own_listing(request, pk)
    try:
        ids = [int(part) for part in request.POST.get("order", "").split(",") if part.strip()]
        listing_images_reorder(listing=listing, image_ids=ids)
    except ValueError:
        return HttpResponseBadRequest("order must list each photo of the listing once")
    return _photos_response(request, listing, [])


@login_required
@require_GET
def suggestions_panel(request: SignedInRequest, pk: int) -> HttpResponse:
    """The suggestion panel partial; while photos wait for the worker it asks to be polled again."""
    listing = _own_listing(request, pk)
    context = suggestion_context(request, listing)
    return render(request, SUGGESTION_TEMPLATES[bool(context["form_mode"])], context)


@login_required
@require_POST
def category_set(request: SignedInRequest, pk: int) -> HttpResponse:
    """The seller accepts a suggestion or picks a category from the tree (source SELLER)."""
    listing = _own_listing(request, pk)
    category = Category.objects.filter(pk=request.POST.get("category") or 0, is_active=True).first()
    error = ""
    if category is None:
        error = CATEGORY_UNKNOWN
    else:
        listing_category_set(
            listing=listing,
            category=category,
            source=CategorySource.SELLER,
            actor=request.user,
        )
    if request.htmx:
        context = suggestion_context(request, listing)
        context["category_error"] = error
        context["just_saved"] = not error
        return render(request, "catalog/seller/_suggestions.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    else:
        paths = catalogue_selectors.category_paths()
        messages.success(request, CATEGORY_SAVED.format(path=paths.get(category.pk, category.name)))  # type: ignore[union-attr]
    return redirect(reverse("catalog:listing-edit", kwargs={"pk": listing.pk}) + "#category")
