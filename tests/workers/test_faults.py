"""Faults injected into processes this test starts: every photo still ends with exactly one
suggestion per model version, or FAILED with a reason, and nothing needs a manual restart."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from catalog.models import ClassificationStatus, ListingImage
from catalog.services.images import images_requeue_stuck
from dev.chaos.photos import all_done_once, delivered, photos_upload
from dev.chaos.processes import kill_pool, kill_worker
from dev.embedded import start_redis
from tests.conftest import WorkerProcess, point_celery_app_at, start_worker, stop_worker, wait_for
from tests.factories import ListingFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]


@dataclass
class PrivateBroker:
    """A Redis server of one test: its process, port, broker URL and data directory."""

    process: subprocess.Popen
    port: int
    url: str
    dir: Path

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Kill the server and start it again on the same port (its queues are lost)."""
        self.stop()
        self.process, _ = start_redis(self.dir, port=self.port)


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A Redis server of this test alone, with the Celery app of this process pointed at it.

    No other worker listens there, so the test decides exactly which worker sees which task.
    """
    proc, port = start_redis(tmp_path / "redis")
    broker = PrivateBroker(proc, port, f"redis://127.0.0.1:{port}/0", tmp_path / "redis")
    previous = point_celery_app_at(broker.url)
    try:
        yield broker
    finally:
        point_celery_app_at(previous)
        broker.stop()


def _upload(photo_paths: list[Path], count: int) -> list[int]:
    return photos_upload(photo_paths, count, listing=ListingFactory.create())


def _worker(tmp_path: Path, broker: PrivateBroker, name: str) -> WorkerProcess:
    return start_worker(
        log=tmp_path / f"{name}.log", queues="classify", env={"CELERY_BROKER_URL": broker.url}
    )


def test_killing_the_pool_process_mid_flight_loses_no_photo(
    tmp_path: Path, private_broker: PrivateBroker, photo_paths: list[Path]
) -> None:
    # given a worker with photos on their way to it
    worker = _worker(tmp_path, private_broker, "w1")
    try:
        image_ids = _upload(photo_paths, 6)

        # when its pool process is SIGKILLed as soon as it starts on one
        wait_for(lambda: delivered(image_ids), timeout=60)
        kill_pool(worker)

        # then the worker replaces the process and every photo ends with exactly one suggestion
        wait_for(lambda: all_done_once(image_ids), timeout=180)
        assert worker.process.poll() is None
    finally:
        stop_worker(worker)


def test_sigterm_during_work_finishes_or_redelivers_every_photo(
    tmp_path: Path, private_broker: PrivateBroker, photo_paths: list[Path]
) -> None:
    # given a worker busy with a batch of photos
    first = _worker(tmp_path, private_broker, "w1")
    image_ids = _upload(photo_paths, 8)
    wait_for(lambda: delivered(image_ids), timeout=60)

    # when it is stopped the way a deploy stops it (SIGTERM: warm shutdown)
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(120)

    # then a new worker finishes what was left, with no sweeper involved
    second = _worker(tmp_path, private_broker, "w2")
    try:
        wait_for(lambda: all_done_once(image_ids), timeout=180)
    finally:
        stop_worker(second)


def test_queued_photos_survive_a_broker_restart_through_the_sweeper(
    tmp_path: Path, private_broker: PrivateBroker, photo_paths: list[Path]
) -> None:
    # given photos queued while no worker runs
    image_ids = _upload(photo_paths, 4)
    assert set(ListingImage.objects.filter(pk__in=image_ids).values_list("status", flat=True)) == {
        ClassificationStatus.QUEUED
    }

    # when Redis restarts without persistence (its queue is lost) on the same port
    private_broker.restart()
    worker = _worker(tmp_path, private_broker, "w1")
    try:
        # and the periodic sweeper runs (as beat would run it every minute)
        sent = images_requeue_stuck(older_than_s=0)

        # then every photo is classified exactly once, with no manual step
        assert sent == 4
        wait_for(lambda: all_done_once(image_ids), timeout=180)
    finally:
        stop_worker(worker)


def test_a_killed_worker_leaves_nothing_behind_once_the_sweeper_runs(
    tmp_path: Path, private_broker: PrivateBroker, photo_paths: list[Path]
) -> None:
    # given a worker holding unacknowledged photos
    first = _worker(tmp_path, private_broker, "w1")
    image_ids = _upload(photo_paths, 6)
    wait_for(lambda: delivered(image_ids), timeout=60)

    # when the whole worker (main process and pool) is SIGKILLed
    kill_worker(first)

    # then a new worker plus the sweeper finish every photo exactly once
    second = _worker(tmp_path, private_broker, "w2")
    try:
        images_requeue_stuck(older_than_s=0)
        wait_for(lambda: all_done_once(image_ids), timeout=180)
    finally:
        stop_worker(second)


def test_a_running_worker_carries_on_after_redis_restarts_under_it(
    tmp_path: Path, private_broker: PrivateBroker, photo_paths: list[Path]
) -> None:
    # given a worker busy with more photos than it reserves, some still queued in Redis
    worker = _worker(tmp_path, private_broker, "w1")
    try:
        image_ids = _upload(photo_paths, 40)
        wait_for(lambda: delivered(image_ids), timeout=60)

        # when Redis is killed and restarted empty under it (queued and unacknowledged messages lost)
        private_broker.restart()
        point_celery_app_at(private_broker.url)  # drop this process's pooled connections
        # and the sweeper runs, as beat runs it every minute
        images_requeue_stuck(older_than_s=0)

        # then the same worker, reconnected, classifies every photo exactly once
        wait_for(lambda: all_done_once(image_ids), timeout=120)
        assert worker.process.poll() is None
    finally:
        stop_worker(worker)
