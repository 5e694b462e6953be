from django.contrib import admin

from catalog.models import Category, CategorySuggestion, Listing, ListingImage, ModelVersion


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "parent", "is_active"]
    list_filter = ["is_active", "parent"]
    search_fields = ["slug", "name"]


class ListingImageInline(admin.TabularInline):
    model = ListingImage
    extra = 0
    readonly_fields = ["checksum", "size_bytes", "status", "failure_reason", "deliveries"]


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "seller",
        "category",
        "category_source",
        "suggested_category",
        "suggested_confidence",
    ]
    list_filter = ["category_source", "category"]
    search_fields = ["title"]
    inlines = [ListingImageInline]


@admin.register(ListingImage)
class ListingImageAdmin(admin.ModelAdmin):
    list_display = ["id", "listing", "status", "failure_reason", "deliveries", "status_changed_at"]
    list_filter = ["status"]


@admin.register(CategorySuggestion)
class CategorySuggestionAdmin(admin.ModelAdmin):
    list_display = ["image", "category", "confidence", "model_version", "updated_at"]
    list_filter = ["model_version", "category"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "backbone_version", "is_active", "created_at"]
