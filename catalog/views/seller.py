"""The seller's pages: "My listings", create and edit a listing with its photos, the suggestion
panel (polled by htmx while the worker runs) and the category choice.

Every listing is looked up in `selectors.listings_of_seller(seller=request.user)`, so another
seller's listing or photo answers 404, never 403.
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from catalog import selectors, services
from catalog.forms import PHOTOS_REQUIRED, TOO_MANY_PHOTOS, ListingForm
from catalog.models import Category, CategorySource, ClassificationStatus, Listing

_WAITING = {ClassificationStatus.PENDING, ClassificationStatus.QUEUED}
PHOTO_ERROR_TAG = "photo-error"
PHOTO_ERROR_SEPARATOR = ": "  # a photo-error message reads "<file name>: <reason>"
# Milliseconds between two polls of the suggestion panel while the worker has not answered:
# every 300 ms for the first 10 s, then less often, so a stopped worker costs the site little.
SUGGESTION_POLL_MS = 300
SUGGESTION_POLL_BACKOFF: tuple[tuple[float, int], ...] = ((10.0, SUGGESTION_POLL_MS), (120.0, 2_000))
SUGGESTION_POLL_SLOW_MS = 10_000

# User-facing messages; tests reuse them.
LISTING_CREATED = "Your listing is online. Pick its category below."
LISTING_SAVED = "Changes saved."
LISTING_DELETED = "Listing deleted."
CATEGORY_SAVED = "Category saved: {path}."
CATEGORY_UNKNOWN = "Choose a category from the list."
UPLOAD_REQUEST_MALFORMED = "Describe the photos to upload as JSON: files with name, type and size."


def _own_listing(request: HttpRequest, pk: int) -> Listing:
    return get_object_or_404(selectors.listings_of_seller(seller=request.user), pk=pk)  # type: ignore[arg-type]


def _uploaded_files(request: HttpRequest) -> list[tuple[str, object]]:
    return [(upload.name or "photo", upload) for upload in request.FILES.getlist("photos")]


def _photo_count(request: HttpRequest) -> int:
    """Photos sent with the form: direct-upload tokens with S3 storage, else files."""
    if services.direct_uploads_enabled():
        return len(request.POST.getlist("uploads"))
    return len(request.FILES.getlist("photos"))


def _photos_add(request: HttpRequest, listing: Listing) -> services.PhotoBatch:
    """Add the form's photos to `listing`. With S3 storage the browser has uploaded them to the
    bucket and sends one token each (the web app never receives the bytes); else they are files."""
    if services.direct_uploads_enabled():
        return services.listing_uploads_register(listing=listing, tokens=request.POST.getlist("uploads"))
    return services.listing_photos_add(listing=listing, files=_uploaded_files(request))  # type: ignore[arg-type]


def _direct_upload_url() -> str:
    """Where the photo forms ask for presigned uploads ("" when photos go through the web app)."""
    return reverse("catalog:photo-uploads") if services.direct_uploads_enabled() else ""


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    """ "My listings": each listing with its category (or suggestion) and its photos' status."""
    listings = list(selectors.listings_of_seller(seller=request.user))  # type: ignore[arg-type]
    paths = selectors.category_paths()
    return render(request, "catalog/seller/dashboard.html", {"listings": listings, "paths": paths})


@login_required
@require_http_methods(["GET", "POST"])
def listing_create(request: HttpRequest) -> HttpResponse:
    """New listing: details and 1–10 photos in one form. Valid photos are kept and the bad ones are
    listed with their reason on the edit page; with no valid photo nothing is created."""
    form = ListingForm(request.POST or None)
    photo_errors: list[services.RejectedPhoto] = []
    if request.method == "POST":
        count = _photo_count(request)
        if not count:
            form.add_error(None, PHOTOS_REQUIRED)
        elif count > services.LISTING_MAX_PHOTOS:
            form.add_error(None, TOO_MANY_PHOTOS)
        if form.is_valid():
            with transaction.atomic():
                listing = services.listing_create(
                    seller=request.user,  # type: ignore[arg-type]
                    title=form.cleaned_data["title"],
                    description=form.cleaned_data["description"],
                    price=form.cleaned_data["price"],
                )
                batch = _photos_add(request, listing)
                if not batch.added:
                    # Nothing was stored (only valid photos are): undo the listing row too.
                    transaction.set_rollback(True)
            if batch.added:
                messages.success(request, LISTING_CREATED)
                for rejected in batch.rejected:
                    messages.error(
                        request,
                        f"{rejected.filename}{PHOTO_ERROR_SEPARATOR}{rejected.message}",
                        extra_tags=PHOTO_ERROR_TAG,
                    )
                return redirect("catalog:listing-edit", pk=listing.pk)
            photo_errors = batch.rejected
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "catalog/seller/listing_form.html",
        {
            "form": form,
            "photo_errors": photo_errors,
            "max_photos": services.LISTING_MAX_PHOTOS,
            "direct_upload_url": _direct_upload_url(),
        },
        status=status,
    )


