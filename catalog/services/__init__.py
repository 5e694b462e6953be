"""Writes of the catalogue: every view, command, admin action and task calls these.

Functions are named `<entity>_<action>` and take keyword-only arguments. One module per
subdomain; the names below are the public API (`from catalog import services`).
"""

from catalog.services.images import (
    ALLOWED_TRANSITIONS,
    PHOTO_MISSING_FROM_STORAGE,
    UPLOAD_EMPTY,
    UPLOAD_TOO_LARGE,
    WORKER_CRASHED_REPEATEDLY,
    IllegalTransition,
    UploadRejected,
    image_add,
    image_classification_fail,
    image_delivery_start,
    image_enqueue,
    image_status_set,
    images_requeue_stuck,
)
from catalog.services.listings import listing_create, taxonomy_load, user_get_or_create
from catalog.services.suggestions import (
    ScoredCategory,
    image_classification_record,
    listing_suggestion_refresh,
    model_version_ensure,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "PHOTO_MISSING_FROM_STORAGE",
    "UPLOAD_EMPTY",
    "UPLOAD_TOO_LARGE",
    "WORKER_CRASHED_REPEATEDLY",
    "IllegalTransition",
    "ScoredCategory",
    "UploadRejected",
    "image_add",
    "image_classification_fail",
    "image_classification_record",
    "image_delivery_start",
    "image_enqueue",
    "image_status_set",
    "images_requeue_stuck",
    "listing_create",
    "listing_suggestion_refresh",
    "model_version_ensure",
    "taxonomy_load",
    "user_get_or_create",
]
