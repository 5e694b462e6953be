"""Catalogue services: listings, photos, status transitions, suggestions, the sweeper."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from catalog.models import (
    Category,
    CategorySource,
    CategorySuggestion,
    ClassificationStatus,
    Listing,
    ListingImage,
)
from catalog.selectors import catalogue as catalogue_selectors
from catalog.selectors import registry as registry_selectors
from catalog.services.images import (
    IllegalTransition,
    ImageGone,
    image_add,
    image_status_set,
    images_requeue_stuck,
)
from catalog.services.listings import listing_create, listing_delete, taxonomy_load
from catalog.services.suggestions import ScoredCategory, image_classification_record, model_version_ensure
from catalog.uploads import UPLOAD_EMPTY, UPLOAD_TOO_LARGE, UploadRejected
from dev.embedded import free_port
from tests.catalog.review_helpers import slug_of
from tests.conftest import point_celery_app_at
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db

S = ClassificationStatus


@pytest.fixture
def broker_down() -> Iterator[None]:
    """Point the Celery app at a port where nothing listens, then restore it."""
    previous = point_celery_app_at(f"redis://127.0.0.1:{free_port()}/0")
    yield
    point_celery_app_at(previous)


def _photo_bytes() -> bytes:
    return b"\xff\xd8\xff\xe0" + b"\0" * 100


def test_listing_create_records_the_sellers_category_choice() -> None:
    # given a seller and a category from the migrated taxonomy
    shoes = Category.objects.get(slug="shoes")

    # when the seller creates listings with and without a category
    chosen = listing_create(seller=UserFactory.create(), title="Boots", category=shoes)
    open_ = listing_create(seller=UserFactory.create(), title="Thing")

    # then the choice is recorded as the seller's
    assert (chosen.category, chosen.category_source) == (shoes, CategorySource.SELLER)
    assert (open_.category, open_.category_source) == (None, CategorySource.NONE)


def test_taxonomy_is_seeded_by_the_migration_as_a_tree() -> None:
    # given the migrated database, then the top level and the clothing leaves are there
    tops = set(Category.objects.filter(parent=None).values_list("slug", flat=True))
    assert {"vehicles", "electronics", "home", "fashion", "books", "sports", "music", "kids"} <= tops
    clothing = [
        "dress",
        "hat",
        "longsleeve",
        "outwear",
        "pants",
        "shirt",
        "shoes",
        "shorts",
        "skirt",
        "t-shirt",
    ]
    fashion = Category.objects.get(slug="fashion")
    for slug in clothing:
        leaf = Category.objects.get(slug=slug)
        assert fashion.pk in catalogue_selectors.category_descendant_ids(category=fashion)
        assert catalogue_selectors.category_path(category=leaf)[0] == fashion


def test_image_add_stores_the_bytes_and_queues_after_commit(django_capture_on_commit_callbacks) -> None:
    # given a listing
    listing = ListingFactory.create()

    # when a photo is added and the transaction commits
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        image = image_add(listing=listing, upload=_photo_bytes(), filename="p.jpg")
        assert ListingImage.objects.get(pk=image.pk).status == S.PENDING

    # then the bytes are stored with their checksum and the task was handed to the broker
    image.refresh_from_db()
    assert len(callbacks) == 1
    assert image.status == S.QUEUED
    assert image.size_bytes == 104
    assert len(image.checksum) == 64
    with image.file.open("rb") as handle:
        assert handle.read() == _photo_bytes()


def test_upload_survives_a_broker_outage_and_the_sweeper_sends_it_later(
    django_capture_on_commit_callbacks, broker_down: None
) -> None:
    # given the broker is down when the upload commits
    with django_capture_on_commit_callbacks(execute=True):
        image = image_add(listing=ListingFactory.create(), upload=_photo_bytes(), filename="p.jpg")

    # then the upload succeeded and the photo waits as PENDING
    image.refresh_from_db()
    assert image.status == S.PENDING
    # and the sweeper cannot send it either while the broker is down
    assert images_requeue_stuck(older_than_s=0) == 0
    assert ListingImage.objects.get(pk=image.pk).status == S.PENDING


def test_sweeper_resends_photos_stuck_in_pending() -> None:
    # given a photo left PENDING (its publish was lost)
    image = image_add(listing=ListingFactory.create(), upload=_photo_bytes(), filename="p.jpg")
    assert image.status == S.PENDING

    # when the sweeper runs with the broker up
    sent = images_requeue_stuck(older_than_s=0)

    # then it was sent and marked QUEUED
    assert sent == 1
    assert ListingImage.objects.get(pk=image.pk).status == S.QUEUED


def test_oversized_upload_is_rejected_and_nothing_is_stored(settings) -> None:
    # given a byte limit of 1 KiB
    settings.UPLOAD_MAX_BYTES = 1024
    listing = ListingFactory.create()

    # when a 2 KiB photo is uploaded, then it is refused with the readable message
    with pytest.raises(UploadRejected) as error:
        image_add(listing=listing, upload=b"x" * 2048, filename="big.jpg")
    assert str(error.value) == UPLOAD_TOO_LARGE.format(limit_mb=0)
    # and nothing was stored
    assert ListingImage.objects.count() == 0


def test_empty_upload_is_rejected() -> None:
    with pytest.raises(UploadRejected, match=UPLOAD_EMPTY):
        image_add(listing=ListingFactory.create(), upload=b"", filename="empty.jpg")
    assert ListingImage.objects.count() == 0


def test_status_transitions_refuse_illegal_moves() -> None:
    # given a photo that is DONE
    image = image_add(listing=ListingFactory.create(), upload=_photo_bytes(), filename="p.jpg")
    assert image_status_set(image_id=image.pk, status=S.DONE)

    # when something tries to move it back to PENDING or to FAILED, or QUEUED only from PENDING
    with pytest.raises(IllegalTransition):
        image_status_set(image_id=image.pk, status=S.PENDING)
    assert not image_status_set(image_id=image.pk, status=S.FAILED, reason="x")
    assert not image_status_set(image_id=image.pk, status=S.QUEUED, only_from={S.PENDING})

    # then nothing changed
    image.refresh_from_db()
    assert (image.status, image.failure_reason) == (S.DONE, "")


def test_recording_a_suggestion_twice_keeps_one_row_and_updates_it() -> None:
    # given a photo and a model version
    image = image_add(listing=ListingFactory.create(), upload=_photo_bytes(), filename="p.jpg")
    version = model_version_ensure(name="test-version")
    top_k = [ScoredCategory("shoes", 0.8), ScoredCategory("hat", 0.1)]

    # when the same suggestion is recorded twice (a duplicate delivery), the second with new scores
    image_classification_record(image=image, model_version=version, top_k=top_k)
    image_classification_record(image=image, model_version=version, top_k=[ScoredCategory("hat", 0.7)])

    # then there is one row, holding the latest scores, and the photo is DONE
    suggestion = CategorySuggestion.objects.get(image=image)
    assert (suggestion.category.slug, suggestion.confidence) == ("hat", 0.7)
    assert ListingImage.objects.get(pk=image.pk).status == S.DONE


def test_listing_suggestion_averages_its_photos_and_never_touches_the_sellers_choice() -> None:
    # given a listing whose seller chose "dress", with two photos
    dress = Category.objects.get(slug="dress")
    listing = ListingFactory.create(category=dress, category_source=CategorySource.SELLER)
    one = image_add(listing=listing, upload=_photo_bytes(), filename="1.jpg")
    two = image_add(listing=listing, upload=_photo_bytes(), filename="2.jpg")
    version = model_version_ensure(name="test-version")

    # when one photo says shoes 0.9 / hat 0.1 and the other hat 0.6 / shoes 0.3
    image_classification_record(
        image=one, model_version=version,
        top_k=[ScoredCategory("shoes", 0.9), ScoredCategory("hat", 0.1)],
    )  # fmt: skip
    image_classification_record(
        image=two, model_version=version,
        top_k=[ScoredCategory("hat", 0.6), ScoredCategory("shoes", 0.3)],
    )  # fmt: skip

    # then the listing's suggestion is the best average (shoes 0.6), and its category is unchanged
    listing.refresh_from_db()
    assert slug_of(listing.suggested_category) == "shoes"
    assert listing.suggested_confidence == pytest.approx(0.6)
    assert (listing.category, listing.category_source) == (dress, CategorySource.SELLER)


def test_unknown_categories_are_dropped_and_an_all_unknown_top_k_fails_the_photo() -> None:
    image = image_add(listing=ListingFactory.create(), upload=_photo_bytes(), filename="p.jpg")
    version = model_version_ensure(name="test-version")

    result = image_classification_record(
        image=image, model_version=version, top_k=[ScoredCategory("no-such-slug", 0.9)]
    )

    assert result is None
    assert ListingImage.objects.get(pk=image.pk).status == S.FAILED


def test_first_model_version_becomes_active_and_later_ones_do_not() -> None:
    first = model_version_ensure(name="v1")
    second = model_version_ensure(name="v2")
    assert (first.is_active, second.is_active) == (True, False)
    assert registry_selectors.model_version_active() == first


def test_settings_keep_visibility_timeout_longer_than_the_hard_time_limit() -> None:
    from config.celery import app

    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit
    assert settings.CELERY_VISIBILITY_TIMEOUT_S > settings.CELERY_TASK_HARD_TIME_LIMIT_S
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.accept_content == ["json"]


@pytest.mark.django_db(transaction=True)
def test_recording_for_a_listing_deleted_meanwhile_raises_image_gone_and_writes_nothing() -> None:
    # given a photo loaded by a worker, whose seller then deletes the listing
    taxonomy_load()
    image = image_add(listing=ListingFactory.create(), upload=_photo_bytes(), filename="p.jpg")
    version = model_version_ensure(name="v1")
    listing_delete(listing=Listing.objects.get(pk=image.listing_id))

    # when the worker records the photo's suggestion (the foreign key fails at commit)
    with pytest.raises(ImageGone):
        image_classification_record(
            image=image, model_version=version, top_k=[ScoredCategory(slug="shoes", confidence=0.9)]
        )

    # then nothing was written
    assert not CategorySuggestion.objects.filter(image_id=image.pk).exists()
