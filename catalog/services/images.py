"""Photos: storage, the classification status machine, failures and the sweeper."""

from __future__ import annotations

import hashlib
import logging
from typing import IO

from django.conf import settings
from django.core.files.base import ContentFile
from django.db.models import F
from django.utils import timezone

from catalog import selectors
from catalog.models import ClassificationStatus, Listing, ListingImage
from catalog.queueing import IMAGE_CLASSIFY_TASK, enqueue_on_commit, send_task

logger = logging.getLogger(__name__)

# User-facing messages; tests reuse them.
UPLOAD_TOO_LARGE = "The photo is larger than {limit_mb} MB."
UPLOAD_EMPTY = "The file is empty."
PHOTO_MISSING_FROM_STORAGE = "The photo file is missing from storage."
WORKER_CRASHED_REPEATEDLY = (
    "Classification stopped the worker {deliveries} times in a row; the photo was set aside."
)


class UploadRejected(ValueError):
    """An upload refused before storage; `str(error)` is shown to the seller."""


class IllegalTransition(RuntimeError):
    """A classification status change that the state machine does not allow."""


_S = ClassificationStatus
ALLOWED_TRANSITIONS: dict[str, set[str]] = {
    _S.PENDING: {_S.QUEUED, _S.DONE, _S.FAILED},
    _S.QUEUED: {_S.QUEUED, _S.DONE, _S.FAILED},
    _S.DONE: {_S.QUEUED, _S.DONE},
    _S.FAILED: {_S.QUEUED, _S.FAILED},
}


def _read_limited(upload: bytes | IO[bytes], limit: int) -> bytes:
    data = upload if isinstance(upload, bytes) else upload.read(limit + 1)
    if len(data) > limit:
        raise UploadRejected(UPLOAD_TOO_LARGE.format(limit_mb=limit // (1024 * 1024)))
    if not data:
        raise UploadRejected(UPLOAD_EMPTY)
    return data


def image_add(
    *, listing: Listing, upload: bytes | IO[bytes], filename: str, position: int | None = None
) -> ListingImage:
    """Store a photo for `listing` and queue its classification once the transaction commits.

    The byte limit (settings.UPLOAD_MAX_BYTES) is enforced before anything is stored.
    Raises `UploadRejected`. A broker outage does not fail the upload: the row stays PENDING.
    """
    data = _read_limited(upload, settings.UPLOAD_MAX_BYTES)
    if position is None:
        position = listing.images.count()
    image = ListingImage(
        listing=listing,
        checksum=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        position=position,
    )
    image.file.save(filename, ContentFile(data), save=False)
    image.save()
    image_enqueue(image_id=image.pk)
    return image


def image_enqueue(*, image_id: int) -> None:
    """Queue classification of a photo after commit; mark it QUEUED once the broker has it."""
    enqueue_on_commit(
        IMAGE_CLASSIFY_TASK,
        args=[image_id],
        on_sent=lambda: image_status_set(image_id=image_id, status=_S.QUEUED, only_from={_S.PENDING}),
    )


def image_status_set(
    *,
    image_id: int,
    status: str,
    reason: str = "",
    only_from: set[str] | None = None,
) -> bool:
    """Move a photo to `status` with one conditional UPDATE.

    `only_from` narrows the allowed previous states (e.g. QUEUED only from PENDING, so a task that
    finished before the publish returned is not set back). Returns False when the row is gone or
    in a state outside `only_from`. Raises `IllegalTransition` if no state may reach `status`.
    """
    sources = {src for src, targets in ALLOWED_TRANSITIONS.items() if status in targets}
    if not sources:
        raise IllegalTransition(f"no state may move to {status!r}")
    if only_from is not None:
        sources &= only_from
    updated = ListingImage.objects.filter(pk=image_id, status__in=sources).update(
        status=status, failure_reason=reason, status_changed_at=timezone.now()
    )
    return bool(updated)


def image_delivery_start(*, image_id: int) -> int:
    """Count one more delivery of the photo's classification task; returns the new count."""
    ListingImage.objects.filter(pk=image_id).update(deliveries=F("deliveries") + 1)
    return ListingImage.objects.filter(pk=image_id).values_list("deliveries", flat=True).first() or 0


def image_classification_fail(*, image: ListingImage, reason: str) -> None:
    """Mark the photo FAILED with a reason a person can read, and refresh its listing."""
    if not image_status_set(image_id=image.pk, status=_S.FAILED, reason=reason):
        current = ListingImage.objects.filter(pk=image.pk).values_list("status", flat=True).first()
        if current is not None and current != _S.FAILED:
            raise IllegalTransition(f"image {image.pk} cannot fail from {current!r}")
    logger.info("image %s failed: %s", image.pk, reason)


def images_requeue_stuck(*, older_than_s: int | None = None, limit: int = 1000) -> int:
    """Re-send photos left PENDING/QUEUED too long (a broker outage or a lost message).

    Returns how many were sent. Safe to run concurrently with workers: classification is
    idempotent per (image, model version).
    """
    older_than_s = settings.STUCK_IMAGE_AFTER_S if older_than_s is None else older_than_s
    sent = 0
    for image_id in selectors.images_stuck(older_than_s=older_than_s).values_list("pk", flat=True)[:limit]:
        if send_task(IMAGE_CLASSIFY_TASK, args=[image_id]):
            image_status_set(image_id=image_id, status=_S.QUEUED)
            sent += 1
    return sent
