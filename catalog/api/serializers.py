"""Serializers: validation of input and shape of output. Writes happen in `catalog.services`."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from catalog import selectors
from catalog.models import Category, Listing, ListingImage


class CategorySerializer(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    path = serializers.CharField(help_text='Path in the tree, e.g. "Fashion › Shoes"')


def category_data(category: Category | None, paths: dict[int, str]) -> dict[str, str] | None:
    if category is None:
        return None
    return {"slug": category.slug, "name": category.name, "path": paths.get(category.pk, category.name)}


class PhotoSerializer(serializers.ModelSerializer):
    thumbnail_url = serializers.SerializerMethodField(help_text="360 px WebP thumbnail")

    class Meta:
        model = ListingImage
        fields = ["id", "position", "status", "failure_reason", "size_bytes", "thumbnail_url", "created_at"]
        read_only_fields = fields

    def get_thumbnail_url(self, image: ListingImage) -> str:
        url = reverse("catalog:photo-thumbnail", kwargs={"image_id": image.pk, "size": "small"})
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class ListingSerializer(serializers.ModelSerializer):
    """A seller's listing. `category` is written as a slug (the seller's choice, source SELLER)."""

    category = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Category.objects.filter(is_active=True),
        required=False,
        allow_null=True,
        help_text="slug of the chosen category",
    )
    category_path = serializers.SerializerMethodField()
    suggested_category = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    photos = PhotoSerializer(source="images", many=True, read_only=True)
    url = serializers.SerializerMethodField(help_text="public page of the listing")
    price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0)

    class Meta:
        model = Listing
        fields = [
            "id",
            "title",
            "description",
            "price",
            "category",
            "category_path",
            "category_source",
            "suggested_category",
            "suggested_confidence",
            "photos",
            "url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["category_source", "suggested_confidence", "created_at", "updated_at"]

    def get_category_path(self, listing: Listing) -> str | None:
        if listing.category is None:
            return None
        return " › ".join(c.name for c in selectors.category_path(category=listing.category))

    def get_url(self, listing: Listing) -> str:
        url = reverse("catalog:listing-detail", kwargs={"pk": listing.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class PhotoUploadSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="JPEG, PNG or WebP; at most UPLOAD_MAX_BYTES and UPLOAD_MAX_PIXELS"
    )


class CategoryChoiceSerializer(serializers.Serializer):
    category = serializers.SlugRelatedField(
        slug_field="slug", queryset=Category.objects.filter(is_active=True)
    )


class ScoredCategorySerializer(CategorySerializer):
    confidence = serializers.FloatField(help_text="0..1")


class PhotoStateSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    failure_reason = serializers.CharField()


class ListingSuggestionsSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=["pending", "done", "failed", "empty"])
    categories = ScoredCategorySerializer(many=True)
    photos = PhotoStateSerializer(many=True)
    model_version = serializers.CharField()


def listing_suggestions_data(panel: selectors.ListingSuggestions) -> dict[str, Any]:
    return {
        "state": panel.state,
        "categories": [
            {
                "slug": s.category.slug,
                "name": s.category.name,
                "path": s.path,
                "confidence": round(s.confidence, 6),
            }
            for s in panel.suggestions
        ],
        "photos": [
            {"id": p.image.pk, "status": p.status, "failure_reason": p.failure_reason} for p in panel.photos
        ],
        "model_version": panel.model_version,
    }


class ClassifyResultSerializer(serializers.Serializer):
    image_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["pending", "queued", "done", "failed"])
    categories = ScoredCategorySerializer(many=True, help_text="top-5, best first (status done)")
    failure_reason = serializers.CharField()
    model_version = serializers.CharField()
    poll_url = serializers.URLField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
