"""Hand work to the Celery queue after the database transaction commits.

The catalog sends tasks by name (`catalog.tasks_contract`) through the Celery app object
(`config.celery`) and never imports task modules, so `workers` → `catalog` stays the only import
direction and the web process never loads the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from catalog.tasks_contract import Queue
from config.celery import app

logger = logging.getLogger(__name__)

# Bounded: an upload must answer even when the broker is down (the sweeper re-sends later).
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def send_task(task_name: str, *, args: list[Any]) -> bool:
    """Publish `task_name(*args)` now. Returns False (and logs) when the broker is unreachable."""
    try:
        app.send_task(task_name, args=args, retry=True, retry_policy=PUBLISH_RETRY_POLICY)
    except Exception:  # kombu raises OperationalError, redis its own ConnectionError, etc.
        logger.warning("broker unavailable, %s%s left for the sweeper", task_name, args, exc_info=True)
        return False
    return True


def enqueue_on_commit(
    task_name: str, *, args: list[Any], on_sent: Callable[[], object] | None = None
) -> None:
    """Publish the task once the current transaction commits (immediately outside one).

    `on_sent` runs only after a successful publish, e.g. to mark a row QUEUED; when the broker is
    down the row keeps its PENDING state and the periodic sweeper sends it later.
    """

    def publish() -> None:
        if send_task(task_name, args=args) and on_sent is not None:
            on_sent()

    transaction.on_commit(publish)


def queue_depths() -> dict[str, int] | None:
    """Messages waiting in each queue of `catalog.tasks_contract.Queue` (Redis list lengths, priority
    sub-queues included), or None when the broker cannot be reached. Messages a worker has
    already reserved (prefetched, or running unacknowledged) are not counted."""
    try:
        with app.connection_for_read() as connection:
            client = connection.default_channel.client
            pipeline = client.pipeline()
            names = [queue.value for queue in Queue]
            for name in names:
                # kombu's Redis transport keeps prioritised messages in "<queue>\x06\x16<priority>".
                for key in [name, *(f"{name}\x06\x16{step}" for step in (3, 6, 9))]:
                    pipeline.llen(key)
            lengths = pipeline.execute()
    except Exception:  # broker down: the metric says so instead of failing the scrape
        logger.warning("could not read queue lengths", exc_info=True)
        return None
    return {name: int(sum(lengths[4 * i : 4 * i + 4])) for i, name in enumerate(names)}
