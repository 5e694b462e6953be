"""Model versions, the training runs that produce them, comparisons and activations."""

from __future__ import annotations

from django.conf import settings
from django.db import models


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
    # Why staff activated a version the registry's rules objected to (`objections`, the messages
    # shown to them); both empty for an activation nothing objected to.
    override_reason = models.TextField(blank=True)
    objections = models.JSONField(default=list, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, related_name="+", on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{'rollback' if self.is_rollback else 'activation'} of {self.model_version_id}"
