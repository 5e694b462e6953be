"""Photos that browsers upload straight to the S3 bucket: the web app signs the upload and
registers the key; it never receives or sends the photo's bytes. Only with S3 storage
(`STORAGE_BACKEND=s3`); local storage keeps the multipart upload through the web app.

1. `photo_upload_presign`: one presigned POST per photo for the key `uploads/<uuid>`, whose policy
   pins the key, the content type (JPEG, PNG or WebP) and the size (1 byte to
   `UPLOAD_MAX_BYTES`, a `content-length-range` condition) and expires after
   `AWS_S3_PRESIGNED_POST_EXPIRES_S`; with it a token signed by the web app that names the key and
   the seller, so a seller can register only their own uploads.
2. The browser POSTs the photo to the bucket, then sends the tokens with the listing form.
3. `listing_upload_register`: checks the token (signature, seller, age), reads the object's size
   and type with a HEAD request, and creates the photo row, PENDING, named after the key, with no
   checksum yet; its classification is queued after commit.
4. `image_upload_verify`, called by the worker before classifying: the same checks as a local
   upload (`catalog.uploads.photo_clean`), the clean copy (no EXIF/GPS) stored under a UUID name
   in the photo folder with its checksum and size, the upload deleted. A file that fails the checks
   ends FAILED with the message a local upload would have shown, and is deleted.

Uploads that are never registered are deleted by `stored_files_sweep` (catalog.services.storage).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Max

from catalog.models import Listing, ListingImage
from catalog.services.images import (
    LISTING_MAX_PHOTOS,
    LISTING_TOO_MANY_PHOTOS,
    PHOTO_MISSING_FROM_STORAGE,
    PhotoBatch,
    RejectedPhoto,
    image_classification_fail,
    image_enqueue,
)
from catalog.services.storage import DIRECT_UPLOAD_FOLDER
from catalog.uploads import (
    ACCEPTED_FORMATS,
    UPLOAD_EMPTY,
    UPLOAD_NOT_AN_IMAGE,
    UPLOAD_TOO_LARGE,
    UploadRejected,
    photo_clean,
    photo_storage_name,
)
from config.storage import is_s3

# User-facing messages; tests reuse them.
UPLOAD_NOT_RECEIVED = "The photo did not reach our storage; add it again."
UPLOAD_EXPIRED = "This upload has expired or is not yours; add the photo again."

ACCEPTED_CONTENT_TYPES = frozenset(content_type for _, content_type in ACCEPTED_FORMATS.values())
_TOKEN_SALT = "catalog.direct-upload"


@dataclass(frozen=True)
class PresignedUpload:
    """Where and how the browser POSTs one photo: `url`, the form `fields` to send before the
    file (field name "file"), and the `token` to hand back to `listing_upload_register`."""

    url: str
    fields: dict[str, str]
    token: str
    key: str


def direct_uploads_enabled() -> bool:
    """Whether photos are uploaded by browsers straight to the bucket (S3 storage)."""
    return is_s3(settings.STORAGES)


def photo_upload_presign(
    *, seller: AbstractBaseUser, filename: str, content_type: str, size: int
) -> PresignedUpload:
    """A presigned POST for one photo of `seller` (`size` in bytes, as the browser reports it).

    Raises `UploadRejected` (UPLOAD_NOT_AN_IMAGE, UPLOAD_EMPTY, UPLOAD_TOO_LARGE) when the declared
    type or size could never pass; the bucket enforces the same limits on the bytes it receives.
    """
    _declared_check(content_type=content_type, size=size)
    key = f"{DIRECT_UPLOAD_FOLDER}/{uuid.uuid4().hex}"
    post = _client().generate_presigned_post(
        Bucket=default_storage.bucket_name,  # type: ignore[attr-defined]
        Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[
            {"Content-Type": content_type},
            ["content-length-range", 1, settings.UPLOAD_MAX_BYTES],
        ],
        ExpiresIn=settings.AWS_S3_PRESIGNED_POST_EXPIRES_S,
    )
    url = post["url"]
    if settings.AWS_S3_PUBLIC_ENDPOINT_URL:  # path-style URL: swap the host the app uses for the public one
        url = settings.AWS_S3_PUBLIC_ENDPOINT_URL.rstrip("/") + urlsplit(url).path
    token = signing.dumps({"key": key, "name": filename[:200]}, salt=f"{_TOKEN_SALT}:{seller.pk}")
    return PresignedUpload(url=url, fields=dict(post["fields"]), token=token, key=key)


def listing_uploads_register(*, listing: Listing, tokens: Sequence[str]) -> PhotoBatch:
    """Register several direct uploads (`listing_upload_register` each); each refused one is
    reported with the file name the browser declared and its message, the others are kept."""
    batch = PhotoBatch()
    for token in tokens:
        try:
            batch.added.append(listing_upload_register(listing=listing, token=token))
        except UploadRejected as error:
            try:
                filename = str(_token_open(seller_id=listing.seller_id, token=token).get("name", ""))
            except UploadRejected:
                filename = ""
            batch.rejected.append(RejectedPhoto(filename=filename, message=str(error)))
    return batch


def listing_upload_register(*, listing: Listing, token: str) -> ListingImage:
    """Add the photo a browser uploaded (its `token` from `photo_upload_presign`) to `listing`,
    last in order, and queue its validation and classification after commit.

    Reads the object's size and content type with one HEAD request, never its bytes. Registering
    the same token twice for the listing returns the photo it already has. Raises `UploadRejected`:
    UPLOAD_EXPIRED (bad signature, another seller, older than half STORAGE_ORPHAN_AFTER_S),
    UPLOAD_NOT_RECEIVED, UPLOAD_TOO_LARGE, UPLOAD_EMPTY, UPLOAD_NOT_AN_IMAGE, or
    LISTING_TOO_MANY_PHOTOS; a refused object is deleted from the bucket.
    """
    key = str(_token_open(seller_id=listing.seller_id, token=token)["key"])
    with transaction.atomic():
        Listing.objects.select_for_update().filter(pk=listing.pk).first()
        existing = ListingImage.objects.filter(file=key).first()
        if existing is not None:
            if existing.listing_id != listing.pk:
                raise UploadRejected(UPLOAD_EXPIRED)
            return existing
        if listing.images.count() >= LISTING_MAX_PHOTOS:
            raise UploadRejected(LISTING_TOO_MANY_PHOTOS.format(limit=LISTING_MAX_PHOTOS))
        size = _stored_upload_check(key)
        last = listing.images.aggregate(last=Max("position"))["last"]
        image = ListingImage.objects.create(
            listing=listing, file=key, checksum="", size_bytes=size, position=0 if last is None else last + 1
        )
        image_enqueue(image_id=image.pk)
    return image


def is_unverified_upload(image: ListingImage) -> bool:
    """Whether `image` is a direct upload that no worker has validated yet."""
    return str(image.file.name).startswith(f"{DIRECT_UPLOAD_FOLDER}/")


class UploadRefused(StrEnum):
    """Why a direct upload is not classified (the words are the classify outcomes' own)."""

    FAILED = "failed"  # refused or missing: the photo is FAILED with the reason
    GONE = "gone"  # deleted, or validated by another delivery, meanwhile


def image_upload_verify(*, image: ListingImage) -> UploadRefused | None:
    """Validate a direct upload as a local upload is validated, and keep only its clean copy.

    Returns None when `image` is ready to classify (also when it was never a direct upload); its
    `file`, `checksum` and `size_bytes` then name the clean copy. Returns FAILED when the upload
    was refused (the photo is FAILED with the upload's message, the object deleted) or is missing,
    and GONE when the photo was deleted or validated by another delivery meanwhile. Storage
    errors other than a missing object propagate, for the caller's retry.
    """
    if not is_unverified_upload(image):
        return None
    upload_name = str(image.file.name)
    try:
        with default_storage.open(upload_name, "rb") as handle:
            clean = photo_clean(handle)
    except FileNotFoundError:
        image_classification_fail(image=image, reason=PHOTO_MISSING_FROM_STORAGE)
        return UploadRefused.FAILED
    except UploadRejected as error:
        image_classification_fail(image=image, reason=str(error))
        default_storage.delete(upload_name)
        return UploadRefused.FAILED
    name = image.file.field.generate_filename(image, photo_storage_name(f"photo.{clean.extension}"))
    name = default_storage.save(name, ContentFile(clean.data))
    checksum = hashlib.sha256(clean.data).hexdigest()
    updated = ListingImage.objects.filter(pk=image.pk, file=upload_name).update(
        file=name, checksum=checksum, size_bytes=len(clean.data)
    )
    if not updated:
        default_storage.delete(name)
        return UploadRefused.GONE
    default_storage.delete(upload_name)
    image.file.name, image.checksum, image.size_bytes = name, checksum, len(clean.data)
    return None


def _declared_check(*, content_type: str, size: int) -> None:
    if content_type not in ACCEPTED_CONTENT_TYPES:
        raise UploadRejected(UPLOAD_NOT_AN_IMAGE)
    if size <= 0:
        raise UploadRejected(UPLOAD_EMPTY)
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadRejected(UPLOAD_TOO_LARGE.format(limit_mb=settings.UPLOAD_MAX_BYTES // (1024 * 1024)))


def _stored_upload_check(key: str) -> int:
    """Size in bytes of the uploaded object `key`, after checking its size and type again (the
    bucket should have refused them already); deletes the object when it fails."""
    from botocore.exceptions import ClientError

    try:
        head = _client().head_object(Bucket=default_storage.bucket_name, Key=key)  # type: ignore[attr-defined]
    except ClientError as error:
        if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            raise UploadRejected(UPLOAD_NOT_RECEIVED) from error
        raise
    try:
        _declared_check(content_type=str(head.get("ContentType", "")), size=int(head["ContentLength"]))
    except UploadRejected:
        default_storage.delete(key)
        raise
    return int(head["ContentLength"])


def _token_open(*, seller_id: Any, token: str) -> dict[str, Any]:
    try:
        value = signing.loads(
            token, salt=f"{_TOKEN_SALT}:{seller_id}", max_age=settings.STORAGE_ORPHAN_AFTER_S // 2
        )
    except signing.BadSignature as error:  # also SignatureExpired
        raise UploadRejected(UPLOAD_EXPIRED) from error
    if not isinstance(value, dict) or not str(value.get("key", "")).startswith(f"{DIRECT_UPLOAD_FOLDER}/"):
        raise UploadRejected(UPLOAD_EXPIRED)
    return value


def _client() -> Any:
    """The bucket's boto3 client, with the storage's credentials and botocore config."""
    return default_storage.connection.meta.client  # type: ignore[attr-defined]
