"""Category decisions: one audited service for every path that sets a listing's category,
auto-accept above a version's thresholds, and no machine ever overwriting a person."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from catalog.models import (
    Category,
    CategoryDecision,
    CategorySource,
    ClassificationStatus,
    DecisionAction,
    Listing,
    ListingImage,
)
from catalog.services.decisions import (
    listing_category_set,
    review_accept,
    review_bulk_accept,
    review_correct,
    review_reject,
)
from catalog.services.images import image_add
from catalog.services.listings import listing_create
from tests.catalog.review_helpers import classified_listing, photo_bytes, record, slug_of, staff_user
from tests.factories import ListingFactory, ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

SHOES_SURE = [("shoes", 0.96), ("hat", 0.02), ("dress", 0.01)]
SHOES_UNSURE = [("shoes", 0.55), ("hat", 0.30), ("dress", 0.10)]


def test_the_sellers_choice_is_recorded_on_create_and_on_change() -> None:
    # given a seller creating a listing with a category, then changing it
    seller = UserFactory.create()
    shoes, hat = Category.objects.get(slug="shoes"), Category.objects.get(slug="hat")
    listing = listing_create(seller=seller, title="Boots", category=shoes)
    listing_category_set(listing=listing, category=hat, source=CategorySource.SELLER, actor=seller)

    # then each change is one decision by the seller, with what came before
    decisions = list(CategoryDecision.objects.filter(listing=listing).order_by("pk"))
    assert [(d.action, d.category, d.actor, d.previous_category) for d in decisions] == [
        (DecisionAction.SELLER_CHOSE, shoes, seller, None),
        (DecisionAction.SELLER_CHOSE, hat, seller, shoes),
    ]


def test_auto_accept_sets_the_category_above_the_threshold_with_version_and_threshold() -> None:
    # given an active version whose shoes threshold is 0.9
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.9})

    # when a photo is classified as shoes at 0.96
    listing, _ = classified_listing(SHOES_SURE, model_version=active)

    # then the listing's category is set automatically, audited with version and threshold
    assert (slug_of(listing.category), listing.category_source) == ("shoes", CategorySource.AUTO)
    decision = CategoryDecision.objects.get(listing=listing)
    assert decision.action == DecisionAction.AUTO_ACCEPTED
    assert decision.actor is None
    assert (decision.model_version, decision.threshold, decision.confidence) == (active, 0.9, 0.96)
    assert decision.suggestion_rank == 1
    assert decision.suggested_top_k[0] == {"slug": "shoes", "confidence": 0.96}


def test_below_the_threshold_or_without_one_the_listing_waits_for_a_person() -> None:
    # given an active version with a threshold for shoes only
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.9})

    # when one photo is unsure shoes, another sure hat (hat has no threshold)
    unsure, _ = classified_listing(SHOES_UNSURE, model_version=active)
    hat, _ = classified_listing([("hat", 0.99), ("shoes", 0.01)], model_version=active, seed=1)

    # then neither gets a category and nothing is recorded
    for listing in (unsure, hat):
        assert (listing.category, listing.category_source) == (None, CategorySource.NONE)
    assert not CategoryDecision.objects.exists()


def test_an_inactive_version_never_auto_accepts() -> None:
    # given a candidate version (not active) with a low threshold
    candidate = ModelVersionFactory.create(name="candidate", auto_accept_thresholds={"shoes": 0.1})

    # when it scores a photo
    listing, _ = classified_listing(SHOES_SURE, model_version=candidate)

    # then the listing is untouched
    assert listing.category is None


def test_auto_accept_waits_until_every_photo_of_the_listing_is_classified() -> None:
    # given a listing with two photos, the second still queued
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.9})
    listing = ListingFactory.create()
    first = image_add(listing=listing, upload=photo_bytes(1), filename="a.jpg")
    second = image_add(listing=listing, upload=photo_bytes(2), filename="b.jpg")
    ListingImage.objects.filter(pk=second.pk).update(status=ClassificationStatus.QUEUED)

    # when the first photo is classified, then the second
    record(first, SHOES_SURE, model_version=active)
    after_first = Listing.objects.get(pk=listing.pk).category_source
    record(second, SHOES_SURE, model_version=active)

    # then only the last classification set the category
    assert after_first == CategorySource.NONE
    assert Listing.objects.get(pk=listing.pk).category_source == CategorySource.AUTO


@pytest.mark.parametrize("decided_by", ["seller", "reviewer"])
def test_a_late_task_never_overwrites_a_person(decided_by: str) -> None:
    # given a listing whose category a person set to hat before the worker answered
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.5})
    listing = ListingFactory.create()
    image = image_add(listing=listing, upload=photo_bytes(), filename="a.jpg")
    hat = Category.objects.get(slug="hat")
    actor = listing.seller if decided_by == "seller" else staff_user()
    listing_category_set(listing=listing, category=hat, source=decided_by, actor=actor)
    decisions_before = CategoryDecision.objects.count()

    # when a late classification says shoes at 0.96, twice (a duplicate delivery)
    record(image, SHOES_SURE, model_version=active)
    record(image, SHOES_SURE, model_version=active)

    # then the person's category stands and no machine decision was recorded
    listing.refresh_from_db()
    assert (listing.category, listing.category_source) == (hat, decided_by)
    assert slug_of(listing.suggested_category) == "shoes"
    assert CategoryDecision.objects.count() == decisions_before


def test_the_service_refuses_a_machine_over_a_person_directly() -> None:
    # given a seller's category
    seller = UserFactory.create()
    listing = listing_create(seller=seller, title="x", category=Category.objects.get(slug="hat"))

    # when a machine tries to set shoes
    changed = listing_category_set(
        listing=listing, category=Category.objects.get(slug="shoes"), source=CategorySource.AUTO, actor=None
    )

    # then nothing changed
    assert changed is False
    assert slug_of(Listing.objects.get(pk=listing.pk).category) == "hat"
    assert CategoryDecision.objects.filter(listing=listing).count() == 1


def test_reject_records_the_reviewer_and_keeps_machines_away() -> None:
    # given an unsure suggestion and a reviewer
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.9})
    listing, image = classified_listing(SHOES_UNSURE, model_version=active)
    reviewer = staff_user()

    # when the reviewer rejects it, and a later classification is sure
    outcome = review_reject(listing=listing, reviewer=reviewer)
    record(image, SHOES_SURE, model_version=active)

    # then it has no category, the reviewer's source, one REJECTED decision by the reviewer
    listing.refresh_from_db()
    assert outcome.changed
    assert (listing.category, listing.category_source) == (None, CategorySource.REVIEWER)
    decision = CategoryDecision.objects.get(listing=listing)
    assert (decision.action, decision.actor, decision.model_version) == (
        DecisionAction.REJECTED,
        reviewer,
        active,
    )


def test_each_review_action_records_what_the_model_said() -> None:
    # given three listings suggested shoes (0.55), hat, dress
    active = ModelVersionFactory.create(is_active=True)
    accepted, _ = classified_listing(SHOES_UNSURE, model_version=active, seed=1)
    corrected, _ = classified_listing(SHOES_UNSURE, model_version=active, seed=2)
    reviewer = staff_user()

    # when the reviewer accepts suggestion 2 on one and corrects the other to pants
    review_accept(listing=accepted, rank=2, reviewer=reviewer)
    review_correct(listing=corrected, category=Category.objects.get(slug="pants"), reviewer=reviewer)

    # then both are the reviewer's, with rank, confidence and the top-k recorded
    first = CategoryDecision.objects.get(listing=accepted)
    assert (first.action, slug_of(first.category), first.suggestion_rank, first.confidence) == (
        DecisionAction.ACCEPTED,
        "hat",
        2,
        0.30,
    )
    assert [entry["slug"] for entry in first.suggested_top_k] == ["shoes", "hat", "dress"]
    second = CategoryDecision.objects.get(listing=corrected)
    assert (second.action, slug_of(second.category), second.suggestion_rank) == (
        DecisionAction.CORRECTED,
        "pants",
        None,
    )
    assert Listing.objects.get(pk=corrected.pk).category_source == CategorySource.REVIEWER


def test_a_review_action_on_a_listing_a_person_decided_meanwhile_changes_nothing() -> None:
    # given a listing shown to a reviewer, then categorised by its seller
    active = ModelVersionFactory.create(is_active=True)
    listing, _ = classified_listing(SHOES_UNSURE, model_version=active)
    stale = Listing.objects.get(pk=listing.pk)
    listing_category_set(
        listing=listing, category=Category.objects.get(slug="dress"), source="seller", actor=listing.seller
    )

    # when the reviewer accepts suggestion 1 from the stale page
    outcome = review_accept(listing=stale, rank=1, reviewer=staff_user())

    # then the seller's choice stands
    assert outcome.changed is False
    assert slug_of(Listing.objects.get(pk=listing.pk).category) == "dress"


def test_non_staff_cannot_review_and_ranks_must_exist() -> None:
    # given a listing with three suggestions
    listing, _ = classified_listing(SHOES_UNSURE, model_version=ModelVersionFactory.create(is_active=True))

    # then a seller may not act as reviewer, and suggestion 4 does not exist
    with pytest.raises(PermissionDenied):
        review_accept(listing=listing, rank=1, reviewer=UserFactory.create())
    with pytest.raises(ValueError, match="number 4"):
        review_accept(listing=listing, rank=4, reviewer=staff_user())
    assert not CategoryDecision.objects.exists()


def test_bulk_accept_takes_every_listing_at_or_above_the_confidence() -> None:
    # given listings suggested at 0.96, 0.90 and 0.55, and one the seller decided
    active = ModelVersionFactory.create(is_active=True)
    sure, _ = classified_listing(SHOES_SURE, model_version=active, seed=1)
    edge, _ = classified_listing([("hat", 0.90), ("shoes", 0.05)], model_version=active, seed=2)
    unsure, _ = classified_listing(SHOES_UNSURE, model_version=active, seed=3)
    decided, _ = classified_listing(SHOES_SURE, model_version=active, seed=4, category="dress")
    reviewer = staff_user()

    # when the reviewer bulk-accepts at 0.90
    count = review_bulk_accept(listings=[sure, edge, unsure, decided], min_confidence=0.90, reviewer=reviewer)

    # then the two above it are the reviewer's, recorded as bulk with the threshold
    assert count == 2
    bulk = CategoryDecision.objects.filter(action=DecisionAction.BULK_ACCEPTED).order_by("listing_id")
    assert [(d.listing_id, slug_of(d.category), d.threshold, d.actor) for d in bulk] == [
        (sure.pk, "shoes", 0.90, reviewer),
        (edge.pk, "hat", 0.90, reviewer),
    ]
    assert Listing.objects.get(pk=unsure.pk).category is None
    assert slug_of(Listing.objects.get(pk=decided.pk).category) == "dress"


def test_the_listing_suggestion_keeps_the_top_k_margin_and_version() -> None:
    # given two photos of one listing scored by a version
    active = ModelVersionFactory.create(is_active=True)
    listing = ListingFactory.create()
    first = image_add(listing=listing, upload=photo_bytes(1), filename="a.jpg")
    second = image_add(listing=listing, upload=photo_bytes(2), filename="b.jpg")

    # when both are recorded
    record(first, [("shoes", 0.6), ("hat", 0.3)], model_version=active)
    record(second, [("shoes", 0.4), ("hat", 0.5)], model_version=active)

    # then the listing holds the averaged top-k, the gap between the first two, the version
    listing.refresh_from_db()
    assert listing.suggested_top_k == [
        {"slug": "shoes", "confidence": 0.5},
        {"slug": "hat", "confidence": 0.4},
    ]
    assert listing.suggested_margin == pytest.approx(0.1)
    assert listing.suggested_model_version == active
