"""The listing form of a new listing, as on the big marketplaces: photos upload the moment they
are added (the first one creates a draft), the category field fills with suggestions while the
seller types the details (htmx polls it), the top one is preselected when auto-accept chose it,
and "Publish" needs a category (`listing_publish` enforces it).

Without JavaScript the photos are sent with their own button, which opens the draft's form.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from catalog.forms import PHOTOS_REQUIRED, TOO_MANY_PHOTOS, ListingForm
from catalog.models import Category, Listing
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.direct_uploads import direct_uploads_enabled
from catalog.services.images import LISTING_MAX_PHOTOS, ListingRuleBroken, RejectedPhoto
from catalog.services.publishing import LISTING_NEEDS_A_CATEGORY, listing_draft_create, listing_publish
from catalog.views.requests import SignedInRequest
from catalog.views.seller import (
    direct_upload_url,
    edit_context,
    photo_count,
    photo_errors_keep,
    photo_errors_kept,
    uploaded_files,
)

# User-facing messages; tests reuse them.
LISTING_PUBLISHED = "Your listing is online under {path}."

FORM_TEMPLATE = "catalog/seller/listing_form.html"


def _own_draft(request: SignedInRequest, pk: str | int | None) -> Listing | None:
    if pk is None or not str(pk).isdigit():
        return None
    drafts = catalogue_selectors.listings_of_seller(seller=request.user).filter(published_at__isnull=True)
    return drafts.filter(pk=int(pk)).first()


def _form_context(
    request: SignedInRequest, draft: Listing | None, form: ListingForm, **extra: object
) -> dict:
    if draft is None:
        return {
            "form": form,
            "draft": None,
            "max_photos": LISTING_MAX_PHOTOS,
            "tree": catalogue_selectors.category_tree(),
            "form_mode": True,
            "selected_id": _picked(request),
            "direct_upload_url": direct_upload_url(),
            **extra,
        }
    return {"form": form, "draft": draft, **edit_context(request, draft), **extra}


def _picked(request: SignedInRequest) -> int | None:
    value = request.POST.get("category") or request.GET.get("category") or ""
    return int(value) if value.isdigit() else None


@login_required
@require_http_methods(["GET", "POST"])
def listing_new(request: SignedInRequest) -> HttpResponse:
    """The empty listing form; its POST publishes the draft the photos went into."""
    if request.method == "POST":
        draft = _own_draft(request, request.POST.get("draft"))
        if draft is not None:
            return _publish(request, draft)
        form = ListingForm(request.POST)
        form.is_valid()
        form.add_error(None, PHOTOS_REQUIRED)
        return render(request, FORM_TEMPLATE, _form_context(request, None, form), status=400)
    return render(request, FORM_TEMPLATE, _form_context(request, None, ListingForm()))


def draft_form(request: SignedInRequest, draft: Listing) -> HttpResponse:
    """A draft's listing form (GET), or its publication (POST)."""
    if request.method == "POST":
        return _publish(request, draft)
    initial = {"title": draft.title, "description": draft.description, "price": draft.price}
    context = _form_context(request, draft, ListingForm(initial=initial), rejected=photo_errors_kept(request))
    return render(request, FORM_TEMPLATE, context)


def _publish(request: SignedInRequest, draft: Listing) -> HttpResponse:
    form = ListingForm(request.POST)
    picked = _picked(request)
    category = Category.objects.filter(pk=picked, is_active=True).first() if picked else None
    category_error = ""
    if form.is_valid():
        try:
            listing_publish(
                listing=draft,
                seller=request.user,
                title=form.cleaned_data["title"],
                description=form.cleaned_data["description"],
                price=form.cleaned_data["price"],
                category=category,
            )
        except ListingRuleBroken as error:
            if str(error) == LISTING_NEEDS_A_CATEGORY:
                category_error = str(error)
            else:
                form.add_error(None, str(error))
        else:
            assert draft.category_id is not None
            path = catalogue_selectors.category_paths().get(draft.category_id, "")
            messages.success(request, LISTING_PUBLISHED.format(path=path))
            return redirect("catalog:listing-edit", pk=draft.pk)
    elif category is None and draft.category_id is None:
        category_error = LISTING_NEEDS_A_CATEGORY
    context = _form_context(request, draft, form, category_error=category_error)
    return render(request, FORM_TEMPLATE, context, status=400)


@login_required
@require_POST
def draft_photos_add(request: SignedInRequest) -> HttpResponse:
    """The first photos of a new listing: they create its draft (valid ones only; each refused
    file is named with its reason). To htmx: the draft's photo manager, with its category field
    and the form's draft field swapped out of band, and the address of the draft's form."""
    count = photo_count(request)
    rejected: list[RejectedPhoto] = []
    draft = None
    if not count:
        rejected = [RejectedPhoto(filename="", message=PHOTOS_REQUIRED)]
    elif count > LISTING_MAX_PHOTOS:
        rejected = [RejectedPhoto(filename="", message=TOO_MANY_PHOTOS)]
    else:
        draft, batch = listing_draft_create(
            seller=request.user,
            files=uploaded_files(request),
            upload_tokens=request.POST.getlist("uploads") if direct_uploads_enabled() else [],
        )
        rejected = batch.rejected
    htmx = bool(request.htmx)
    if draft is None:
        template = "catalog/seller/_new_photos.html" if htmx else FORM_TEMPLATE
        context = _form_context(request, None, ListingForm(), photo_errors=rejected)
        return render(request, template, context, status=200 if htmx else 400)
    if not htmx:
        photo_errors_keep(request, rejected)
        return redirect("catalog:listing-edit", pk=draft.pk)
    context = edit_context(request, draft, rejected=rejected, oob=True, draft=draft)
    response = render(request, "catalog/seller/_draft_update.html", context)
    response["HX-Replace-Url"] = reverse("catalog:listing-edit", kwargs={"pk": draft.pk})
    return response
