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
from django.conf import settings
from django.db import transaction

from catalog import services
from catalog.models import CategorySuggestion, ClassificationStatus, ListingImage
from config.embedded import start_redis
from tests.conftest import WorkerProcess, point_celery_app_at, start_worker, stop_worker, wait_for
from tests.factories import ListingFactory

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]

SOFT_TIME_LIMIT_S = 8
MAX_RETRIES = 2
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
        "CLASSIFY_BATCH_INTERVAL_S": "1.0",
    }
    process = start_worker(log=directory / "worker.log", queues="classify", env=env)
    try:
        yield process
    finally:
        stop_worker(process)
        point_celery_app_at(previous)
        redis.kill()
        redis.wait()


def _upload_with_culprit(photo_paths: list[Path], sabotage: object, mates: int = 6) -> tuple[int, list[int]]:
    """One photo of its own listing, whose stored file `sabotage(path)` replaces, uploaded in one
    transaction with `mates` photos of another listing. Returns (culprit id, batch-mate ids)."""
    culprit_listing, listing = ListingFactory(), ListingFactory()
    with transaction.atomic():
        culprit = services.image_add(
            listing=culprit_listing, upload=photo_paths[0].read_bytes(), filename="culprit.jpg"
        )
        path = Path(settings.MEDIA_ROOT) / culprit.file.name
        path.unlink()
        sabotage(path)  # type: ignore[operator]
        others = [
            services.image_add(
                listing=listing,
                upload=photo_paths[(i + 1) % len(photo_paths)].read_bytes(),
                filename=f"{i}.jpg",
            )
            for i in range(mates)
        ]
    return culprit.pk, [image.pk for image in others]


def _done_once(image_ids: list[int]) -> bool:
    images = ListingImage.objects.filter(pk__in=image_ids)
    if set(images.values_list("status", flat=True)) != {ClassificationStatus.DONE}:
        return False
    return CategorySuggestion.objects.filter(image_id__in=image_ids).count() == len(image_ids)


def _open_writer(fifo: Path) -> int | None:
    """A write end of `fifo`, once a reader has it open (None before)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


def test_a_listing_deleted_while_its_photo_is_classified_holds_back_no_one(
    worker: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a photo whose read the test controls (a FIFO), uploaded with six photos of another listing
    culprit, mates = _upload_with_culprit(photo_paths, os.mkfifo)
    fifo = Path(settings.MEDIA_ROOT) / ListingImage.objects.get(pk=culprit).file.name
    writer = wait_for(lambda: _open_writer(fifo), timeout=WITHIN_S)

    # when its seller deletes the listing while the worker reads it, and the bytes then arrive
    services.listing_delete(listing=ListingImage.objects.get(pk=culprit).listing)
    with os.fdopen(int(writer), "wb") as pipe:  # type: ignore[call-overload]
        pipe.write(photo_paths[0].read_bytes())

    # then the batch-mates are DONE with one suggestion each, within seconds
    wait_for(lambda: _done_once(mates), timeout=WITHIN_S)
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
    wait_for(lambda: _done_once(mates), timeout=WITHIN_S)
    # and the photo is retried with backoff, then FAILED with the true reason
    expected = services.PHOTO_UNREADABLE_AFTER_RETRIES.format(
        attempts=MAX_RETRIES + 1, error="IsADirectoryError"
    )
    wait_for(
        lambda: ListingImage.objects.filter(pk=culprit, status=ClassificationStatus.FAILED).exists(),
        timeout=WITHIN_S,
    )
    image = ListingImage.objects.get(pk=culprit)
    assert image.failure_reason == expected
    assert not CategorySuggestion.objects.filter(image_id=culprit).exists()


def test_the_soft_time_limit_fails_only_the_photo_that_ran_past_it(
    worker: WorkerProcess, photo_paths: list[Path]
) -> None:
    # given a photo whose read never returns (a FIFO no one writes to)
    culprit, mates = _upload_with_culprit(photo_paths, os.mkfifo)
    fifo = Path(settings.MEDIA_ROOT) / ListingImage.objects.get(pk=culprit).file.name
    try:
        # when it is classified with six batch-mates
        # then they are DONE within seconds of the soft time limit
        wait_for(lambda: _done_once(mates), timeout=WITHIN_S)
        # and the photo is FAILED with the time-limit reason, in the same delivery
        wait_for(
            lambda: ListingImage.objects.filter(pk=culprit, status=ClassificationStatus.FAILED).exists(),
            timeout=WITHIN_S,
        )
        image = ListingImage.objects.get(pk=culprit)
        assert image.failure_reason == services.CLASSIFICATION_TIMED_OUT.format(seconds=SOFT_TIME_LIMIT_S)
        assert image.deliveries == 1
    finally:
        # let the decode thread still blocked in the read finish
        writer = _open_writer(fifo)
        if writer is not None:
            with contextlib.suppress(OSError):
                os.close(writer)
