"""Classifying uploaded photos in batches, each photo on its own.

A batch shares a decode pool and one network run, nothing else: every photo ends with its own
`PhotoOutcome`, and one photo's error never holds back its batch-mates, which finish in the
same delivery (the bulk path keeps the same rule in its error ledger).

- GONE: the photo or its listing was deleted meanwhile, also when PostgreSQL reports it as an
  IntegrityError at commit. Nothing to do.
- ALREADY_DONE: it has a suggestion for the version being served.
- DONE: its suggestion is recorded.
- FAILED: the photo itself is at fault (not an image, missing from storage) or an unexpected
  error stopped its classification: FAILED with a reason a person can read, never retried.
- TIMED_OUT: the task's soft time limit struck while this photo was being read or decoded:
  FAILED with the time-limit reason.
- RETRYING: a retryable error (storage, database; see `workers.retry`): the task sends this
  photo again, alone, after a backoff. On its last attempt the photo ends FAILED instead, with
  the reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from catalog.services import classification, images
from catalog.services.classification import ClaimedPhoto, PhotoClaim
from catalog.services.suggestions import ScoredCategory
from classifier.preprocess import ImageRejected
from workers import inference, retry
from workers.storage import photo_reader, storage_error

logger = logging.getLogger("workers.tasks")


class PhotoOutcome(StrEnum):
    """How one photo's classification ended in this delivery (also the word Flower shows)."""

    DONE = "done"
    ALREADY_DONE = "already-done"
    GONE = "gone"
    FAILED = "failed"
    TIMED_OUT = "timed-out"
    RETRYING = "retrying"
    # The worker cannot classify (see `workers.inference`): the request goes back untouched.
    DEFERRED = "deferred"


@dataclass(frozen=True)
class PhotoResult:
    """A photo's outcome; `error` is the cause of a RETRYING, FAILED or TIMED_OUT outcome."""

    outcome: PhotoOutcome
    error: BaseException | None = None


@dataclass
class _Run:
    """What every photo of one delivery shares."""

    classifier: Any
    claim: PhotoClaim
    retries: Mapping[int, int]


def classify_images(
    *, image_ids: Sequence[int], retries: Mapping[int, int] | None = None, batch_size: int | None = None
) -> dict[int, PhotoResult]:
    """Classify photos by id; returns each one's `PhotoResult`.

    `retries`: how many times each photo's task was retried already (decides between RETRYING
    and FAILED). The photos are claimed (`classification.photos_claim`): those never tried before
    share one batch; photos whose earlier delivery did not finish (a crash) are claimed and
    tried one at a time, and set aside after `CLASSIFY_MAX_DELIVERIES`.

    Raises `inference.ClassifierUnavailable` before touching any photo when this worker cannot
    classify, and database errors raised while claiming the photos (nothing was changed then).
    """
    classifier = inference.get_classifier()
    claim = classification.photos_claim(
        image_ids=image_ids,
        model_version=classifier.model_version,
        backbone_version=classifier.backbone_version,
    )
    run = _Run(classifier=classifier, claim=claim, retries=retries or {})
    results = _claimed_results(claim)
    results.update(_classify_isolated(claim.ready, run, batch_size))
    for pk in claim.redelivered:
        alone = classification.photos_claim(
            image_ids=[pk],
            model_version=classifier.model_version,
            backbone_version=classifier.backbone_version,
        )
        results.update(_claimed_results(alone))
        results.update(_classify_isolated(alone.ready, run, 1))
    return results


def _claimed_results(claim: PhotoClaim) -> dict[int, PhotoResult]:
    """The outcomes a claim settles at once: GONE, ALREADY_DONE, and FAILED for photos set aside."""
    results = {pk: PhotoResult(PhotoOutcome.GONE) for pk in claim.gone}
    results.update({pk: PhotoResult(PhotoOutcome.ALREADY_DONE) for pk in claim.already_done})
    for pk, deliveries in claim.set_aside.items():
        reason = images.WORKER_CRASHED_REPEATEDLY.format(deliveries=deliveries)
        results[pk] = _fail([pk], reason, PhotoOutcome.FAILED)[pk]
    return results


