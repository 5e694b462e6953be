"""The listing form of a new listing: the first photo creates a draft (seen by its seller only),
the category field fills with de-duplicated suggestions, the top one is preselected when
auto-accept chose it, photos that disagree are named, and publishing needs a category."""

from __future__ import annotations

import re
from functools import partial

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from catalog.forms import PHOTOS_REQUIRED
from catalog.models import Category, CategoryDecision, CategorySource, Listing, ListingImage
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.images import ListingRuleBroken, image_add, listing_photos_add
from catalog.services.listings import listing_create
from catalog.services.publishing import (
    LISTING_ALREADY_PUBLISHED,
    LISTING_NEEDS_A_CATEGORY,
    LISTING_NEEDS_PHOTOS,
    listing_publish,
)
from catalog.uploads import UPLOAD_NOT_AN_IMAGE
from catalog.views.drafts import LISTING_PUBLISHED
from tests import photo_bytes as pb
from tests.catalog.review_helpers import record
from tests.factories import ListingFactory, ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

DETAILS = {"title": "Leather boots", "price": "40", "description": "Worn twice."}


def upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/jpeg")


@pytest.fixture
def seller_client(client: Client) -> Client:
    user = UserFactory.create()
    client.force_login(user)
    client.user = user  # type: ignore[attr-defined]
    return client


def draft_of(client: Client, *photos: bytes) -> tuple[Listing, list[ListingImage]]:
    files = [upload(f"p{i}.jpg", data) for i, data in enumerate(photos or [pb.jpeg_bytes()])]
    response = client.post(reverse("catalog:draft-photos"), {"photos": files}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200, response.content
    listing = Listing.objects.get(seller=client.user)  # type: ignore[attr-defined]
    return listing, list(listing.images.order_by("position"))


def radios_checked(html: str) -> list[str]:
    return re.findall(r'name="category" value="(\d+)" checked', html)


def test_the_first_photos_create_a_draft_that_only_its_seller_sees(seller_client: Client) -> None:
    # when a seller drops a photo and an HTML page named .jpg on the empty form
    response = seller_client.post(
        reverse("catalog:draft-photos"),
        {"photos": [upload("front.jpg", pb.jpeg_bytes()), upload("page.jpg", pb.HTML_PAGE)]},
        HTTP_HX_REQUEST="true",
    )

    # then a draft holds the good photo, queued for the worker, and the refused file is named
    listing = Listing.objects.get()
    assert (listing.published_at, listing.images.count(), listing.title) == (None, 1, "")
    body = response.content.decode()
    assert f"<strong>page.jpg</strong>: {UPLOAD_NOT_AN_IMAGE}" in body
    # and the form learns the draft (out of band), polls its category field, and moves to its address
    assert f'<input type="hidden" name="draft" value="{listing.pk}">' in body
    assert 'id="suggestions"' in body and 'data-suggestion-state="pending"' in body
    assert response["HX-Replace-Url"] == reverse("catalog:listing-edit", args=[listing.pk])
    # and nobody else sees it: not in browse, its page 404 for a visitor, "Draft" on the dashboard
    assert listing not in catalogue_selectors.listings_public()
    assert Client().get(reverse("catalog:listing-detail", args=[listing.pk])).status_code == 404
    assert "Draft" in seller_client.get(reverse("catalog:seller-dashboard")).content.decode()


def test_only_bad_files_create_no_draft(seller_client: Client) -> None:
    bad = {"photos": [upload("page.jpg", pb.HTML_PAGE)]}
    response = seller_client.post(reverse("catalog:draft-photos"), bad, HTTP_HX_REQUEST="true")
    assert UPLOAD_NOT_AN_IMAGE in response.content.decode()
    response = seller_client.post(reverse("catalog:draft-photos"), bad)
    assert response.status_code == 400
    assert not Listing.objects.exists() and not ListingImage.objects.exists()


def test_without_javascript_the_photos_open_the_drafts_form(seller_client: Client) -> None:
    response = seller_client.post(
        reverse("catalog:draft-photos"), {"photos": [upload("a.jpg", pb.jpeg_bytes())]}
    )
    listing = Listing.objects.get()
    assert response["Location"] == reverse("catalog:listing-edit", args=[listing.pk])
    page = seller_client.get(response["Location"]).content.decode()
    assert "Publish listing" in page and f'name="draft" value="{listing.pk}"' in page


def test_publishing_needs_a_category(seller_client: Client) -> None:
    # given a draft whose photo the model scored below any threshold
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={})
    listing, (image,) = draft_of(seller_client)
    record(image, [("shoes", 0.55), ("hat", 0.3)], model_version=active)

    # when the seller publishes without choosing a category
    response = seller_client.post(reverse("catalog:listing-create"), {**DETAILS, "draft": listing.pk})

    # then the form is shown again with the reason next to the category, and nothing is public
    assert response.status_code == 400
    assert LISTING_NEEDS_A_CATEGORY in response.content.decode()
    listing.refresh_from_db()
    assert (listing.published_at, listing.category) == (None, None)
    assert not CategoryDecision.objects.exists()

    # when they pick the first suggestion and publish again
    shoes = Category.objects.get(slug="shoes")
    response = seller_client.post(
        reverse("catalog:listing-create"), {**DETAILS, "draft": listing.pk, "category": shoes.pk}
    )

    # then it is public under that category, chosen by the seller, with its details
    assert response.status_code == 302
    listing.refresh_from_db()
    assert listing.published_at is not None
    assert (listing.category, listing.category_source, listing.title) == (
        shoes,
        CategorySource.SELLER,
        "Leather boots",
    )
    assert listing in catalogue_selectors.listings_public()
    page = seller_client.get(response["Location"]).content.decode()
    assert LISTING_PUBLISHED.format(path="Fashion › Shoes") in page


