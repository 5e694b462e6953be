"""Direct uploads to S3 against moto's S3 server: the web app signs a presigned POST per photo,
the browser's POST (here `requests`) puts the bytes in the bucket, and the web app registers the
key with a HEAD request, never reading or sending the photo's bytes."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import requests
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from catalog.models import ClassificationStatus, ListingImage
from catalog.services.direct_uploads import (
    UPLOAD_EXPIRED,
    UPLOAD_NOT_RECEIVED,
    PresignedUpload,
    listing_upload_register,
    photo_upload_presign,
)
from catalog.services.storage import stored_files_sweep
from catalog.uploads import UPLOAD_NOT_AN_IMAGE, UPLOAD_TOO_LARGE, UploadRejected
from tests import photo_bytes as pb
from tests.conftest import stored_name
from tests.factories import ListingFactory, UserFactory

pytestmark = [pytest.mark.s3, pytest.mark.django_db]

UPLOAD_KEY = re.compile(r"^uploads/[0-9a-f]{32}$")


def _presign(seller: Any, data: bytes, content_type: str = "image/jpeg") -> PresignedUpload:
    return photo_upload_presign(
        seller=seller, filename="IMG_1.jpg", content_type=content_type, size=len(data)
    )


def _post_to_bucket(upload: PresignedUpload, data: bytes, content_type: str = "image/jpeg") -> int:
    """What the browser does: a multipart POST of the signed fields, then the file."""
    response = requests.post(
        upload.url, data=upload.fields, files={"file": ("IMG_1.jpg", data, content_type)}, timeout=10
    )
    return response.status_code


def _policy(upload: PresignedUpload) -> dict[str, Any]:
    return json.loads(base64.b64decode(upload.fields["policy"]))


@pytest.fixture
def bucket_reads(s3_bucket: str) -> list[str]:
    """Every GetObject this process's storage client makes, by key (the web app must make none)."""
    reads: list[str] = []
    client = default_storage.connection.meta.client  # type: ignore[attr-defined]
    client.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: reads.append(params.get("Key", ""))
    )
    return reads


def test_a_presigned_post_pins_a_uuid_key_the_content_type_and_the_size_range(
    s3_bucket: str, settings
) -> None:
    # given a 2 MiB upload limit
    settings.UPLOAD_MAX_BYTES = 2 * 1024 * 1024

    # when a seller asks to upload a JPEG
    upload = _presign(UserFactory.create(), pb.jpeg_bytes())

    # then the signed policy names the bucket, a UUID key, that content type and 1 byte..2 MiB
    conditions = _policy(upload)["conditions"]
    assert UPLOAD_KEY.match(upload.key)
    assert {"bucket": s3_bucket} in conditions
    assert {"key": upload.key} in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert ["content-length-range", 1, 2 * 1024 * 1024] in conditions
    assert upload.fields["Content-Type"] == "image/jpeg"
    assert upload.url.startswith(settings.STORAGES["default"]["OPTIONS"]["endpoint_url"])


def test_browsers_post_to_the_public_endpoint_when_it_differs_from_the_apps(s3_bucket: str, settings) -> None:
    # given an app that reaches the bucket on an internal name, and browsers on a public one
    settings.AWS_S3_PUBLIC_ENDPOINT_URL = "https://photos.example.test/"

    # then the presigned POST goes to the public endpoint, same bucket path, same signed fields
    upload = _presign(UserFactory.create(), pb.jpeg_bytes())
    assert upload.url == f"https://photos.example.test/{s3_bucket}"


def test_the_bucket_takes_the_post_and_the_web_app_registers_the_key_without_reading_it(
    bucket_reads: list[str], s3_server, s3_bucket: str, django_capture_on_commit_callbacks
) -> None:
    # given a seller's listing and a photo the browser posted to the bucket
    listing = ListingFactory.create()
    data = pb.jpeg_bytes((80, 40), exif=pb.gps_exif())
    upload = _presign(listing.seller, data)
    assert _post_to_bucket(upload, data) == 204
    assert s3_server.keys(s3_bucket) == [upload.key]

    # when the web app registers it
    with django_capture_on_commit_callbacks() as callbacks:
        image = listing_upload_register(listing=listing, token=upload.token)

    # then the photo is named after the key, sized from a HEAD request, waiting for a worker to
    # validate it (no checksum yet), its classification queued after commit, and no byte was read
    assert (stored_name(image), image.size_bytes, image.checksum) == (upload.key, len(data), "")
    assert image.status == ClassificationStatus.PENDING
    assert len(callbacks) == 1
    assert bucket_reads == []
    # and registering the same token again adds nothing
    assert listing_upload_register(listing=listing, token=upload.token) == image
    assert listing.images.count() == 1