def settle(
    image_ids: Sequence[int], error: BaseException, retries: Mapping[int, int]
) -> dict[int, PhotoResult]:
    """The outcome of photos that `error` stopped, by the retry policy: GONE, FAILED (or
    TIMED_OUT) with the reason, or RETRYING while retries are left. Writes FAILED states."""
    if isinstance(error, images.ImageGone):
        return {pk: PhotoResult(PhotoOutcome.GONE) for pk in image_ids}
    if isinstance(error, SoftTimeLimitExceeded):
        reason = images.CLASSIFICATION_TIMED_OUT.format(seconds=settings.CELERY_TASK_SOFT_TIME_LIMIT_S)
        return _fail(image_ids, reason, PhotoOutcome.TIMED_OUT, error)
    if isinstance(error, FileNotFoundError):
        return _fail(image_ids, images.PHOTO_MISSING_FROM_STORAGE, PhotoOutcome.FAILED, error)
    if isinstance(error, ImageRejected):
        return _fail(image_ids, error.reason, PhotoOutcome.FAILED, error)
    if isinstance(error, retry.RETRYABLE_ERRORS):
        policy = retry.policy()
        left = [pk for pk in image_ids if not policy.exhausted(retries.get(pk, 0))]
        results = {pk: PhotoResult(PhotoOutcome.RETRYING, error) for pk in left}
        spent = [pk for pk in image_ids if pk not in results]
        if spent:
            reason = _exhausted_reason(error).format(
                attempts=policy.max_retries + 1, error=retry.describe(error)
            )
            results.update(_fail(spent, reason, PhotoOutcome.FAILED, error))
        return results
    logger.error("images %s: unexpected error", list(image_ids), exc_info=error)
    reason = images.CLASSIFICATION_ERROR.format(error=retry.describe(error))
    return _fail(image_ids, reason, PhotoOutcome.FAILED, error)


def _exhausted_reason(error: BaseException) -> str:
    if isinstance(error, retry.StorageUnavailable):
        return images.PHOTO_UNREADABLE_AFTER_RETRIES
    if isinstance(error, retry.DATABASE_ERRORS):
        return images.DATABASE_UNAVAILABLE_AFTER_RETRIES
    return images.SERVICE_UNAVAILABLE_AFTER_RETRIES


def _fail(
    image_ids: Sequence[int], reason: str, outcome: PhotoOutcome, error: BaseException | None = None
) -> dict[int, PhotoResult]:
    """Mark photos FAILED with `reason`. When the database cannot take even that, the photos are
    RETRYING (sent again, never dropped); a photo another delivery finished is ALREADY_DONE."""
    try:
        images.images_classification_fail(image_ids=image_ids, reason=reason)
    except images.IllegalTransition:
        return {pk: PhotoResult(PhotoOutcome.ALREADY_DONE) for pk in image_ids}
    except retry.RETRYABLE_ERRORS as unsaved:
        logger.warning("images %s: could not record %r: %r", list(image_ids), reason, unsaved)
        return {pk: PhotoResult(PhotoOutcome.RETRYING, unsaved) for pk in image_ids}
    return {pk: PhotoResult(outcome, error) for pk in image_ids}


def _classify_isolated(
    photos: Sequence[ClaimedPhoto], run: _Run, batch_size: int | None
) -> dict[int, PhotoResult]:
    """Classify `images` together; an error no single photo can be blamed for (the network run
    failing, say) is narrowed down by trying the unfinished photos one at a time, so only the
    photo that causes it fails. A soft time limit that strikes outside any one photo's read is
    not narrowed down (the hard limit is near): the unfinished photos are sent again."""
    results: dict[int, PhotoResult] = {}
    if not photos:
        return results
    try:
        _classify_group(photos, run, batch_size, results)
    except Exception as error:
        unfinished = [photo.image_id for photo in photos if photo.image_id not in results]
        if isinstance(error, SoftTimeLimitExceeded) and len(unfinished) > 1:
            logger.warning("images %s: soft time limit; sent again", unfinished)
            results.update({pk: PhotoResult(PhotoOutcome.RETRYING, error) for pk in unfinished})
        elif len(unfinished) > 1:
            logger.warning("batch of %d failed (%r); trying its photos one by one", len(unfinished), error)
            for photo in photos:
                if photo.image_id in unfinished:
                    results.update(_classify_isolated([photo], run, 1))
        else:
            results.update(settle(unfinished, error, run.retries))
    if any(result.outcome is PhotoOutcome.TIMED_OUT for result in results.values()):
        # The decode thread of a photo that timed out may still be blocked in its read.
        inference.batch_classifier_discard(run.classifier)
    return results


