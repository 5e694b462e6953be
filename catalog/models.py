"""Marketplace data: the category tree, listings, their photos and the model's suggestions.

Writes go through `catalog.services`; reads through `catalog.selectors`. No logic in `save()`.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Category(models.Model):
    """A node of the taxonomy tree (e.g. fashion › shoes)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=128)
    parent = models.ForeignKey(
        "self", null=True, blank=True, related_name="children", on_delete=models.PROTECT
    )
    # ImageNet-1k class indices whose probability counts for this category in zero-shot scoring.
    imagenet_ids = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name


class CategorySource(models.TextChoices):
    """Who set a listing's category. A machine never overwrites SELLER or REVIEWER."""

    NONE = "", "not set"
    SELLER = "seller", "seller"
    REVIEWER = "reviewer", "reviewer"
    AUTO = "auto", "auto-accepted suggestion"


class Listing(models.Model):
    """A seller's item for sale."""

    seller = models.ForeignKey(settings.AUTH_USER_MODEL, related_name="listings", on_delete=models.CASCADE)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    category = models.ForeignKey(
        Category, null=True, blank=True, related_name="listings", on_delete=models.PROTECT
    )
    category_source = models.CharField(
        max_length=16, choices=CategorySource.choices, default=CategorySource.NONE, blank=True
    )
    # Derived from the suggestions of all the listing's photos (see services.listing_suggestion_refresh).
    suggested_category = models.ForeignKey(
        Category, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    suggested_confidence = models.FloatField(null=True, blank=True)
    # The derived top-k ([{"slug", "confidence"}], best first), the gap between its first two
    # confidences (the review queue shows the smallest first) and the model version behind it.
    suggested_top_k = models.JSONField(default=list, blank=True)
    suggested_margin = models.FloatField(null=True, blank=True, db_index=True)
    suggested_model_version = models.ForeignKey(
        "ModelVersion", null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    # A hidden listing that holds one photo sent to POST /api/classify; never shown or browsed.
    is_probe = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["seller", "-created_at"])]
        # Staff rights checked by the review pages (catalog.access).
        permissions = [
            ("review_listing", "Can review listings' categories (accept, correct, reject)"),
            ("bulk_accept_listing", "Can accept the first suggestion of many listings at once"),
        ]

    def __str__(self) -> str:
        return self.title


class ClassificationStatus(models.TextChoices):
    PENDING = "pending", "pending"  # stored, not yet handed to the broker
    QUEUED = "queued", "queued"  # a classification task was sent
    DONE = "done", "done"  # a suggestion exists for the current model version
    FAILED = "failed", "failed"  # permanent failure; see failure_reason


class ListingImage(models.Model):
    """A photo of a listing, stored through Django's storage API."""

    listing = models.ForeignKey(Listing, related_name="images", on_delete=models.CASCADE)
    file = models.FileField(upload_to="listings/%Y/%m/", max_length=255)
    checksum = models.CharField(max_length=64, help_text="SHA-256 of the stored bytes, hex")
    size_bytes = models.PositiveBigIntegerField()
    position = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(
        max_length=16,
        choices=ClassificationStatus.choices,
        default=ClassificationStatus.PENDING,
        db_index=True,
    )
    failure_reason = models.TextField(blank=True)
    # Incremented when a worker starts on the photo; bounds redelivery of a poison image.
    deliveries = models.PositiveIntegerField(default=0)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["listing_id", "position", "id"]
        indexes = [models.Index(fields=["status", "status_changed_at"])]

    def __str__(self) -> str:
        return f"image {self.pk} of listing {self.listing_id}"


class ModelVersion(models.Model):
    """A classifier version: backbone plus head. Suggestions are stamped with it.

    A trained version carries its head artifact (`head_manifest` + `head_npz`, the two files of
    `classifier.head.LinearHead.save`), so a worker on any machine can serve it once it is active.
    `metrics` holds the held-out evaluation (accuracy, per-category precision/recall/F1, confusion
    matrix, reliability bins, ECE, auto-accept coverage); `auto_accept_thresholds` maps a category
    slug to the lowest confidence at which a 95 % lower confidence bound on its held-out precision
    (or its parent's pooled one) reached `auto_accept_precision`; absent categories never
    auto-accept.
    """

    name = models.CharField(max_length=128, unique=True)
    backbone_version = models.CharField(max_length=128, blank=True)
    is_active = models.BooleanField(default=False)
    metrics = models.JSONField(default=dict, blank=True)
    head_manifest = models.JSONField(default=dict, blank=True)
    head_npz = models.BinaryField(default=b"", blank=True)
    hyperparameters = models.JSONField(default=dict, blank=True)
    training_photos = models.PositiveIntegerField(null=True, blank=True)
    held_out_photos = models.PositiveIntegerField(null=True, blank=True)
    # [[image_id, category slug], ...]: the held-out photos of the training, so a comparison with
    # another version scores both on exactly these photos.
    held_out_images = models.JSONField(default=list, blank=True)
    auto_accept_thresholds = models.JSONField(default=dict, blank=True)
    auto_accept_precision = models.FloatField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("activate_modelversion", "Can activate or roll back a model version"),
            ("train_modelversion", "Can train new versions and compare them with the active one"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"],
                condition=models.Q(is_active=True),
                name="one_active_model_version",
            )
        ]

    def __str__(self) -> str:
        return self.name


