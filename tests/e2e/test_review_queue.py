"""A reviewer in a real browser works the review queue with the keyboard: 2 accepts the second
suggestion, c opens the category picker (typed search, Enter), r rejects; every key records a
decision and moves to the next listing; u undoes the last one, which the audit trail keeps."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile

from catalog.access import REVIEWER_GROUP
from catalog.models import (
    CategoryDecision,
    CategorySource,
    DecisionAction,
    Listing,
    ListingImage,
)
from catalog.services.suggestions import ScoredCategory, image_classification_record
from tests.catalog.review_helpers import slug_of, staff_user
from tests.conftest import fixture_photo_paths
from tests.e2e.conftest import DESKTOP, PASSWORD, screenshot
from tests.factories import ListingFactory, ModelVersionFactory

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("taxonomy")]


def _queue() -> list[Listing]:
    photos = fixture_photo_paths()
    if len(photos) < 3:
        pytest.skip("needs three fixture photos")
    version = ModelVersionFactory.create(name="lite0+review-test", is_active=True, bare=True)
    listings = []
    # margins 0.05, 0.10, 0.20: the queue shows them in this order
    for index, (photo, top2) in enumerate(
        zip(photos, [(0.45, 0.40), (0.50, 0.40), (0.55, 0.35)], strict=False)
    ):
        listing = ListingFactory.create(title=f"Review item {index + 1}")
        # Stored without queueing: a worker running in this session must not replace these scores.
        data = photo.read_bytes()
        image = ListingImage(listing=listing, checksum=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        image.file.save(photo.name, ContentFile(data), save=False)
        image.save()
        image_classification_record(
            image=image,
            model_version=version,
            top_k=[
                ScoredCategory("shoes", top2[0]),
                ScoredCategory("hat", top2[1]),
                ScoredCategory("dress", 0.05),
            ],
        )
        listings.append(listing)
    return listings


def test_a_reviewer_accepts_corrects_and_rejects_with_the_keyboard(new_page) -> None:
    # given three listings waiting for review and a staff member
    first, second, third = _queue()
    rita = staff_user("rita", groups=[REVIEWER_GROUP], password=PASSWORD)
    page = new_page(DESKTOP)
    page.goto("/accounts/login/?next=/staff/review/")
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/staff/review/")
    items = page.locator("[data-review-item]")
    items.nth(2).wait_for()
    assert [items.nth(i).get_attribute("data-title") for i in range(3)] == [
        "Review item 1",
        "Review item 2",
        "Review item 3",
    ]
    screenshot(page, "review-queue-desktop")

    # when the reviewer presses 2 on the first listing
    page.keyboard.press("2")
    page.locator(f'[data-review-item="{first.pk}"][data-decided]').wait_for()

    # then its category is the second suggestion, set by the reviewer, and the next one is current
    first.refresh_from_db()
    assert (slug_of(first.category), first.category_source) == ("hat", CategorySource.REVIEWER)
    assert page.locator(".review-item.is-current").get_attribute("data-review-item") == str(second.pk)

    # when they press c, type "pant" and Enter on the second
    page.keyboard.press("c")
    page.get_by_label("Search categories").fill("pant")
    page.keyboard.press("Enter")
    page.locator(f'[data-review-item="{second.pk}"][data-decided]').wait_for()

    # and r on the third
    page.keyboard.press("r")
    page.locator(f'[data-review-item="{third.pk}"][data-decided]').wait_for()

    # then each key recorded one decision by the reviewer
    decisions = {d.listing_id: d for d in CategoryDecision.objects.select_related("actor", "category")}
    assert decisions[first.pk].action == DecisionAction.ACCEPTED and decisions[first.pk].suggestion_rank == 2
    assert (
        decisions[second.pk].action == DecisionAction.CORRECTED
        and slug_of(decisions[second.pk].category) == "pants"
    )
    assert decisions[third.pk].action == DecisionAction.REJECTED and decisions[third.pk].category is None
    assert {d.actor for d in decisions.values()} == {rita}
    assert "Rejected" in page.locator("#review-status").inner_text()

    # when the reviewer presses u
    page.keyboard.press("u")

    # then the reject is undone: the third listing is back in the queue as the current one
    page.locator(f'[data-review-item="{third.pk}"][data-undone]').wait_for()
    assert page.locator(".review-item.is-current").get_attribute("data-review-item") == str(third.pk)
    assert "Undid your decision" in page.locator("#review-status").inner_text()
    third.refresh_from_db()
    assert (third.category, third.category_source) == (None, CategorySource.NONE)
    # and the audit trail keeps the reject and its undoing
    trail = list(CategoryDecision.objects.filter(listing=third).order_by("created_at", "id"))
    assert [d.action for d in trail] == [DecisionAction.REJECTED, DecisionAction.UNDONE]
    assert trail[1].undoes == trail[0] and trail[1].actor == rita
    # (its photo is shown to reviewers though the listing has no category, so is not public)
    assert page.locator(f'[data-review-item="{third.pk}"] img').evaluate("img => img.naturalWidth") > 0
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "review-undo-desktop")

    # and the audit page shows it
    page.goto(f"/staff/listings/{third.pk}/")
    page.locator("[data-undone]").wait_for()
