"""A seller in a real browser with S3 storage: the page uploads each photo straight to the bucket
(moto's S3 server) with a presigned POST, the form registering them in a draft carries only the
upload tokens, and a worker that reads only the bucket validates and classifies the photos."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Request

from catalog.models import ClassificationStatus, Listing
from tests.conftest import stored_name
from tests.e2e.conftest import DESKTOP, sign_up
from tests.s3_server import S3Server, S3Stack, s3_worker_stack, use_bucket

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.s3, pytest.mark.usefixtures("taxonomy")]

SUGGESTION_TIMEOUT_MS = 90_000


@pytest.fixture
def s3(
    s3_server: S3Server, django_db_setup: None, tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[S3Stack]:
    with s3_worker_stack(s3_server, tmp_path) as stack:
        use_bucket(s3_server, stack.bucket, settings=settings, monkeypatch=monkeypatch)
        yield stack


def test_the_browser_uploads_photos_to_the_bucket_and_the_form_carries_no_bytes(
    s3: S3Stack, new_page, two_photos: list[Path]
) -> None:
    page = new_page(DESKTOP)
    posts: list[Request] = []

    def keep_posts(request: Request) -> None:
        if request.method == "POST":
            posts.append(request)

    page.on("request", keep_posts)

    # given a seller with two real photos on the "Sell an item" page
    sign_up(page, "bucket-seller")
    page.get_by_role("link", name="Sell an item").first.click()
    # (the page's script picks up chosen files once it has run: on a loaded machine, files set
    # before the load event were never uploaded)
    page.wait_for_load_state("load")
    page.get_by_label("Title").fill("Two things")
    page.get_by_label("Price").fill("12")

    # when they pick the photos, which go to the bucket at once, and the form registers them in
    # a draft
    page.locator("#id_photos").set_input_files([str(path) for path in two_photos])
    page.locator("#photos .photo-tile").nth(1).wait_for()

    # then the form's category field shows the worker's suggestions, and the photos are the clean copies
    page.wait_for_url(re.compile(r".*/sell/\d+/$"))
    page.locator('#suggestions[data-suggestion-state="done"]').wait_for(timeout=SUGGESTION_TIMEOUT_MS)
    listing = Listing.objects.get(seller__username="bucket-seller")
    images = list(listing.images.all())
    assert [image.status for image in images] == [ClassificationStatus.DONE] * 2, s3.worker.log_text()[-2000:]
    assert all(stored_name(image).startswith("listings/") for image in images)
    assert s3.server.keys(s3.bucket, "uploads/") == []
    # and the photos' bytes went to the bucket only: the web app got a form without any file
    to_bucket = [request for request in posts if request.url.startswith(s3.server.endpoint_url)]
    to_web = [request.post_data_buffer for request in posts if request not in to_bucket]
    assert len(to_bucket) == 2
    # (Playwright reads no body that holds a file: each body the web app got is readable and small)
    smallest = min(path.stat().st_size for path in two_photos)
    assert to_web
    assert all(body is not None and b"filename=" not in body and len(body) < smallest for body in to_web)
