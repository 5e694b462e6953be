"""A seller in a real browser: sign up, list an item with two real photos, see the worker's
suggestions appear without a reload, accept one, find the listing under that category; a file
that is not a photo is left out with a message; another seller gets 404 on the edit page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from catalog.forms import PICKER_NOT_A_PHOTO
from catalog.models import CategorySource, Listing
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


def test_a_seller_lists_an_item_accepts_a_suggestion_and_finds_it_in_browse(
    celery_worker_process: WorkerProcess, new_page, two_photos: list[Path]
) -> None:
    page = new_page(DESKTOP)

    # given a new seller
    sign_up(page, "amelie")
    assert page.get_by_role("heading", name="My listings").is_visible()

    # when they fill in the form and add two real photos
    page.get_by_role("link", name="Sell an item").first.click()
    title = "Summer bundle: " + " and ".join(
        dict.fromkeys(p.parent.name.replace("-", " ") for p in two_photos)
    )
    page.get_by_label("Title").fill(title)
    page.get_by_label("Price").fill("35")
    page.get_by_label("Description").fill("Comfortable, worn a few times.")
    page.locator("#id_photos").set_input_files([str(path) for path in two_photos])
    previews = page.locator("[data-previews] .preview")
    previews.nth(1).wait_for()
    assert previews.count() == 2
    # (the browser downscaled them before upload; both stay within 1600 px)
    screenshot(page, "sell-new-desktop")
    page.get_by_role("button", name="Publish listing").click()

    # then the edit page shows the pending state, then the top 3 suggestions without a reload
    page.wait_for_url(re.compile(r".*/sell/\d+/$"))
    listing = Listing.objects.get(seller__username="amelie")
    page.locator('#suggestions[data-suggestion-count="3"]').wait_for(timeout=SUGGESTION_TIMEOUT_MS)
    timing = _suggestion_latency_ms(page)
    page.locator('#suggestions[data-suggestion-state="done"]').wait_for(timeout=SUGGESTION_TIMEOUT_MS)
    suggestions = page.locator(".suggestion")
    assert suggestions.count() == 3
    paths = [text.strip() for text in page.locator(".suggestion-path").all_inner_texts()]
    assert all(path for path in paths)
    assert page.locator(".suggestion .bar span").count() == 3
    assert page.locator(".photo-tile .badge-done").count() == 2
    screenshot(page, "sell-suggestions-desktop")

    # when the seller accepts the first suggestion with one click
    first_path = paths[0]
    page.locator(".suggestion").first.get_by_role("button", name=re.compile("Use ")).click()

    # then it is the listing's category, recorded as the seller's choice
    page.locator("[data-current-category]", has_text=first_path).wait_for()
    listing.refresh_from_db()
    assert listing.category is not None
    assert listing.category_source == CategorySource.SELLER
    assert listing.category_source != CategorySource.AUTO

    # and the listing is found in browse under that category's top-level ancestor (descendants included)
    top_level = first_path.split(" › ")[0]
    page.goto("/")
    page.locator(".category-nav").get_by_role("link", name=top_level, exact=True).click()
    page.wait_for_url(re.compile(r".*\?category="))
    card = page.locator(".card", has_text=title)
    card.wait_for()
    screenshot(page, "browse-desktop")

    # and its page shows the photos as generated thumbnails, never the upload
    card.click()
    page.wait_for_url(f"**/listings/{listing.pk}/")
    sources = page.locator(".gallery img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
    assert sources and all(re.fullmatch(r"/photos/\d+/(small|large)\.webp", src) for src in sources)
    assert page.locator("#gallery-main").evaluate("img => img.naturalWidth") > 0
    screenshot(page, "listing-desktop")
    page.goto("/sell/")
    screenshot(page, "dashboard-desktop")

    # and the same pages work on a phone-sized screen
    phone = new_page(PHONE, storage_state=page.context.storage_state(), is_mobile=True)
    phone.goto(f"/sell/{listing.pk}/")
    phone.locator('#suggestions[data-suggestion-state="done"]').wait_for()
    screenshot(phone, "sell-suggestions-phone")
    phone.goto(f"/?category={listing.category.slug}")
    phone.locator(".card", has_text=title).wait_for()
    screenshot(phone, "browse-phone")
    phone.goto(f"/listings/{listing.pk}/")
    screenshot(phone, "listing-phone")

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "seller-journey-timing.json").write_text(json.dumps(timing, indent=2))


def test_a_file_that_is_not_a_photo_is_left_out_and_the_good_ones_are_kept(
    celery_worker_process: WorkerProcess, new_page, two_photos: list[Path], tmp_path: Path
) -> None:
    page = new_page(DESKTOP)
    sign_up(page, "bruno")
    page.goto("/sell/new/")
    page.get_by_label("Title").fill("Summer dress")
    page.get_by_label("Price").fill("12.50")
    page.locator("#id_photos").set_input_files([str(two_photos[0])])
    page.locator("[data-previews] .preview").first.wait_for()
    page.get_by_role("button", name="Publish listing").click()
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
    owner.get_by_label("Price").fill("8")
    owner.locator("#id_photos").set_input_files([str(two_photos[0])])
    owner.locator("[data-previews] .preview").first.wait_for()
    owner.get_by_role("button", name="Publish listing").click()
    owner.wait_for_url(re.compile(r".*/sell/\d+/$"))
    edit_url = owner.url

    intruder = new_page(DESKTOP)
    sign_up(intruder, "dario")
    response = intruder.goto(edit_url)

    assert response is not None and response.status == 404
    assert "Lamp" not in intruder.content()
