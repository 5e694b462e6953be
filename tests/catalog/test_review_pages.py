"""Staff review pages: access, queue order and filters, one-key actions, bulk accept, audit trail."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from django.test import Client
from django.urls import reverse

from catalog.access import REVIEWER_GROUP
from catalog.models import Category, CategoryDecision, CategorySource, DecisionAction, Listing
from catalog.views import review as review_views
from tests.catalog.review_helpers import classified_listing, slug_of, staff_user
from tests.factories import ModelVersionFactory, UserFactory

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as TestResponse

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client: Client) -> Client:
    client.force_login(staff_user(groups=[REVIEWER_GROUP]))
    return client


def _staff_urls() -> list[tuple[str, str]]:
    listing, image = classified_listing(
        [("shoes", 0.6), ("hat", 0.3)], model_version=ModelVersionFactory.create(is_active=True)
    )
    candidate = ModelVersionFactory.create(name="candidate")
    return [
        ("get", reverse("catalog:review")),
        ("post", reverse("catalog:review-undo")),
        ("post", reverse("catalog:review-photo-label", args=[image.pk])),
        ("get", reverse("catalog:listing-audit", args=[listing.pk])),
        ("post", reverse("catalog:review-accept", args=[listing.pk])),
        ("post", reverse("catalog:review-correct", args=[listing.pk])),
        ("post", reverse("catalog:review-reject", args=[listing.pk])),
        ("post", reverse("catalog:review-bulk-accept")),
        ("get", reverse("catalog:registry")),
        ("get", reverse("catalog:model-version", args=[candidate.pk])),
        ("post", reverse("catalog:training-start")),
        ("post", reverse("catalog:model-compare", args=[candidate.pk])),
        ("post", reverse("catalog:model-activate", args=[candidate.pk])),
        ("post", reverse("catalog:model-rollback")),
        ("post", reverse("catalog:category-add")),
    ]


def test_staff_pages_send_visitors_to_login_and_answer_404_to_sellers(client: Client) -> None:
    # given every staff URL
    urls = _staff_urls()
    decisions = CategoryDecision.objects.count()

    # when an anonymous visitor, then a signed-in seller, opens each
    anonymous = [getattr(client, method)(url) for method, url in urls]
    client.force_login(UserFactory.create())
    seller = [
        getattr(client, method)(url, {"rank": 1, "category": 1, "threshold": 0}) for method, url in urls
    ]

    # then visitors go to the login page, sellers get 404, and nothing changed
    assert all(r.status_code == 302 and r["Location"].startswith("/accounts/login/") for r in anonymous)
    assert [r.status_code for r in seller] == [404] * len(urls)
    assert CategoryDecision.objects.count() == decisions
    assert not Listing.objects.exclude(category_source=CategorySource.NONE).exists()


def _queue_titles(response: TestResponse) -> list[str]:
    return re.findall(r'data-title="([^"]+)"', response.content.decode())


def test_the_queue_lists_undecided_listings_smallest_margin_first(staff_client: Client) -> None:
    # given listings with margins 0.5, 0.05 and 0.2, one the seller decided, one auto-accepted
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"dress": 0.9})
    classified_listing([("shoes", 0.7), ("hat", 0.2)], model_version=active, title="wide", seed=1)
    classified_listing([("shoes", 0.45), ("hat", 0.40)], model_version=active, title="narrow", seed=2)
    classified_listing([("hat", 0.5), ("shoes", 0.3)], model_version=active, title="middle", seed=3)
    classified_listing(
        [("shoes", 0.5), ("hat", 0.49)], model_version=active, title="decided", seed=4, category="hat"
    )
    classified_listing([("dress", 0.95), ("skirt", 0.04)], model_version=active, title="auto", seed=5)

    # when staff open the queue
    response = staff_client.get(reverse("catalog:review"))

    # then undecided and auto-accepted listings appear, most uncertain first, each with a top-5
    assert response.status_code == 200
    assert _queue_titles(response) == ["narrow", "middle", "wide", "auto"]
    assert response.content.decode().count('data-action="accept"') == 8


def test_the_queue_filters_by_category_version_and_confidence(staff_client: Client) -> None:
    # given listings from two versions, suggested shoes or hat at various confidences
    old, new = ModelVersionFactory.create(name="old"), ModelVersionFactory.create(name="new", is_active=True)
    classified_listing([("shoes", 0.9), ("hat", 0.05)], model_version=new, title="shoes-90", seed=1)
    classified_listing([("shoes", 0.5), ("hat", 0.4)], model_version=new, title="shoes-50", seed=2)
    classified_listing([("hat", 0.8), ("shoes", 0.1)], model_version=new, title="hat-80", seed=3)
    classified_listing([("shoes", 0.7), ("hat", 0.2)], model_version=old, title="old-shoes-70", seed=4)
    shoes = Category.objects.get(slug="shoes")
    fashion = Category.objects.get(slug="fashion")

    def titles(**params: int) -> set[str]:
        return set(_queue_titles(staff_client.get(reverse("catalog:review"), params)))

    # then each filter narrows the queue, and a parent category includes its children
    assert titles(category=shoes.pk) == {"shoes-90", "shoes-50", "old-shoes-70"}
    assert titles(category=fashion.pk) == {"shoes-90", "shoes-50", "hat-80", "old-shoes-70"}
    assert titles(version=old.pk) == {"old-shoes-70"}
    assert titles(min=60, max=85) == {"hat-80", "old-shoes-70"}
    assert titles(category=shoes.pk, version=new.pk, min=60) == {"shoes-90"}


def test_keyboard_actions_answer_json_and_record_decisions(staff_client: Client) -> None:
    # given three listings in the queue
    active = ModelVersionFactory.create(is_active=True)
    first, _ = classified_listing([("shoes", 0.6), ("hat", 0.3)], model_version=active, seed=1)
    second, _ = classified_listing([("shoes", 0.6), ("hat", 0.3)], model_version=active, seed=2)
    third, _ = classified_listing([("shoes", 0.6), ("hat", 0.3)], model_version=active, seed=3)
    pants = Category.objects.get(slug="pants")
    fetch = {"X-Requested-With": "fetch"}

    # when the page posts "2" on the first, a correction on the second, "r" on the third
    accept = staff_client.post(reverse("catalog:review-accept", args=[first.pk]), {"rank": 2}, headers=fetch)
    correct = staff_client.post(
        reverse("catalog:review-correct", args=[second.pk]), {"category": pants.pk}, headers=fetch
    )
    reject = staff_client.post(reverse("catalog:review-reject", args=[third.pk]), headers=fetch)

    # then each answers ok and records exactly one reviewer decision
    assert [r.status_code for r in (accept, correct, reject)] == [200, 200, 200]
    assert all(r.json()["ok"] for r in (accept, correct, reject))
    actions = dict(CategoryDecision.objects.values_list("listing_id", "action"))
    assert actions == {
        first.pk: DecisionAction.ACCEPTED,
        second.pk: DecisionAction.CORRECTED,
        third.pk: DecisionAction.REJECTED,
    }
    assert slug_of(Listing.objects.get(pk=first.pk).category) == "hat"
    # and the queue is empty now
    assert _queue_titles(staff_client.get(reverse("catalog:review"))) == []


def test_a_second_decision_on_a_decided_listing_is_refused(staff_client: Client) -> None:
    # given a listing the reviewer already accepted
    listing, _ = classified_listing(
        [("shoes", 0.6), ("hat", 0.3)], model_version=ModelVersionFactory.create(is_active=True)
    )
    url = reverse("catalog:review-accept", args=[listing.pk])
    staff_client.post(url, {"rank": 1}, HTTP_X_REQUESTED_WITH="fetch")

    # when a stale page posts "2"
    response = staff_client.post(url, {"rank": 2}, HTTP_X_REQUESTED_WITH="fetch")

    # then it is refused and the first decision stands
    assert response.status_code == 409
    assert response.json()["message"] == review_views.ALREADY_DECIDED.format(title=listing.title)
    assert slug_of(Listing.objects.get(pk=listing.pk).category) == "shoes"
    assert CategoryDecision.objects.count() == 1


def test_bulk_accept_uses_the_current_filter_and_confidence(staff_client: Client) -> None:
    # given shoes at 0.9 and 0.6, hat at 0.95
    active = ModelVersionFactory.create(is_active=True)
    shoes_90, _ = classified_listing([("shoes", 0.9), ("hat", 0.05)], model_version=active, seed=1)
    shoes_60, _ = classified_listing([("shoes", 0.6), ("hat", 0.3)], model_version=active, seed=2)
    hat_95, _ = classified_listing([("hat", 0.95), ("shoes", 0.03)], model_version=active, seed=3)
    shoes = Category.objects.get(slug="shoes")

    # when staff bulk-accept at 80 % within the shoes filter (the form, without JavaScript)
    response = staff_client.post(
        reverse("catalog:review-bulk-accept"),
        {"category": shoes.pk, "threshold": 80, "next": reverse("catalog:review")},
        follow=True,
    )

    # then only shoes at 0.9 is accepted, as a bulk decision at 0.8
    assert response.status_code == 200
    assert "Accepted the first suggestion of 1 listing at 80% or more." in response.content.decode()
    decision = CategoryDecision.objects.get()
    assert (decision.listing_id, decision.action, decision.threshold) == (
        shoes_90.pk,
        DecisionAction.BULK_ACCEPTED,
        0.8,
    )
    assert Listing.objects.get(pk=shoes_60.pk).category is None
    assert Listing.objects.get(pk=hat_95.pk).category is None


def test_a_listing_shows_its_audit_trail(staff_client: Client) -> None:
    # given a listing auto-accepted as shoes, then corrected by a reviewer to boots' neighbour "pants"
    active = ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.9})
    listing, _ = classified_listing([("shoes", 0.96), ("hat", 0.02)], model_version=active)
    staff_client.post(
        reverse("catalog:review-correct", args=[listing.pk]),
        {"category": Category.objects.get(slug="pants").pk},
        HTTP_X_REQUESTED_WITH="fetch",
    )

    # when staff open the listing's audit page
    page = staff_client.get(reverse("catalog:listing-audit", args=[listing.pk])).content.decode()

    # then it lists the auto-accept (version and threshold) and the reviewer's correction, in order
    rows = re.findall(r'data-decision="([a-z_]+)"', page)
    assert rows == [DecisionAction.AUTO_ACCEPTED, DecisionAction.CORRECTED]
    assert active.name in page
    assert "90%" in page
    assert "reviewer" in page


def test_the_admin_shows_the_audit_trail_and_cannot_set_a_category(client: Client) -> None:
    # given an auto-accepted listing and a superuser
    listing, _ = classified_listing(
        [("shoes", 0.96), ("hat", 0.02)],
        model_version=ModelVersionFactory.create(is_active=True, auto_accept_thresholds={"shoes": 0.9}),
    )
    client.force_login(UserFactory.create(username="root", is_staff=True, is_superuser=True))
    url = reverse("admin:catalog_listing_change", args=[listing.pk])

    # when they open the listing in the admin and post another category
    page = client.get(url).content.decode()
    client.post(
        url, {"title": listing.title, "description": "", "category": Category.objects.get(slug="hat").pk}
    )

    # then the decision is listed, and the category did not change (read-only there)
    assert "auto-accepted suggestion" in page
    assert slug_of(Listing.objects.get(pk=listing.pk).category) == "shoes"
    assert CategoryDecision.objects.filter(listing=listing).count() == 1
