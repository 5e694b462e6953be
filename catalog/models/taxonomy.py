"""The category tree and who set a listing's category."""

from __future__ import annotations

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
