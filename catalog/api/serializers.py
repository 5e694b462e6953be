"""Serializers: validation of input and shape of output. Writes happen in `catalog.services`."""

from __future__ import annotations

import re
from typing import Any

from django.core.validators import slug_re
from django.db import models
from django.urls import reverse
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
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


# 0 or more, at most 10 digits before the point and 2 after it (the model's DecimalField(12, 2)).
PRICE_PATTERN = r"^(?:\d{1,10}(?:\.\d{0,2})?|\.\d{1,2})$"
PRICE_MAX = 10**10
_PRICE_RE = re.compile(PRICE_PATTERN)


class PriceField(serializers.DecimalField):
    """A listing's price, never negative, at most 2 decimal places: a decimal string in responses;
    requests may also send a JSON number (see `PriceFieldSchema`). A string must match
    PRICE_PATTERN: DRF alone would also take " 5", "1e3" and "-0", which the schema does not."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=12, decimal_places=2, min_value=0, **kwargs)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and not _PRICE_RE.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class TextField(serializers.CharField):
    """A CharField that takes strings only: DRF's turns a JSON number into text, which the schema
    (type string) does not promise."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class PriceFieldSchema(OpenApiSerializerFieldExtension):
    """What `PriceField` reads and writes (drf-spectacular would document neither the lower bound
    nor the numbers that DRF accepts)."""

    target_class = PriceField

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        text = {"type": "string", "format": "decimal", "pattern": PRICE_PATTERN, "example": "35.00"}
        if direction == "response":
            return text
        number = {"type": "number", "minimum": 0, "maximum": PRICE_MAX, "exclusiveMaximum": True}
        return {"anyOf": [text, number], "description": "0 or more, at most 2 decimal places"}


@extend_schema_field({"type": "string", "pattern": r"^[-a-zA-Z0-9_]+$", "maxLength": 64, "example": "shoes"})
class CategorySlugField(serializers.SlugRelatedField):
    """An active category, written and read as its slug. A value that is not a slug (empty, or with
    a NUL byte that PostgreSQL refuses) names no category and is refused before any query."""

    def __init__(self, **kwargs: Any) -> None:
        if not kwargs.get("read_only"):
            kwargs.setdefault("queryset", Category.objects.filter(is_active=True))
        super().__init__(slug_field="slug", **kwargs)

    def to_internal_value(self, data: Any) -> Category:
        if isinstance(data, str) and not slug_re.match(data):
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


# DRF reads an empty string as null for a relational field that allows null (forms have no null).
@extend_schema_field({"type": "string", "pattern": r"^[-a-zA-Z0-9_]*$", "maxLength": 64, "example": "shoes"})
class OptionalCategorySlugField(CategorySlugField):
    """`CategorySlugField` that also takes null or an empty string: no category."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_null=True, **kwargs)


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

    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: TextField,
        models.TextField: TextField,
    }

    category = OptionalCategorySlugField(
        required=False, help_text="slug of the chosen category (null or empty: none)"
    )
    category_path = serializers.SerializerMethodField()
    suggested_category = OptionalCategorySlugField(
        read_only=True, help_text="null until a photo is classified"
    )
    photos = PhotoSerializer(source="images", many=True, read_only=True)
    url = serializers.SerializerMethodField(help_text="public page of the listing")
    price = PriceField()

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
    category = CategorySlugField()


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


class Error409Serializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=[("conflict", "conflict")])
    detail = serializers.CharField()
    attr = serializers.CharField(allow_null=True)


class ErrorResponse409Serializer(serializers.Serializer):
    """The 409 body, in the shape of every API error (drf-standardized-errors' 4xx bodies)."""

    type = serializers.ChoiceField(choices=[("client_error", "client_error")])
    errors = Error409Serializer(many=True)
