"""The photo picker of the listing form, which uploads what it keeps at once: what a pick leaves
out is said next to what it keeps (and stays said once the photos are in), and a file that is not
a photo is never counted as one."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.forms import PICKER_LEFT_OUT, PICKER_NOT_A_PHOTO
from catalog.models import Listing
from catalog.services.images import LISTING_MAX_PHOTOS
from tests.e2e.conftest import DESKTOP, sign_up
from tests.photo_bytes import jpeg_bytes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def jpegs(folder: Path, count: int) -> list[str]:
    paths = []
    for index in range(count):
        path = folder / f"photo-{index + 1:02d}.jpg"
        path.write_bytes(jpeg_bytes())
        paths.append(str(path))
    return paths


@pytest.fixture
def create_page(new_page):
    page = new_page(DESKTOP)
    sign_up(page, "picker")
    page.goto("/sell/new/")
    return page


def test_photos_past_the_limit_are_left_out_and_the_message_stays(create_page, tmp_path: Path) -> None:
    page = create_page

    # when the seller picks one photo more than a listing holds
    page.locator("#id_photos").set_input_files(jpegs(tmp_path, LISTING_MAX_PHOTOS + 1))

    # then the first ten are uploaded into the draft, and the note about the eleventh stays next to them
    page.locator("#photos .photo-tile").nth(LISTING_MAX_PHOTOS - 1).wait_for()
    notes = page.locator("#photo-notes")
    notes.filter(has_text=PICKER_LEFT_OUT.format(count="1 photo")).wait_for()
    assert notes.is_visible()
    assert notes.inner_text() == PICKER_LEFT_OUT.format(count="1 photo")
    assert page.locator("#photos .photo-tile").count() == LISTING_MAX_PHOTOS
    # and the full listing offers no picker any more
    assert page.locator("#id_more_photos").count() == 0


def test_a_text_file_named_jpg_is_not_counted_and_is_named(create_page, tmp_path: Path) -> None:
    page = create_page
    fake = tmp_path / "notes.jpg"
    fake.write_text("shopping list: milk, eggs\n")
    (photo,) = jpegs(tmp_path, 1)

    # when the seller picks a real photo and a text file named .jpg
    page.locator("#id_photos").set_input_files([photo, str(fake)])

    # then only the photo is uploaded, and the text file is named as left out
    page.locator("#photos .photo-tile").first.wait_for()
    page.locator("#photo-notes").filter(has_text=PICKER_NOT_A_PHOTO.format(name="notes.jpg")).wait_for()
    assert page.locator("#photos .photo-tile").count() == 1
    listing = Listing.objects.get(seller__username="picker")
    assert [image.position for image in listing.images.all()] == [0]


def test_a_text_file_alone_counts_as_no_photo(create_page, tmp_path: Path) -> None:
    page = create_page
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a photo")

    page.locator("#id_photos").set_input_files([str(fake)])

    page.locator("#photo-notes").filter(has_text=PICKER_NOT_A_PHOTO.format(name="notes.jpg")).wait_for()
    assert page.locator("[data-photo-status]").inner_text() == ""
    assert page.locator("[data-previews] .preview").count() == 0
    assert page.locator("#id_photos").evaluate("input => input.files.length") == 0
    # and nothing was sent: no draft
    assert not Listing.objects.exists()
