"""What a bulk job covers: its photos, and the job states in which its chunks may run."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from catalog.models import BulkJob, BulkJobStatus, ListingImage
from catalog.selectors import catalogue as catalogue_selectors

#: A job in these states is still at work: its chunks run, staff may cancel it.
ACTIVE_STATES = (BulkJobStatus.PLANNING, BulkJobStatus.RUNNING)


def scope_images(*, job: BulkJob) -> QuerySet[ListingImage]:
    """The photos of every listing the job covers: all but probe listings, limited to the
    subtree of `job.category` (a listing's category, or its suggested category when it has
    none) when the job has one."""
    images = ListingImage.objects.filter(listing__is_probe=False)
    if job.category is not None:
        ids = catalogue_selectors.category_descendant_ids(category=job.category)
        images = images.filter(
            Q(listing__category_id__in=ids)
            | Q(listing__category__isnull=True, listing__suggested_category_id__in=ids)
        )
    return images
