"""Auto-accept on the live path, with a real worker: the shipped version carries its thresholds,
and a clear photo's listing gets its category (source AUTO) and shows on that category's page."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction
from django.test import Client

from catalog.models import CategorySource, ClassificationStatus, Listing, ListingImage, ModelVersion
from catalog.services.images import image_add
from classifier.autoaccept import auto_accepted
from classifier.head import LinearHead
from tests.catalog.review_helpers import slug_of
from tests.conftest import wait_for
from tests.factories import ListingFactory, UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]


def _classified(*image_ids: int) -> bool:
    done = ListingImage.objects.filter(pk__in=image_ids, status=ClassificationStatus.DONE).count()
    return done == len(image_ids)


def test_a_clear_photo_sets_its_listing_category_and_shows_on_its_category_page(
    shipped_version: ModelVersion, photo_paths: list[Path]
) -> None:
    # given a worker serving the shipped head, whose version row it registered with the
    # thresholds recorded in the head's manifest
    shipped = LinearHead.load()
    assert shipped.auto_accept.thresholds, "the shipped head must carry auto-accept thresholds"
    version = shipped_version
    assert version.name.endswith(f"+{shipped.version}")
    assert version.auto_accept_thresholds == shipped.auto_accept.thresholds
    assert version.auto_accept_precision == shipped.auto_accept.target_precision
    seller = UserFactory.create(username="auto-seller")

    # when a seller posts one listing per fixture photo without choosing a category
    listings: dict[str, Listing] = {}
    images = []
    with transaction.atomic():
        for path in photo_paths:
            listing = ListingFactory.create(seller=seller, title=f"{path.parent.name} for sale")
            images.append(image_add(listing=listing, upload=path.read_bytes(), filename=path.name))
            listings[path.parent.name] = listing
    wait_for(lambda: _classified(*(image.pk for image in images)), timeout=180)

    # then each listing was auto-accepted exactly when the model's own rule says so
    for listing in listings.values():
        listing.refresh_from_db()
        top = listing.suggested_top_k[0]
        assert listing.suggested_confidence is not None, listing.title
        expected = auto_accepted(top["slug"], listing.suggested_confidence, version.auto_accept_thresholds)
        assert (listing.category_source == CategorySource.AUTO) == expected, listing.title
        if expected:
            assert listing.category is not None and listing.category.slug == top["slug"]
            decisions = listing.category_decisions.filter(source=CategorySource.AUTO, model_version=version)
            assert decisions.exists()
        else:
            assert listing.category is None
    # and a clear photo of shoes is among them, listed on the Shoes page and under Fashion
    shoes = listings["shoes"]
    assert (shoes.category_source, slug_of(shoes.category)) == (CategorySource.AUTO, "shoes")
    client = Client()
    assert shoes.title in client.get("/", {"category": "shoes"}).content.decode()
    assert shoes.title in client.get("/", {"category": "fashion"}).content.decode()
    assert shoes.title not in client.get("/", {"category": "hat"}).content.decode()