def _edit_context(request: HttpRequest, listing: Listing, **extra: object) -> dict[str, object]:
    return {
        "listing": listing,
        "photos": list(listing.images.order_by("position", "id")),
        "max_photos": services.LISTING_MAX_PHOTOS,
        "remaining": max(0, services.LISTING_MAX_PHOTOS - listing.images.count()),
        "direct_upload_url": _direct_upload_url(),
        **_suggestion_context(listing),
        **extra,
    }


def _suggestion_context(listing: Listing) -> dict[str, object]:
    listing.refresh_from_db(fields=["category", "category_source"])
    paths = selectors.category_paths()
    panel = selectors.listing_suggestions(listing=listing, top=3)
    return {
        "listing": listing,
        "panel": panel,
        "tree": selectors.category_tree(),
        "current_path": paths.get(listing.category_id) if listing.category_id else "",
        **_poll_interval(panel),
    }


def _poll_interval(panel: selectors.ListingSuggestions) -> dict[str, object]:
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
def listing_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Edit page: details form, photo manager, suggestion panel and category choice."""
    listing = _own_listing(request, pk)
    initial = {"title": listing.title, "description": listing.description, "price": listing.price}
    form = ListingForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        services.listing_update(
            listing=listing,
            title=form.cleaned_data["title"],
            description=form.cleaned_data["description"],
            price=form.cleaned_data["price"],
        )
        messages.success(request, LISTING_SAVED)
        return redirect("catalog:listing-edit", pk=listing.pk)
    status = 400 if form.errors else 200
    # Files refused on the create page arrive here as messages, after its redirect.
    rejected = [
        services.RejectedPhoto(filename=name, message=text)
        for message in messages.get_messages(request)
        if PHOTO_ERROR_TAG in message.tags
        for name, _, text in [str(message).partition(PHOTO_ERROR_SEPARATOR)]
    ]
    context = _edit_context(request, listing, form=form, rejected=rejected)
    return render(request, "catalog/seller/listing_edit.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def listing_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Confirm, then delete the listing with its photos."""
    listing = _own_listing(request, pk)
    if request.method == "POST":
        services.listing_delete(listing=listing)
        messages.success(request, LISTING_DELETED)
        return redirect("catalog:seller-dashboard")
    return render(request, "catalog/seller/listing_confirm_delete.html", {"listing": listing})


def _photos_response(
    request: HttpRequest, listing: Listing, rejected: list[services.RejectedPhoto]
) -> HttpResponse:
    """The photo manager partial for htmx (with the suggestion panel swapped out of band), else a
    redirect to the edit page with the errors as messages."""
    if request.htmx:  # type: ignore[attr-defined]
        context = _edit_context(request, listing, rejected=rejected, oob=True)
        return render(request, "catalog/seller/_photos_update.html", context)
    for item in rejected:
        messages.error(
            request, f"{item.filename}{PHOTO_ERROR_SEPARATOR}{item.message}", extra_tags=PHOTO_ERROR_TAG
        )
    return redirect("catalog:listing-edit", pk=listing.pk)


@login_required
@require_POST
def photos_add(request: HttpRequest, pk: int) -> HttpResponse:
    """Add photos to a listing; each refused file gets its own message, the valid ones are kept."""
    listing = _own_listing(request, pk)
    rejected = _photos_add(request, listing).rejected
    if not _photo_count(request):
        rejected = [services.RejectedPhoto(filename="", message=PHOTOS_REQUIRED)]
    return _photos_response(request, listing, rejected)


