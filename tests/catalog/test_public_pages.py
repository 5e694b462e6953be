"""Public pages: browse (category tree with descendants, title search, pagination), a listing's
page, and thumbnails generated with Pillow and cached in storage."""

from __future__ import annotations

import io

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse
from PIL import Image

from catalog.access import REVIEWER_GROUP
from catalog.models import Category, CategorySource, Listing
from catalog.services.decisions import listing_category_set
from catalog.services.images import PROBE_LISTING_TITLE, classify_probe_create, image_add, listing_photos_add
from catalog.thumbnails import THUMBNAIL_SIZES, thumbnail_name
from catalog.views.pages import BROWSE_PAGE_SIZE
from tests import photo_bytes as pb
from tests.catalog.review_helpers import staff_user
from tests.conftest import stored_name
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db


def categorised(title: str, slug: str | None) -> Listing:
    listing = ListingFactory.create(title=title)
    if slug:
        listing_category_set(
            listing=listing,
            category=Category.objects.get(slug=slug),
            source=CategorySource.SELLER,
            actor=listing.seller,
        )
    return listing


def titles(response) -> list[str]:
    return [listing.title for listing in response.context["page"].object_list]


def test_a_category_includes_its_descendants_and_search_matches_titles(client: Client) -> None:
    # given listings in fashion › shoes, fashion itself, electronics, and none
    categorised("Leather boots", "shoes")
    categorised("Vintage outfit", "fashion")
    categorised("Old phone", "phones")
    categorised("Mystery box", None)

    # then fashion lists the shoes and the outfit, shoes only the boots
    assert sorted(titles(client.get("/", {"category": "fashion"}))) == ["Leather boots", "Vintage outfit"]
    assert titles(client.get("/", {"category": "shoes"})) == ["Leather boots"]
    # and the listing without a category is not public yet
    assert sorted(titles(client.get("/"))) == ["Leather boots", "Old phone", "Vintage outfit"]
    # and search is case-insensitive on the title, combined with the category
    assert titles(client.get("/", {"q": "BOOTS"})) == ["Leather boots"]
    assert titles(client.get("/", {"q": "phone", "category": "fashion"})) == []


def test_browse_paginates_and_hides_probes(client: Client) -> None:
    seller = UserFactory.create()
    lamps = Category.objects.get(slug="furniture")
    for i in range(BROWSE_PAGE_SIZE + 2):
        ListingFactory.create(
            seller=seller, title=f"Lamp {i:02d}", category=lamps, category_source=CategorySource.SELLER
        )
    classify_probe_create(user=seller, upload=pb.jpeg_bytes(), filename="p.jpg")

    first = client.get("/")
    second = client.get("/", {"page": 2})

    assert len(titles(first)) == BROWSE_PAGE_SIZE
    assert titles(second) == ["Lamp 01", "Lamp 00"]
    assert PROBE_LISTING_TITLE not in first.content.decode() + second.content.decode()


def test_listing_page_serves_thumbnails_never_the_upload(client: Client) -> None:
    # given a listing with two photos
    listing = categorised("Chair", "furniture")
    batch = listing_photos_add(
        listing=listing, files=[("a.jpg", pb.jpeg_bytes((2000, 1000))), ("b.jpg", pb.jpeg_bytes())]
    )

    page = client.get(reverse("catalog:listing-detail", args=[listing.pk])).content.decode()

    # then its photos point at thumbnail URLs, never at the stored files
    for image in batch.added:
        assert reverse("catalog:photo-thumbnail", args=[image.pk, "small"]) in page
        assert stored_name(image) not in page
    assert "/media/" not in page


