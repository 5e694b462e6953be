"""Writes of the catalogue: every view, command, admin action and task calls these.

Functions are named `<entity>_<action>` and take keyword-only arguments.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from catalog import selectors
from catalog.models import (
    Category,
    CategorySource,
    CategorySuggestion,
    ClassificationStatus,
    ImageEmbedding,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.queueing import IMAGE_CLASSIFY_TASK, enqueue_on_commit, send_task
from catalog.taxonomy import taxonomy_sync

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


@dataclass(frozen=True)
class ScoredCategory:
    """One entry of a suggestion's top-k."""

    slug: str
    confidence: float


# --- taxonomy --------------------------------------------------------------------------------


def taxonomy_load(*, path: str | None = None) -> int:
    """Create or update categories from the taxonomy data file; returns how many entries."""
    return taxonomy_sync(Category, path or settings.TAXONOMY_PATH)


# --- listings and photos ---------------------------------------------------------------------


def listing_create(
    *,
    seller: AbstractBaseUser,
    title: str,
    description: str = "",
    price: Decimal | None = None,
    category: Category | None = None,
) -> Listing:
    """Create a listing. A category given here is the seller's choice (source SELLER)."""
    return Listing.objects.create(
        seller=seller,
        title=title,
        description=description,
        price=price,
        category=category,
        category_source=CategorySource.SELLER if category else CategorySource.NONE,
    )


def _read_limited(upload: bytes | IO[bytes], limit: int) -> bytes:
    if isinstance(upload, bytes):
        data = upload
    else:
        data = upload.read(limit + 1)
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


def model_version_ensure(*, name: str, backbone_version: str = "", metrics: dict | None = None) -> ModelVersion:
    """Return the ModelVersion row called `name`, creating it; the first one becomes active."""
    version, _ = ModelVersion.objects.get_or_create(
        name=name, defaults={"backbone_version": backbone_version, "metrics": metrics or {}}
    )
    if not ModelVersion.objects.filter(is_active=True).exists():
        try:
            with transaction.atomic():
                ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
        except IntegrityError:
            pass  # another worker activated one at the same moment
        version.refresh_from_db()
    return version


def image_classification_record(
    *,
    image: ListingImage,
    model_version: ModelVersion,
    top_k: Sequence[ScoredCategory],
    embedding: bytes | None = None,
    logits: bytes | None = None,
    backbone_version: str = "",
) -> CategorySuggestion | None:
    """Store the top-k suggestion of `model_version` for the photo, idempotently.

    A duplicate delivery updates the same row (unique on image + model version). Categories the
    database does not know (taxonomy out of sync) are dropped from the top-k. Returns None when
    no category of the top-k is known; the photo then fails with a reason.
    """
    known = selectors.categories_by_slug()
    entries = [entry for entry in top_k if entry.slug in known]
    if not entries:
        image_classification_fail(image=image, reason="None of the suggested categories exist in the taxonomy.")
        return None
    best = entries[0]
    with transaction.atomic():
        suggestion, _ = CategorySuggestion.objects.update_or_create(
            image=image,
            model_version=model_version,
            defaults={
                "category": known[best.slug],
                "confidence": float(best.confidence),
                "top_k": [{"slug": e.slug, "confidence": round(float(e.confidence), 6)} for e in entries],
            },
        )
        if embedding is not None and logits is not None and backbone_version:
            ImageEmbedding.objects.update_or_create(
                image=image,
                backbone_version=backbone_version,
                defaults={"embedding": embedding, "logits": logits},
            )
        image_status_set(image_id=image.pk, status=_S.DONE)
        listing_suggestion_refresh(listing=image.listing, model_version=model_version)
    return suggestion


def listing_suggestion_refresh(*, listing: Listing, model_version: ModelVersion) -> None:
    """Derive the listing's suggested category from all its photos' suggestions.

    Each photo's top-k confidences are averaged over the listing's classified photos, so a
    category seen in several photos wins over one photo's strong but lone vote. Never touches the
    category a person chose.
    """
    suggestions = CategorySuggestion.objects.filter(
        image__listing=listing, model_version=model_version
    ).values_list("top_k", flat=True)
    totals: dict[str, float] = defaultdict(float)
    count = 0
    for top_k in suggestions:
        count += 1
        for entry in top_k:
            totals[entry["slug"]] += float(entry["confidence"])
    if not count:
        return
    slug, total = max(totals.items(), key=lambda item: item[1])
    category = Category.objects.filter(slug=slug).first()
    Listing.objects.filter(pk=listing.pk).update(
        suggested_category=category, suggested_confidence=total / count, updated_at=timezone.now()
    )


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


def user_get_or_create(*, username: str, **defaults: Any) -> AbstractBaseUser:
    """The user called `username`, created without a usable password when missing."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(username=username, defaults=defaults)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
