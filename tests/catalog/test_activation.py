"""Safe activation: a candidate that drops a category with listings, or loses more than 5 points
of recall on a category with at least 20 held-out photos, is refused with a readable reason;
staff may override only with a written reason, kept in the activation history."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from catalog.access import MODEL_MANAGER_GROUP
from catalog.activation import DROPS_A_CATEGORY, LOSES_RECALL, activation_objections
from catalog.models import Category, CategorySource, ModelActivation, ModelComparison, ModelVersion
from catalog.services.registry import ActivationRefused, model_comparison_record, model_version_activate
from catalog.views.registry import ACTIVATED, OVERRIDE_NEEDS_CONFIRMATION
from tests.catalog.review_helpers import staff_user
from tests.factories import ListingFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

TEN = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]


def compared(candidate: ModelVersion, active: ModelVersion, recall: dict[str, tuple[float, float, int]]):
    """A comparison as the worker records it: per category (candidate, baseline, photos)."""
    return model_comparison_record(
        candidate=candidate,
        baseline=active,
        photos=sum(n for _, _, n in recall.values()),
        candidate_accuracy=0.9,
        baseline_accuracy=0.9,
        details={
            "recall_by_category": {
                slug: {"candidate": c, "baseline": b, "photos": n} for slug, (c, b, n) in recall.items()
            }
        },
    )


def published_in(slug: str, count: int = 1) -> None:
    for _ in range(count):
        ListingFactory.create(category=Category.objects.get(slug=slug), category_source=CategorySource.SELLER)


def test_a_candidate_that_drops_categories_with_listings_is_refused_with_the_reason() -> None:
    # given the active version knows ten categories, a candidate five, and skirts have listings
    active = ModelVersionFactory.create(name="lite0+ten", is_active=True, classes=TEN)
    candidate = ModelVersionFactory.create(name="lite0+five", classes=TEN[:5])
    published_in("skirt", 2)
    comparison = compared(candidate, active, {"dress": (0.9, 0.9, 30)})
    user = staff_user(can_activate=True)

    # when staff activate it
    with pytest.raises(ActivationRefused) as refused:
        model_version_activate(version=candidate, actor=user)

    # then it is refused, naming the dropped category that has listings (not those without)
    expected = DROPS_A_CATEGORY.format(
        candidate="lite0+five",
        category="Fashion › Skirts",
        active="lite0+ten",
        listings=2,
        plural="s",
        verb="are",
    )
    assert refused.value.objections == [expected]
    assert expected in str(refused.value)
    assert activation_objections(candidate=candidate, active=active, comparison=comparison) == [expected]
    # and nothing changed
    active.refresh_from_db()
    assert active.is_active and not ModelActivation.objects.exists()


def test_recall_may_not_drop_more_than_5_points_on_a_category_with_20_photos() -> None:
    active = ModelVersionFactory.create(name="lite0+a", is_active=True, classes=TEN)
    candidate = ModelVersionFactory.create(name="lite0+b", classes=TEN)
    comparison = compared(
        candidate,
        active,
        {
            "dress": (0.80, 0.90, 25),  # 10 points lower on 25 photos: refused
            "hat": (0.50, 0.90, 19),  # 40 points lower, but 19 photos: too few to judge
            "shoes": (0.85, 0.90, 40),  # exactly 5 points: allowed
            "skirt": (0.99, 0.70, 30),  # better
        },
    )

    objections = activation_objections(candidate=candidate, active=active, comparison=comparison)

    assert objections == [
        LOSES_RECALL.format(
            candidate="lite0+b",
            category="Fashion › Dresses",
            photos=25,
            candidate_recall=80.0,
            active="lite0+a",
            baseline_recall=90.0,
            points=10.0,
            limit=5.0,
        )
    ]
    assert "finds Fashion › Dresses in 80 % of its 25 held-out photos" in objections[0]


def test_staff_override_only_with_a_written_reason_which_the_history_keeps() -> None:
    active = ModelVersionFactory.create(name="lite0+ten", is_active=True, classes=TEN)
    candidate = ModelVersionFactory.create(name="lite0+five", classes=TEN[:5])
    published_in("skirt")
    compared(candidate, active, {})
    user = staff_user(can_activate=True)

    # a blank reason is no reason
    with pytest.raises(ActivationRefused):
        model_version_activate(version=candidate, actor=user, override_reason="   ")

    activation = model_version_activate(
        version=candidate, actor=user, override_reason="Skirts move to a new category next week."
    )

    candidate.refresh_from_db()
    assert candidate.is_active
    assert activation.override_reason == "Skirts move to a new category next week."
    assert len(activation.objections) == 1 and "Fashion › Skirts" in activation.objections[0]


def test_a_candidate_without_objections_activates_and_keeps_no_reason() -> None:
    active = ModelVersionFactory.create(name="lite0+a", is_active=True, classes=TEN)
    candidate = ModelVersionFactory.create(name="lite0+b", classes=TEN)
    compared(candidate, active, {"dress": (0.92, 0.90, 30)})
    activation = model_version_activate(
        version=candidate, actor=staff_user(can_activate=True), override_reason="not needed"
    )
    assert (activation.override_reason, activation.objections) == ("", [])


def test_the_version_page_shows_the_objections_and_overrides_only_when_confirmed(client: Client) -> None:
    active = ModelVersionFactory.create(name="lite0+ten", is_active=True, classes=TEN)
    candidate = ModelVersionFactory.create(name="lite0+five", classes=TEN[:5])
    published_in("skirt")
    compared(candidate, active, {"dress": (0.7, 0.9, 20)})
    client.force_login(staff_user(groups=[MODEL_MANAGER_GROUP]))

    # when staff press Activate on the registry page's link, then on the version page
    registry = client.get(reverse("catalog:registry")).content.decode()
    assert 'data-objections="2"' in registry and 'data-activate="lite0+five"' not in registry
    refused = client.post(reverse("catalog:model-activate", args=[candidate.pk]), follow=True)
    page = refused.content.decode()
    assert "Activation is refused" in page and "Fashion › Skirts" in page and "Fashion › Dresses" in page
    assert "data-override-form" in page

    # a reason without the confirmation box activates nothing
    unconfirmed = client.post(
        reverse("catalog:model-activate", args=[candidate.pk]), {"override_reason": "Needed"}, follow=True
    )
    assert OVERRIDE_NEEDS_CONFIRMATION in unconfirmed.content.decode()
    candidate.refresh_from_db()
    assert not candidate.is_active

    # with both, it is active and the history shows who, despite what, and why
    done = client.post(
        reverse("catalog:model-activate", args=[candidate.pk]),
        {"override_reason": "Needed for the sale", "confirm": "yes"},
        follow=True,
    )
    body = done.content.decode()
    assert ACTIVATED.format(version="lite0+five", seconds=5).split(";")[0] in body
    assert "because: “Needed for the sale”" in body
    assert ModelActivation.objects.get().override_reason == "Needed for the sale"
    assert ModelComparison.objects.count() == 1
