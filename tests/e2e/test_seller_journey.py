"""A seller in a real browser: sign up, add two real photos to the listing form (they upload at
once, into a draft), see the worker's suggestions appear in its category field before publishing,
be asked for a category, choose one, find the listing under it; a confident suggestion comes
preselected; a file that is not a photo is left out with a message; another seller gets 404 on
the edit page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from catalog.forms import PICKER_NOT_A_PHOTO
from catalog.models import Category, CategorySource, Listing, ModelVersion
from catalog.services.publishing import LISTING_NEEDS_A_CATEGORY
from tests.conftest import WorkerProcess
from tests.e2e.conftest import ARTIFACTS, DESKTOP, PHONE, screenshot, sign_up
from tests.photo_bytes import HTML_PAGE

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]

# The worker classifies a fresh photo in well under a second; the first one of a session may
# still wait for the model to finish loading.
SUGGESTION_TIMEOUT_MS = 90_000


def _suggestion_latency_ms(page) -> dict[str, float | None]:
    timings = page.evaluate("() => window.sellerTimings || {}")
    done = timings.get("uploadDoneAt")
    shown = timings.get("suggestionShownAt")
    return {
        "upload_done_ms": done,
        "suggestion_shown_ms": shown,
        "latency_ms": None if done is None or shown is None else round(shown - done, 1),
    }


def serve_shipped_version(thresholds: dict[str, float]) -> ModelVersion:
    """The worker's shipped version as the active registry row, with these auto-accept thresholds
    (and its head artifact, so the worker keeps the row as it is)."""
    from classifier.head import LinearHead

    head = LinearHead.load()
    manifest, payload = head.to_bytes()
    # (the worker may have registered it already: it does on each look-up of the active version)
    ModelVersion.objects.exclude(name=f"{head.backbone_version}+{head.version}").update(is_active=False)
    version, _ = ModelVersion.objects.update_or_create(
        name=f"{head.backbone_version}+{head.version}",
        defaults={
            "backbone_version": head.backbone_version,
            "is_active": True,
            "head_manifest": manifest,
            "head_npz": payload,
            "auto_accept_thresholds": thresholds,
        },
    )
    return version


def _add_photos(page, paths: list[Path]) -> None:
    """Drop photos on the listing form; they upload at once (the first ones create the draft)."""
    page.locator("#id_photos").set_input_files([str(path) for path in paths])
    page.locator("#photos .photo-tile").nth(len(paths) - 1).wait_for()


def _browse_to_listing(page, listing: Listing, title: str, *, top_level: str) -> None:
    """Browse the top-level category to the listing's card, then its page: the photos are
    generated thumbnails, never the upload."""
    page.goto("/")
    page.locator(".category-nav").get_by_role("link", name=top_level, exact=True).click()
    page.wait_for_url(re.compile(r".*\?category="))
    card = page.locator(".card", has_text=title)
    card.wait_for()
    screenshot(page, "browse-desktop")
    card.click()
    page.wait_for_url(f"**/listings/{listing.pk}/")
    sources = page.locator(".gallery img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
    assert sources and all(re.fullmatch(r"/photos/\d+/(small|large)\.webp", src) for src in sources)
    assert page.locator("#gallery-main").evaluate("img => img.naturalWidth") > 0
    screenshot(page, "listing-desktop")
    page.goto("/sell/")
    screenshot(page, "dashboard-desktop")


def _phone_pages(new_page, page, listing: Listing, title: str) -> None:
    """The seller's, browse and listing pages on a phone-sized screen, signed in as on `page`."""
    phone = new_page(PHONE, storage_state=page.context.storage_state(), is_mobile=True)
    phone.goto(f"/sell/{listing.pk}/")
    phone.locator('#suggestions[data-suggestion-state="done"]').wait_for()
    screenshot(phone, "sell-suggestions-phone")
    assert listing.category is not None
    phone.goto(f"/?category={listing.category.slug}")
    phone.locator(".card", has_text=title).wait_for()
    screenshot(phone, "browse-phone")
    phone.goto(f"/listings/{listing.pk}/")
    screenshot(phone, "listing-phone")


