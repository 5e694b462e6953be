"""Single-photo tasks run in batches on the worker (celery-batches), with the project's delivery
guarantees kept.

celery-batches buffers a task's messages in the worker's main process and hands them to a pool
process together, when `flush_every` have arrived or every `flush_interval` seconds. Three gaps
of the stock class are closed here:

- Redelivery when the pool process dies. Stock batches leave the messages unacknowledged until
  the Redis visibility timeout (an hour); here a lost pool process requeues them at once, like
  Celery's `reject_on_worker_lost`, and the per-photo delivery counter bounds a poison photo.
  A hard time limit (which kills the pool process too) requeues them the same way: the photos
  of that batch then run one at a time, so the slow one meets the soft time limit alone and
  fails with the time-limit reason. Errors inside the task never reach here: the task settles
  each photo itself (`workers.classify`).
- One batch per pool process at a time. Stock batches hand the pool a batch every
  `flush_interval` even while it is busy, so under load a queue of one-photo batches forms and
  batching never raises throughput; here the buffer waits for a free process and the next batch
  takes everything that arrived meanwhile.
- A lost broker connection. The worker's consumer restarts: the event loop's timers are
  cleared, so the flush timer stock batches keep (`_tref`) is dead and never re-armed, and jobs
  the pool had not accepted yet are discarded without a callback. Without a reset the buffer
  would flush only every `flush_every`-th message, and the one-batch-per-process gate could stay
  shut forever: a Redis restart left a running worker idle with photos queued. Both are reset
  whenever the consumer (re)starts.
- Prefetch. With `acks_late`, a worker holds at most `prefetch_multiplier × concurrency`
  unacknowledged messages, so at the project's multiplier of 1 a batch could never grow past one
  photo. On its first message the task raises its worker's prefetch by `2 × flush_every − 1`:
  one batch can run while the next one fills. The trade-off: up to that many uploads wait in a
  worker's buffer instead of Redis; if the whole worker dies (not just a pool process) they come
  back after the visibility timeout, or sooner through the sweeper.

Flower sees each photo's task as sent and succeeded (with its outcome word): the batch sends the
events for every request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Any

from billiard.exceptions import TimeLimitExceeded, WorkerLostError
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

logger = logging.getLogger(__name__)


class AckLateBatches(Batches):
    """`Batches` that requeues on a lost pool process and raises prefetch to fill a batch."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True

    def Strategy(self, task: Batches, app: Any, consumer: Any) -> Callable[..., None]:
        # Called each time the consumer (re)starts, e.g. after the broker connection was lost.
        self._tref = None
        self._running = 0
        handler = super().Strategy(task, app, consumer)
        raised = False

        def on_message(*args: Any, **kwargs: Any) -> None:
            nonlocal raised
            if not raised:
                consumer.qos.increment_eventually(2 * self.flush_every - 1)
                raised = True
            handler(*args, **kwargs)

        return on_message

    def _do_flush(self) -> None:
        # While every pool process is busy, let the buffer grow: the next batch then takes all
        # that arrived meanwhile. (Stock batches send a batch every tick, which under load makes
        # a queue of one-photo batches behind the running one, and batching never helps.)
        slots = max(1, int(getattr(self._pool, "num_processes", 1) or 1))
        if getattr(self, "_running", 0) >= slots:
            return
        super()._do_flush()

    def flush(self, requests: Collection[Any]) -> Any:
        pending = list(requests)
        serializable = ([SimpleRequest.from_request(r) for r in pending],)
        self._running = getattr(self, "_running", 0) + 1

        def on_return(result: Any) -> None:
            self._running = max(0, self._running - 1)
            for request in pending:
                request.acknowledge()

        def on_error(exc_info: Any) -> None:
            self._running = max(0, self._running - 1)
            exception = getattr(exc_info, "exception", exc_info)
            # billiard hands a lost pool process over as ExceptionWithTraceback(WorkerLostError).
            exception = getattr(exception, "exc", exception)
            lost = isinstance(exception, (WorkerLostError, TimeLimitExceeded))
            logger.warning(
                "batch of %d %s: %r", len(pending), "requeued" if lost else "acknowledged", exception
            )
            for request in pending:
                if lost:
                    request.reject(requeue=True)
                else:
                    request.acknowledge()

        return self._pool.apply_async(
            apply_batches_task,
            (self, serializable, 0, None),
            callback=on_return,
            error_callback=on_error,
        )


def report_succeeded(
    task: Any, requests: Sequence[SimpleRequest], results: Sequence[str], runtime_s: float
) -> None:
    """Send `task-succeeded` with each request's outcome word (Flower shows every photo's task).

    Results are not written to the result backend: the suggestion row and the photo's status
    are the durable outcome, and a backend write per photo would cost more than the photo's
    own classification.
    """
    _send(task, requests, "task-succeeded", {"runtime": runtime_s}, results)


def _send(
    task: Any,
    requests: Sequence[SimpleRequest],
    event: str,
    fields: dict[str, Any],
    results: Sequence[str] | None = None,
) -> None:
    if not task.app.conf.worker_send_task_events or not requests:
        return
    try:
        with task.app.events.default_dispatcher(hostname=requests[0].hostname) as dispatcher:
            for position, request in enumerate(requests):
                extra = {"result": repr(results[position])} if results is not None else {}
                dispatcher.send(event, uuid=request.id, **fields, **extra)
    except Exception:  # monitoring must never fail a batch
        logger.debug("could not send %s events", event, exc_info=True)
