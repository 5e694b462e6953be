"""Starting a bulk job, dispatching its chunks, and the staff actions on it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from catalog.models import (
    BulkChunkStatus,
    BulkJob,
    BulkJobChunk,
    BulkJobError,
    BulkJobStatus,
    Category,
    ModelVersion,
)
from catalog.queueing import enqueue_on_commit, send_task
from catalog.services.bulk.reports import progress_refresh
from catalog.services.bulk.scope import ACTIVE_STATES
from catalog.tasks_contract import TaskName

logger = logging.getLogger("catalog.services.bulk")

# Messages shown to staff (tests reuse them).
JOB_NOT_A_DRY_RUN = "Only a finished dry run can be applied."
JOB_NOT_RESUMABLE = "Only a cancelled, failed or stalled job can be resumed."
JOB_NOTHING_TO_RETRY = "This job has no failed photos to retry."
JOB_NOT_CANCELLABLE = "Only a planning or running job can be cancelled."


class BulkJobRefused(ValueError):
    """An action the job's state does not allow; `str(error)` is shown to staff."""


def bulk_job_start(
    *,
    model_version: ModelVersion,
    category: Category | None = None,
    dry_run: bool = False,
    requested_by: AbstractBaseUser | None = None,
    chunk_size: int | None = None,
    source_job: BulkJob | None = None,
) -> BulkJob:
    """Create a job and queue its planning (after commit) on the `bulk` queue.

    `category` limits the job to listings in that subtree (their category, or suggested category
    when none is set). `chunk_size`: photos per chunk, default `settings.BULK_CHUNK_SIZE`.
    """
    job = BulkJob.objects.create(
        model_version=model_version,
        category=category,
        dry_run=dry_run,
        requested_by_id=getattr(requested_by, "pk", None),
        chunk_size=max(1, chunk_size or settings.BULK_CHUNK_SIZE),
        source_job=source_job,
    )
    enqueue_on_commit(TaskName.BULK_JOB_PLAN, args=[job.pk])
    logger.info("bulk job %s queued: version %s, dry run %s", job.pk, model_version.name, dry_run)
    return job


def bulk_job_apply(*, job: BulkJob, requested_by: AbstractBaseUser | None = None) -> BulkJob:
    """Start the real run of a finished dry run, with the same version and scope.

    Raises `BulkJobRefused` unless `job` is a dry run that is DONE.
    """
    if not job.dry_run or job.status != BulkJobStatus.DONE:
        raise BulkJobRefused(JOB_NOT_A_DRY_RUN)
    return bulk_job_start(
        model_version=job.model_version,
        category=job.category,
        dry_run=False,
        requested_by=requested_by,
        chunk_size=job.chunk_size,
        source_job=job,
    )


def bulk_job_dispatch(*, job_id: int) -> int:
    """Send one task per PENDING chunk of the job (after commit); each becomes QUEUED once the
    broker has it. A chunk whose send fails stays PENDING for `bulk_job_resume`. Returns how many
    sends were registered."""
    chunk_ids = list(
        BulkJobChunk.objects.filter(job_id=job_id, status=BulkChunkStatus.PENDING)
        .order_by("index")
        .values_list("pk", flat=True)
    )
    for chunk_id in chunk_ids:
        enqueue_on_commit(TaskName.BULK_CHUNK, args=[job_id, chunk_id], on_sent=_marker_queued(chunk_id))
    return len(chunk_ids)


def _marker_queued(chunk_id: int) -> Callable[[], None]:
    def mark() -> None:
        BulkJobChunk.objects.filter(pk=chunk_id, status=BulkChunkStatus.PENDING).update(
            status=BulkChunkStatus.QUEUED
        )

    return mark


