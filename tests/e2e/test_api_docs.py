"""The API reference page renders from the app's own static files, with no request elsewhere."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import DESKTOP

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_swagger_ui_loads_the_schema_without_any_cdn(new_page, live_server) -> None:
    page = new_page(DESKTOP)
    hosts: set[str] = set()
    page.on("request", lambda request: hosts.add(urlsplit(request.url).netloc))

    page.goto("/api/docs/")

    page.locator(".swagger-ui .info .title", has_text="Marketplace categoriser API").wait_for()
    page.get_by_text("/api/classify", exact=True).first.wait_for()
    assert hosts == {urlsplit(live_server.url).netloc}


def test_try_it_out_on_classify_offers_a_file_picker(new_page) -> None:
    page = new_page(DESKTOP)
    page.goto("/api/docs/")

    # when a visitor opens POST /api/classify and presses "Try it out"
    operation = page.locator("#operations-classify-classify_create")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()

    # then the request body asks for a file, not a text box
    operation.locator("input[type=file]").wait_for()
