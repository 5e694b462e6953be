"""Staff in a real browser try to activate a candidate that drops a category with listings and
loses recall on another: the registry refuses with the reasons, and activates it only once they
write why and confirm; the activation history keeps the reason."""

from __future__ import annotations

import pytest

from catalog.access import MODEL_MANAGER_GROUP
from catalog.models import Category, CategorySource, ModelActivation
from catalog.services.registry import model_comparison_record
from tests.catalog.review_helpers import staff_user
from tests.e2e.conftest import DESKTOP, PASSWORD, screenshot
from tests.factories import ListingFactory, ModelVersionFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("taxonomy")]

TEN = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]


def test_a_refused_candidate_is_activated_only_with_a_written_reason(new_page) -> None:
    # given the active version serves ten categories, a candidate five, skirts have a listing,
    # and the comparison shows dresses found far less often
    active = ModelVersionFactory.create(name="lite0+ten", classes=TEN, is_active=True)
    candidate = ModelVersionFactory.create(name="lite0+five", classes=TEN[:5])
    ListingFactory.create(
        title="Pleated skirt",
        category=Category.objects.get(slug="skirt"),
        category_source=CategorySource.SELLER,
    )
    model_comparison_record(
        candidate=candidate,
        baseline=active,
        photos=60,
        candidate_accuracy=0.80,
        baseline_accuracy=0.90,
        details={"recall_by_category": {"dress": {"candidate": 0.70, "baseline": 0.90, "photos": 30}}},
    )
    user = staff_user("mona", groups=[MODEL_MANAGER_GROUP], password=PASSWORD)
    page = new_page(DESKTOP)
    page.goto("/accounts/login/?next=/staff/models/")
    page.get_by_label("Username").fill("mona")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/staff/models/")

    # when they open the candidate from the registry: no plain Activate button, but its objections
    assert page.locator('[data-activate="lite0+five"]').count() == 0
    page.get_by_role("link", name="2 objections…").click()

    # then the page says why activation is refused
    objections = page.locator("[data-objections]")
    objections.wait_for()
    text = objections.inner_text()
    assert "does not know Fashion › Skirts" in text and "1 published listing is in it" in text
    assert "finds Fashion › Dresses in 70 % of its 30 held-out photos" in text
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "activation-refused-desktop")

    # when they write a reason, confirm, and activate anyway
    page.get_by_label("Why activate it anyway?").fill("Skirts are retired next week; dresses are relabelled.")
    page.get_by_label("I have read the objections").check()
    page.get_by_role("button", name="Activate anyway").click()

    # then it is active, and the history names the objections and the reason
    page.wait_for_url("**/staff/models/")
    page.locator("[data-override]", has_text="Skirts are retired next week").wait_for()
    candidate.refresh_from_db()
    assert candidate.is_active
    activation = ModelActivation.objects.get()
    assert activation.actor == user and len(activation.objections) == 2
    assert activation.override_reason == "Skirts are retired next week; dresses are relabelled."
