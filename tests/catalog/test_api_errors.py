"""Every error under /api/ is JSON in one shape, whoever answers it: a DRF view, DRF's
authentication and parsing, or Django itself (unknown path, refused host, a crash). Pages
elsewhere keep Django's HTML error pages."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from catalog.api import errors
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.images import LISTING_NEEDS_A_PHOTO, listing_photos_add
from tests import photo_bytes as pb
from tests.api_errors import api_error
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api() -> APIClient:
    """A seller's API client (how it authenticates does not matter here)."""
    client = APIClient()
    client.user = UserFactory.create()
    client.force_authenticate(client.user)
    return client


SERVER_ERROR = api_error("error", "Server Error (500)", type="server_error")


def test_an_unknown_api_path_is_a_json_404(api: APIClient) -> None:
    response = api.get("/api/nowhere/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == api_error("not_found", "Not found.")


def test_drf_errors_share_the_shape(api: APIClient) -> None:
    anonymous = APIClient().get("/api/listings/")
    missing = api.get("/api/listings/999999/")
    wrong_method = api.put("/api/classify")
    malformed = api.post("/api/listings/", data="{", content_type="application/json")

    assert (anonymous.status_code, anonymous.json()) == (
        401,
        api_error("not_authenticated", "Authentication credentials were not provided."),
    )
    assert (missing.status_code, missing.json()) == (
        404,
        api_error("not_found", "Not found."),
    )
    assert (wrong_method.status_code, wrong_method.json()["errors"][0]["code"]) == (405, "method_not_allowed")
    assert (malformed.status_code, malformed.json()["type"], malformed.json()["errors"][0]["code"]) == (
        400,
        "client_error",
        "parse_error",
    )


def test_invalid_fields_are_listed_one_error_each(api: APIClient) -> None:
    response = api.post("/api/listings/", {"title": "", "price": "-1", "category": "no-such"}, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert sorted((error["attr"], error["code"]) for error in body["errors"]) == [
        ("category", "does_not_exist"),
        ("price", "invalid"),
        ("title", "blank"),
    ]


def test_a_crash_in_an_api_view_is_a_json_500(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(catalogue_selectors, "listings_of_seller", broken)
    api.raise_request_exception = False

    response = api.get("/api/listings/")

    assert (response.status_code, response.json()) == (500, SERVER_ERROR)
    assert "fire" not in response.content.decode()


def test_django_s_own_errors_are_json_under_api_and_pages_elsewhere() -> None:
    factory = RequestFactory()

    # a refused Host header, answered before any view
    refused = Client().get("/api/listings/", HTTP_HOST="evil.example")
    assert (refused.status_code, refused.json()) == (400, api_error("bad_request", "Bad request."))
    # a crash outside a DRF view
    crashed = errors.server_error(factory.get("/api/listings/"))
    assert (crashed.status_code, crashed["Content-Type"]) == (500, "application/json")
    # pages keep their HTML
    assert errors.server_error(factory.get("/sell/"))["Content-Type"].startswith("text/html")
    page = Client().get("/no-such-page/")
    assert (page.status_code, page["Content-Type"].split(";")[0]) == (404, "text/html")


def test_removing_a_listing_s_only_photo_is_a_conflict_and_keeps_it(api: APIClient) -> None:
    listing = ListingFactory.create(seller=api.user)
    (image,) = listing_photos_add(listing=listing, files=[("a.jpg", pb.jpeg_bytes())]).added

    response = api.delete(f"/api/listings/{listing.pk}/photos/{image.pk}/")

    assert (response.status_code, response.json()) == (409, api_error("conflict", LISTING_NEEDS_A_PHOTO))
    assert listing.images.count() == 1
