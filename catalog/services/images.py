"""Photos: storage, the classification status machine, failures and the sweeper."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from catalog.models import ClassificationStatus, Listing, ListingImage
from catalog.queueing import enqueue_on_commit, send_task
from catalog.selectors import catalogue as catalogue_selectors
from catalog.selectors import registry as registry_selectors
from catalog.services.storage import stored_files_delete
from catalog.tasks_contract import TaskName
from catalog.uploads import UploadRejected, photo_clean, photo_storage_name, read_limited

logger = logging.getLogger(__name__)

# User-facing messages; tests reuse them. The upload ones live with the checks in catalog.uploads.
LISTING_MAX_PHOTOS = 10
LISTING_TOO_MANY_PHOTOS = "A listing has at most {limit} photos; this one was not added."
LISTING_NEEDS_A_PHOTO = "A listing needs at least one photo: add another before removing this one."
PROBE_LISTING_TITLE = "Classification probe"
PHOTO_MISSING_FROM_STORAGE = "The photo file is missing from storage."
WORKER_CRASHED_REPEATEDLY = (
    "Classification stopped the worker {deliveries} times in a row; the photo was set aside."
)
PHOTO_UNREADABLE = "The photo could not be read from storage ({error})."
PHOTO_UNREADABLE_AFTER_RETRIES = "The photo could not be read from storage in {attempts} attempts ({error})."
DATABASE_UNAVAILABLE_AFTER_RETRIES = (
    "The classification result could not be saved: the database did not answer in {attempts} attempts "
    "({error})."
)
SERVICE_UNAVAILABLE_AFTER_RETRIES = (
    "Classification could not reach a service it needs in {attempts} attempts ({error})."
)
CLASSIFICATION_TIMED_OUT = (
    "Classifying this photo took longer than the {seconds} s time limit; it was set aside."
)
CLASSIFICATION_ERROR = "Classification stopped on an unexpected error ({error}); the photo was set aside."


class ListingRuleBroken(ValueError):
    """A change a listing's rules refuse (e.g. removing its last photo); `str(error)` is shown."""


class IllegalTransition(RuntimeError):
    """A classification status change that the state machine does not allow."""


class ImageGone(LookupError):
    """The photo, or its listing, was deleted while it was being classified: nothing to record."""


_S = ClassificationStatus
ALLOWED_TRANSITIONS: dict[str, set[str]] = {
    _S.PENDING: {_S.QUEUED, _S.DONE, _S.FAILED},
    _S.QUEUED: {_S.QUEUED, _S.DONE, _S.FAILED},
    _S.DONE: {_S.QUEUED, _S.DONE},
    _S.FAILED: {_S.QUEUED, _S.FAILED},
}


def image_add(
    *, listing: Listing, upload: bytes | IO[bytes], filename: str, position: int | None = None
) -> ListingImage:
    """Store a photo for `listing` and queue its classification once the transaction commits.

    The file is stored as `listings/<year>/<month>/<uuid>.<extension of filename>`; the uploader's
    file name is not kept. It is written within the caller's transaction: if that rolls back, the
    file is an orphan for `stored_files_sweep` (catalog.services.storage says why).
    The byte limit (settings.UPLOAD_MAX_BYTES) is enforced before anything is stored.
    Raises `UploadRejected`. A broker outage does not fail the upload: the row stays PENDING.
    """
    data = read_limited(upload)
    if position is None:
        position = listing.images.count()
    image = ListingImage(
        listing=listing,
        checksum=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        position=position,
    )
    image.file.save(photo_storage_name(filename), ContentFile(data), save=False)
    image.save()
    image_enqueue(image_id=image.pk)
    return image


