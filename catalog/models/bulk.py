"""Bulk reclassification jobs: the job, its chunks and its error ledger."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models.listings import ListingImage
from catalog.models.registry import ModelVersion
from catalog.models.taxonomy import Category


class BulkJobStatus(models.TextChoices):
    PLANNING = "planning", "planning"  # chunks being laid out by the worker
    RUNNING = "running", "running"
    DONE = "done", "done"
    CANCELLED = "cancelled", "cancelled"  # stopped by staff; resume finishes what is missing
    FAILED = "failed", "failed"  # could not run at all (failure_reason); photo errors are in the ledger


class BulkJob(models.Model):
    """Reclassification of the catalogue (or one category's subtree) with one model version.

    Listings are walked by primary key in chunks (`BulkJobChunk`) on the `bulk` queue. A dry run
    computes what would change (`report`) and caches embeddings, but writes no suggestion and
    touches no listing. Counters are sums over the chunks, refreshed after each chunk.
    """

    model_version = models.ForeignKey(ModelVersion, related_name="bulk_jobs", on_delete=models.PROTECT)
    # Scope: listings whose category (or, when none is set, suggested category) lies in this
    # category's subtree; None for every listing. Probe listings are never included.
    category = models.ForeignKey(Category, null=True, blank=True, related_name="+", on_delete=models.PROTECT)
    dry_run = models.BooleanField(default=False)
    # The dry run this job applies, if any.
    source_job = models.ForeignKey("self", null=True, blank=True, related_name="+", on_delete=models.SET_NULL)
    status = models.CharField(
        max_length=16, choices=BulkJobStatus.choices, default=BulkJobStatus.PLANNING, db_index=True
    )
    failure_reason = models.TextField(blank=True)
    chunk_size = models.PositiveIntegerField(help_text="photos per chunk (a chunk holds whole listings)")
    # Planner cursor: every listing up to this primary key has been laid out in a chunk.
    planned_until_listing = models.BigIntegerField(default=0)
    planning_done = models.BooleanField(default=False)
    total_chunks = models.PositiveIntegerField(default=0)
    total_images = models.PositiveIntegerField(default=0)
    done_chunks = models.PositiveIntegerField(default=0)
    processed_images = models.PositiveIntegerField(default=0)
    suggested_images = models.PositiveIntegerField(default=0)
    skipped_images = models.PositiveIntegerField(default=0, help_text="already had a suggestion")
    failed_images = models.PositiveIntegerField(default=0)
    cached_images = models.PositiveIntegerField(default=0, help_text="scored from cached embeddings")
    cnn_images = models.PositiveIntegerField(default=0, help_text="decoded and run through the CNN")
    changed_listings = models.PositiveIntegerField(default=0)
    # Dry run (and apply) outcome: {"changes": [{"from", "to", "listings"}], "sample": [...]}.
    report = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Admin actions (catalog.access): cancel / resume / retry, and writing suggestions.
        permissions = [
            ("run_bulkjob", "Can cancel, resume and retry bulk jobs"),
            ("apply_bulkjob", "Can apply a dry run or start a job that writes suggestions"),
        ]

    def __str__(self) -> str:
        kind = "dry run" if self.dry_run else "reclassification"
        return f"{kind} {self.pk} with {self.model_version_id and self.model_version.name}"


class BulkChunkStatus(models.TextChoices):
    PENDING = "pending", "pending"
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"


class BulkJobChunk(models.Model):
    """Listings `first_listing_id`..`last_listing_id` (in the job's scope) and all their photos.

    Counters are absolute for the chunk's latest run, so a redelivered or resumed chunk never
    counts twice. `inflight_image_ids` holds the photos in the network when the worker last
    wrote progress: after a crash they are retried one at a time, and a photo that was alone in
    flight when the worker died goes to the error ledger instead of killing it again.
    """

    job = models.ForeignKey(BulkJob, related_name="chunks", on_delete=models.CASCADE)
    index = models.PositiveIntegerField()
    first_listing_id = models.BigIntegerField()
    last_listing_id = models.BigIntegerField()
    planned_images = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=BulkChunkStatus.choices, default=BulkChunkStatus.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    inflight_image_ids = models.JSONField(default=list, blank=True)
    processed_images = models.PositiveIntegerField(default=0)
    suggested_images = models.PositiveIntegerField(default=0)
    skipped_images = models.PositiveIntegerField(default=0)
    failed_images = models.PositiveIntegerField(default=0)
    cached_images = models.PositiveIntegerField(default=0)
    cnn_images = models.PositiveIntegerField(default=0)
    changed_listings = models.PositiveIntegerField(default=0)
    # {"changes": {"<from>><to>": listings}, "sample": [...]} for this chunk's listings.
    report = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="one_chunk_per_job_and_index")]

    def __str__(self) -> str:
        return f"chunk {self.index} of job {self.job_id}"


class BulkJobError(models.Model):
    """The error ledger: a photo a bulk job could not classify, with the reason shown to staff.
    Removed when a retry of the job classifies the photo."""

    job = models.ForeignKey(BulkJob, related_name="errors", on_delete=models.CASCADE)
    chunk = models.ForeignKey(BulkJobChunk, related_name="errors", on_delete=models.CASCADE)
    image = models.ForeignKey(ListingImage, related_name="+", on_delete=models.CASCADE)
    reason = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["job_id", "image_id"]
        constraints = [models.UniqueConstraint(fields=["job", "image"], name="one_error_per_job_and_image")]

    def __str__(self) -> str:
        return f"image {self.image_id} in job {self.job_id}: {self.reason}"
