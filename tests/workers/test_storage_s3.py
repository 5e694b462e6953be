"""The S3 tier: photos stored in moto's S3 server (a real HTTP endpoint started by the test
session) with STORAGE_BACKEND=s3, read by a real worker that was given only the S3 environment:
upload, classification, thumbnails, deletion, a bulk job, and direct uploads to the bucket that
the worker validates."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.urls import reverse
from PIL import Image

from catalog.models import BulkJob, BulkJobStatus, CategorySuggestion, ClassificationStatus, ListingImage
from catalog.services.bulk.jobs import bulk_job_start
from catalog.services.images import listing_photo_upload
from catalog.services.listings import listing_delete
from catalog.services.suggestions import model_version_ensure
from catalog.uploads import UPLOAD_CORRUPT, UPLOAD_MIN_SIDE_PX, UPLOAD_NOT_AN_IMAGE, UPLOAD_TOO_SMALL
from tests import photo_bytes as pb
from tests.conftest import stored_name, wait_for
from tests.factories import ListingFactory, UserFactory
from tests.s3_server import S3Server, S3Stack, s3_worker_stack, use_bucket

pytestmark = [pytest.mark.worker, pytest.mark.s3, pytest.mark.usefixtures("taxonomy")]

FINISHED = {ClassificationStatus.DONE, ClassificationStatus.FAILED}


@pytest.fixture(scope="module")
def s3_stack(
    s3_server: S3Server, django_db_setup: None, django_db_blocker: object, tmp_path_factory
) -> Iterator[S3Stack]:
    with s3_worker_stack(s3_server, tmp_path_factory.mktemp("s3-stack")) as stack:
        yield stack


@pytest.fixture
def s3(s3_stack: S3Stack, settings, monkeypatch: pytest.MonkeyPatch) -> S3Stack:
    """This test process (the web app's side) stores photos in the stack's bucket too."""
    use_bucket(s3_stack.server, s3_stack.bucket, settings=settings, monkeypatch=monkeypatch)
    return s3_stack


def _finished(image_ids: list[int]) -> bool:
    statuses = ListingImage.objects.filter(pk__in=image_ids).values_list("status", flat=True)
    return len(statuses) == len(image_ids) and set(statuses) <= FINISHED


def test_an_upload_is_classified_from_s3_thumbnailed_there_and_deleted_with_its_files(
    s3: S3Stack, client, photo_paths: list[Path]
) -> None:
    # given a seller's photo uploaded through the web app's validation path
    listing = ListingFactory.create()
    with transaction.atomic():
        image = listing_photo_upload(
            listing=listing, upload=photo_paths[0].read_bytes(), filename="IMG_1.jpg"
        )
    assert stored_name(image) in s3.server.keys(s3.bucket, "listings/")

    # when the worker, which reads photos only from the bucket, classifies it
    wait_for(lambda: _finished([image.pk]), timeout=180)

    # then it has a suggestion
    image.refresh_from_db()
    assert image.status == ClassificationStatus.DONE, s3.worker.log_text()[-3000:]
    assert CategorySuggestion.objects.filter(image=image).count() == 1
    # and the buyer's thumbnail is rendered from the bucket and cached there
    response = client.get(reverse("catalog:photo-thumbnail", args=[image.pk, "small"]))
    assert (response.status_code, response["Content-Type"]) == (200, "image/webp")
    assert Image.open(io.BytesIO(response.content)).format == "WEBP"
    assert len(s3.server.keys(s3.bucket, f"thumbs/{image.pk}/")) == 1

    # when the seller deletes the listing
    listing_delete(listing=listing)

    # then the photo and its thumbnail are gone from the bucket
    assert stored_name(image) not in s3.server.keys(s3.bucket)
    assert s3.server.keys(s3.bucket, f"thumbs/{image.pk}/") == []


def _post_to_bucket(upload: dict[str, Any], data: bytes) -> None:
    response = requests.post(upload["url"], data=upload["fields"], files={"file": ("p", data)}, timeout=10)
    assert response.status_code == 204, response.text


def test_photos_uploaded_straight_to_the_bucket_are_validated_by_the_worker(
    s3: S3Stack, client, photo_paths: list[Path]
) -> None:
    # given a seller's listing, and four files the browser sends straight to the bucket: a photo
    # with GPS in its EXIF, a truncated JPEG, a web page and an 8 x 8 icon, all declared JPEG
    listing = ListingFactory.create()
    client.force_login(listing.seller)
    photo = pb.jpeg_bytes((640, 320), exif=pb.gps_exif(orientation=6))
    truncated = pb.noisy_jpeg_bytes()[:3000]
    files = [photo, truncated, pb.HTML_PAGE, pb.jpeg_bytes((8, 8))]
    described = [{"name": f"{n}.jpg", "type": "image/jpeg", "size": len(d)} for n, d in enumerate(files)]
    uploads = client.post(
        reverse("catalog:photo-uploads"), {"files": described}, content_type="application/json"
    ).json()["uploads"]
    for upload, data in zip(uploads, files, strict=True):
        _post_to_bucket(upload, data)

    # when the page registers them and the worker takes them
    client.post(reverse("catalog:photos-add", args=[listing.pk]), {"uploads": [u["token"] for u in uploads]})
    images = list(ListingImage.objects.filter(listing=listing).order_by("position"))
    assert len(images) == 4
    wait_for(lambda: _finished([image.pk for image in images]), timeout=180)

    # then the photo is classified from its clean copy: upright, no EXIF, under a UUID name, with
    # its checksum, and the upload itself is gone
    for image in images:
        image.refresh_from_db()
    good, corrupt, page, icon = images
    assert good.status == ClassificationStatus.DONE, s3.worker.log_text()[-3000:]
    assert stored_name(good).startswith("listings/") and stored_name(good).endswith(".jpg")
    with default_storage.open(stored_name(good), "rb") as handle:
        stored = handle.read()
    assert (good.checksum, good.size_bytes) == (hashlib.sha256(stored).hexdigest(), len(stored))
    assert b"PhoneMaker" not in stored
    assert Image.open(io.BytesIO(stored)).size == (320, 640)
    # and each bad file failed alone with the message a local upload would have shown
    assert (corrupt.status, corrupt.failure_reason) == (ClassificationStatus.FAILED, UPLOAD_CORRUPT)
    assert (page.status, page.failure_reason) == (ClassificationStatus.FAILED, UPLOAD_NOT_AN_IMAGE)
    assert (icon.status, icon.failure_reason) == (
        ClassificationStatus.FAILED,
        UPLOAD_TOO_SMALL.format(min_px=UPLOAD_MIN_SIDE_PX),
    )
    # and no upload is left in the bucket's upload folder
    assert s3.server.keys(s3.bucket, "uploads/") == []


def test_a_bulk_job_reads_its_photos_from_s3(s3: S3Stack, photo_paths: list[Path]) -> None:
    # given catalogue photos stored in the bucket, without suggestions or cached embeddings
    from classifier.backbone import backbone_version
    from classifier.head import LinearHead

    version = model_version_ensure(
        name=f"{backbone_version()}+{LinearHead.load().version}", backbone_version=backbone_version()
    )
    seller = UserFactory.create()
    rows = []
    for number, path in enumerate(photo_paths):
        data = path.read_bytes()
        rows.append(
            ListingImage(
                listing=ListingFactory.create(seller=seller),
                file=default_storage.save(f"listings/bulk/{number}.jpg", ContentFile(data)),
                checksum=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                status=ClassificationStatus.DONE,
            )
        )
    images = ListingImage.objects.bulk_create(rows)

    # when a bulk job runs over them on the worker
    job = bulk_job_start(model_version=version, chunk_size=4)
    wait_for(lambda: BulkJob.objects.get(pk=job.pk).status == BulkJobStatus.DONE, timeout=300)

    # then every photo has exactly one suggestion of the version, none failed to be read
    counts = [
        CategorySuggestion.objects.filter(image=image, model_version=version).count() for image in images
    ]
    assert counts == [1] * len(images), s3.worker.log_text()[-3000:]
    job.refresh_from_db()
    assert (job.failed_images, job.cnn_images) == (0, len(images))
