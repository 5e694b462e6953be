"""A bulk job's progress, its closing and its report (which listings changed category)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from catalog.models import BulkChunkStatus, BulkJob, BulkJobChunk, BulkJobStatus
from catalog.services.bulk.scope import ACTIVE_STATES

logger = logging.getLogger("catalog.services.bulk")

#: Dry-run sample size kept per chunk and per job.
SAMPLE_PER_CHUNK = 5
SAMPLE_PER_JOB = 20
_COUNTERS = ("processed", "suggested", "skipped", "failed", "cached", "cnn")

#: Listings by (category slug before, category slug after).
Moves = Counter[tuple[str | None, str | None]]


def moves_report(moves: Moves, sample: list[dict[str, Any]], *, by_count: bool = False) -> dict[str, Any]:
    """The `report` JSON of a chunk or a job: `{"changes": [{"from", "to", "listings"}], "sample"}`,
    the changes by name, or by count first when `by_count`."""
    if by_count:
        order = sorted(moves.items(), key=lambda item: (-item[1], str(item[0])))
    else:
        order = sorted(moves.items(), key=str)
    return {"changes": [{"from": a, "to": b, "listings": n} for (a, b), n in order], "sample": sample}


def progress_refresh(*, job_id: int) -> None:
    """Set the job's counters to the sums of its chunks' (absolute, so never counted twice)."""
    sums = BulkJobChunk.objects.filter(job_id=job_id).aggregate(
        done_chunks=Count("pk", filter=Q(status=BulkChunkStatus.DONE)),
        changed_listings=Sum("changed_listings"),
        **{f"{name}_images": Sum(f"{name}_images") for name in _COUNTERS},
    )
    BulkJob.objects.filter(pk=job_id).update(**{key: value or 0 for key, value in sums.items()})


def bulk_job_finish_if_complete(*, job_id: int) -> bool:
    """Close an active job whose planning is done and whose chunks are all DONE: status DONE,
    finish time, and the report merged from its chunks. Returns True when this call closed it."""
    with transaction.atomic():
        job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status not in ACTIVE_STATES or not job.planning_done:
            return False
        if BulkJobChunk.objects.filter(job_id=job_id).exclude(status=BulkChunkStatus.DONE).exists():
            return False
        reports = (
            BulkJobChunk.objects.filter(job_id=job_id).order_by("index").values_list("report", flat=True)
        )
        BulkJob.objects.filter(pk=job_id).update(
            status=BulkJobStatus.DONE, finished_at=timezone.now(), report=_merged(reports)
        )
    progress_refresh(job_id=job_id)
    logger.info("bulk job %s done", job_id)
    return True


def _merged(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    moves: Moves = Counter()
    sample: list[dict[str, Any]] = []
    for report in reports:
        for entry in report.get("changes", []):
            moves[(entry["from"], entry["to"])] += int(entry["listings"])
        sample.extend(report.get("sample", [])[: max(0, SAMPLE_PER_JOB - len(sample))])
    return moves_report(moves, sample, by_count=True)


@dataclass
class DryRunSummary:
    """Readable summary of a job's report: "N listings would change category" and the moves."""

    listings: int
    moves: list[tuple[str | None, str | None, int]] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)

    def lines(self, *, dry_run: bool = True) -> list[str]:
        verb = "would change" if dry_run else "changed"
        lines = [f"{self.listings} listings {verb} category"]
        lines += [f"  {n:>6}  from {a or '(none)'} to {b or '(none)'}" for a, b, n in self.moves]
        return lines


def bulk_job_summary(*, job: BulkJob) -> DryRunSummary:
    """The job's report as a `DryRunSummary` (moves sorted by count, then names)."""
    moves = [(entry["from"], entry["to"], int(entry["listings"])) for entry in job.report.get("changes", [])]
    return DryRunSummary(
        listings=sum(n for _, _, n in moves), moves=moves, sample=job.report.get("sample", [])
    )
