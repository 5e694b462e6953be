"""Seller pages through Django's test client: sign-up, edit, the suggestion panel, the category
choice, 404s for other sellers' listings and CSRF on every form (the listing form of a new
listing: tests/catalog/test_listing_form.py)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from catalog.models import Category, CategorySource, ClassificationStatus, Listing, ListingImage
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.images import image_classification_fail, image_status_set, listing_photos_add
from catalog.services.suggestions import ScoredCategory, image_classification_record, model_version_ensure
from catalog.uploads import UPLOAD_NOT_AN_IMAGE
from catalog.views.seller import SUGGESTION_POLL_MS
from tests import photo_bytes as pb
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password"


def upload(name: str, data: bytes, content_type: str = "image/jpeg"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type=content_type)


def path_of(slug: str) -> str:
    return " › ".join(
        c.name for c in catalogue_selectors.category_path(category=Category.objects.get(slug=slug))
    )


def record_suggestion(image: ListingImage, scores: list[tuple[str, float]]) -> None:
    version = model_version_ensure(name="test-model")
    image_classification_record(
        image=image,
        model_version=version,
        top_k=[ScoredCategory(slug=slug, confidence=conf) for slug, conf in scores],
    )


@pytest.fixture
def seller_client(client: Client):
    user = UserFactory.create()
    client.force_login(user)
    client.user = user  # type: ignore[attr-defined]
    return client


def listing_with_photo(seller=None) -> tuple[Listing, ListingImage]:
    listing = ListingFactory.create(**({"seller": seller} if seller else {}))
    (image,) = listing_photos_add(listing=listing, files=[("a.jpg", pb.jpeg_bytes())]).added
    return listing, image


def test_signup_creates_a_seller_and_logs_them_in(client: Client) -> None:
    # when a visitor signs up
    response = client.post(
        reverse("catalog:signup"),
        {"username": "maria", "email": "", "password1": PASSWORD, "password2": PASSWORD},
    )

    # then they land on "My listings", logged in, with a hashed password
    assert response.status_code == 302
    assert response["Location"] == reverse("catalog:seller-dashboard")
    user = get_user_model().objects.get(username="maria")
    assert user.check_password(PASSWORD)
    assert client.get(reverse("catalog:seller-dashboard")).status_code == 200


def test_login_and_logout(client: Client) -> None:
    UserFactory.create(username="sam")
    response = client.post(reverse("login"), {"username": "sam", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("catalog:seller-dashboard")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("catalog:seller-dashboard")).status_code == 302


def test_seller_pages_need_a_login(client: Client) -> None:
    response = client.get(reverse("catalog:listing-create"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_suggestion_panel_polls_while_pending_then_shows_the_top_3_with_paths(seller_client: Client) -> None:
    # given a listing whose photo the worker has not answered yet
    listing, image = listing_with_photo(seller_client.user)  # type: ignore[attr-defined]
    url = reverse("catalog:listing-suggestions", args=[listing.pk])

    # then the panel says so and asks htmx to poll again
    pending = seller_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'data-suggestion-state="pending"' in pending
    assert f'hx-trigger="load delay:{SUGGESTION_POLL_MS}ms"' in pending
    assert "Analysing your photo" in pending

    # when the worker has answered
    record_suggestion(
        image, [("shoes", 0.7), ("hat", 0.2), ("dress", 0.05), ("pants", 0.03), ("skirt", 0.02)]
    )
    done = seller_client.get(url, HTTP_HX_REQUEST="true").content.decode()

    # then the top 3 are shown with their path and confidence, and polling stops
    assert 'data-suggestion-state="done"' in done
    assert "hx-trigger" not in done
    paths = re.findall(r'<span class="suggestion-path">([^<]+)</span>', done)
    assert paths == [path_of("shoes"), path_of("hat"), path_of("dress")]
    assert path_of("shoes") == "Fashion › Shoes"
    assert "70%" in done
    # and the photo's status badge is updated out of band
    assert f'id="photo-status-{image.pk}" hx-swap-oob="true"' in done


def test_a_failed_photo_shows_its_reason_and_opens_the_category_tree(seller_client: Client) -> None:
    listing, image = listing_with_photo(seller_client.user)  # type: ignore[attr-defined]
    image_classification_fail(image=image, reason="The photo could not be decoded.")

    page = seller_client.get(reverse("catalog:listing-suggestions", args=[listing.pk])).content.decode()

    assert 'data-suggestion-state="failed"' in page
    assert "We could not analyse photo 1: The photo could not be decoded." in page
    assert '<details class="category-picker" open>' in page


def test_accepting_a_suggestion_sets_the_category_as_the_sellers_choice(seller_client: Client) -> None:
    listing, image = listing_with_photo(seller_client.user)  # type: ignore[attr-defined]
    record_suggestion(image, [("shoes", 0.9)])
    shoes = Category.objects.get(slug="shoes")

    response = seller_client.post(
        reverse("catalog:listing-category", args=[listing.pk]), {"category": shoes.pk}, HTTP_HX_REQUEST="true"
    )

    listing.refresh_from_db()
    assert response.status_code == 200
    assert (listing.category, listing.category_source) == (shoes, CategorySource.SELLER)
    assert "Fashion › Shoes" in response.content.decode()


def test_an_unknown_category_is_refused(seller_client: Client) -> None:
    listing, _ = listing_with_photo(seller_client.user)  # type: ignore[attr-defined]
    response = seller_client.post(
        reverse("catalog:listing-category", args=[listing.pk]), {"category": "999999"}, HTTP_HX_REQUEST="true"
    )
    listing.refresh_from_db()
    assert response.status_code == 400
    assert listing.category is None


def test_photos_can_be_added_moved_and_removed_on_the_edit_page(seller_client: Client) -> None:
    listing, first = listing_with_photo(seller_client.user)  # type: ignore[attr-defined]

    # when a second photo and a bad file are added through htmx
    response = seller_client.post(
        reverse("catalog:photos-add", args=[listing.pk]),
        {"photos": [upload("second.jpg", pb.jpeg_bytes()), upload("x.jpg", pb.PDF_DOCUMENT)]},
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert f"x.jpg</strong>: {UPLOAD_NOT_AN_IMAGE}" in body
    assert 'id="suggestions"' in body and 'hx-swap-oob="true"' in body
    second = listing.images.exclude(pk=first.pk).get()

    # and the second is moved first, then the first removed
    seller_client.post(reverse("catalog:photo-move", args=[listing.pk, second.pk]), {"direction": "earlier"})
    assert list(listing.images.order_by("position").values_list("pk", flat=True)) == [second.pk, first.pk]
    seller_client.post(reverse("catalog:photo-delete", args=[listing.pk, first.pk]))
    assert list(listing.images.values_list("pk", flat=True)) == [second.pk]


def test_another_seller_gets_404_everywhere_and_nothing_changes(client: Client) -> None:
    # given a listing of one seller, and another seller logged in
    listing, image = listing_with_photo()
    client.force_login(UserFactory.create())
    shoes = Category.objects.get(slug="shoes")
    pk = listing.pk

    # then every seller page of that listing answers 404
    gets = ["catalog:listing-edit", "catalog:listing-delete", "catalog:listing-suggestions"]
    for name in gets:
        assert client.get(reverse(name, args=[pk])).status_code == 404, name
    posts = [
        (reverse("catalog:listing-edit", args=[pk]), {"title": "Mine now", "price": "1"}),
        (reverse("catalog:listing-delete", args=[pk]), {}),
        (reverse("catalog:photos-add", args=[pk]), {"photos": [upload("a.jpg", pb.jpeg_bytes())]}),
        (reverse("catalog:photo-delete", args=[pk, image.pk]), {}),
        (reverse("catalog:photo-move", args=[pk, image.pk]), {"direction": "later"}),
        (reverse("catalog:photos-reorder", args=[pk]), {"order": str(image.pk)}),
        (reverse("catalog:listing-category", args=[pk]), {"category": shoes.pk}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 404, url

    # and nothing changed
    listing.refresh_from_db()
    assert (listing.title, listing.category, listing.images.count()) == (
        "Item " + listing.title.split()[-1],
        None,
        1,
    )
    # and it is not on their dashboard
    assert listing.title not in client.get(reverse("catalog:seller-dashboard")).content.decode()


def test_csrf_is_enforced_on_every_form() -> None:
    # given a logged-in seller whose client checks CSRF like a browser
    user = UserFactory.create()
    listing, image = listing_with_photo(user)
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(user)
    posts = [
        (reverse("catalog:listing-create"), {"title": "x", "price": "1"}),
        (reverse("catalog:listing-edit", args=[listing.pk]), {"title": "x", "price": "1"}),
        (reverse("catalog:listing-delete", args=[listing.pk]), {}),
        (reverse("catalog:photos-add", args=[listing.pk]), {}),
        (reverse("catalog:photo-delete", args=[listing.pk, image.pk]), {}),
        (reverse("catalog:photo-move", args=[listing.pk, image.pk]), {}),
        (reverse("catalog:photos-reorder", args=[listing.pk]), {}),
        (reverse("catalog:listing-category", args=[listing.pk]), {}),
        (reverse("logout"), {}),
    ]

    # then a POST without the token is refused
    for url, data in posts:
        assert csrf_client.post(url, data).status_code == 403, url
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post(reverse("catalog:signup"), {}).status_code == 403
    assert anonymous.post(reverse("login"), {}).status_code == 403

    # and with the token from the page it goes through
    page = csrf_client.get(reverse("catalog:listing-edit", args=[listing.pk]))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)  # type: ignore[union-attr]
    response = csrf_client.post(
        reverse("catalog:listing-edit", args=[listing.pk]),
        {"title": "Renamed", "price": "2", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    listing.refresh_from_db()
    assert listing.title == "Renamed"


def test_dashboard_shows_each_listing_with_its_photo_states(seller_client: Client) -> None:
    listing, image = listing_with_photo(seller_client.user)  # type: ignore[attr-defined]
    image_status_set(image_id=image.pk, status=ClassificationStatus.QUEUED)

    page = seller_client.get(reverse("catalog:seller-dashboard")).content.decode()

    assert listing.title in page
    assert "Photo 1: Analysing" in page
    assert "Not public: needs a category" in page


def test_polling_slows_down_when_the_worker_takes_long(seller_client: Client) -> None:
    # given a photo that has waited for the worker for five minutes
    from datetime import timedelta

    from django.utils import timezone

    listing, image = listing_with_photo(seller_client.user)  # type: ignore[attr-defined]
    ListingImage.objects.filter(pk=image.pk).update(status_changed_at=timezone.now() - timedelta(minutes=5))

    # then the panel polls every 10 s and offers the category tree
    page = seller_client.get(reverse("catalog:listing-suggestions", args=[listing.pk])).content.decode()
    assert 'hx-trigger="load delay:10000ms"' in page
    assert "data-slow" in page
