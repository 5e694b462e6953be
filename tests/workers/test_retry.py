"""The one retry policy: which errors are retried, how long between attempts, and how a photo
ends when an error stops it (without a worker: `workers.classify.settle` is called directly)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from celery.exceptions import SoftTimeLimitExceeded
from django.db import OperationalError

from catalog.models import ClassificationStatus, ListingImage
from catalog.services import images
from catalog.services.images import (
    CLASSIFICATION_ERROR,
    CLASSIFICATION_TIMED_OUT,
    DATABASE_UNAVAILABLE_AFTER_RETRIES,
    PHOTO_MISSING_FROM_STORAGE,
    PHOTO_UNREADABLE_AFTER_RETRIES,
    ImageGone,
    image_add,
    image_status_set,
)
from classifier.preprocess import CORRUPT_IMAGE, ImageRejected
from tests.factories import ListingFactory
from workers import retry
from workers.classify import PhotoOutcome, settle
from workers.storage import photo_read


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "..."}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error"),
        PermissionError(errno.EACCES, "Permission denied"),
        IsADirectoryError(errno.EISDIR, "Is a directory"),
        _client_error("SlowDown", 503),
        _client_error("InternalError", 500),
        _client_error("Throttling", 400),
        _client_error("RequestTimeout", 400),
        EndpointConnectionError(endpoint_url="http://s3.invalid"),
        ReadTimeoutError(endpoint_url="http://s3.invalid"),
    ],
    ids=repr,
)
def test_transient_storage_errors_are_retryable(error: BaseException) -> None:
    assert retry.storage_error_is_transient(error)
    assert not retry.storage_error_is_missing(error)


@pytest.mark.parametrize(
    ("error", "missing"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), True),
        (_client_error("NoSuchKey", 404), True),
        (_client_error("AccessDenied", 403), False),
        (ValueError("a bug"), False),
    ],
    ids=repr,
)
def test_missing_files_and_refusals_are_final(error: BaseException, missing: bool) -> None:
    assert not retry.storage_error_is_transient(error)
    assert retry.storage_error_is_missing(error) is missing


def test_photo_read_raises_storage_errors_for_the_retry_policy(settings, tmp_path: Path) -> None:
    # given a storage folder with a directory where a photo should be
    settings.MEDIA_ROOT = str(tmp_path)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").mkdir()

    # when the photos are read, then an I/O error is retryable and names no path
    with pytest.raises(retry.StorageUnavailable) as unreadable:
        photo_read("photos/a.jpg")
    assert str(unreadable.value) == "IsADirectoryError"
    assert isinstance(unreadable.value, retry.RETRYABLE_ERRORS)
    # and a missing file is final
    with pytest.raises(FileNotFoundError):
        photo_read("photos/b.jpg")


def test_backoff_grows_exponentially_with_full_jitter_up_to_its_cap() -> None:
    policy = retry.RetryPolicy(max_retries=8, backoff_s=2, backoff_max_s=60)
    for retries, cap in [(0, 2), (1, 4), (3, 16), (5, 60), (7, 60)]:
        waits = [policy.countdown(retries) for _ in range(200)]
        assert all(0.0 <= wait <= cap for wait in waits)
        assert max(waits) > cap / 2  # jittered over the whole range, not fixed
    assert not policy.exhausted(7)
    assert policy.exhausted(8)
    options = policy.task_options()
    assert options["autoretry_for"] == retry.RETRYABLE_ERRORS
    assert options["throws"] == retry.FINAL_ERRORS


@pytest.fixture
def photo(db: None) -> ListingImage:
    return image_add(listing=ListingFactory.create(), upload=b"\xff\xd8\xff" + b"\0" * 64, filename="p.jpg")


def test_a_retryable_error_with_retries_left_changes_nothing(photo: ListingImage) -> None:
    # when the database fails while the photo is classified, on its first attempt
    results = settle([photo.pk], OperationalError("server closed the connection"), {photo.pk: 0})

    # then it is to be sent again, and its row is untouched
    assert results[photo.pk].outcome is PhotoOutcome.RETRYING
    photo.refresh_from_db()
    assert (photo.status, photo.failure_reason) == (ClassificationStatus.PENDING, "")


def test_the_last_retry_fails_the_photo_with_the_reason_not_the_sweeper(
    settings, photo: ListingImage
) -> None:
    # given the policy allows two retries, both spent
    settings.TASK_MAX_RETRIES = 2

    # when the storage fails once more
    results = settle([photo.pk], retry.StorageUnavailable("ClientError SlowDown"), {photo.pk: 2})

    # then the photo is FAILED with what happened, in words
    assert results[photo.pk].outcome is PhotoOutcome.FAILED
    photo.refresh_from_db()
    assert photo.status == ClassificationStatus.FAILED
    assert photo.failure_reason == PHOTO_UNREADABLE_AFTER_RETRIES.format(
        attempts=3, error="ClientError SlowDown"
    )


def test_the_last_database_retry_fails_the_photo_with_the_reason(settings, photo: ListingImage) -> None:
    settings.TASK_MAX_RETRIES = 0
    settle([photo.pk], OperationalError("the database system is shutting down"), {})
    photo.refresh_from_db()
    assert photo.failure_reason == DATABASE_UNAVAILABLE_AFTER_RETRIES.format(
        attempts=1, error="OperationalError"
    )


def test_a_photo_is_sent_again_when_even_its_failure_cannot_be_saved(
    settings, monkeypatch: pytest.MonkeyPatch, photo: ListingImage
) -> None:
    # given no retries left, and a database that refuses the FAILED write too
    settings.TASK_MAX_RETRIES = 0

    def database_down(**_: object) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(images, "images_classification_fail", database_down)

    # when the error is settled, then the photo is sent again rather than left for the sweeper
    results = settle([photo.pk], OperationalError("connection refused"), {photo.pk: 0})
    assert results[photo.pk].outcome is PhotoOutcome.RETRYING


@pytest.mark.parametrize(
    ("error", "outcome", "reason"),
    [
        (ImageRejected(CORRUPT_IMAGE), PhotoOutcome.FAILED, CORRUPT_IMAGE),
        (FileNotFoundError("p.jpg"), PhotoOutcome.FAILED, PHOTO_MISSING_FROM_STORAGE),
        (
            SoftTimeLimitExceeded(),
            PhotoOutcome.TIMED_OUT,
            CLASSIFICATION_TIMED_OUT.format(seconds=240),
        ),
        (KeyError("bug"), PhotoOutcome.FAILED, CLASSIFICATION_ERROR.format(error="KeyError")),
    ],
    ids=lambda value: type(value).__name__,
)
def test_final_errors_fail_the_photo_at_once_with_a_true_reason(
    settings, photo: ListingImage, error: BaseException, outcome: PhotoOutcome, reason: str
) -> None:
    settings.CELERY_TASK_SOFT_TIME_LIMIT_S = 240
    results = settle([photo.pk], error, {photo.pk: 0})
    assert results[photo.pk].outcome is outcome
    photo.refresh_from_db()
    assert (photo.status, photo.failure_reason) == (ClassificationStatus.FAILED, reason)


def test_a_photo_deleted_meanwhile_is_gone_and_a_finished_one_stays_done(photo: ListingImage) -> None:
    assert settle([photo.pk], ImageGone("deleted"), {})[photo.pk].outcome is PhotoOutcome.GONE
    image_status_set(image_id=photo.pk, status=ClassificationStatus.DONE)
    results = settle([photo.pk], KeyError("late"), {})
    assert results[photo.pk].outcome is PhotoOutcome.ALREADY_DONE
    assert ListingImage.objects.get(pk=photo.pk).status == ClassificationStatus.DONE


def test_a_worker_that_cannot_classify_sends_its_requests_back_untouched(
    monkeypatch: pytest.MonkeyPatch, photo: ListingImage
) -> None:
    from celery_batches import SimpleRequest

    from workers import inference, tasks

    # given a worker process whose model failed its checks
    def unavailable() -> None:
        raise inference.ClassifierUnavailable("efficientnet-lite0-x.onnx is truncated")

    monkeypatch.setattr(inference, "get_classifier", unavailable)
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(tasks.app, "send_task", lambda name, **options: sent.append((name, options)))
    request = SimpleRequest(
        "task-1", tasks.image_classify_task.name, (photo.pk,), {}, {}, "w1@host", True, None, None,
        {"retries": 2},
    )  # fmt: skip

    # when a batch reaches it
    tasks.image_classify_task.run([request])

    # then the request goes back as it came (no retry counted), and the photo is untouched
    assert sent == [
        (
            tasks.image_classify_task.name,
            {"args": [photo.pk], "task_id": "task-1", "countdown": tasks.DEFER_S, "retries": 2},
        )
    ]
    photo.refresh_from_db()
    assert (photo.status, photo.deliveries) == (ClassificationStatus.PENDING, 0)
