"""Marketplace data: the category tree, listings, their photos and the model's suggestions.

One module per concern: `taxonomy` (categories), `listings` (listings and photos), `registry`
(model versions, training runs, comparisons, activations), `suggestions` (suggestions, cached
embeddings, category decisions) and `bulk` (reclassification jobs). Django loads the models from
this package, and `from catalog.models import X` works for every model and choice class.

Writes go through `catalog.services`; reads through `catalog.selectors`. No logic in `save()`.
"""

from catalog.models.bulk import BulkChunkStatus, BulkJob, BulkJobChunk, BulkJobError, BulkJobStatus
from catalog.models.listings import ClassificationStatus, Listing, ListingImage
from catalog.models.registry import (
    ModelActivation,
    ModelComparison,
    ModelVersion,
    TrainingRun,
    TrainingStatus,
)
from catalog.models.suggestions import (
    CategoryDecision,
    CategorySuggestion,
    DecisionAction,
    ImageEmbedding,
)
from catalog.models.taxonomy import Category, CategorySource

__all__ = [
    "BulkChunkStatus",
    "BulkJob",
    "BulkJobChunk",
    "BulkJobError",
    "BulkJobStatus",
    "Category",
    "CategoryDecision",
    "CategorySource",
    "CategorySuggestion",
    "ClassificationStatus",
    "DecisionAction",
    "ImageEmbedding",
    "Listing",
    "ListingImage",
    "ModelActivation",
    "ModelComparison",
    "ModelVersion",
    "TrainingRun",
    "TrainingStatus",
]
