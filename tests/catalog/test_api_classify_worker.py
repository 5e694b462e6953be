"""POST /api/classify with the real worker: the photo is classified within the wait bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.conftest import WorkerProcess
from tests.factories import UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]


def test_classify_answers_with_the_top_5_when_the_worker_is_quick(
    celery_worker_process: WorkerProcess, photo_paths: list[Path], settings
) -> None:
    # given a caller and a generous bound (the worker may still be warming up)
    settings.CLASSIFY_API_WAIT_S = 30
    client = APIClient()
    client.force_authenticate(UserFactory())
    photo = SimpleUploadedFile("p.jpg", photo_paths[0].read_bytes(), content_type="image/jpeg")

    # when one real photo is posted
    response = client.post("/api/classify", {"file": photo}, format="multipart")

    # then the answer is the top-5, best first, with paths and a model version
    assert response.status_code == 200, response.content
    body = response.json()
    confidences = [entry["confidence"] for entry in body["categories"]]
    assert len(body["categories"]) == 5
    assert confidences == sorted(confidences, reverse=True)
    assert all(entry["path"] for entry in body["categories"])
    assert body["status"] == "done" and body["model_version"]
