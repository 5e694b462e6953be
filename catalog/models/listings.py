"""Listings and their photos."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models.taxonomy import Category, CategorySource


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
    # Derived from the suggestions of all the listing's photos
    # (see services.suggestions.listing_suggestion_refresh).
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
    # When the seller published it (None: a draft, seen by its seller only). A published listing
    # is public only while it has a category (`selectors.catalogue.listings_public`).
    published_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Two or more confident photos name categories on different branches of the tree (e.g. a
    # laptop + toaster bundle): the listing's category is then no training label for its photos.
    photos_disagree = models.BooleanField(default=False)
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
    # A reviewer's decision about this photo alone (when the listing's photos disagree); it wins
    # over the listing's category as the photo's training label.
    label = models.ForeignKey(Category, null=True, blank=True, related_name="+", on_delete=models.PROTECT)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["listing_id", "position", "id"]
        indexes = [models.Index(fields=["status", "status_changed_at"])]

    def __str__(self) -> str:
        return f"image {self.pk} of listing {self.listing_id}"
