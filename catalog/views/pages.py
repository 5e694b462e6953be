"""Public pages: browse with a category tree and title search, a listing's page, thumbnails."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET

from catalog.models import Category
from catalog.selectors import catalogue as catalogue_selectors
from catalog.thumbnails import THUMBNAIL_CONTENT_TYPE, THUMBNAIL_SIZES, thumbnail_get_or_create

BROWSE_PAGE_SIZE = 24


@require_GET
def browse(request: HttpRequest) -> HttpResponse:
    """Listings, newest first; `?category=<slug>` includes its subcategories, `?q=` searches titles,
    `?page=` paginates."""
    tree = catalogue_selectors.category_tree()
    slug = request.GET.get("category", "")
    category = Category.objects.filter(slug=slug).first() if slug else None
    query = request.GET.get("q", "").strip()[:200]
    listings = catalogue_selectors.listing_search(category=category, query=query)
    page = Paginator(listings, BROWSE_PAGE_SIZE).get_page(request.GET.get("page"))
    paths = {node.category.pk: node.path for node in tree}
    open_ids = set()
    if category is not None:
        open_ids = {c.pk for c in catalogue_selectors.category_path(category=category)}
    return render(
        request,
        "catalog/browse.html",
        {
            "page": page,
            "tree": tree,
            "paths": paths,
            "category": category,
            "category_path": paths.get(category.pk, "") if category else "",
            "open_ids": open_ids,
            "query": query,
        },
    )


@require_GET
def listing_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A listing's public page: photos (as thumbnails), price, description, category path. Its
    seller also sees it before it is public (a draft, or still without a category), marked so."""
    listing = catalogue_selectors.listing_search().filter(pk=pk).first()
    preview = False
    if listing is None and request.user.is_authenticated:
        listing = catalogue_selectors.listings_of_seller(seller=request.user).filter(pk=pk).first()
        preview = True
    if listing is None:
        raise Http404("no such listing")
    path = catalogue_selectors.category_path(category=listing.category) if listing.category else []
    context = {
        "listing": listing,
        "photos": list(listing.images.all()),
        "category_path": path,
        "preview": preview,
    }
    return render(request, "catalog/listing_detail.html", context)


@require_GET
def photo_thumbnail(request: HttpRequest, image_id: int, size: str) -> HttpResponse:
    """The photo downscaled to `size` ("small" or "large") as WebP, generated on first request and
    cached in storage. A photo that cannot be decoded gets a placeholder picture."""
    if size not in THUMBNAIL_SIZES:
        raise Http404("unknown thumbnail size")
    image = catalogue_selectors.image_public(image_id=image_id, viewer=request.user)
    if image is None:
        raise Http404("no such photo")
    data = thumbnail_get_or_create(image=image, size=size)
    if data is None:
        return redirect(static("catalog/img/unreadable-photo.svg"))
    response = HttpResponse(data, content_type=THUMBNAIL_CONTENT_TYPE)
    # Photos never change under an id; a removed photo's URL answers 404 to new requests.
    public = catalogue_selectors.listings_public().filter(pk=image.listing_id).exists()
    response["Cache-Control"] = f"{'public' if public else 'private'}, max-age=86400"
    return response


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and compose health checks."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
