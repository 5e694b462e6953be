"""Browser tests: Playwright (sync API) drives Debian's Chromium against pytest-django's live
server, with a real Celery worker on the test database. Never downloads a browser.

They skip, with a message, only when no Chromium is installed (/usr/bin/chromium or on PATH).
Screenshots go to docs/screenshots/ (committed); failure screenshots and timings to
test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATASETS, fixture_photo_paths

# Playwright's sync API runs an event loop in this thread; Django's ORM in the test body is still
# synchronous code and safe here.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
# We run as root (no sandbox); the other flags keep Chromium off the (closed) network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
ARTIFACTS = REPO_ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PASSWORD = "a-long-test-password"


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    if not CHROMIUM:
        pytest.skip(
            "browser tests need Chromium: none at /usr/bin/chromium or on PATH (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_page(chromium, live_server, request: pytest.FixtureRequest) -> Iterator[Callable[..., object]]:
    """`new_page(viewport=DESKTOP, storage_state=None)` opens a page in a fresh context on the live
    server; on failure every open page is saved to test-artifacts/<test>-<n>.png."""
    contexts = []
    pages = []

    def make(viewport: dict = DESKTOP, storage_state: dict | None = None, is_mobile: bool = False):
        context = chromium.new_context(
            base_url=live_server.url,
            viewport=viewport,
            storage_state=storage_state,
            is_mobile=is_mobile,
            has_touch=is_mobile,
            device_scale_factor=1,
        )
        context.set_default_timeout(20_000)
        contexts.append(context)
        page = context.new_page()
        pages.append(page)
        return page

    yield make
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for index, page in enumerate(pages):
            with contextlib.suppress(Exception):  # best effort on an already failing test
                page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{index}.png"), full_page=True)
    for context in contexts:
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def two_photos() -> list[Path]:
    """Two real CC0 photos shipped in tests/fixtures/photos (the shared clothing set when the repo
    has none): two of one category when there are, else the first two categories' photos."""
    candidates = fixture_photo_paths()
    if not candidates:
        shared = SHARED_DATASETS / "clothing-small" / "test"
        candidates = sorted(shared.glob("*/*.jpg")) if shared.is_dir() else []
    if len(candidates) < 2:
        pytest.skip("no real photos: tests/fixtures/photos and ../shared/datasets/clothing-small are absent")
    by_folder: dict[str, list[Path]] = {}
    for path in candidates:
        by_folder.setdefault(path.parent.name, []).append(path)
    pairs = [paths[:2] for paths in by_folder.values() if len(paths) >= 2]
    if pairs:
        return pairs[0]
    return [paths[0] for paths in by_folder.values()][:2]


def screenshot(page, name: str) -> None:
    """Save a committed screenshot docs/screenshots/<name>.png of the whole page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True, animations="disabled")


def sign_up(page, username: str) -> None:
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/sell/")