def test_a_seller_sees_suggestions_before_publishing_and_must_choose_a_category(
    celery_worker_process: WorkerProcess, new_page, two_photos: list[Path]
) -> None:
    # given an active version that auto-accepts nothing
    serve_shipped_version(thresholds={})
    page = new_page(DESKTOP)
    sign_up(page, "amelie")
    assert page.get_by_role("heading", name="My listings").is_visible()

    # when a new seller opens the form, types a title and adds two real photos
    page.get_by_role("link", name="Sell an item").first.click()
    page.wait_for_url("**/sell/new/")
    title = "Summer bundle: " + " and ".join(
        dict.fromkeys(p.parent.name.replace("-", " ") for p in two_photos)
    )
    page.get_by_label("Title").fill(title)
    _add_photos(page, two_photos)

    # then the photos are stored at once in a draft, and the category field shows the worker's
    # suggestions without a reload, while the listing is not published yet
    page.wait_for_url(re.compile(r".*/sell/\d+/$"))
    listing = Listing.objects.get(seller__username="amelie")
    assert listing.published_at is None
    page.locator('#suggestions[data-suggestion-state="done"]').wait_for(timeout=SUGGESTION_TIMEOUT_MS)
    timing = _suggestion_latency_ms(page)
    options = page.locator("#suggestions .suggestion-option")
    assert 1 <= options.count() <= 3
    paths = [text.strip() for text in page.locator("#suggestions .suggestion-path").all_inner_texts()]
    assert all(paths) and len(set(paths)) == len(paths)
    assert page.locator("#photos .photo-tile .badge-done").count() == 2
    assert page.locator("#suggestions [data-preselected]").count() == 0
    assert page.get_by_label("Title").input_value() == title
    screenshot(page, "sell-new-desktop")

    # when they publish without choosing a category
    page.get_by_label("Price").fill("35")
    page.get_by_label("Description").fill("Comfortable, worn a few times.")
    page.get_by_role("button", name="Publish listing").click()

    # then the form asks for one and the listing stays a draft
    page.locator("[data-category-error]", has_text=LISTING_NEEDS_A_CATEGORY).wait_for()
    listing.refresh_from_db()
    assert listing.published_at is None
    screenshot(page, "sell-needs-category-desktop")

    # when they choose the first suggestion and publish
    first_path = paths[0]
    page.locator("#suggestions .suggestion-option").first.locator("input[type=radio]").check()
    page.get_by_role("button", name="Publish listing").click()

    # then it is online under that category, recorded as the seller's choice
    page.locator(".messages", has_text="Your listing is online").wait_for()
    page.locator("[data-current-category]", has_text=first_path).wait_for()
    listing.refresh_from_db()
    assert listing.published_at is not None and listing.category is not None
    assert listing.category_source == CategorySource.SELLER
    screenshot(page, "sell-suggestions-desktop")

    # and the listing is found in browse under that category's top-level ancestor (descendants
    # included), its page shows generated thumbnails, and the same pages work on a phone
    _browse_to_listing(page, listing, title, top_level=first_path.split(" › ")[0])
    _phone_pages(new_page, page, listing, title)

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "seller-journey-timing.json").write_text(json.dumps(timing, indent=2))


def test_a_confident_top_suggestion_is_preselected_and_published_as_auto_accepted(
    celery_worker_process: WorkerProcess, new_page, two_photos: list[Path]
) -> None:
    # given an active version whose threshold every suggestion clears
    serve_shipped_version(thresholds={category.slug: 0.0 for category in Category.objects.all()})
    page = new_page(DESKTOP)
    sign_up(page, "flora")
    page.goto("/sell/new/")

    # when the seller adds one photo
    _add_photos(page, two_photos[:1])

    # then the top suggestion comes preselected, marked as such
    preselected = page.locator("#suggestions .suggestion-option").first
    preselected.locator("[data-preselected]").wait_for(timeout=SUGGESTION_TIMEOUT_MS)
    assert preselected.locator("input[type=radio]").is_checked()
    path = preselected.locator(".suggestion-path").inner_text().strip()
    screenshot(page, "sell-preselected-desktop")

    # when they fill in the details and publish without touching the category
    page.get_by_label("Title").fill("One nice thing")
    page.get_by_label("Price").fill("12")
    page.get_by_role("button", name="Publish listing").click()
    page.locator("[data-current-category]", has_text=path).wait_for()

    # then it is public under the auto-accepted category
    listing = Listing.objects.get(seller__username="flora")
    assert listing.published_at is not None
    assert listing.category_source == CategorySource.AUTO
    page.goto(f"/?category={listing.category.slug}")  # type: ignore[union-attr]
    page.locator(".card", has_text="One nice thing").wait_for()


def test_a_file_that_is_not_a_photo_is_left_out_and_the_good_ones_are_kept(
    celery_worker_process: WorkerProcess, new_page, two_photos: list[Path], tmp_path: Path
) -> None:
    page = new_page(DESKTOP)
    sign_up(page, "bruno")
    page.goto("/sell/new/")
    page.get_by_label("Title").fill("Summer dress")
    _add_photos(page, two_photos[:1])
    page.wait_for_url(re.compile(r".*/sell/\d+/$"))

    # when an HTML page named .jpg is dropped on the edit page with a real photo (uploaded at once)
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(HTML_PAGE)
    page.locator("#id_more_photos").set_input_files([str(fake), str(two_photos[1])])

    # then the photo is uploaded, and the page still says which file was left out and why
    page.locator(".photo-tile").nth(1).wait_for()
    note = page.locator("#photo-notes", has_text=PICKER_NOT_A_PHOTO.format(name="holiday.jpg"))
    note.wait_for()
    assert note.is_visible()
    assert page.locator(".photo-tile").count() == 2
    screenshot(page, "upload-error-desktop")


def test_another_seller_cannot_open_the_edit_page(
    celery_worker_process: WorkerProcess, new_page, two_photos
) -> None:
    owner = new_page(DESKTOP)
    sign_up(owner, "carla")
    owner.goto("/sell/new/")
    owner.get_by_label("Title").fill("Lamp")
    _add_photos(owner, two_photos[:1])
    owner.wait_for_url(re.compile(r".*/sell/\d+/$"))
    edit_url = owner.url

    intruder = new_page(DESKTOP)
    sign_up(intruder, "dario")
    response = intruder.goto(edit_url)

    assert response is not None and response.status == 404
    assert "Lamp" not in intruder.content()