def test_the_service_refuses_to_publish_without_a_category_or_a_photo_or_twice() -> None:
    seller = UserFactory.create()
    draft = ListingFactory.create(seller=seller, title="", description="", published_at=None)
    shoes = Category.objects.get(slug="shoes")
    publish = partial(listing_publish, listing=draft, title="Boots", description="", price=None)

    with pytest.raises(ListingRuleBroken, match=LISTING_NEEDS_PHOTOS):
        publish(seller=seller, category=shoes)
    image_add(listing=draft, upload=pb.jpeg_bytes(), filename="a.jpg")
    with pytest.raises(ListingRuleBroken, match=LISTING_NEEDS_A_CATEGORY):
        publish(seller=seller, category=None)
    with pytest.raises(PermissionDenied):
        publish(seller=UserFactory.create(), category=shoes)
    draft.refresh_from_db()
    assert (draft.published_at, draft.category, draft.title) == (None, None, "")

    publish(seller=seller, category=shoes)
    with pytest.raises(ListingRuleBroken, match=LISTING_ALREADY_PUBLISHED):
        publish(seller=seller, category=shoes)


def test_the_top_suggestion_is_preselected_when_auto_accept_chose_it(seller_client: Client) -> None:
    # given an active version whose shoes threshold is 0.8, and a draft's photo at 0.9 shoes
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.8})
    listing, (image,) = draft_of(seller_client)
    record(image, [("shoes", 0.9), ("hat", 0.05)], model_version=active)
    shoes = Category.objects.get(slug="shoes")

    # then auto-accept set it, and the category field offers it checked, marked preselected
    listing.refresh_from_db()
    assert (listing.category, listing.category_source) == (shoes, CategorySource.AUTO)
    field = seller_client.get(reverse("catalog:listing-suggestions", args=[listing.pk])).content.decode()
    assert radios_checked(field) == [str(shoes.pk)]
    assert "data-preselected" in field

    # when the seller keeps it and publishes, it stays an auto-accepted category
    response = seller_client.post(
        reverse("catalog:listing-edit", args=[listing.pk]), {**DETAILS, "category": shoes.pk}
    )
    assert response.status_code == 302
    listing.refresh_from_db()
    assert listing.published_at is not None
    assert (listing.category, listing.category_source) == (shoes, CategorySource.AUTO)
    assert list(CategoryDecision.objects.values_list("action", flat=True)) == ["auto_accepted"]


