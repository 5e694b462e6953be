"""Celery tasks: thin wrappers that load rows by id and call one service or classifier function."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from celery import signals
from celery_batches import SimpleRequest
from django.conf import settings

from catalog.services import images, registry, retention, storage
from catalog.services.bulk import jobs
from catalog.tasks_contract import TaskName
from config.celery import app
from workers import inference, readiness, retry
from workers.batches import AckLateBatches, report_succeeded
from workers.classify import PhotoOutcome, PhotoResult, classify_images, settle

logger = logging.getLogger("workers.tasks")

#: Seconds before a request that a worker unable to classify sent back is delivered again.
DEFER_S = 5.0


@signals.worker_init.connect
def _prepare_model(sender: Any = None, **_: Any) -> None:
    """In the main process, before the pool forks: check (or build) the model files; a worker
    whose files fail and cannot be rebuilt does not consume the model queues."""
    concurrency = getattr(sender, "concurrency", None) or 1
    inference.set_process_count(int(concurrency))
    readiness.set_hostname(str(getattr(sender, "hostname", "") or ""))
    reason = inference.prepare_backbone_files()
    if reason is None:
        readiness.publish(app, ready=True)
    else:
        readiness.refuse_queues(app, reason)


@signals.worker_process_init.connect
def _load_model_after_fork(**_: Any) -> None:
    inference.reset_after_fork()
    if readiness.refused():
        return  # the main process found the model unusable: this process never classifies
    try:
        inference.get_classifier()
    except inference.ClassifierUnavailable as error:
        readiness.cancel_queues(app, str(error))


@signals.heartbeat_sent.connect
def _refresh_readiness(**_: Any) -> None:
    readiness.refresh(app)


@app.task(
    name=TaskName.IMAGE_CLASSIFY,
    base=AckLateBatches,
    bind=True,
    flush_every=settings.CLASSIFY_BATCH_SIZE,
    flush_interval=settings.CLASSIFY_BATCH_INTERVAL_S,
    max_retries=retry.policy().max_retries,
)
def image_classify_task(self: Any, requests: list[SimpleRequest]) -> None:
    """Suggest categories for photos: each request is one call `image_classify_task(image_id)`.

    The worker groups requests (see `workers.batches`): a batch decodes its photos in parallel and
    runs the network once, but each photo ends on its own (`workers.classify`): done, gone,
    already done, FAILED with a readable reason, or sent again alone after a backoff when a
    retryable error stopped it (`workers.retry`), so one photo's error never holds back its
    batch-mates. A worker that cannot classify sends every request back untouched.
    """
    started = time.perf_counter()
    image_ids = [_image_id(request) for request in requests]
    retries: dict[int, int] = {}
    for request, image_id in zip(requests, image_ids, strict=True):
        retries[image_id] = max(retries.get(image_id, 0), _retries(request))
    unique = list(dict.fromkeys(image_ids))
    try:
        results = classify_images(image_ids=unique, retries=retries, batch_size=len(requests))
    except inference.ClassifierUnavailable as error:
        results = {pk: PhotoResult(PhotoOutcome.DEFERRED, error) for pk in unique}
    except Exception as error:  # before any photo was classified (loading the rows, say)
        results = settle(unique, error, retries)
    classified = time.perf_counter()
    _send_again(self, requests, image_ids, results)
    outcomes = [results[pk].outcome.value for pk in image_ids]
    report_succeeded(self, requests, outcomes, classified - started)
    logger.info(
        json.dumps(
            {
                "event": "image_batch_classified",
                "photos": len(requests),
                "outcomes": dict(Counter(outcomes)),
                "ms": {
                    "classify": round((classified - started) * 1000, 1),
                    "events": round((time.perf_counter() - classified) * 1000, 1),
                },
            }
        )
    )


def _image_id(request: SimpleRequest) -> int:
    return int(request.args[0] if request.args else request.kwargs["image_id"])


def _retries(request: SimpleRequest) -> int:
    return int((request.request_dict or {}).get("retries") or 0)


def _send_again(
    self: Any, requests: Sequence[SimpleRequest], image_ids: Sequence[int], results: dict[int, PhotoResult]
) -> None:
    """Send RETRYING photos again after the policy's backoff (one retry more; their delivery
    counts start over, a retry is not a crash) and DEFERRED ones after `DEFER_S` (no retry
    counted: the photo was not tried). A photo is sent once even when the batch held it twice.
    When the broker is down too, the photo stays QUEUED for the sweeper."""
    policy = retry.policy()
    retrying = [pk for pk, result in results.items() if result.outcome is PhotoOutcome.RETRYING]
    try:
        images.images_delivery_release(image_ids=retrying)
    except retry.RETRYABLE_ERRORS:  # the database is down: the counts stay, as after a crash
        logger.warning("could not reset the delivery counts of %s", retrying)
    sent: set[int] = set()
    for request, image_id in zip(requests, image_ids, strict=True):
        result = results[image_id]
        if image_id in sent or result.outcome not in (PhotoOutcome.RETRYING, PhotoOutcome.DEFERRED):
            continue
        retries = _retries(request)
        if result.outcome is PhotoOutcome.RETRYING:
            countdown, retries = policy.countdown(retries), retries + 1
        else:
            countdown = DEFER_S
        logger.warning(
            "image %s: %s, sent again in %.1f s (retry %d) after %r",
            image_id, result.outcome.value, countdown, retries, result.error,
        )  # fmt: skip
        try:
            self.app.send_task(
                self.name, args=[image_id], task_id=request.id, countdown=countdown, retries=retries
            )
        except Exception:  # the broker is down as well: the sweeper re-sends QUEUED photos
            logger.error("image %s: could not be sent again; left QUEUED for the sweeper", image_id)
        sent.add(image_id)


@app.task(name=TaskName.IMAGES_REQUEUE_STUCK)
def images_requeue_stuck_task() -> int:
    """Periodic sweeper: re-send photos a crash or a broker outage left PENDING/QUEUED."""
    return images.images_requeue_stuck()


@app.task(name=TaskName.JOBS_SWEEP)
def jobs_sweep_task() -> dict[str, int]:
    """Periodic sweeper of the other durable states: training runs that will never finish are
    set aside with their reason, bulk jobs left PLANNING get their planning sent again."""
    return {
        "training_runs_set_aside": registry.training_runs_sweep(),
        "bulk_plans_sent": jobs.bulk_jobs_requeue_stuck(),
    }


@app.task(name=TaskName.CLASSIFY_PROBES_DELETE_EXPIRED)
def classify_probes_delete_expired_task() -> int:
    """Periodic: delete POST /api/classify probe listings past CLASSIFY_PROBE_RETENTION_S."""
    return retention.classify_probes_delete_expired()


@app.task(name=TaskName.API_TOKENS_DELETE_EXPIRED)
def api_tokens_delete_expired_task() -> int:
    """Periodic: delete expired API tokens."""
    return retention.api_tokens_delete_expired()


@app.task(name=TaskName.STORED_FILES_SWEEP)
def stored_files_sweep_task() -> int:
    """Periodic sweeper: delete stored files no photo row names (rolled-back or unregistered uploads)."""
    return storage.stored_files_sweep()
