"""Reclassify the catalogue (or one category's subtree) with a model version, on the `bulk` queue.

    python manage.py reclassify --model-version V [--category SLUG] [--dry-run] [--no-wait]
    python manage.py reclassify --apply JOB | --resume JOB | --retry-failed JOB | --cancel JOB
    python manage.py reclassify --status JOB

`--model-version active` names the active version. A dry run reports how many listings would
change category (from A to B, with a sample) and writes nothing; `--apply JOB` then runs it for
real. Without `--no-wait` the command follows the job (progress, rate, ETA) until it ends and
prints the report; the work itself runs on the workers of the `bulk` queue.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import BulkJob, BulkJobStatus, Category
from catalog.selectors import bulk as bulk_selectors
from catalog.selectors import registry as registry_selectors
from catalog.services.bulk.jobs import (
    BulkJobRefused,
    bulk_job_apply,
    bulk_job_cancel,
    bulk_job_resume,
    bulk_job_retry_failed,
    bulk_job_start,
)
from catalog.services.bulk.reports import bulk_job_summary

FINISHED = {BulkJobStatus.DONE, BulkJobStatus.CANCELLED, BulkJobStatus.FAILED}


class Command(BaseCommand):
    help = "Re-suggest categories for every listing with a model version (bulk queue)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model-version", help='version name, or "active"')
        parser.add_argument("--category", help="only listings in this category slug's subtree")
        parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
        parser.add_argument("--chunk-size", type=int, default=None, help="photos per chunk")
        actions = parser.add_mutually_exclusive_group()
        actions.add_argument("--apply", type=int, metavar="JOB", help="run a finished dry run for real")
        actions.add_argument("--resume", type=int, metavar="JOB", help="finish what a stopped job left")
        actions.add_argument("--retry-failed", type=int, metavar="JOB", help="retry the job's failed photos")
        actions.add_argument("--cancel", type=int, metavar="JOB", help="stop a running job")
        actions.add_argument("--status", type=int, metavar="JOB", help="print a job's progress and report")
        parser.add_argument("--no-wait", action="store_true", help="return once the job is queued")
        parser.add_argument("--timeout", type=float, default=None, help="stop following after S seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            job = self._act(options)
        except BulkJobRefused as refused:
            raise CommandError(str(refused)) from refused
        if options["cancel"] or options["status"] or options["no_wait"]:
            self._print(job)
            return
        self._follow(job, options["timeout"])

    def _act(self, options: dict[str, Any]) -> BulkJob:
        for action, service in (
            ("apply", bulk_job_apply),
            ("resume", bulk_job_resume),
            ("retry_failed", bulk_job_retry_failed),
            ("cancel", bulk_job_cancel),
            ("status", None),
        ):
            if options[action]:
                job = BulkJob.objects.select_related("model_version").filter(pk=options[action]).first()
                if job is None:
                    raise CommandError(f"no bulk job {options[action]}")
                if service is None:
                    return job
                result = service(job=job)
                return result if isinstance(result, BulkJob) else job
        if not options["model_version"]:
            raise CommandError("--model-version is required to start a job")
        version = registry_selectors.model_version_by_name(name=options["model_version"])
        if version is None:
            raise CommandError(f"no model version {options['model_version']!r}")
        category = None
        if options["category"]:
            category = Category.objects.filter(slug=options["category"]).first()
            if category is None:
                raise CommandError(f"no category {options['category']!r}")
        job = bulk_job_start(
            model_version=version,
            category=category,
            dry_run=options["dry_run"],
            chunk_size=options["chunk_size"],
        )
        kind = "dry run" if job.dry_run else "job"
        self.stdout.write(
            f"{kind} {job.pk} queued: {version.name}, {category.slug if category else 'all listings'}"
        )
        return job

    def _follow(self, job: BulkJob, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        last = ""
        while True:
            job.refresh_from_db()
            line = self._progress_line(job)
            if line != last:
                self.stdout.write(line)
                last = line
            if job.status in FINISHED:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.stdout.write(f"still {job.status} after {timeout:.0f} s; follow with --status {job.pk}")
                return
            time.sleep(1.0)
        self._print(job)

    def _progress_line(self, job: BulkJob) -> str:
        state = bulk_selectors.bulk_job_progress(job=job)
        rate = "" if state.rate_per_s is None else f", {state.rate_per_s:,.0f} photos/s"
        eta = "" if state.eta_s is None or job.status in FINISHED else f", ETA {state.eta_s:,.0f} s"
        return (
            f"job {job.pk} {job.status}: {state.done:,}/{state.total:,} photos ({state.percent:.0f}%), "
            f"chunks {job.done_chunks}/{job.total_chunks}, failed {job.failed_images}{rate}{eta}"
        )

    def _print(self, job: BulkJob) -> None:
        job.refresh_from_db()
        self.stdout.write(self._progress_line(job))
        if job.failure_reason:
            self.stdout.write(f"failed: {job.failure_reason}")
        if job.status == BulkJobStatus.DONE:
            summary = bulk_job_summary(job=job)
            for line in summary.lines(dry_run=job.dry_run):
                self.stdout.write(line)
            for entry in summary.sample:
                self.stdout.write(
                    f"  e.g. listing {entry['listing']} “{entry['title']}”: "
                    f"{entry['from'] or '(none)'} → {entry['to']} ({entry['confidence']:.2f})"
                )
            if job.dry_run:
                self.stdout.write(f"apply with: python manage.py reclassify --apply {job.pk}")
        errors = bulk_selectors.bulk_job_errors(job=job, limit=10)
        if errors:
            self.stdout.write(f"{job.failed_images} photos failed, e.g.:")
            for error in errors:
                self.stdout.write(f"  photo {error.image_id}: {error.reason}")
