"""Web pages. Views call selectors and services; they never import the model."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from catalog import selectors


def listing_list(request: HttpRequest) -> HttpResponse:
    """Recent listings with their photos and each photo's suggested categories."""
    rows = []
    for listing in selectors.listing_list_recent(limit=60):
        images = []
        for image in listing.images.all():
            images.append({"image": image, "suggestion": selectors.image_latest_suggestion(image=image)})
        rows.append({"listing": listing, "images": images})
    return render(request, "catalog/listing_list.html", {"rows": rows})


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers and compose health checks."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
