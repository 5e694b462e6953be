"""REST API: token and session auth, listings CRUD limited to the owner (404 for others), photo
upload with the same validation as the pages, suggestions, POST /api/classify and the schema."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from knox.models import AuthToken
from rest_framework.test import APIClient

from catalog.models import Category, CategorySource, Listing, ListingImage
from catalog.services.images import image_classification_fail, listing_photos_add
from catalog.services.suggestions import ScoredCategory, image_classification_record, model_version_ensure
from catalog.uploads import UPLOAD_NOT_AN_IMAGE
from tests import photo_bytes as pb
from tests.api_errors import api_error
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db


def photo(name: str = "a.jpg", data: bytes | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, pb.jpeg_bytes() if data is None else data, content_type="image/jpeg")


@pytest.fixture
def api() -> APIClient:
    user = UserFactory.create()
    client = APIClient()
    _, token = AuthToken.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    client.user = user
    return client


def record_suggestion(image: ListingImage, scores: list[tuple[str, float]]) -> None:
    version = model_version_ensure(name="test-model")
    top_k = [ScoredCategory(slug=slug, confidence=conf) for slug, conf in scores]
    image_classification_record(image=image, model_version=version, top_k=top_k)


def test_anonymous_callers_are_refused() -> None:
    client = APIClient()
    assert client.get("/api/listings/").status_code == 401
    assert client.post("/api/classify", {"file": photo()}, format="multipart").status_code == 401


def test_a_token_is_obtained_with_username_and_password() -> None:
    UserFactory.create(username="tok")
    response = APIClient().post("/api/token", {"username": "tok", "password": "a-long-test-password"})
    assert response.status_code == 200
    assert len(response.json()["token"]) == 64
    assert response.json()["expiry"]


def test_listing_crud_for_the_owner(api: APIClient) -> None:
    # create
    created = api.post(
        "/api/listings/", {"title": "Bike", "price": "120.00", "category": "bicycles"}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (
        body["title"],
        body["price"],
        body["category"],
        body["category_path"],
        body["category_source"],
    ) == (
        "Bike",
        "120.00",
        "bicycles",
        "Vehicles › Bicycles",
        "seller",
    )
    url = f"/api/listings/{body['id']}/"
    # read, list
    assert api.get(url).json()["title"] == "Bike"
    assert [row["id"] for row in api.get("/api/listings/").json()["results"]] == [body["id"]]
    # update
    assert api.patch(url, {"title": "Road bike"}, format="json").json()["title"] == "Road bike"
    # delete
    assert api.delete(url).status_code == 204
    assert not Listing.objects.filter(pk=body["id"]).exists()


def test_other_sellers_listings_are_404_and_unchanged(api: APIClient) -> None:
    # given someone else's listing with a photo
    listing = ListingFactory.create(title="Theirs")
    (image,) = listing_photos_add(listing=listing, files=[("a.jpg", pb.jpeg_bytes())]).added
    url = f"/api/listings/{listing.pk}/"

    # then every endpoint answers 404
    assert api.get(url).status_code == 404
    assert api.patch(url, {"title": "Mine"}, format="json").status_code == 404
    assert api.delete(url).status_code == 404
    assert api.post(url + "photos/", {"file": photo()}, format="multipart").status_code == 404
    assert api.delete(url + f"photos/{image.pk}/").status_code == 404
    assert api.get(url + "suggestions/").status_code == 404
    assert api.post(url + "category/", {"category": "shoes"}, format="json").status_code == 404
    assert api.get("/api/listings/").json()["results"] == []

    # and nothing changed
    listing.refresh_from_db()
    assert (listing.title, listing.category, listing.images.count()) == ("Theirs", None, 1)


def test_photo_upload_validates_like_the_pages(api: APIClient) -> None:
    listing = ListingFactory.create(seller=api.user)
    url = f"/api/listings/{listing.pk}/photos/"

    good = api.post(url, {"file": photo()}, format="multipart")
    bad = api.post(url, {"file": photo("x.jpg", pb.HTML_PAGE)}, format="multipart")

    assert good.status_code == 201
    assert good.json()["status"] == "pending"
    assert good.json()["thumbnail_url"].endswith(f"/photos/{good.json()['id']}/small.webp")
    assert (bad.status_code, bad.json()) == (
        400,
        api_error("invalid", UPLOAD_NOT_AN_IMAGE, attr="file", type="validation_error"),
    )
    assert listing.images.count() == 1


def test_suggestions_and_accepting_one(api: APIClient) -> None:
    listing = ListingFactory.create(seller=api.user)
    (image,) = listing_photos_add(listing=listing, files=[("a.jpg", pb.jpeg_bytes())]).added
    url = f"/api/listings/{listing.pk}/"
    assert api.get(url + "suggestions/").json()["state"] == "pending"

    record_suggestion(image, [("shoes", 0.6), ("hat", 0.2), ("dress", 0.1), ("pants", 0.06), ("skirt", 0.04)])
    data = api.get(url + "suggestions/").json()
    assert data["state"] == "done"
    assert [c["slug"] for c in data["categories"]] == ["shoes", "hat", "dress", "pants", "skirt"]
    assert data["categories"][0] == {
        "slug": "shoes",
        "name": "Shoes",
        "path": "Fashion › Shoes",
        "confidence": 0.6,
    }

    accepted = api.post(url + "category/", {"category": "shoes"}, format="json")
    assert accepted.status_code == 200
    listing.refresh_from_db()
    assert (listing.category, listing.category_source) == (
        Category.objects.get(slug="shoes"),
        CategorySource.SELLER,
    )


def test_classify_answers_202_with_a_url_to_poll_then_the_top_5(api: APIClient, settings) -> None:
    # given a generous wait, but a single-threaded web worker (the test client's), and no worker
    settings.CLASSIFY_API_WAIT_S = 30

    # when a photo is posted
    response = api.post("/api/classify", {"file": photo()}, format="multipart")

    # then it is accepted with a URL to poll, stored in a hidden listing of the caller
    assert response.status_code == 202
    body = response.json()
    assert response["Location"] == body["poll_url"]
    image = ListingImage.objects.get(pk=body["image_id"])
    assert (image.listing.seller, image.listing.is_probe) == (api.user, True)
    assert api.get(body["poll_url"]).status_code == 202

    # when the worker has answered, the poll gives the top-5
    record_suggestion(image, [("shoes", 0.5), ("hat", 0.2), ("dress", 0.15), ("pants", 0.1), ("skirt", 0.05)])
    done = api.get(body["poll_url"])
    assert done.status_code == 200
    assert [(c["slug"], c["confidence"]) for c in done.json()["categories"]] == [
        ("shoes", 0.5),
        ("hat", 0.2),
        ("dress", 0.15),
        ("pants", 0.1),
        ("skirt", 0.05),
    ]
    # and nobody else can read it
    other = APIClient()
    other.force_authenticate(UserFactory.create())
    assert other.get(body["poll_url"]).status_code == 404


def test_classify_refuses_bad_files_and_reports_failures(api: APIClient, settings) -> None:
    settings.CLASSIFY_API_WAIT_S = 0
    bad = api.post("/api/classify", {"file": photo("x.jpg", pb.SVG_IMAGE)}, format="multipart")
    assert (bad.status_code, bad.json()) == (
        400,
        api_error("invalid", UPLOAD_NOT_AN_IMAGE, attr="file", type="validation_error"),
    )
    assert not ListingImage.objects.exists()

    accepted = api.post("/api/classify", {"file": photo()}, format="multipart").json()
    image = ListingImage.objects.get(pk=accepted["image_id"])
    image_classification_fail(image=image, reason="No luck.")
    failed = api.get(accepted["poll_url"])
    assert (failed.status_code, failed.json()["failure_reason"]) == (422, "No luck.")


def test_probe_listings_never_show_in_the_listing_api(api: APIClient, settings) -> None:
    settings.CLASSIFY_API_WAIT_S = 0
    api.post("/api/classify", {"file": photo()}, format="multipart")
    assert api.get("/api/listings/").json()["count"] == 0


def test_session_authentication_needs_csrf(client) -> None:
    # given a seller logged in with a session, on a client that checks CSRF
    from django.test import Client

    user = UserFactory.create()
    session_client = Client(enforce_csrf_checks=True)
    session_client.force_login(user)

    # then reads work and a write without the CSRF token is refused
    assert session_client.get("/api/listings/").status_code == 200
    response = session_client.post(
        "/api/listings/", {"title": "x", "price": "1"}, content_type="application/json"
    )
    assert response.status_code == 403
    assert not Listing.objects.exists()


def test_openapi_schema_and_docs(client) -> None:
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/classify", "/api/listings/{id}/photos/", "/api/listings/{id}/suggestions/"):
        assert path in text
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert "cdn" not in docs.content.decode().lower()