def test_registration_refuses_another_sellers_token_a_missing_upload_and_an_oversized_one(
    s3_server, s3_bucket: str, settings
) -> None:
    listing = ListingFactory.create()
    data = pb.jpeg_bytes()

    # another seller's upload cannot be added to this listing
    theirs = _presign(UserFactory.create(), data)
    assert _post_to_bucket(theirs, data) == 204
    with pytest.raises(UploadRejected, match=re.escape(UPLOAD_EXPIRED)):
        listing_upload_register(listing=listing, token=theirs.token)
    # a token whose photo never reached the bucket, nor a forged one, is refused
    never_sent = _presign(listing.seller, data)
    with pytest.raises(UploadRejected, match=re.escape(UPLOAD_NOT_RECEIVED)):
        listing_upload_register(listing=listing, token=never_sent.token)
    with pytest.raises(UploadRejected, match=re.escape(UPLOAD_EXPIRED)):
        listing_upload_register(listing=listing, token=never_sent.token + "x")
    # an object over the limit (a bucket that ignored the policy) is refused and deleted
    big = _presign(listing.seller, data)
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    assert _post_to_bucket(big, b"\xff" * (1024 * 1024 + 1)) == 204
    with pytest.raises(UploadRejected, match=re.escape(UPLOAD_TOO_LARGE.format(limit_mb=1))):
        listing_upload_register(listing=listing, token=big.token)
    assert big.key not in s3_server.keys(s3_bucket)
    assert listing.images.count() == 0


def test_types_and_sizes_that_could_never_pass_get_no_presigned_post(s3_bucket: str, settings) -> None:
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    seller = UserFactory.create()
    with pytest.raises(UploadRejected, match=re.escape(UPLOAD_NOT_AN_IMAGE)):
        photo_upload_presign(seller=seller, filename="a.pdf", content_type="application/pdf", size=9)
    with pytest.raises(UploadRejected, match=re.escape(UPLOAD_TOO_LARGE.format(limit_mb=1))):
        photo_upload_presign(seller=seller, filename="a.jpg", content_type="image/jpeg", size=1024 * 1024 + 1)


def test_the_seller_pages_presign_then_add_photos_by_token_only(
    client, bucket_reads: list[str], s3_server, s3_bucket: str
) -> None:
    # given a seller on their listing's page, with one good photo and one PDF to add
    listing = ListingFactory.create()
    client.force_login(listing.seller)
    data = pb.jpeg_bytes()
    files = [
        {"name": "front.jpg", "type": "image/jpeg", "size": len(data)},
        {"name": "manual.pdf", "type": "application/pdf", "size": 9},
    ]
    page = client.get(reverse("catalog:listing-edit", args=[listing.pk])).content.decode()
    assert f'data-direct-upload="{reverse("catalog:photo-uploads")}"' in page

    # when the page asks for uploads, posts the photo to the bucket and sends the token
    answer = client.post(reverse("catalog:photo-uploads"), {"files": files}, content_type="application/json")
    good, refused = answer.json()["uploads"]
    assert refused == {"error": UPLOAD_NOT_AN_IMAGE}
    sent = requests.post(good["url"], data=good["fields"], files={"file": ("front.jpg", data)}, timeout=10)
    assert sent.status_code == 204
    added = client.post(reverse("catalog:photos-add", args=[listing.pk]), {"uploads": [good["token"]]})

    # then the listing has the photo under its upload key, and the web app read no photo bytes
    assert added.status_code == 302
    (image,) = ListingImage.objects.filter(listing=listing)
    assert UPLOAD_KEY.match(stored_name(image))
    assert bucket_reads == []


def test_with_s3_the_seller_pages_take_no_photo_bytes(client, s3_bucket: str) -> None:
    # given S3 storage, a multipart upload of a file through the web app (a page without script)
    listing = ListingFactory.create()
    client.force_login(listing.seller)
    photo = pb.jpeg_bytes()

    client.post(
        reverse("catalog:photos-add", args=[listing.pk]),
        {"photos": [SimpleUploadedFile("a.jpg", photo, content_type="image/jpeg")]},
    )

    # then nothing is stored: with S3, photos reach the bucket only through presigned POSTs
    assert listing.images.count() == 0


def test_without_s3_there_is_no_presigned_upload(client) -> None:
    client.force_login(UserFactory.create())
    answer = client.post(reverse("catalog:photo-uploads"), {"files": []}, content_type="application/json")
    assert answer.status_code == 404


def test_uploads_never_registered_are_swept_and_registered_ones_stay(s3_server, s3_bucket: str) -> None:
    # given two photos in the bucket, one registered to a listing and one abandoned
    listing = ListingFactory.create()
    data = pb.jpeg_bytes()
    kept, abandoned = _presign(listing.seller, data), _presign(listing.seller, data)
    for upload in (kept, abandoned):
        assert _post_to_bucket(upload, data) == 204
    listing_upload_register(listing=listing, token=kept.token)

    # when the sweep runs with no grace period
    deleted = stored_files_sweep(older_than_s=0)

    # then only the abandoned upload is gone
    assert deleted == 1
    assert s3_server.keys(s3_bucket, "uploads/") == [kept.key]


def test_a_photo_waiting_for_the_worker_has_a_thumbnail_that_is_not_cached_yet(
    client, s3_server, s3_bucket: str
) -> None:
    # given a direct upload registered but not yet validated by a worker (no checksum)
    listing = ListingFactory.create()
    data = pb.jpeg_bytes((400, 300))
    upload = _presign(listing.seller, data)
    assert _post_to_bucket(upload, data) == 204
    image = listing_upload_register(listing=listing, token=upload.token)

    # when its seller asks for its thumbnail (the listing has no category yet, so is not public)
    client.force_login(listing.seller)
    response = client.get(reverse("catalog:photo-thumbnail", args=[image.pk, "small"]))

    # then it is rendered, but not stored under a name that has no checksum in it
    assert (response.status_code, response["Content-Type"]) == (200, "image/webp")
    assert s3_server.keys(s3_bucket, "thumbs/") == []
