"""POST /api/classify with the real worker: 202 and a URL to poll to the top-5, or the top-5 at
once when a threaded web process may wait."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.conftest import WorkerProcess, wait_for
from tests.factories import UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]


def _caller() -> APIClient:
    client = APIClient()
    client.force_authenticate(UserFactory.create())
    return client


def _photo(paths: list[Path]) -> SimpleUploadedFile:
    return SimpleUploadedFile("p.jpg", paths[0].read_bytes(), content_type="image/jpeg")


def _assert_top_5(body: dict) -> None:
    confidences = [entry["confidence"] for entry in body["categories"]]
    assert len(body["categories"]) == 5
    assert confidences == sorted(confidences, reverse=True)
    assert all(entry["path"] for entry in body["categories"])
    assert body["status"] == "done" and body["model_version"]


def test_classify_answers_202_and_the_poll_url_leads_to_the_top_5(
    celery_worker_process: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a caller on a single-threaded web worker (the test client), which never waits
    client = _caller()

    # when one real photo is posted
    response = client.post("/api/classify", {"file": _photo(photo_paths)}, format="multipart")

    # then it answers 202 at once with a URL to poll
    assert response.status_code == 202, response.content
    poll_url = response.json()["poll_url"]
    assert response["Location"] == poll_url

    # and polling that URL as a client would reaches the top-5, best first, with a model version
    done = wait_for(lambda: (r := client.get(poll_url)).status_code == 200 and r, timeout=120, interval=0.2)
    _assert_top_5(done.json())


def test_a_threaded_web_process_answers_with_the_top_5_within_the_wait(
    celery_worker_process: WorkerProcess, photo_paths: list[Path], settings
) -> None:
    # given a web process serving on threads with a place to wait, and a generous bound
    settings.CLASSIFY_API_WAIT_S = 30
    client = _caller()

    # when one real photo is posted
    response = client.post(
        "/api/classify", {"file": _photo(photo_paths)}, format="multipart", **{"wsgi.multithread": True}
    )

    # then the answer is the top-5 itself
    assert response.status_code == 200, response.content
    _assert_top_5(response.json())
