"""Celery tasks: thin wrappers that load rows by id and call one service or classifier function."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import signals
from celery_batches import SimpleRequest
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError

from catalog import services
from catalog.models import CategorySuggestion, ClassificationStatus, ListingImage, ModelVersion
from catalog.tasks_contract import TaskName
from config.celery import app
from workers import inference
from workers.batches import AckLateBatches, report_succeeded

logger = logging.getLogger("workers.tasks")

# Storage, database and broker hiccups are retried; a photo that is not an image is not.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
)


@signals.worker_init.connect
def _record_process_count(sender: Any = None, **_: Any) -> None:
    concurrency = getattr(sender, "concurrency", None) or 1
    inference.set_process_count(int(concurrency))
    inference.prepare_backbone_files()


@signals.worker_process_init.connect
def _load_model_after_fork(**_: Any) -> None:
    inference.reset_after_fork()
    inference.get_classifier()


def _reader(name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with default_storage.open(name, "rb") as handle:
            return handle.read()

    return read


@app.task(
    name=TaskName.IMAGE_CLASSIFY,
    base=AckLateBatches,
    bind=True,
    flush_every=settings.CLASSIFY_BATCH_SIZE,
    flush_interval=settings.CLASSIFY_BATCH_INTERVAL_S,
    max_retries=8,
)
def image_classify_task(self: Any, requests: list[SimpleRequest]) -> None:
    """Suggest categories for photos: each request is one call `image_classify_task(image_id)`.

    The worker groups requests (see `workers.batches`): a batch decodes its photos in parallel and
    runs the network once. Per photo the behaviour is that of a single task: a deleted row is a
    no-op ("gone"), a photo with a suggestion for the version is left alone ("already-done"), a
    photo that is not an image ends FAILED with its reason and is not retried, and a photo whose
    classification killed the worker before is retried alone and set aside after
    `CLASSIFY_MAX_DELIVERIES`. Database, storage and broker errors re-send the batch's requests
    with exponential backoff (at most `max_retries` times).
    """
    started = time.perf_counter()
    image_ids = [_image_id(request) for request in requests]
    try:
        outcomes = classify_images(image_ids=list(dict.fromkeys(image_ids)), batch_size=len(requests))
    except RETRYABLE_ERRORS as error:
        _retry_later(self, requests, image_ids, error)
        return
    classified = time.perf_counter()
    report_succeeded(self, requests, [outcomes.get(pk, "done") for pk in image_ids], classified - started)
    logger.info(
        json.dumps(
            {
                "event": "image_batch_classified",
                "photos": len(requests),
                "ms": {
                    "classify": round((classified - started) * 1000, 1),
                    "events": round((time.perf_counter() - classified) * 1000, 1),
                },
            }
        )
    )


def _image_id(request: SimpleRequest) -> int:
    return int(request.args[0] if request.args else request.kwargs["image_id"])


def _retry_later(
    self: Any, requests: Sequence[SimpleRequest], image_ids: Sequence[int], error: BaseException
) -> None:
    for request, image_id in zip(requests, image_ids, strict=True):
        retries = int((request.request_dict or {}).get("retries") or 0)
        if retries >= self.max_retries:
            logger.error(
                "image %s: giving up after %d retries (%r); left for the sweeper", image_id, retries, error
            )
            continue
        countdown = min(60.0, 2.0 ** (retries + 1)) * random.uniform(0.5, 1.0)
        logger.warning("image %s: retry %d in %.1f s after %r", image_id, retries + 1, countdown, error)
        self.app.send_task(
            self.name, args=[image_id], task_id=request.id, countdown=countdown, retries=retries + 1
        )


def classify_images(*, image_ids: Sequence[int], batch_size: int | None = None) -> dict[int, str]:
    """Classify photos by id; returns an outcome word per id ("done", "failed", "gone",
    "already-done"). Photos never tried before share one batch; photos whose earlier delivery
    did not finish (a crash, a retry) are tried one at a time, so a photo that kills the process
    is found and set aside without taking the others with it."""
    images = {
        image.pk: image for image in ListingImage.objects.select_related("listing").filter(pk__in=image_ids)
    }
    outcomes = {pk: "gone" for pk in image_ids if pk not in images}
    if not images:
        return outcomes
    classifier = inference.get_classifier()
    model_version = services.model_version_ensure(
        name=classifier.model_version, backbone_version=classifier.backbone_version
    )
    suggested = set(
        CategorySuggestion.objects.filter(image_id__in=images, model_version=model_version).values_list(
            "image_id", flat=True
        )
    )
    for pk, image in images.items():
        if image.status == ClassificationStatus.DONE and pk in suggested:
            outcomes[pk] = "already-done"
    todo = [image for pk, image in images.items() if pk not in outcomes]
    fresh = [image for image in todo if image.deliveries == 0]
    services.images_delivery_start(image_ids=[image.pk for image in fresh])
    outcomes.update(_classify_group(fresh, classifier, model_version, batch_size))
    for image in (image for image in todo if image.deliveries > 0):
        deliveries = services.image_delivery_start(image_id=image.pk)
        if deliveries > settings.CLASSIFY_MAX_DELIVERIES:
            services.image_classification_fail(
                image=image, reason=services.WORKER_CRASHED_REPEATEDLY.format(deliveries=deliveries - 1)
            )
            outcomes[image.pk] = "failed"
            continue
        outcomes.update(_classify_group([image], classifier, model_version, 1))
    return outcomes


def _classify_group(
    images: Sequence[ListingImage], classifier: Any, model_version: ModelVersion, batch_size: int | None
) -> dict[int, str]:
    from classifier import ImageRejected

    if not images:
        return {}
    # Photos uploaded straight to the bucket are validated (and re-encoded) before anything else.
    outcomes: dict[int, str] = {}
    for image in images:
        refused = services.image_upload_verify(image=image)
        if refused is not None:
            outcomes[image.pk] = refused
    images = [image for image in images if image.pk not in outcomes]
    if not images:
        return outcomes
    by_id = {image.pk: image for image in images}
    began = time.perf_counter()
    batcher = inference.batch_classifier_for(classifier)
    for outcome in batcher.classify(
        ((image.pk, _reader(str(image.file.name))) for image in images),
        top_k=settings.SUGGESTION_TOP_K,
        batch_size=batch_size,
    ):
        image = by_id[outcome.key]
        result = outcome.prediction
        if result is None:
            if isinstance(outcome.error, FileNotFoundError):
                reason = services.PHOTO_MISSING_FROM_STORAGE
            elif isinstance(outcome.error, ImageRejected):
                reason = outcome.error.reason
            else:
                raise outcome.error or RuntimeError("no prediction")
            services.image_classification_fail(image=image, reason=reason)
            _log(image.pk, model_version.name, None, None, began, {}, outcome="rejected", batch=len(images))
            outcomes[image.pk] = "failed"
            continue
        services.image_classification_record(
            image=image,
            model_version=model_version,
            top_k=[
                services.ScoredCategory(slug=s.slug, confidence=float(s.confidence)) for s in result.top_k
            ],
            embedding=result.embedding.astype("<f4").tobytes(),
            logits=result.logits.astype("<f4").tobytes() if result.logits is not None else None,
            backbone_version=classifier.backbone_version,
        )
        top = result.top_k[0]
        _log(
            image.pk,
            model_version.name,
            top.slug,
            top.confidence,
            began,
            result.timings_ms,
            outcome="done",
            batch=len(images),
        )
        outcomes[image.pk] = "done"
    return outcomes


def _log(
    image_id: int,
    model_version: str,
    category: str | None,
    confidence: float | None,
    started: float,
    phases_ms: dict[str, float],
    *,
    outcome: str,
    batch: int = 1,
) -> None:
    phases = {key: round(value, 1) for key, value in phases_ms.items()}
    phases["total"] = round((time.perf_counter() - started) * 1000, 1)
    logger.info(
        json.dumps(
            {
                "event": "image_classified",
                "outcome": outcome,
                "image_id": image_id,
                "batch": batch,
                "model_version": model_version,
                "category": category,
                "confidence": None if confidence is None else round(float(confidence), 4),
                "ms": phases,
            }
        )
    )


@app.task(name=TaskName.IMAGES_REQUEUE_STUCK)
def images_requeue_stuck_task() -> int:
    """Periodic sweeper: re-send photos a crash or a broker outage left PENDING/QUEUED."""
    return services.images_requeue_stuck()


@app.task(name=TaskName.CLASSIFY_PROBES_DELETE_EXPIRED)
def classify_probes_delete_expired_task() -> int:
    """Periodic: delete POST /api/classify probe listings past CLASSIFY_PROBE_RETENTION_S."""
    return services.classify_probes_delete_expired()


@app.task(name=TaskName.API_TOKENS_DELETE_EXPIRED)
def api_tokens_delete_expired_task() -> int:
    """Periodic: delete expired API tokens."""
    return services.api_tokens_delete_expired()


@app.task(name=TaskName.STORED_FILES_SWEEP)
def stored_files_sweep_task() -> int:
    """Periodic sweeper: delete stored files no photo row names (rolled-back or unregistered uploads)."""
    return services.stored_files_sweep()
