"""Celery tasks: thin wrappers that load rows by id and call one service or classifier function."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery import signals
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError

from catalog import selectors, services
from catalog.models import ClassificationStatus
from workers import inference
from workers.celery import app

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


@signals.worker_process_init.connect
def _load_model_after_fork(**_: Any) -> None:
    inference.reset_after_fork()
    inference.get_classifier()


def _read_photo(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


@app.task(
    name="workers.tasks.image_classify_task",
    bind=True,
    autoretry_for=RETRYABLE_ERRORS,
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=8,
)
def image_classify_task(self: Any, image_id: int) -> str:
    """Suggest categories for one photo. Returns a short outcome word (for Flower)."""
    started = time.perf_counter()
    image = selectors.image_get(image_id=image_id)
    if image is None:
        return "gone"
    classifier = inference.get_classifier()
    model_version = services.model_version_ensure(
        name=classifier.model_version, backbone_version=classifier.backbone_version
    )
    if image.status == ClassificationStatus.DONE and selectors.image_suggestion(
        image=image, model_version=model_version
    ):
        return "already-done"
    deliveries = services.image_delivery_start(image_id=image_id)
    if deliveries > settings.CLASSIFY_MAX_DELIVERIES:
        services.image_classification_fail(
            image=image, reason=services.WORKER_CRASHED_REPEATEDLY.format(deliveries=deliveries - 1)
        )
        return "failed"
    try:
        data = _read_photo(str(image.file.name))
    except FileNotFoundError:
        services.image_classification_fail(image=image, reason=services.PHOTO_MISSING_FROM_STORAGE)
        return "failed"
    read_ms = (time.perf_counter() - started) * 1000

    from classifier import ImageRejected

    (result,) = classifier.classify([data], top_k=settings.SUGGESTION_TOP_K)
    if isinstance(result, ImageRejected):
        services.image_classification_fail(image=image, reason=str(result))
        _log(image_id, model_version.name, None, None, started, {"read": read_ms}, outcome="rejected")
        return "failed"
    classified_ms = (time.perf_counter() - started) * 1000 - read_ms
    embedding = getattr(result, "embedding", None)
    logits = getattr(result, "logits", None)
    services.image_classification_record(
        image=image,
        model_version=model_version,
        top_k=[services.ScoredCategory(slug=s.slug, confidence=float(s.confidence)) for s in result.top_k],
        embedding=embedding.astype("<f4").tobytes() if embedding is not None else None,
        logits=logits.astype("<f4").tobytes() if logits is not None else None,
        backbone_version=classifier.backbone_version,
    )
    top = result.top_k[0]
    _log(
        image_id,
        model_version.name,
        top.slug,
        top.confidence,
        started,
        {"read": read_ms, "classify": classified_ms, **(getattr(result, "timings_ms", None) or {})},
        outcome="done",
    )
    return "done"


def _log(
    image_id: int,
    model_version: str,
    category: str | None,
    confidence: float | None,
    started: float,
    phases_ms: dict[str, float],
    *,
    outcome: str,
) -> None:
    phases = {key: round(value, 1) for key, value in phases_ms.items()}
    phases["total"] = round((time.perf_counter() - started) * 1000, 1)
    logger.info(
        json.dumps(
            {
                "event": "image_classified",
                "outcome": outcome,
                "image_id": image_id,
                "model_version": model_version,
                "category": category,
                "confidence": None if confidence is None else round(float(confidence), 4),
                "ms": phases,
            }
        )
    )


@app.task(name="workers.tasks.images_requeue_stuck_task")
def images_requeue_stuck_task() -> int:
    """Periodic sweeper: re-send photos a crash or a broker outage left PENDING/QUEUED."""
    return services.images_requeue_stuck()