def test_below_its_threshold_nothing_is_preselected_and_a_pick_survives_polling(
    seller_client: Client,
) -> None:
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.95})
    listing, (image, _) = draft_of(seller_client, pb.jpeg_bytes(), pb.jpeg_bytes((40, 40)))
    record(image, [("shoes", 0.9), ("hat", 0.05)], model_version=active)
    url = reverse("catalog:listing-suggestions", args=[listing.pk])

    field = seller_client.get(url).content.decode()
    assert radios_checked(field) == [] and "data-preselected" not in field
    # (the second photo still waits: the field polls, sending the seller's pick back)
    assert 'hx-include="#suggestions"' in field
    hat = Category.objects.get(slug="hat")
    assert radios_checked(seller_client.get(url, {"category": hat.pk}).content.decode()) == [str(hat.pk)]


def test_publishing_someone_elses_draft_is_refused(seller_client: Client) -> None:
    other = Client()
    other.force_login(UserFactory.create())
    listing, _ = draft_of(seller_client)
    shoes = Category.objects.get(slug="shoes")

    response = other.post(
        reverse("catalog:listing-create"), {**DETAILS, "draft": listing.pk, "category": shoes.pk}
    )

    assert response.status_code == 400 and PHOTOS_REQUIRED in response.content.decode()
    assert other.get(reverse("catalog:listing-edit", args=[listing.pk])).status_code == 404
    listing.refresh_from_db()
    assert (listing.published_at, listing.category) == (None, None)


def test_parent_and_child_are_one_option_and_tiny_alternatives_are_hidden(seller_client: Client) -> None:
    # given a photo scored "Vehicles 47 %", "Vehicles › Cars 47 %", motorcycles 5 %, home 1 %, kitchen 0 %
    active = ModelVersionFactory.create(is_active=True)
    listing, (image,) = draft_of(seller_client)
    record(
        image,
        [("vehicles", 0.4702), ("cars", 0.4689), ("motorcycles", 0.05), ("home", 0.01), ("kitchen", 0.0)],
        model_version=active,
    )

    # then the field offers cars and motorcycles only, and the listing's derived top-k agrees
    field = seller_client.get(reverse("catalog:listing-suggestions", args=[listing.pk])).content.decode()
    paths = re.findall(r'<span class="suggestion-path">([^<]+)</span>', field)
    assert paths == ["Vehicles › Cars", "Vehicles › Motorcycles and scooters"]
    listing.refresh_from_db()
    # (kitchen lies under home: one of them only)
    assert [entry["slug"] for entry in listing.suggested_top_k] == ["cars", "motorcycles", "home"]
    assert listing.suggested_margin == pytest.approx(0.4689 - 0.05)


def test_confident_photos_that_disagree_are_named_and_never_auto_accepted(seller_client: Client) -> None:
    # given a bundle: a laptop and a toaster photo, each confident, with low thresholds
    active = ModelVersionFactory.create(
        is_active=True, auto_accept_thresholds={"computers": 0.3, "kitchen": 0.3}
    )
    listing, (laptop, toaster) = draft_of(seller_client, pb.jpeg_bytes(), pb.jpeg_bytes((40, 40)))
    record(laptop, [("computers", 0.9), ("kitchen", 0.05)], model_version=active)
    record(toaster, [("kitchen", 0.8), ("computers", 0.1)], model_version=active)

    # then the listing knows its photos disagree, and auto-accept left it alone
    listing.refresh_from_db()
    assert listing.photos_disagree
    assert (listing.category, listing.category_source) == (None, CategorySource.NONE)
    # and the field says so, with each photo's own top-1, and preselects nothing
    field = seller_client.get(reverse("catalog:listing-suggestions", args=[listing.pk])).content.decode()
    assert "Your photos seem to show different items" in field
    assert re.findall(r'data-photo-top="([a-z-]+)"', field) == ["computers", "kitchen"]
    assert radios_checked(field) == []


def test_a_published_listings_panel_also_names_disagreeing_photos(seller_client: Client) -> None:
    active = ModelVersionFactory.create(is_active=True)
    listing = listing_create(seller=seller_client.user, title="Bundle")  # type: ignore[attr-defined]
    first, second = listing_photos_add(
        listing=listing, files=[("a.jpg", pb.jpeg_bytes()), ("b.jpg", pb.jpeg_bytes((40, 40)))]
    ).added
    record(first, [("computers", 0.9)], model_version=active)
    record(second, [("bags", 0.9)], model_version=active)

    panel = seller_client.get(reverse("catalog:listing-suggestions", args=[listing.pk])).content.decode()

    assert "Your photos seem to show different items" in panel
    assert "Not public yet" in panel
