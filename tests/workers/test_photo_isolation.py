"""One photo's fault stays with that photo: its batch-mates, uploaded together and classified in
the same delivery, are DONE within seconds, whatever happens to it. Real worker, real Redis,
real PostgreSQL; the faults are made on the stored files themselves.

- a listing deleted while its photo is classified (an IntegrityError at commit): "gone";
- a storage read error other than a missing file (IsADirectoryError, standing for EIO): retried
  with backoff, then FAILED with the reason;
- a read that never returns (a FIFO nobody writes to): the soft time limit fails that photo
  alone, with the time-limit reason.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from catalog.models import CategorySuggestion, ListingImage
from catalog.services.images import CLASSIFICATION_TIMED_OUT, PHOTO_UNREADABLE_AFTER_RETRIES
from catalog.services.listings import listing_delete
from dev.chaos.photos import (
    Sabotage,
    all_done_once,
    failure_reason,
    fifo_writer,
    stored_path,
    upload_with_culprit,
)
from dev.embedded import start_redis
from tests.conftest import WorkerProcess, point_celery_app_at, start_worker, stop_worker, wait_for
from tests.factories import ListingFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]

SOFT_TIME_LIMIT_S = 8
# More retries than CLASSIFY_MAX_DELIVERIES (3): a retry must never count as a crash.
MAX_RETRIES = 4
#: Batch-mates must be DONE this soon (the sweeper, the only other way out, waits 10 minutes).
WITHIN_S = 60.0


@pytest.fixture(scope="module")
def worker(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker on a Redis of this module alone, with a short soft time limit and retry policy,
    and a batch window wide enough that photos uploaded together are classified together."""
    directory = tmp_path_factory.mktemp("isolation")
    redis, port = start_redis(directory)
    url = f"redis://127.0.0.1:{port}/0"
    previous = point_celery_app_at(url)
    env = {
        "CELERY_BROKER_URL": url,
        "CELERY_TASK_SOFT_TIME_LIMIT_S": str(SOFT_TIME_LIMIT_S),
        "CELERY_TASK_HARD_TIME_LIMIT_S": "90",
        "TASK_MAX_RETRIES": str(MAX_RETRIES),
        "TASK_RETRY_BACKOFF_S": "1",
        "TASK_RETRY_BACKOFF_MAX_S": "2",
        "CLASSIFY_BATCH_INTERVAL_S": "1.0",
    }
    try:
        process = start_worker(log=directory / "worker.log", queues="classify", env=env)
        try:
            yield process
        finally:
            stop_worker(process)
    finally:
        point_celery_app_at(previous)
        redis.kill()
        redis.wait()


def _upload_with_culprit(photo_paths: list[Path], sabotage: Sabotage) -> tuple[int, list[int]]:
    return upload_with_culprit(
        photo_paths,
        sabotage,
        culprit_listing=ListingFactory.create(),
        listing=ListingFactory.create(),
        mates=6,
    )


def test_a_listing_deleted_while_its_photo_is_classified_holds_back_no_one(
    worker: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a photo whose read the test controls (a FIFO), uploaded with six photos of another listing
    culprit, mates = _upload_with_culprit(photo_paths, os.mkfifo)
    fifo = stored_path(culprit)
    writer = wait_for(lambda: fifo_writer(fifo), timeout=WITHIN_S)

    # when its seller deletes the listing while the worker reads it, and the bytes then arrive
    listing_delete(listing=ListingImage.objects.get(pk=culprit).listing)
    with os.fdopen(int(writer), "wb") as pipe:
        pipe.write(photo_paths[0].read_bytes())

    # then the batch-mates are DONE with one suggestion each, within seconds
    wait_for(lambda: all_done_once(mates), timeout=WITHIN_S)
    # and the deleted photo left nothing behind (its suggestion insert hit the foreign key)
    assert not ListingImage.objects.filter(pk=culprit).exists()
    assert not CategorySuggestion.objects.filter(image_id=culprit).exists()
    assert '"outcome": "gone"' in worker.log_text()


def test_a_storage_read_error_is_retried_then_fails_that_photo_alone(
    worker: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a photo whose stored file cannot be read (a directory where the file should be)
    culprit, mates = _upload_with_culprit(photo_paths, Path.mkdir)

    # when it is classified with six batch-mates
    # then they are DONE within seconds
    wait_for(lambda: all_done_once(mates), timeout=WITHIN_S)
    # and the photo is retried with backoff, then FAILED with the true reason
    expected = PHOTO_UNREADABLE_AFTER_RETRIES.format(attempts=MAX_RETRIES + 1, error="IsADirectoryError")
    assert wait_for(lambda: failure_reason(culprit), timeout=WITHIN_S) == expected
    assert not CategorySuggestion.objects.filter(image_id=culprit).exists()


def test_the_soft_time_limit_fails_only_the_photo_that_ran_past_it(
    worker: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a photo whose read never returns (a FIFO no one writes to)
    culprit, mates = _upload_with_culprit(photo_paths, os.mkfifo)
    fifo = stored_path(culprit)
    try:
        # when it is classified with six batch-mates
        # then they are DONE within seconds of the soft time limit
        wait_for(lambda: all_done_once(mates), timeout=WITHIN_S)
        # and the photo is FAILED with the time-limit reason, in the same delivery
        reason = wait_for(lambda: failure_reason(culprit), timeout=WITHIN_S)
        assert reason == CLASSIFICATION_TIMED_OUT.format(seconds=SOFT_TIME_LIMIT_S)
        assert ListingImage.objects.get(pk=culprit).deliveries == 1
    finally:
        # let the decode thread still blocked in the read finish
        writer = fifo_writer(fifo)
        if writer is not None:
            with contextlib.suppress(OSError):
                os.close(writer)