@login_required
@require_POST
def photo_uploads(request: HttpRequest) -> JsonResponse:
    """Presigned POSTs for photos the browser sends straight to the bucket (S3 storage only).

    Body: JSON `{"files": [{"name": str, "type": str, "size": int}, ...]}`, at most
    LISTING_MAX_PHOTOS files. Answers `{"uploads": [...]}` in the same order, each
    `{"url", "fields", "token"}` or `{"error": message}` for a file that could never be accepted
    (type, size). 404 when photos are stored locally, 400 for a malformed body.
    """
    if not services.direct_uploads_enabled():
        raise Http404("photos are uploaded through the web app")
    try:
        files = json.loads(request.body)["files"]
        described = [(str(f["name"]), str(f["type"]), int(f["size"])) for f in files]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": UPLOAD_REQUEST_MALFORMED}, status=400)
    if len(described) > services.LISTING_MAX_PHOTOS:
        return JsonResponse({"error": TOO_MANY_PHOTOS}, status=400)
    uploads: list[dict[str, object]] = []
    for name, content_type, size in described:
        try:
            upload = services.photo_upload_presign(
                seller=request.user,  # type: ignore[arg-type]
                filename=name,
                content_type=content_type,
                size=size,
            )
        except services.UploadRejected as error:
            uploads.append({"error": str(error)})
            continue
        uploads.append({"url": upload.url, "fields": upload.fields, "token": upload.token})
    return JsonResponse({"uploads": uploads})


@login_required
@require_POST
def photo_delete(request: HttpRequest, pk: int, image_id: int) -> HttpResponse:
    """Remove one photo (not the last one)."""
    listing = _own_listing(request, pk)
    image = get_object_or_404(listing.images, pk=image_id)
    rejected: list[services.RejectedPhoto] = []
    try:
        services.listing_image_delete(image=image)
    except services.ListingRuleBroken as error:
        rejected = [services.RejectedPhoto(filename="", message=str(error))]
    return _photos_response(request, listing, rejected)


@login_required
@require_POST
def photo_move(request: HttpRequest, pk: int, image_id: int) -> HttpResponse:
    """Move one photo one place earlier or later (`direction` = "earlier" or "later")."""
    listing = _own_listing(request, pk)
    order = list(listing.images.order_by("position", "id").values_list("pk", flat=True))
    if image_id not in order:
        return _photos_response(request, listing, [])
    index = order.index(image_id)
    target = index - 1 if request.POST.get("direction") == "earlier" else index + 1
    if 0 <= target < len(order):
        order[index], order[target] = order[target], order[index]
        services.listing_images_reorder(listing=listing, image_ids=order)
    return _photos_response(request, listing, [])


@login_required
@require_POST
def photos_reorder(request: HttpRequest, pk: int) -> HttpResponse:
    """Put the photos in the order given as `order` = comma-separated photo ids (drag and drop)."""
    listing = _own_listing(request, pk)
    try:
        ids = [int(part) for part in request.POST.get("order", "").split(",") if part.strip()]
        services.listing_images_reorder(listing=listing, image_ids=ids)
    except ValueError:
        return HttpResponseBadRequest("order must list each photo of the listing once")
    return _photos_response(request, listing, [])


@login_required
@require_GET
def suggestions_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The suggestion panel partial; while photos wait for the worker it asks to be polled again."""
    listing = _own_listing(request, pk)
    return render(request, "catalog/seller/_suggestions.html", _suggestion_context(listing))


@login_required
@require_POST
def category_set(request: HttpRequest, pk: int) -> HttpResponse:
    """The seller accepts a suggestion or picks a category from the tree (source SELLER)."""
    listing = _own_listing(request, pk)
    category = Category.objects.filter(pk=request.POST.get("category") or 0, is_active=True).first()
    error = ""
    if category is None:
        error = CATEGORY_UNKNOWN
    else:
        services.listing_category_set(
            listing=listing,
            category=category,
            source=CategorySource.SELLER,
            actor=request.user,  # type: ignore[arg-type]
        )
    if request.htmx:  # type: ignore[attr-defined]
        context = _suggestion_context(listing)
        context["category_error"] = error
        context["just_saved"] = not error
        return render(request, "catalog/seller/_suggestions.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    else:
        paths = selectors.category_paths()
        messages.success(request, CATEGORY_SAVED.format(path=paths.get(category.pk, category.name)))  # type: ignore[union-attr]
    return redirect(reverse("catalog:listing-edit", kwargs={"pk": listing.pk}) + "#category")
