"""Seller-facing services: validated photo upload, batches, removal, order, the category choice."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from PIL import Image

from catalog.models import Category, CategorySource, ClassificationStatus, Listing, ListingImage
from catalog.services.decisions import listing_category_set
from catalog.services.images import (
    LISTING_NEEDS_A_PHOTO,
    LISTING_TOO_MANY_PHOTOS,
    ListingRuleBroken,
    RejectedPhoto,
    classify_probe_create,
    listing_image_delete,
    listing_images_reorder,
    listing_photo_upload,
    listing_photos_add,
)
from catalog.services.listings import listing_delete
from catalog.uploads import UPLOAD_NOT_AN_IMAGE, UploadRejected
from tests import photo_bytes as pb
from tests.conftest import stored_name
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_listing_photo_upload_stores_a_clean_copy_and_queues_it_after_commit(
    django_capture_on_commit_callbacks,
) -> None:
    # given a listing and a phone photo with GPS in its EXIF
    listing = ListingFactory.create()
    data = pb.jpeg_bytes((80, 40), exif=pb.gps_exif())

    # when it is uploaded and the transaction commits
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        image = listing_photo_upload(listing=listing, upload=data, filename="IMG_1.jpg")

    # then the stored file is the re-encoded upright copy, without EXIF, and it was queued
    image.refresh_from_db()
    assert len(callbacks) == 1
    assert image.status == ClassificationStatus.QUEUED
    with default_storage.open(stored_name(image), "rb") as handle:
        stored = handle.read()
    assert image.size_bytes == len(stored)
    assert Image.open(io.BytesIO(stored)).size == (40, 80)
    assert b"PhoneMaker" not in stored


def test_a_batch_keeps_the_good_photos_and_names_each_bad_one() -> None:
    # given a listing and three files, the middle one an HTML page named .jpg
    listing = ListingFactory.create()
    files = [
        ("a.jpg", pb.jpeg_bytes()),
        ("page.jpg", pb.HTML_PAGE),
        ("b.png", pb.encoded(Image.new("RGB", (20, 20)), "PNG")),
    ]

    # when they are uploaded together
    batch = listing_photos_add(listing=listing, files=files)

    # then two are stored in order and the bad one is reported with its reason
    assert [image.position for image in batch.added] == [0, 1]
    assert batch.rejected == [RejectedPhoto(filename="page.jpg", message=UPLOAD_NOT_AN_IMAGE)]
    assert ListingImage.objects.filter(listing=listing).count() == 2


def test_an_eleventh_photo_is_refused() -> None:
    listing = ListingFactory.create()
    listing_photos_add(listing=listing, files=[(f"{i}.jpg", pb.jpeg_bytes()) for i in range(10)])

    with pytest.raises(UploadRejected) as error:
        listing_photo_upload(listing=listing, upload=pb.jpeg_bytes(), filename="11.jpg")

    assert str(error.value) == LISTING_TOO_MANY_PHOTOS.format(limit=10)
    assert listing.images.count() == 10


def test_removing_a_photo_renumbers_the_rest_and_the_last_one_stays() -> None:
    # given a listing with three photos
    listing = ListingFactory.create()
    first, second, third = listing_photos_add(
        listing=listing, files=[(f"{i}.jpg", pb.jpeg_bytes()) for i in range(3)]
    ).added

    # when the first two are removed
    listing_image_delete(image=first)
    listing_image_delete(image=second)

    # then the third is now first, and it cannot be removed
    assert list(listing.images.values_list("pk", "position")) == [(third.pk, 0)]
    with pytest.raises(ListingRuleBroken) as error:
        listing_image_delete(image=ListingImage.objects.get(pk=third.pk))
    assert str(error.value) == LISTING_NEEDS_A_PHOTO
    assert listing.images.count() == 1


def test_reorder_needs_every_photo_exactly_once() -> None:
    listing = ListingFactory.create()
    a, b, c = listing_photos_add(
        listing=listing, files=[(f"{i}.jpg", pb.jpeg_bytes()) for i in range(3)]
    ).added

    listing_images_reorder(listing=listing, image_ids=[c.pk, a.pk, b.pk])
    assert list(listing.images.order_by("position").values_list("pk", flat=True)) == [c.pk, a.pk, b.pk]

    other = ListingFactory.create()
    (foreign,) = listing_photos_add(listing=other, files=[("x.jpg", pb.jpeg_bytes())]).added
    for bad in ([c.pk, a.pk], [c.pk, a.pk, a.pk], [c.pk, a.pk, foreign.pk]):
        with pytest.raises(ValueError):
            listing_images_reorder(listing=listing, image_ids=bad)
    assert list(listing.images.order_by("position").values_list("pk", flat=True)) == [c.pk, a.pk, b.pk]


def test_the_seller_sets_the_category_and_a_machine_never_overwrites_it() -> None:
    # given a listing and two categories
    listing = ListingFactory.create()
    shoes, hat = Category.objects.get(slug="shoes"), Category.objects.get(slug="hat")

    # when its seller chooses shoes, then a machine tries hat
    assert listing_category_set(
        listing=listing, category=shoes, source=CategorySource.SELLER, actor=listing.seller
    )
    assert not listing_category_set(listing=listing, category=hat, source=CategorySource.AUTO, actor=None)

    # then the seller's choice stands
    listing.refresh_from_db()
    assert (listing.category, listing.category_source) == (shoes, CategorySource.SELLER)


def test_only_the_seller_may_choose_as_seller_and_only_staff_as_reviewer() -> None:
    listing = ListingFactory.create()
    shoes = Category.objects.get(slug="shoes")

    with pytest.raises(PermissionDenied):
        listing_category_set(
            listing=listing, category=shoes, source=CategorySource.SELLER, actor=UserFactory.create()
        )
    with pytest.raises(PermissionDenied):
        listing_category_set(
            listing=listing, category=shoes, source=CategorySource.REVIEWER, actor=listing.seller
        )

    listing.refresh_from_db()
    assert (listing.category, listing.category_source) == (None, CategorySource.NONE)


def test_a_probe_is_a_hidden_listing_of_the_caller() -> None:
    user = UserFactory.create()

    image = classify_probe_create(user=user, upload=pb.jpeg_bytes(), filename="q.jpg")

    probe = Listing.objects.get(pk=image.listing_id)
    assert (probe.seller, probe.is_probe, probe.images.count()) == (user, True, 1)
    with pytest.raises(UploadRejected):
        classify_probe_create(user=user, upload=pb.HTML_PAGE, filename="q.jpg")
    assert Listing.objects.filter(seller=user).count() == 1


def test_deleting_a_listing_removes_its_stored_files(django_capture_on_commit_callbacks) -> None:
    listing = ListingFactory.create()
    (image,) = listing_photos_add(listing=listing, files=[("a.jpg", pb.jpeg_bytes())]).added
    name = stored_name(image)
    assert default_storage.exists(name)

    with django_capture_on_commit_callbacks(execute=True):
        listing_delete(listing=listing)

    assert not Listing.objects.filter(pk=listing.pk).exists()
    assert not default_storage.exists(name)
