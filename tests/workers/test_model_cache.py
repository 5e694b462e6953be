"""A worker never serves a model file it cannot trust, and a worker that cannot classify never
takes photos off the queue. Real workers on copies of the model cache, real Redis, PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client

from catalog.models import ClassificationStatus, ListingImage
from catalog.queueing import queue_depths
from catalog.services.images import image_add
from dev.chaos.cache import block_manifest, copy_cache, truncate
from dev.embedded import start_redis
from tests.conftest import point_celery_app_at, start_worker, stop_worker, wait_for
from tests.factories import ListingFactory, UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]


@pytest.fixture(scope="module")
def verified_cache() -> Path:
    """The model files this machine's workers serve, verified (built on first use)."""
    from classifier.backbone import default_cache_dir
    from classifier.head import LinearHead
    from classifier.quantize import backbone_path

    cache_dir = settings.CLASSIFIER_CACHE_DIR or str(default_cache_dir())
    views = LinearHead.load(settings.CLASSIFIER_HEAD_PATH or None).views
    return backbone_path(settings.CLASSIFIER_PRECISION, cache_dir, views=views)


@pytest.fixture
def cache_copy(tmp_path: Path, verified_cache: Path) -> Path:
    """A private copy of the model cache (every ONNX file and manifest), so it can be damaged."""
    return copy_cache(verified_cache.parent, tmp_path / "model-cache")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    proc, port = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    previous = point_celery_app_at(url)
    try:
        yield url
    finally:
        point_celery_app_at(previous)
        proc.kill()
        proc.wait()


def _upload(photo_paths: list[Path], count: int) -> list[int]:
    listing = ListingFactory.create()
    with transaction.atomic():
        images = [
            image_add(listing=listing, upload=photo_paths[i].read_bytes(), filename=f"{i}.jpg")
            for i in range(count)
        ]
    return [image.pk for image in images]


def _all_done(image_ids: list[int]) -> bool:
    statuses = set(ListingImage.objects.filter(pk__in=image_ids).values_list("status", flat=True))
    return statuses == {ClassificationStatus.DONE}


def test_a_worker_whose_model_cannot_be_rebuilt_refuses_the_queue_and_says_so(
    tmp_path: Path, cache_copy: Path, verified_cache: Path, broker: str, photo_paths: list[Path]
) -> None:
    # given a cache whose fp32 export is truncated and cannot be written again (a directory
    # stands where its manifest goes, as a read-only or full disk would)
    # (the export the served int8 file was built from; the cache may hold other exports too)
    fp32 = cache_copy / (verified_cache.stem.split("-int8-")[0] + ".onnx")
    truncate(fp32, keep=0.01)
    block_manifest(fp32)

    # when a worker starts on it
    env = {"CELERY_BROKER_URL": broker, "CLASSIFIER_CACHE_DIR": str(cache_copy)}
    refusing = start_worker(log=tmp_path / "refusing.log", queues="classify", env=env, ready_line="not ready")
    try:
        # then it says why, in one line, and that it does not consume the classify queue
        line = next(line for line in refusing.log_text().splitlines() if "classifier not ready" in line)
        assert "does not consume classify" in line
        # and photos uploaded meanwhile stay in the queue, untouched
        image_ids = _upload(photo_paths, 3)
        time.sleep(5)
        assert queue_depths() == {"classify": 3, "bulk": 0, "training": 0, "maintenance": 0}
        assert set(ListingImage.objects.filter(pk__in=image_ids).values_list("deliveries", flat=True)) == {0}
        # and /metrics shows the worker as not ready
        client = Client()
        client.force_login(UserFactory.create(is_staff=True))
        body = client.get("/metrics").content.decode()
        assert f'marketplace_classifier_ready{{worker="{refusing.name}"}} 0.0' in body.splitlines()
    finally:
        stop_worker(refusing)

    # when a worker with a sound cache starts, then it classifies every one of them
    healthy = start_worker(log=tmp_path / "healthy.log", queues="classify", env={"CELERY_BROKER_URL": broker})
    try:
        wait_for(lambda: _all_done(image_ids), timeout=120)
    finally:
        stop_worker(healthy)


def test_a_worker_rebuilds_a_truncated_model_file_before_it_serves(
    tmp_path: Path, cache_copy: Path, verified_cache: Path, broker: str, photo_paths: list[Path]
) -> None:
    # given a cache whose served file is truncated
    served = cache_copy / verified_cache.name
    truncate(served, keep=0.33)

    # when a worker starts on it
    env = {"CELERY_BROKER_URL": broker, "CLASSIFIER_CACHE_DIR": str(cache_copy)}
    worker = start_worker(log=tmp_path / "worker.log", queues="classify", env=env)
    try:
        # then it rebuilt the file, says so, and classifies
        assert f"rebuilding {served.name}" in worker.log_text()
        assert served.stat().st_size == verified_cache.stat().st_size
        image_ids = _upload(photo_paths, 2)
        wait_for(lambda: _all_done(image_ids), timeout=120)
    finally:
        stop_worker(worker)
