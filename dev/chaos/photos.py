"""Photos to break: uploads through the real services, sabotaged stored files, and the checks
the fault-injection run and the fault tests make on them. Needs Django set up."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from django.conf import settings
from django.db import transaction

from catalog.models import CategorySuggestion, ClassificationStatus, Listing, ListingImage
from catalog.services.images import image_add

#: Replaces a stored photo file at the path it is given (e.g. `os.mkfifo`, `Path.mkdir`).
Sabotage = Callable[[Path], object]


def photos_upload(photo_paths: Sequence[Path], count: int, *, listing: Listing) -> list[int]:
    """`count` photos (cycling through `photo_paths`) added to `listing` in one transaction, so
    their tasks are published together at commit. Returns their ids."""
    with transaction.atomic():
        images = [
            image_add(
                listing=listing, upload=photo_paths[i % len(photo_paths)].read_bytes(), filename=f"{i}.jpg"
            )
            for i in range(count)
        ]
    return [image.pk for image in images]


def stored_path(image_id: int) -> Path:
    """Where local storage keeps the photo's file."""
    return Path(settings.MEDIA_ROOT) / str(ListingImage.objects.get(pk=image_id).file.name)


def upload_with_culprit(
    photo_paths: Sequence[Path], sabotage: Sabotage, *, culprit_listing: Listing, listing: Listing, mates: int
) -> tuple[int, list[int]]:
    """One photo of `culprit_listing`, whose stored file `sabotage(path)` replaces before its
    task is sent, uploaded in one transaction with `mates` photos of `listing` (its batch-mates).
    Returns (culprit id, batch-mate ids)."""
    with transaction.atomic():
        culprit = image_add(
            listing=culprit_listing, upload=photo_paths[0].read_bytes(), filename="culprit.jpg"
        )
        path = Path(settings.MEDIA_ROOT) / str(culprit.file.name)
        path.unlink()
        sabotage(path)
        others = photos_upload(photo_paths[1:] or photo_paths, mates, listing=listing)
    return culprit.pk, others


def fifo_writer(fifo: Path) -> int | None:
    """A write end of `fifo` once a reader (the worker) has it open, else None."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return None


def all_done_once(image_ids: Sequence[int]) -> bool:
    """Whether every photo is DONE with exactly one suggestion."""
    statuses = set(ListingImage.objects.filter(pk__in=image_ids).values_list("status", flat=True))
    if statuses != {ClassificationStatus.DONE}:
        return False
    counts = [CategorySuggestion.objects.filter(image_id=pk).count() for pk in image_ids]
    return counts == [1] * len(image_ids)


def failure_reason(image_id: int) -> str | None:
    """The photo's reason once it is FAILED, else None."""
    return (
        ListingImage.objects.filter(pk=image_id, status=ClassificationStatus.FAILED)
        .values_list("failure_reason", flat=True)
        .first()
    )


def delivered(image_ids: Sequence[int]) -> bool:
    """Whether a worker has started on at least one of the photos."""
    return ListingImage.objects.filter(pk__in=image_ids, deliveries__gt=0).exists()
