"""Stored photo files: deletion after commit, and the sweep of files that no photo row names.

Why orphans are swept rather than files written only after commit: a photo's bytes are written
inside the transaction that creates its row (`image_add`), so a transaction that rolls back leaves
a file that no row names. Writing the file in an on-commit hook instead would let a committed
photo exist without its bytes whenever storage fails after the commit: the seller would have been
told the upload worked, and the photo would then fail as "missing from storage". It would also hold
every photo of a request in memory until the commit. An orphan, by contrast, costs only storage
until the next sweep, so the upload path stays "stored, then committed", and this sweep removes
what a rollback left behind. Direct uploads to S3 (`catalog.services.direct_uploads`) leave the
same kind of orphan when a seller uploads a photo and never publishes it.

The sweep lists only the folders where new files land: this month's and last month's photo
folders (`ListingImage.file` uploads to `listings/<year>/<month>/`) and the direct-upload folder,
so its cost follows a month of uploads, not the whole bucket. It deletes a file only when no row
names it and it is older than `settings.STORAGE_ORPHAN_AFTER_S`, so a file whose transaction is
still open is never touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from catalog.models import ListingImage

logger = logging.getLogger(__name__)

#: Folder of photos uploaded by browsers straight to the bucket, before a worker validated them.
DIRECT_UPLOAD_FOLDER = "uploads"
_PHOTO_FOLDER = "listings"
_NAMES_PER_QUERY = 500


def stored_files_delete(files: Iterable[tuple[str, int, str]]) -> None:
    """Delete stored photos and their thumbnails: (file name, image id, checksum) each.

    Meant for `transaction.on_commit`: the rows are gone by then, so a storage error is logged
    and left to `stored_files_sweep`, never raised into a request that already committed.
    """
    from catalog.thumbnails import thumbnails_delete

    for name, image_id, checksum in files:
        try:
            default_storage.delete(name)
            thumbnails_delete(image_id=image_id, checksum=checksum)
        except Exception:  # noqa: BLE001 - OSError locally, botocore errors on S3
            logger.warning("could not delete %s from storage", name, exc_info=True)


def swept_folders(*, now: dt.datetime | None = None) -> list[str]:
    """Folders `stored_files_sweep` lists: the direct-upload folder, then this month's and last
    month's photo folders, e.g. ["uploads", "listings/2025/03", "listings/2025/02"]."""
    now = now or timezone.now()
    last_month = now.replace(day=1) - dt.timedelta(days=1)
    return [DIRECT_UPLOAD_FOLDER] + [f"{_PHOTO_FOLDER}/{day:%Y/%m}" for day in (now, last_month)]


def stored_files_sweep(*, older_than_s: int | None = None, now: dt.datetime | None = None) -> int:
    """Delete stored files of the swept folders that no `ListingImage` names and that are older
    than `older_than_s` seconds (settings.STORAGE_ORPHAN_AFTER_S). Returns how many were deleted.

    Safe to run at any time, also concurrently with uploads: a file younger than the limit is kept
    even when no row names it yet. Storage errors propagate (the periodic task retries next time).
    """
    older_than_s = settings.STORAGE_ORPHAN_AFTER_S if older_than_s is None else older_than_s
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=older_than_s)
    deleted = 0
    for folder in swept_folders(now=now):
        for names in _chunks(_files_under(folder), _NAMES_PER_QUERY):
            named = set(ListingImage.objects.filter(file__in=names).values_list("file", flat=True))
            for name in names:
                if name in named or default_storage.get_modified_time(name) > cutoff:
                    continue
                default_storage.delete(name)
                deleted += 1
                logger.info("deleted orphan file %s", name)
    return deleted


def _files_under(folder: str) -> Iterator[str]:
    try:
        directories, files = default_storage.listdir(folder)
    except FileNotFoundError:  # local storage: nothing was ever stored there
        return
    for name in files:
        yield f"{folder}/{name}"
    for directory in directories:
        yield from _files_under(f"{folder}/{directory}")


def _chunks(names: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for name in names:
        chunk.append(name)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
