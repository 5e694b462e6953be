"""Classifying uploaded photos, as the catalog sees it: a worker claims the photos of a batch,
computes, then records each photo's result. The worker never touches a row itself.

- `photos_claim`: which photos are gone or already done, which are ready (their delivery
  counted), and which an earlier delivery left unfinished (claimed again one at a time);
- `photo_upload_verify`: a photo uploaded straight to the bucket is validated first;
- `photo_classification_record`: its top-k, backbone outputs and the listing's suggestion
  (`suggestions.image_classification_record`); failures go through
  `images.images_classification_fail`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings

from catalog.models import ClassificationStatus, ListingImage, ModelVersion
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.direct_uploads import UploadRefused, image_upload_verify
from catalog.services.images import image_delivery_start, images_delivery_start
from catalog.services.suggestions import (
    ScoredCategory,
    TopK,
    image_classification_record,
    model_version_ensure,
)

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ClaimedPhoto:
    """A photo claimed for classification. The worker reads `image_id` and `file_name` and hands
    the photo back to this module's services."""

    image: ListingImage

    @property
    def image_id(self) -> int:
        return int(self.image.pk)

    @property
    def file_name(self) -> str:
        """The stored file to read (the clean copy once `photo_upload_verify` passed)."""
        return str(self.image.file.name)


@dataclass
class PhotoClaim:
    """The photos of one claim, each in one list.

    `ready`: to classify, their delivery counted; `redelivered`: an earlier delivery did not
    finish (a crash), to be claimed again alone; `set_aside`: claimed alone after stopping the
    worker more than `CLASSIFY_MAX_DELIVERIES` times, by how many times (the caller fails them).
    """

    model_version: ModelVersion
    gone: list[int] = field(default_factory=list)
    already_done: list[int] = field(default_factory=list)
    ready: list[ClaimedPhoto] = field(default_factory=list)
    redelivered: list[int] = field(default_factory=list)
    set_aside: dict[int, int] = field(default_factory=dict)


def photos_claim(*, image_ids: Sequence[int], model_version: str, backbone_version: str) -> PhotoClaim:
    """Claim photos for classification by the model version called `model_version`.

    Photos never delivered before are ready together, their deliveries counted in one write.
    A photo whose earlier delivery did not finish is ready only when claimed alone (its delivery
    counted then, so a crash is blamed on it alone), or set aside past the limit.

    The version is looked up; created (the first one active) only when no row has that name,
    which a worker's start-up normally did already. Raises database errors before changing
    anything.
    """
    rows = ModelVersion.objects.defer("head_npz", "held_out_images")  # the artifact is not needed
    version = rows.filter(name=model_version).first() or model_version_ensure(
        name=model_version, backbone_version=backbone_version
    )
    images = catalogue_selectors.images_for_classification(image_ids=image_ids)
    claim = PhotoClaim(model_version=version, gone=[pk for pk in image_ids if pk not in images])
    suggested = catalogue_selectors.images_with_suggestion(image_ids=list(images), model_version=version)
    for pk, image in images.items():
        if image.status == ClassificationStatus.DONE and pk in suggested:
            claim.already_done.append(pk)
        elif image.deliveries == 0:
            claim.ready.append(ClaimedPhoto(image))
        else:
            claim.redelivered.append(pk)
    images_delivery_start(image_ids=[photo.image_id for photo in claim.ready])
    if len(images) == 1 and claim.redelivered:
        (pk,) = claim.redelivered
        claim.redelivered = []
        deliveries = image_delivery_start(image_id=pk)
        if deliveries > settings.CLASSIFY_MAX_DELIVERIES:
            claim.set_aside[pk] = deliveries - 1
        else:
            claim.ready.append(ClaimedPhoto(images[pk]))
    return claim


def photo_upload_verify(*, photo: ClaimedPhoto) -> UploadRefused | None:
    """`direct_uploads.image_upload_verify` of the claimed photo: None when it is ready to
    classify, else why not (FAILED, GONE)."""
    return image_upload_verify(image=photo.image)


def photo_classification_record(
    *,
    photo: ClaimedPhoto,
    model_version: ModelVersion,
    top_k: Sequence[ScoredCategory],
    embedding: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    backbone_version: str = "",
) -> TopK | None:
    """Record the photo's result (`suggestions.image_classification_record`): its top-k, its
    backbone outputs, DONE and its listing's suggestion. None when no category of the top-k is
    known (the photo then failed). Raises `ImageGone` when it was deleted meanwhile."""
    return image_classification_record(
        image=photo.image,
        model_version=model_version,
        top_k=top_k,
        embedding=embedding,
        logits=logits,
        backbone_version=backbone_version,
    )
