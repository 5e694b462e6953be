"""Faults injected into processes this test starts: every photo still ends with exactly one
suggestion per model version, or FAILED with a reason, and nothing needs a manual restart."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.db import transaction

from catalog import services
from catalog.models import CategorySuggestion, ClassificationStatus, ListingImage
from dev.embedded import start_redis
from tests.conftest import WorkerProcess, point_celery_app_at, start_worker, stop_worker, wait_for
from tests.factories import ListingFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[dict]:
    """A Redis server of this test alone, with the Celery app of this process pointed at it.

    No other worker listens there, so the test decides exactly which worker sees which task.
    """
    proc, port = start_redis(tmp_path / "redis")
    url = f"redis://127.0.0.1:{port}/0"
    previous = point_celery_app_at(url)
    state = {"process": proc, "port": port, "url": url, "dir": tmp_path / "redis"}
    try:
        yield state
    finally:
        point_celery_app_at(previous)
        state["process"].kill()
        state["process"].wait()


def _upload(photo_paths: list[Path], count: int) -> list[int]:
    listing = ListingFactory()
    with transaction.atomic():
        images = [
            services.image_add(
                listing=listing, upload=photo_paths[i % len(photo_paths)].read_bytes(), filename=f"{i}.jpg"
            )
            for i in range(count)
        ]
    return [image.pk for image in images]


def _all_done_once(image_ids: list[int]) -> bool:
    statuses = set(ListingImage.objects.filter(pk__in=image_ids).values_list("status", flat=True))
    if statuses != {ClassificationStatus.DONE}:
        return False
    counts = [CategorySuggestion.objects.filter(image_id=pk).count() for pk in image_ids]
    return counts == [1] * len(image_ids)


def _worker(tmp_path: Path, broker: dict, name: str) -> WorkerProcess:
    return start_worker(
        log=tmp_path / f"{name}.log", queues="classify", env={"CELERY_BROKER_URL": broker["url"]}
    )


def test_killing_the_pool_process_mid_flight_loses_no_photo(
    tmp_path: Path, private_broker: dict, photo_paths: list[Path]
) -> None:
    # given a worker with photos on their way to it
    worker = _worker(tmp_path, private_broker, "w1")
    try:
        image_ids = _upload(photo_paths, 6)

        # when its pool process is SIGKILLed as soon as it starts on one
        wait_for(lambda: ListingImage.objects.filter(pk__in=image_ids, deliveries__gt=0).exists(), timeout=60)
        for child in psutil.Process(worker.process.pid).children(recursive=True):
            os.kill(child.pid, signal.SIGKILL)

        # then the worker replaces the process and every photo ends with exactly one suggestion
        wait_for(lambda: _all_done_once(image_ids), timeout=180)
        assert worker.process.poll() is None
    finally:
        stop_worker(worker)


def test_sigterm_during_work_finishes_or_redelivers_every_photo(
    tmp_path: Path, private_broker: dict, photo_paths: list[Path]
) -> None:
    # given a worker busy with a batch of photos
    first = _worker(tmp_path, private_broker, "w1")
    image_ids = _upload(photo_paths, 8)
    wait_for(lambda: ListingImage.objects.filter(pk__in=image_ids, deliveries__gt=0).exists(), timeout=60)

    # when it is stopped the way a deploy stops it (SIGTERM: warm shutdown)
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(120)

    # then a new worker finishes what was left, with no sweeper involved
    second = _worker(tmp_path, private_broker, "w2")
    try:
        wait_for(lambda: _all_done_once(image_ids), timeout=180)
    finally:
        stop_worker(second)


def test_queued_photos_survive_a_broker_restart_through_the_sweeper(
    tmp_path: Path, private_broker: dict, photo_paths: list[Path]
) -> None:
    # given photos queued while no worker runs
    image_ids = _upload(photo_paths, 4)
    assert set(ListingImage.objects.filter(pk__in=image_ids).values_list("status", flat=True)) == {
        ClassificationStatus.QUEUED
    }

    # when Redis restarts without persistence (its queue is lost) on the same port
    private_broker["process"].kill()
    private_broker["process"].wait()
    private_broker["process"], _ = start_redis(private_broker["dir"], port=private_broker["port"])
    worker = _worker(tmp_path, private_broker, "w1")
    try:
        # and the periodic sweeper runs (as beat would run it every minute)
        sent = services.images_requeue_stuck(older_than_s=0)

        # then every photo is classified exactly once, with no manual step
        assert sent == 4
        wait_for(lambda: _all_done_once(image_ids), timeout=180)
    finally:
        stop_worker(worker)


def test_a_killed_worker_leaves_nothing_behind_once_the_sweeper_runs(
    tmp_path: Path, private_broker: dict, photo_paths: list[Path]
) -> None:
    # given a worker holding unacknowledged photos
    first = _worker(tmp_path, private_broker, "w1")
    image_ids = _upload(photo_paths, 6)
    wait_for(lambda: ListingImage.objects.filter(pk__in=image_ids, deliveries__gt=0).exists(), timeout=60)

    # when the whole worker (main process and pool) is SIGKILLed
    for child in psutil.Process(first.process.pid).children(recursive=True):
        os.kill(child.pid, signal.SIGKILL)
    first.process.kill()
    first.process.wait()

    # then a new worker plus the sweeper finish every photo exactly once
    second = _worker(tmp_path, private_broker, "w2")
    try:
        services.images_requeue_stuck(older_than_s=0)
        wait_for(lambda: _all_done_once(image_ids), timeout=180)
    finally:
        stop_worker(second)