def bulk_jobs_requeue_stuck() -> int:
    """Periodic sweeper: send the planning task again for jobs left PLANNING longer than
    `STUCK_JOB_AFTER_S` (its message was lost to a broker outage at commit or a Redis restart;
    a job leaves PLANNING with its first planned page). Planning is idempotent and serialised by
    the job row's lock, so a duplicate planner does nothing; each job is sent again at most once
    per `STUCK_JOB_AFTER_S`. Returns how many were sent."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.STUCK_JOB_AFTER_S)
    sent = 0
    stuck = BulkJob.objects.filter(status=BulkJobStatus.PLANNING, updated_at__lt=cutoff)
    for job_id in stuck.values_list("pk", flat=True):
        if send_task(TaskName.BULK_JOB_PLAN, args=[job_id]):
            BulkJob.objects.filter(pk=job_id).update(updated_at=now)
            logger.warning("bulk job %s: planning sent again", job_id)
            sent += 1
    return sent


def bulk_job_cancel(*, job: BulkJob) -> None:
    """Stop the job: queued chunks return without work, running ones stop at their next batch.
    Raises `BulkJobRefused` unless the job is planning or running."""
    if not BulkJob.objects.filter(pk=job.pk, status__in=ACTIVE_STATES).update(
        status=BulkJobStatus.CANCELLED, finished_at=timezone.now()
    ):
        raise BulkJobRefused(JOB_NOT_CANCELLABLE)
    job.refresh_from_db()


def bulk_job_resume(*, job: BulkJob) -> int:
    """Finish what a cancelled, failed or killed job left: every chunk not DONE is sent again
    (its photos that already have a suggestion are skipped), and planning continues if it had not
    finished. Returns the number of chunks sent. Raises `BulkJobRefused` for a finished job."""
    with transaction.atomic():
        locked = BulkJob.objects.select_for_update().get(pk=job.pk)
        if locked.status == BulkJobStatus.DONE:
            raise BulkJobRefused(JOB_NOT_RESUMABLE)
        BulkJob.objects.filter(pk=job.pk).update(
            status=BulkJobStatus.RUNNING if locked.planning_done else BulkJobStatus.PLANNING,
            failure_reason="",
            finished_at=None,
        )
        BulkJobChunk.objects.filter(job=job).exclude(status=BulkChunkStatus.DONE).update(
            status=BulkChunkStatus.PENDING
        )
        sent = bulk_job_dispatch(job_id=job.pk)
        if not locked.planning_done:
            enqueue_on_commit(TaskName.BULK_JOB_PLAN, args=[job.pk])
    job.refresh_from_db()
    return sent


def bulk_job_retry_failed(*, job: BulkJob) -> int:
    """Run again the chunks that hold photos of the error ledger; photos classified meanwhile are
    skipped and leave the ledger. Returns the number of chunks sent. Raises `BulkJobRefused` when
    the ledger is empty or the job is still active."""
    with transaction.atomic():
        locked = BulkJob.objects.select_for_update().get(pk=job.pk)
        chunk_ids = set(BulkJobError.objects.filter(job=job).values_list("chunk_id", flat=True))
        if not chunk_ids or locked.status in ACTIVE_STATES:
            raise BulkJobRefused(JOB_NOTHING_TO_RETRY)
        BulkJobChunk.objects.filter(pk__in=chunk_ids).update(status=BulkChunkStatus.PENDING)
        BulkJob.objects.filter(pk=job.pk).update(
            status=BulkJobStatus.RUNNING, finished_at=None, failure_reason=""
        )
        sent = bulk_job_dispatch(job_id=job.pk)
    progress_refresh(job_id=job.pk)
    job.refresh_from_db()
    return sent


def bulk_job_fail(*, job_id: int, reason: str) -> None:
    """Mark an active job FAILED with a reason staff can read (e.g. the version cannot be loaded)."""
    BulkJob.objects.filter(pk=job_id, status__in=ACTIVE_STATES).update(
        status=BulkJobStatus.FAILED, failure_reason=reason, finished_at=timezone.now()
    )
    logger.warning("bulk job %s failed: %s", job_id, reason)
