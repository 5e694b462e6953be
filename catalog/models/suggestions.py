"""The model's suggestions and cached embeddings per photo, and the audit trail of category decisions."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from catalog.models.listings import Listing, ListingImage
from catalog.models.registry import ModelVersion
from catalog.models.taxonomy import Category, CategorySource


class CategorySuggestion(models.Model):
    """The model's top-k categories for one photo, for one model version."""

    # No index of its own: the unique (image, model version) index serves lookups by photo, and a
    # bulk job writes one suggestion per photo, so each index less is a write less per photo.
    image = models.ForeignKey(
        ListingImage, related_name="suggestions", on_delete=models.CASCADE, db_index=False
    )
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

    # Indexed by the unique (image, backbone version) constraint, as suggestions are.
    image = models.ForeignKey(
        ListingImage, related_name="embeddings", on_delete=models.CASCADE, db_index=False
    )
    backbone_version = models.CharField(max_length=128)
    outputs = models.BinaryField(
        help_text="float16 little-endian: the embedding (1280,) then the ImageNet logits (1000,), "
        "4,560 bytes (catalog.services.embeddings)"
    )
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
    PHOTO_LABELLED = "photo_labelled", "photo labelled by a reviewer"
    UNDONE = "undone", "decision undone by a reviewer"


class CategoryDecision(models.Model):
    """One change of a listing's category, by whom and on what evidence. Written only by
    `services.decisions.listing_category_set`, never updated.

    `suggested_top_k` is what the model said at that moment ([{"slug", "confidence"}], best
    first) and `model_version` which version said it; `suggestion_rank` is the 1-based rank of
    the chosen category in it (None when the person chose something else); `threshold` is the
    auto-accept threshold an AUTO decision cleared. A decision with an `image` is about that photo
    alone (its `label`; `previous_category` is the photo's label before). An UNDONE decision
    points at the decision it reverted (`undoes`).
    """

    listing = models.ForeignKey(Listing, related_name="category_decisions", on_delete=models.CASCADE)
    image = models.ForeignKey(
        ListingImage, null=True, blank=True, related_name="decisions", on_delete=models.CASCADE
    )
    undoes = models.OneToOneField(
        "self", null=True, blank=True, related_name="undone_by", on_delete=models.SET_NULL
    )
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
