"""Labels that don't poison training: a listing's category labels its photos only when they
agree; otherwise reviewers label each photo. A reviewer's last decision can be undone (key u),
and the audit trail keeps both the decision and its undoing."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client
from django.urls import reverse

from catalog.access import REVIEWER_GROUP
from catalog.models import (
    Category,
    CategoryDecision,
    CategorySource,
    DecisionAction,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.selectors import review as review_selectors
from catalog.services.decisions import listing_category_set, review_accept, review_correct
from catalog.services.images import image_add
from catalog.services.labels import NOTHING_TO_UNDO, review_photo_label, review_undo
from catalog.views import review as review_views
from tests.catalog.review_helpers import classified_listing, photo_bytes, record, slug_of, staff_user
from tests.factories import ListingFactory, ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def bundle(model_version: ModelVersion) -> tuple[Listing, list[ListingImage]]:
    """A laptop + toaster + bag bundle: three confident photos on three branches of the tree."""
    listing = ListingFactory.create(title="Moving-out bundle")
    images = [
        image_add(listing=listing, upload=photo_bytes(seed), filename=f"{seed}.jpg") for seed in (1, 2, 3)
    ]
    for image, top in zip(images, [("computers", 0.9), ("kitchen", 0.8), ("bags", 0.7)], strict=True):
        record(image, [top, ("shoes", 0.05)], model_version=model_version)
    listing.refresh_from_db()
    return listing, images


def labels() -> dict[int, str]:
    return {photo.image_id: photo.slug for photo in review_selectors.labelled_photos()}


def test_a_bundles_category_labels_none_of_its_photos_until_each_is_labelled() -> None:
    # given a bundle whose photos disagree
    active = ModelVersionFactory.create(is_active=True)
    listing, (laptop, toaster, bag) = bundle(active)
    assert listing.photos_disagree
    reviewer = staff_user()

    # when a reviewer sets "Bags" on the listing
    review_correct(listing=listing, category=Category.objects.get(slug="bags"), reviewer=reviewer)

    # then the listing is under bags, but no photo became a "bags" training label
    listing.refresh_from_db()
    assert (slug_of(listing.category), listing.category_source) == ("bags", CategorySource.REVIEWER)
    assert labels() == {}

    # when the reviewer labels each photo
    for image, slug in ((laptop, "computers"), (toaster, "kitchen"), (bag, "bags")):
        outcome = review_photo_label(image=image, category=Category.objects.get(slug=slug), reviewer=reviewer)
        assert outcome.changed

    # then each photo is labelled with its own decision, recorded in the audit trail
    assert labels() == {laptop.pk: "computers", toaster.pk: "kitchen", bag.pk: "bags"}
    photo_decisions = CategoryDecision.objects.filter(action=DecisionAction.PHOTO_LABELLED)
    assert sorted(photo_decisions.values_list("image_id", "category__slug")) == sorted(
        [(laptop.pk, "computers"), (toaster.pk, "kitchen"), (bag.pk, "bags")]
    )
    laptop_decision = photo_decisions.get(image=laptop)
    assert (laptop_decision.suggestion_rank, laptop_decision.model_version) == (1, active)
    # and labelling a photo again the same way changes nothing
    again = review_photo_label(
        image=laptop, category=Category.objects.get(slug="computers"), reviewer=reviewer
    )
    assert not again.changed and photo_decisions.count() == 3


def test_photos_that_agree_take_their_listings_human_category_and_a_photo_label_wins() -> None:
    active = ModelVersionFactory.create(is_active=True)
    listing, image = classified_listing([("shoes", 0.9)], model_version=active, category="shoes")
    second = image_add(listing=listing, upload=photo_bytes(9), filename="b.jpg")
    record(second, [("shoes", 0.7)], model_version=active)
    auto, _ = classified_listing([("hat", 0.9)], model_version=active, seed=4)  # no person decided

    assert labels() == {image.pk: "shoes", second.pk: "shoes"}

    review_photo_label(image=second, category=Category.objects.get(slug="hat"), reviewer=staff_user())
    assert labels() == {image.pk: "shoes", second.pk: "hat"}
    assert auto.images.get().pk not in labels()


def test_undo_reverts_the_last_decision_and_the_audit_trail_keeps_both() -> None:
    # given a listing auto-accepted as shoes, that a reviewer corrected to hat
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.5})
    listing, _ = classified_listing([("shoes", 0.9), ("hat", 0.05)], model_version=active)
    assert listing.category_source == CategorySource.AUTO
    reviewer = staff_user()
    review_correct(listing=listing, category=Category.objects.get(slug="hat"), reviewer=reviewer)

    # when the reviewer undoes
    outcome = review_undo(reviewer=reviewer)

    # then the listing is back to the auto-accepted shoes
    listing.refresh_from_db()
    assert (slug_of(listing.category), listing.category_source) == ("shoes", CategorySource.AUTO)
    # and the audit trail holds the correction, and its undoing pointing at it
    trail = list(review_selectors.listing_decisions(listing=listing))
    assert [d.action for d in trail] == [
        DecisionAction.AUTO_ACCEPTED,
        DecisionAction.CORRECTED,
        DecisionAction.UNDONE,
    ]
    assert trail[2].undoes == trail[1] == outcome.undone
    assert (trail[2].actor, slug_of(trail[2].category), slug_of(trail[2].previous_category)) == (
        reviewer,
        "shoes",
        "hat",
    )

    # and there is nothing left to undo for this reviewer (an auto-accept is no review decision)
    with pytest.raises(ValueError, match=NOTHING_TO_UNDO):
        review_undo(reviewer=reviewer)


def test_undo_walks_back_one_decision_at_a_time_photo_labels_included() -> None:
    active = ModelVersionFactory.create(is_active=True)
    listing, (laptop, _, _) = bundle(active)
    other, _ = classified_listing([("shoes", 0.6), ("hat", 0.3)], model_version=active, seed=7)
    reviewer = staff_user()
    review_photo_label(image=laptop, category=Category.objects.get(slug="computers"), reviewer=reviewer)
    review_accept(listing=other, rank=2, reviewer=reviewer)

    first = review_undo(reviewer=reviewer)
    second = review_undo(reviewer=reviewer)

    assert (first.undone.listing_id, second.undone.image_id) == (other.pk, laptop.pk)
    other.refresh_from_db()
    laptop.refresh_from_db()
    assert (other.category, other.category_source, laptop.label) == (None, CategorySource.NONE, None)
    assert labels() == {}


def test_undo_never_reverts_a_decision_someone_overtook() -> None:
    active = ModelVersionFactory.create(is_active=True)
    listing, _ = classified_listing([("shoes", 0.6), ("hat", 0.3)], model_version=active)
    reviewer = staff_user()
    review_accept(listing=listing, rank=1, reviewer=reviewer)
    # the seller chose another category meanwhile
    listing_category_set(
        listing=listing,
        category=Category.objects.get(slug="dress"),
        source=CategorySource.SELLER,
        actor=listing.seller,
    )

    with pytest.raises(ValueError, match="changed after your decision"):
        review_undo(reviewer=reviewer)

    listing.refresh_from_db()
    assert (slug_of(listing.category), listing.category_source) == ("dress", CategorySource.SELLER)
    assert not CategoryDecision.objects.filter(action=DecisionAction.UNDONE).exists()


def test_only_staff_label_photos_and_undo() -> None:
    active = ModelVersionFactory.create(is_active=True)
    _, (laptop, _, _) = bundle(active)
    seller = UserFactory.create()
    with pytest.raises(PermissionDenied):
        review_photo_label(image=laptop, category=Category.objects.get(slug="bags"), reviewer=seller)
    with pytest.raises(PermissionDenied):
        review_undo(reviewer=seller)
    assert not CategoryDecision.objects.exists()


# --- the review queue page -------------------------------------------------------------------------


@pytest.fixture
def staff_client(client: Client) -> Client:
    client.force_login(staff_user(groups=[REVIEWER_GROUP]))
    return client


def test_the_queue_offers_per_photo_labels_and_hides_tiny_alternatives(staff_client: Client) -> None:
    active = ModelVersionFactory.create(is_active=True)
    listing, (laptop, _, _) = bundle(active)
    plain, _ = classified_listing(
        [("shoes", 0.97), ("hat", 0.019), ("dress", 0.011)], model_version=active, seed=8
    )

    page = staff_client.get(reverse("catalog:review")).content.decode()

    # the bundle's photos each come with their own top-1 and a label action
    assert page.count("data-photo-label=") == 3
    assert reverse("catalog:review-photo-label", args=[laptop.pk]) in page
    # the plain listing offers its first suggestion only: 1.9 % and 1.1 % get no accept button
    accept = reverse("catalog:review-accept", args=[plain.pk])
    ranks = re.findall(rf'action="{accept}" data-action="accept" data-rank="(\d)"', page)
    assert ranks == ["1"]
    assert "Undo last decision" in page


def test_undo_and_photo_labels_answer_json_to_the_page(staff_client: Client) -> None:
    active = ModelVersionFactory.create(is_active=True)
    listing, (laptop, _, _) = bundle(active)
    fetch = {"X-Requested-With": "fetch"}
    computers = Category.objects.get(slug="computers")

    label = staff_client.post(
        reverse("catalog:review-photo-label", args=[laptop.pk]), {"category": computers.pk}, headers=fetch
    )
    undo = staff_client.post(reverse("catalog:review-undo"), headers=fetch)
    nothing = staff_client.post(reverse("catalog:review-undo"), headers=fetch)

    assert label.json() == {
        "ok": True,
        "message": review_views.PHOTO_LABELLED.format(
            number=1, title=listing.title, path="Electronics › Computers"
        ),
    }
    assert undo.json() == {
        "ok": True,
        "message": review_views.UNDONE.format(title=listing.title),
        "listing": listing.pk,
    }
    assert (nothing.status_code, nothing.json()["message"]) == (409, NOTHING_TO_UNDO)
    laptop.refresh_from_db()
    assert laptop.label is None
    # and the audit page shows the photo decision, marked undone
    audit = staff_client.get(reverse("catalog:listing-audit", args=[listing.pk])).content.decode()
    assert "photo 1" in audit and "data-undone" in audit
