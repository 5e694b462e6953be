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
    # A hidden listing that holds one photo sent to POST /api/classify; never shown or browsed.
    is_probe = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["seller", "-created_at"])]

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
    """A classifier version: backbone plus head. Suggestions are stamped with it."""

    name = models.CharField(max_length=128, unique=True)
    backbone_version = models.CharField(max_length=128, blank=True)
    is_active = models.BooleanField(default=False)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
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
