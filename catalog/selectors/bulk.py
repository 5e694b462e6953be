"""Reads of bulk reclassification: jobs, their progress and their error ledgers."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from catalog.models import BulkJob, BulkJobError, BulkJobStatus


@dataclass(frozen=True)
class BulkJobProgress:
    """Where a bulk job stands. `done` counts photos processed or skipped (they already had a
    suggestion); `rate_per_s` is photos per second since the job started (None before any);
    `eta_s` the seconds left at that rate (None when unknown, 0 when finished)."""

    job: BulkJob
    done: int
    total: int
    percent: float
    rate_per_s: float | None
    eta_s: float | None
    elapsed_s: float


def bulk_job_progress(*, job: BulkJob) -> BulkJobProgress:
    from django.utils import timezone

    done = job.processed_images + job.skipped_images
    total = max(job.total_images, done)
    finished = job.status not in (BulkJobStatus.PLANNING, BulkJobStatus.RUNNING)
    elapsed = 0.0
    if job.started_at is not None:
        end = job.finished_at if finished and job.finished_at else timezone.now()
        elapsed = max(0.0, (end - job.started_at).total_seconds())
    rate = done / elapsed if done and elapsed > 0 else None
    if job.status == BulkJobStatus.DONE:
        eta: float | None = 0.0
    elif finished or rate is None or not job.planning_done:
        eta = None
    else:
        eta = (total - done) / rate
    percent = 100.0 if job.status == BulkJobStatus.DONE else (100.0 * done / total if total else 0.0)
    return BulkJobProgress(
        job=job, done=done, total=total, percent=percent, rate_per_s=rate, eta_s=eta, elapsed_s=elapsed
    )


def bulk_jobs_active() -> QuerySet[BulkJob]:
    """Jobs planning or running, oldest first, with their model version and scope."""
    return (
        BulkJob.objects.filter(status__in=[BulkJobStatus.PLANNING, BulkJobStatus.RUNNING])
        .select_related("model_version", "category")
        .order_by("created_at", "id")
    )


def bulk_job_errors(*, job: BulkJob, limit: int = 100) -> list[BulkJobError]:
    """The first `limit` entries of a job's error ledger, by photo."""
    return list(BulkJobError.objects.filter(job=job).order_by("image_id")[:limit])


def bulk_job_counts() -> dict[str, int]:
    """Number of bulk jobs in each status (every status present, zero included)."""
    from django.db.models import Count

    counts = dict(BulkJob.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    return {status.value: int(counts.get(status.value, 0)) for status in BulkJobStatus}