def _classify_group(
    photos: Sequence[ClaimedPhoto], run: _Run, batch_size: int | None, results: dict[int, PhotoResult]
) -> None:
    """Run `photos` through the batch classifier, recording each photo's result in `results` as
    soon as it is known. Errors of one photo (its read, its decode, its database write) are
    settled for that photo alone; anything else propagates."""
    photos = _verified_uploads(photos, run, results)
    by_id = {photo.image_id: photo for photo in photos}
    began = time.perf_counter()
    batcher = inference.batch_classifier_for(run.classifier)
    for outcome in batcher.classify(
        ((photo.image_id, photo_reader(photo.file_name)) for photo in photos),
        top_k=settings.SUGGESTION_TOP_K,
        batch_size=batch_size,
    ):
        photo = by_id[outcome.key]
        prediction = outcome.prediction
        if prediction is None:
            error = outcome.error or RuntimeError("no prediction")
            results.update(settle([photo.image_id], error, run.retries))
        else:
            try:
                results[photo.image_id] = _record(photo, prediction, run)
            except SoftTimeLimitExceeded:
                raise  # the batch ran out of time: no one photo is to blame
            except Exception as error:
                results.update(settle([photo.image_id], error, run.retries))
        result = results[photo.image_id]
        top = prediction.top_k[0] if prediction is not None and result.outcome is PhotoOutcome.DONE else None
        name = run.claim.model_version.name
        _log(photo.image_id, name, top, began, prediction, result, batch=len(photos))


def _verified_uploads(
    photos: Sequence[ClaimedPhoto], run: _Run, results: dict[int, PhotoResult]
) -> list[ClaimedPhoto]:
    """Photos uploaded straight to the bucket are validated (and re-encoded) before anything
    else (`classification.photo_upload_verify`); returns the photos ready to classify."""
    ready = []
    for photo in photos:
        try:
            refused = classification.photo_upload_verify(photo=photo)
        except SoftTimeLimitExceeded:
            raise
        except Exception as error:
            results.update(settle([photo.image_id], storage_error(error), run.retries))
            continue
        if refused is None:
            ready.append(photo)
        else:
            results[photo.image_id] = PhotoResult(PhotoOutcome(refused))
    return ready


def _record(photo: ClaimedPhoto, prediction: Any, run: _Run) -> PhotoResult:
    top_k = classification.photo_classification_record(
        photo=photo,
        model_version=run.claim.model_version,
        top_k=[ScoredCategory(slug=s.slug, confidence=float(s.confidence)) for s in prediction.top_k],
        embedding=prediction.embedding,
        logits=prediction.logits,
        backbone_version=run.classifier.backbone_version,
    )
    return PhotoResult(PhotoOutcome.DONE if top_k is not None else PhotoOutcome.FAILED)


def _log(
    image_id: int,
    model_version: str,
    top: Any,
    started: float,
    prediction: Any,
    result: PhotoResult,
    *,
    batch: int,
) -> None:
    phases = {key: round(value, 1) for key, value in (getattr(prediction, "timings_ms", None) or {}).items()}
    phases["total"] = round((time.perf_counter() - started) * 1000, 1)
    logger.info(
        json.dumps(
            {
                "event": "image_classified",
                "outcome": result.outcome.value,
                "image_id": image_id,
                "batch": batch,
                "model_version": model_version,
                "category": top.slug if top is not None else None,
                "confidence": round(float(top.confidence), 4) if top is not None else None,
                "error": retry.describe(result.error) if result.error is not None else None,
                "ms": phases,
            }
        )
    )