def test_thumbnails_are_downscaled_webp_and_cached_in_storage(client: Client) -> None:
    listing = categorised("Lamp", "furniture")
    (image,) = listing_photos_add(listing=listing, files=[("a.jpg", pb.jpeg_bytes((2000, 1000)))]).added
    name = thumbnail_name(image_id=image.pk, checksum=image.checksum, size="large")
    assert not default_storage.exists(name)

    response = client.get(reverse("catalog:photo-thumbnail", args=[image.pk, "large"]))

    assert response.status_code == 200
    assert response["Content-Type"] == "image/webp"
    thumb = Image.open(io.BytesIO(response.content))
    assert (thumb.format, thumb.size) == ("WEBP", (THUMBNAIL_SIZES["large"], THUMBNAIL_SIZES["large"] // 2))
    assert default_storage.exists(name)
    assert (
        client.get(reverse("catalog:photo-thumbnail", args=[image.pk, "large"])).content == response.content
    )


def test_thumbnail_errors(client: Client) -> None:
    # a photo stored by the import command that is not an image gets the placeholder
    listing = categorised("Lamp", "furniture")
    broken = image_add(listing=listing, upload=pb.HTML_PAGE, filename="x.jpg")
    response = client.get(reverse("catalog:photo-thumbnail", args=[broken.pk, "small"]))
    assert response.status_code == 302
    assert response["Location"].endswith("unreadable-photo.svg")
    # unknown sizes, unknown photos and probe photos are 404
    assert client.get(f"/photos/{broken.pk}/huge.webp").status_code == 404
    assert client.get("/photos/999999/small.webp").status_code == 404
    probe = classify_probe_create(user=UserFactory.create(), upload=pb.jpeg_bytes(), filename="p.jpg")
    assert client.get(reverse("catalog:photo-thumbnail", args=[probe.pk, "small"])).status_code == 404
    assert client.get(reverse("catalog:listing-detail", args=[probe.listing_id])).status_code == 404


def test_only_published_listings_with_a_category_are_public_and_their_seller_previews_the_rest(
    client: Client,
) -> None:
    # given a draft with a category, a published listing without one, and a public listing
    seller = UserFactory.create()
    shoes = Category.objects.get(slug="shoes")
    chosen = {"category": shoes, "category_source": CategorySource.SELLER}
    draft = ListingFactory.create(seller=seller, title="Draft boots", published_at=None, **chosen)
    waiting = ListingFactory.create(seller=seller, title="Waiting box")
    public = ListingFactory.create(seller=seller, title="Public boots", **chosen)
    photos = {
        listing.pk: image_add(listing=listing, upload=pb.jpeg_bytes(), filename="p.jpg")
        for listing in (draft, waiting, public)
    }

    # then a visitor finds only the public one, and its pages and photos alone
    assert titles(client.get("/")) == ["Public boots"]
    for listing in (draft, waiting):
        assert client.get(reverse("catalog:listing-detail", args=[listing.pk])).status_code == 404
        photo = photos[listing.pk]
        assert client.get(reverse("catalog:photo-thumbnail", args=[photo.pk, "small"])).status_code == 404
    assert client.get(reverse("catalog:listing-detail", args=[public.pk])).status_code == 200

    # and their seller previews the others, marked as not public, and sees their photos
    client.force_login(seller)
    page = client.get(reverse("catalog:listing-detail", args=[draft.pk]))
    assert page.status_code == 200 and "it is a draft" in page.content.decode()
    assert (
        "not public until it has a category"
        in client.get(reverse("catalog:listing-detail", args=[waiting.pk])).content.decode()
    )
    response = client.get(reverse("catalog:photo-thumbnail", args=[photos[draft.pk].pk, "small"]))
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("private")
    response = client.get(reverse("catalog:photo-thumbnail", args=[photos[public.pk].pk, "small"]))
    assert response["Cache-Control"].startswith("public")

    # and reviewers see the photos of the published one still without a category, not the draft's
    client.force_login(staff_user(groups=[REVIEWER_GROUP]))
    assert (
        client.get(reverse("catalog:photo-thumbnail", args=[photos[waiting.pk].pk, "small"])).status_code
        == 200
    )
    assert (
        client.get(reverse("catalog:photo-thumbnail", args=[photos[draft.pk].pk, "small"])).status_code == 404
    )