def image_enqueue(*, image_id: int) -> None:
    """Queue classification of a photo after commit; mark it QUEUED once the broker has it."""
    enqueue_on_commit(
        TaskName.IMAGE_CLASSIFY,
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


def images_delivery_start(*, image_ids: Sequence[int]) -> None:
    """Count one more delivery for each photo, in one UPDATE (a batch's photos together)."""
    ListingImage.objects.filter(pk__in=image_ids).update(deliveries=F("deliveries") + 1)


def images_delivery_release(*, image_ids: Sequence[int]) -> None:
    """Start the photos' delivery counts over: their deliveries ended without a crash and they
    are sent again on purpose (a retry after a storage or database error), so retries never
    count towards `CLASSIFY_MAX_DELIVERIES`, which is for deliveries that killed the worker."""
    if image_ids:
        ListingImage.objects.filter(pk__in=image_ids).update(deliveries=0)


def image_delivery_start(*, image_id: int) -> int:
    """Count one more delivery of the photo's classification task; returns the new count."""
    images_delivery_start(image_ids=[image_id])
    return ListingImage.objects.filter(pk=image_id).values_list("deliveries", flat=True).first() or 0


def image_classification_fail(*, image: ListingImage, reason: str) -> None:
    """Mark the photo FAILED with a reason a person can read. A deleted photo is left alone;
    raises `IllegalTransition` when the photo is DONE meanwhile (another delivery finished it)."""
    images_classification_fail(image_ids=[image.pk], reason=reason)


def images_classification_fail(*, image_ids: Sequence[int], reason: str) -> None:
    """Mark photos FAILED with the same readable reason, in one UPDATE. Photos deleted meanwhile
    are left alone; raises `IllegalTransition` if one of them is DONE (nothing is changed then)."""
    sources = {src for src, targets in ALLOWED_TRANSITIONS.items() if _S.FAILED in targets}
    with transaction.atomic():
        rows = dict(
            ListingImage.objects.select_for_update().filter(pk__in=image_ids).values_list("pk", "status")
        )
        refused = {pk: status for pk, status in rows.items() if status not in sources}
        if refused:
            raise IllegalTransition(f"images cannot fail from their state: {refused}")
        ListingImage.objects.filter(pk__in=rows).update(
            status=_S.FAILED, failure_reason=reason, status_changed_at=timezone.now()
        )
    for pk in rows:
        logger.info("image %s failed: %s", pk, reason)


def images_requeue_stuck(*, older_than_s: int | None = None, limit: int = 1000) -> int:
    """Re-send photos left PENDING/QUEUED too long (a broker outage or a lost message).

    Returns how many were sent. Safe to run concurrently with workers: classification is
    idempotent per (image, model version).
    """
    older_than_s = settings.STUCK_IMAGE_AFTER_S if older_than_s is None else older_than_s
    sent = 0
    for image_id in catalogue_selectors.images_stuck(older_than_s=older_than_s).values_list("pk", flat=True)[
        :limit
    ]:
        if send_task(TaskName.IMAGE_CLASSIFY, args=[image_id]):
            image_status_set(image_id=image_id, status=_S.QUEUED)
            sent += 1
    return sent


# --- sellers' photos -------------------------------------------------------------------------


@dataclass(frozen=True)
class RejectedPhoto:
    """One file of a batch that was not stored, with the message shown next to it."""

    filename: str
    message: str


@dataclass
class PhotoBatch:
    """Outcome of `listing_photos_add`: the stored photos and the refused files, in upload order."""

    added: list[ListingImage] = field(default_factory=list)
    rejected: list[RejectedPhoto] = field(default_factory=list)


def listing_photo_upload(*, listing: Listing, upload: bytes | IO[bytes], filename: str) -> ListingImage:
    """Validate a seller's photo, store its re-encoded copy (no EXIF/GPS) last in the listing's
    order, and queue its classification after commit.

    Checks (catalog.uploads.photo_clean): byte limit, format by content (JPEG, PNG, WebP), pixel
    limit from the header, animation, full decode. Raises `UploadRejected` with the message to show,
    also when the listing already has `LISTING_MAX_PHOTOS` photos. Unlike `image_add`, nothing that
    is not a valid photo is ever stored.
    """
    with transaction.atomic():
        # Lock the listing row: two concurrent uploads cannot both take the tenth place.
        Listing.objects.select_for_update().filter(pk=listing.pk).first()
        if listing.images.count() >= LISTING_MAX_PHOTOS:
            raise UploadRejected(LISTING_TOO_MANY_PHOTOS.format(limit=LISTING_MAX_PHOTOS))
        clean = photo_clean(upload)
        last = listing.images.aggregate(last=Max("position"))["last"]
        return image_add(
            listing=listing,
            upload=clean.data,
            filename=f"photo.{clean.extension}",
            position=0 if last is None else last + 1,
        )


def listing_photos_add(*, listing: Listing, files: Sequence[tuple[str, bytes | IO[bytes]]]) -> PhotoBatch:
    """Upload several photos (filename, bytes or file) to `listing`; each bad file is refused on
    its own with its message while the good ones are kept. Returns a `PhotoBatch`."""
    batch = PhotoBatch()
    for filename, upload in files:
        try:
            batch.added.append(listing_photo_upload(listing=listing, upload=upload, filename=filename))
        except UploadRejected as error:
            batch.rejected.append(RejectedPhoto(filename=filename, message=str(error)))
    return batch


def listing_image_delete(*, image: ListingImage, allow_last: bool = False) -> None:
    """Remove a photo: its row, its suggestions, its stored file and thumbnails (after commit).

    The remaining photos are renumbered 0..n-1 and the listing's suggested category is derived again.
    Raises `ListingRuleBroken` when it is the listing's only photo, unless `allow_last`.
    """
    from catalog.services.suggestions import listing_suggestion_refresh

    listing = image.listing
    with transaction.atomic():
        Listing.objects.select_for_update().filter(pk=listing.pk).first()
        if not allow_last and listing.images.count() <= 1:
            raise ListingRuleBroken(LISTING_NEEDS_A_PHOTO)
        stored = [(str(image.file.name), image.pk, image.checksum)]
        image.delete()
        _positions_renumber(listing=listing, image_ids=list(listing.images.values_list("pk", flat=True)))
        version = registry_selectors.model_version_active()
        if version is not None:
            listing_suggestion_refresh(listing=listing, model_version=version)
        transaction.on_commit(lambda: stored_files_delete(stored))


def listing_images_reorder(*, listing: Listing, image_ids: Sequence[int]) -> None:
    """Put the listing's photos in the order of `image_ids` (positions 0..n-1).

    Raises `ValueError` unless `image_ids` lists each of the listing's photos exactly once.
    """
    with transaction.atomic():
        Listing.objects.select_for_update().filter(pk=listing.pk).first()
        current = set(listing.images.values_list("pk", flat=True))
        if len(image_ids) != len(current) or set(image_ids) != current:
            raise ValueError("the new order must list each photo of the listing once")
        _positions_renumber(listing=listing, image_ids=list(image_ids))


def _positions_renumber(*, listing: Listing, image_ids: list[int]) -> None:
    for position, image_id in enumerate(image_ids):
        ListingImage.objects.filter(pk=image_id, listing=listing).exclude(position=position).update(
            position=position
        )


def classify_probe_create(
    *, user: AbstractBaseUser, upload: bytes | IO[bytes], filename: str
) -> ListingImage:
    """Store one photo for `POST /api/classify` in a new hidden listing of `user` (is_probe), and
    queue its classification after commit. Probe listings are never browsed or listed; the
    user's oldest finished ones make room past settings.CLASSIFY_PROBES_PER_USER.

    Raises `UploadRejected` (same checks as `listing_photo_upload`) before anything is stored,
    and `ProbeLimitReached` when all of the user's probes are still waiting for the worker.
    """
    from catalog.services.retention import classify_probe_room_make

    clean = photo_clean(upload)
    with transaction.atomic():
        classify_probe_room_make(user=user)
        listing = Listing.objects.create(seller_id=user.pk, title=PROBE_LISTING_TITLE, is_probe=True)
        return image_add(listing=listing, upload=clean.data, filename=f"photo.{clean.extension}", position=0)
