"""Whether this worker can classify, acted upon and published.

A worker whose model files fail verification and cannot be rebuilt (`classifier.integrity`)
never takes photos off the queue:

- its main process checks the files before the pool starts (`inference.prepare_backbone_files`)
  and, when they fail, does not consume the queues whose tasks need the model at all
  (`MODEL_QUEUES`; the maintenance queue stays);
- a pool process that cannot load a model that passed that check (the file changed since)
  tells its worker to cancel those consumers, through the broker (`cancel_consumer`), and the
  requests it already holds go back to the queue untouched (`PhotoOutcome.DEFERRED`).

Each worker also publishes its readiness in Redis (the broker), one key per worker
(`catalog.queueing.CLASSIFIER_READY_KEY`) whose expiry its heartbeat keeps pushing back, so the
key of a worker that died disappears. `GET /metrics` reads them as `marketplace_classifier_ready`
(one GET per worker, where Celery's inspect would wait for every worker's reply).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from catalog.queueing import CLASSIFIER_READY_KEY, CLASSIFIER_READY_TTL_S
from catalog.tasks_contract import Queue

logger = logging.getLogger(__name__)

#: Queues whose tasks need the model.
MODEL_QUEUES = (Queue.CLASSIFY, Queue.BULK, Queue.TRAINING)
#: How often the heartbeat pushes the key's expiry back (well within its TTL).
REFRESH_S = 30.0

_hostname = ""
_refreshed_at = 0.0
_refused = ""


def set_hostname(hostname: str) -> None:
    """Record the worker's node name (in its main process, before the pool forks)."""
    global _hostname
    _hostname = hostname


def publish(app: Any, *, ready: bool, reason: str = "") -> None:
    """Store this worker's readiness (and why it is not ready) for `/metrics`; never raises."""
    global _refreshed_at
    if not _hostname:
        return
    value = json.dumps({"ready": ready, "reason": reason})
    try:
        with app.connection_for_write() as connection:
            connection.default_channel.client.set(
                CLASSIFIER_READY_KEY.format(worker=_hostname), value, ex=CLASSIFIER_READY_TTL_S
            )
        _refreshed_at = time.monotonic()
    except Exception:  # the broker is down: the key expires and the metric says nothing
        logger.warning("could not publish classifier readiness", exc_info=True)


def refresh(app: Any) -> None:
    """Push the key's expiry back, at most every `REFRESH_S` (called on each heartbeat)."""
    global _refreshed_at
    if not _hostname or time.monotonic() - _refreshed_at < REFRESH_S:
        return
    _refreshed_at = time.monotonic()
    try:
        with app.connection_for_write() as connection:
            connection.default_channel.client.expire(
                CLASSIFIER_READY_KEY.format(worker=_hostname), CLASSIFIER_READY_TTL_S
            )
    except Exception:
        logger.debug("could not refresh classifier readiness", exc_info=True)


def refused() -> str:
    """Why the main process refused the model queues ("" when it did not); pool processes
    inherit it and then do not load the model."""
    return _refused


def refuse_queues(app: Any, reason: str) -> list[str]:
    """In the main process, before consuming starts: leave out the model queues. Returns them."""
    global _refused
    _refused = reason
    consumed = set(app.amqp.queues.consume_from)
    refused = [queue.value for queue in MODEL_QUEUES if queue.value in consumed]
    if refused:
        app.amqp.queues.deselect(refused)
    logger.error("classifier not ready: %s; this worker does not consume %s", reason, ", ".join(refused))
    publish(app, ready=False, reason=reason)
    return refused


def cancel_queues(app: Any, reason: str) -> None:
    """In a pool process whose model does not load: have its worker stop consuming the model
    queues (a broadcast through the broker), and publish why."""
    logger.error("classifier not ready: %s; this worker stops consuming the model queues", reason)
    publish(app, ready=False, reason=reason)
    if not _hostname:
        return
    for queue in MODEL_QUEUES:
        try:
            app.control.cancel_consumer(queue.value, destination=[_hostname])
        except Exception:
            logger.warning("could not cancel consuming %s", queue.value, exc_info=True)
