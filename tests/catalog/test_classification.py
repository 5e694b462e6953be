"""Claiming photos for classification (`catalog.services.classification`) and deriving listings'
suggestions (`catalog.services.suggestions`), without a worker."""

from __future__ import annotations

import pytest

from catalog.models import ClassificationStatus, ListingImage, ModelVersion
from catalog.services import classification, suggestions
from tests.factories import ListingFactory, ListingImageFactory

pytestmark = pytest.mark.django_db


def _photos(count: int, **fields: object) -> list[ListingImage]:
    listing = ListingFactory.create()
    return [
        ListingImageFactory.create(listing=listing, file=f"claim/{n}.jpg", position=n, **fields)
        for n in range(count)
    ]


def _claim(image_ids: list[int]) -> classification.PhotoClaim:
    return classification.photos_claim(image_ids=image_ids, model_version="claim-v1", backbone_version="b")


def _deliveries(*images: ListingImage) -> list[int]:
    return [ListingImage.objects.get(pk=image.pk).deliveries for image in images]


def test_a_claim_counts_fresh_photos_and_leaves_a_redelivered_one_for_a_claim_of_its_own() -> None:
    # given two fresh photos, one whose earlier delivery did not finish, and a deleted one
    fresh_one, fresh_two = _photos(2)
    (crashed,) = _photos(1, deliveries=1)
    deleted_id = _photos(1)[0].pk
    ListingImage.objects.filter(pk=deleted_id).delete()

    # when they are claimed together
    claim = _claim([fresh_one.pk, fresh_two.pk, crashed.pk, deleted_id])

    # then the fresh ones are ready with one delivery counted, the redelivered one is left as it
    # was, the deleted one is gone, and the version was created (the first one, active)
    assert [photo.image_id for photo in claim.ready] == [fresh_one.pk, fresh_two.pk]
    assert (claim.redelivered, claim.gone, claim.set_aside) == ([crashed.pk], [deleted_id], {})
    assert _deliveries(fresh_one, fresh_two, crashed) == [1, 1, 1]
    assert ModelVersion.objects.get(name="claim-v1").is_active

    # when the redelivered photo is claimed alone, then it is ready and its delivery counted
    alone = _claim([crashed.pk])
    assert [photo.image_id for photo in alone.ready] == [crashed.pk]
    assert _deliveries(crashed) == [2]


def test_a_photo_claimed_alone_past_the_delivery_limit_is_set_aside(settings) -> None:
    settings.CLASSIFY_MAX_DELIVERIES = 3
    (crashed,) = _photos(1, deliveries=3)

    claim = _claim([crashed.pk])

    assert (claim.ready, claim.set_aside) == ([], {crashed.pk: 3})


def test_a_photo_done_for_the_version_is_already_done_and_not_counted() -> None:
    (image,) = _photos(1)
    version = suggestions.model_version_ensure(name="claim-v1", backbone_version="b")
    suggestions.image_classification_record(
        image=image, model_version=version, top_k=[suggestions.ScoredCategory("dress", 0.9)]
    )
    before = _deliveries(image)

    claim = _claim([image.pk])

    assert (claim.already_done, claim.ready) == ([image.pk], [])
    assert _deliveries(image) == before
    assert ListingImage.objects.get(pk=image.pk).status == ClassificationStatus.DONE


def test_the_listing_derivation_is_pure_given_the_tree(django_assert_num_queries) -> None:
    # given two listings' photos' top-k and the tree (cars under vehicles)
    parents = {"vehicles": None, "cars": "vehicles", "dress": None}
    top_k = {
        1: [[{"slug": "cars", "confidence": 0.6}, {"slug": "vehicles", "confidence": 0.3}]],
        2: [],
    }

    # when derived, then no query runs, one entry per branch stays and a listing without
    # classified photos gets its fields cleared
    with django_assert_num_queries(0):
        derived = suggestions.listing_suggestions_derive(top_k, parents=parents)
    assert derived[0].slug == "cars" and [e["slug"] for e in derived[0].top_k] == ["cars"]
    assert derived[1] == suggestions.ListingSuggestionFields(2, None, None)