class CategorySuggestion(models.Model):
    """The model's top-k categories for one photo, for one model version."""

    image = models.ForeignKey(ListingImage, related_name="suggestions", on_delete=models.CASCADE)
    model_version = models.ForeignKey(ModelVersion, related_name="suggestions", on_delete=models.PROTECT)
    category = models.ForeignKey(Category, related_name="+", on_delete=models.PROTECT)
    confidence = models.FloatField(help_text="Calibrated probability of the top-1 category, 0..1")
    # [{"slug": str, "confidence": float}, ...] best first.
    top_k = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version"], name="one_suggestion_per_image_and_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.category.slug} {self.confidence:.2f} ({self.model_version.name})"


class ImageEmbedding(models.Model):
    """Backbone outputs cached per photo and backbone version: retraining and reclassification
    with a new head then need no decode and no CNN."""

    image = models.ForeignKey(ListingImage, related_name="embeddings", on_delete=models.CASCADE)
    backbone_version = models.CharField(max_length=128)
    embedding = models.BinaryField(help_text="float32 little-endian, shape (1280,)")
    logits = models.BinaryField(help_text="float32 little-endian ImageNet logits, shape (1000,)")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "backbone_version"], name="one_embedding_per_image_and_backbone"
            )
        ]

    def __str__(self) -> str:
        return f"embedding of image {self.image_id} ({self.backbone_version})"


class DecisionAction(models.TextChoices):
    """How a listing's category came to be (the audit trail's verbs)."""

    SELLER_CHOSE = "seller_chose", "chosen by the seller"
    ACCEPTED = "accepted", "suggestion accepted by a reviewer"
    BULK_ACCEPTED = "bulk_accepted", "suggestion accepted in bulk by a reviewer"
    CORRECTED = "corrected", "corrected by a reviewer"
    REJECTED = "rejected", "rejected by a reviewer as not classifiable"
    AUTO_ACCEPTED = "auto_accepted", "auto-accepted suggestion"


class CategoryDecision(models.Model):
    """One change of a listing's category, by whom and on what evidence. Written only by
    `services.listing_category_set`, never updated.

    `suggested_top_k` is what the model said at that moment ([{"slug", "confidence"}], best
    first) and `model_version` which version said it; `suggestion_rank` is the 1-based rank of
    the chosen category in it (None when the person chose something else); `threshold` is the
    auto-accept threshold an AUTO decision cleared.
    """

    listing = models.ForeignKey(Listing, related_name="category_decisions", on_delete=models.CASCADE)
    action = models.CharField(max_length=16, choices=DecisionAction.choices)
    source = models.CharField(max_length=16, choices=CategorySource.choices)
    category = models.ForeignKey(Category, null=True, blank=True, related_name="+", on_delete=models.PROTECT)
    previous_category = models.ForeignKey(
        Category, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    previous_source = models.CharField(max_length=16, choices=CategorySource.choices, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, related_name="decisions", on_delete=models.PROTECT
    )
    suggested_top_k = models.JSONField(default=list, blank=True)
    suggestion_rank = models.PositiveSmallIntegerField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    threshold = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["listing", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.get_action_display()} for listing {self.listing_id}"


class TrainingStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    DONE = "done", "done"
    FAILED = "failed", "failed"


class TrainingRun(models.Model):
    """One request to train a head on the human-labelled photos (`manage.py train` or the staff
    button); the worker on the `training` queue fills in the outcome and `model_version`."""

    status = models.CharField(
        max_length=16, choices=TrainingStatus.choices, default=TrainingStatus.QUEUED, db_index=True
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, related_name="training_runs", on_delete=models.SET_NULL
    )
    failure_reason = models.TextField(blank=True)
    # Phase timings (s), photo counts, embeddings computed vs reused.
    report = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"training run {self.pk} ({self.status})"


class ModelComparison(models.Model):
    """A candidate version scored beside a baseline (the active version) on the same held-out
    photos: the evidence activation asks for. `details` holds per-category figures."""

    candidate = models.ForeignKey(ModelVersion, related_name="comparisons", on_delete=models.CASCADE)
    baseline = models.ForeignKey(ModelVersion, related_name="+", on_delete=models.CASCADE)
    photos = models.PositiveIntegerField()
    candidate_accuracy = models.FloatField()
    baseline_accuracy = models.FloatField()
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.candidate} vs {self.baseline}"


class ModelActivation(models.Model):
    """Who made which version active, when, replacing which (rollback reads this history)."""

    model_version = models.ForeignKey(ModelVersion, related_name="activations", on_delete=models.CASCADE)
    previous = models.ForeignKey(
        ModelVersion, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    comparison = models.ForeignKey(
        ModelComparison, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    is_rollback = models.BooleanField(default=False)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{'rollback' if self.is_rollback else 'activation'} of {self.model_version_id}"


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
