"""Storage hygiene on local storage: UUID stored names, tiny photos refused, orphans of rolled-back
uploads swept, the S3 client's timeouts and retry mode (catalog.services.storage, config.storage)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import environ
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from catalog.models import ListingImage
from catalog.services.images import RejectedPhoto, image_add, listing_photo_upload, listing_photos_add
from catalog.services.storage import stored_files_sweep, swept_folders
from catalog.uploads import UPLOAD_MIN_SIDE_PX, UPLOAD_TOO_SMALL
from config import storage as storage_config
from tests import photo_bytes as pb
from tests.conftest import stored_name
from tests.factories import ListingFactory

STORED_NAME = re.compile(r"^listings/\d{4}/\d{2}/[0-9a-f]{32}\.(jpg|png|webp)$")


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    """A MEDIA_ROOT of this test alone, so the sweep sees only this test's files."""
    settings.MEDIA_ROOT = str(tmp_path)
    return tmp_path


def _age(path: Path, *, hours: float, now: dt.datetime | None = None) -> None:
    past = ((now or timezone.now()) - dt.timedelta(hours=hours)).timestamp()
    os.utime(path, (past, past))


@pytest.mark.django_db
def test_a_photo_is_stored_under_a_uuid_never_under_the_sellers_file_name(media: Path) -> None:
    # given a seller's photo named after their street, uploaded and imported
    listing = ListingFactory.create()
    uploaded = listing_photo_upload(
        listing=listing, upload=pb.jpeg_bytes(), filename="Jane Doe - 12 Main Street.JPG"
    )
    imported = image_add(listing=listing, upload=pb.jpeg_bytes(), filename="jane_doe_home.jpg")

    # then both stored names are a UUID with the extension, and two uploads never share one
    for image in (uploaded, imported):
        assert STORED_NAME.match(stored_name(image)), stored_name(image)
        assert "jane" not in stored_name(image).lower() and "main" not in stored_name(image).lower()
    assert stored_name(uploaded) != stored_name(imported)


@pytest.mark.django_db
def test_a_photo_under_16_pixels_is_refused_at_upload_and_nothing_is_stored(media: Path) -> None:
    # given a listing with one photo, and an 8 × 8 photo that the worker could never classify
    listing = ListingFactory.create()
    listing_photos_add(listing=listing, files=[("a.jpg", pb.jpeg_bytes())])

    # when it is uploaded
    batch = listing_photos_add(listing=listing, files=[("icon.jpg", pb.jpeg_bytes((8, 8)))])

    # then it is refused with the message, and the listing still has its one photo
    message = UPLOAD_TOO_SMALL.format(min_px=UPLOAD_MIN_SIDE_PX)
    assert batch.rejected == [RejectedPhoto(filename="icon.jpg", message=message)]
    assert listing.images.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_file_of_a_rolled_back_upload_is_swept_once_old_and_named_files_stay(media: Path) -> None:
    # given a committed photo, and a photo whose transaction rolled back after its file was written
    listing = ListingFactory.create()
    kept = image_add(listing=listing, upload=pb.jpeg_bytes(), filename="a.jpg")
    with pytest.raises(RuntimeError), transaction.atomic():
        lost = image_add(listing=listing, upload=pb.jpeg_bytes(), filename="b.jpg")
        raise RuntimeError("the request failed after the upload")
    assert not ListingImage.objects.filter(pk=lost.pk).exists()
    orphan = media / stored_name(lost)
    assert orphan.exists()

    # when the sweep runs while the orphan is younger than the limit, it is left alone
    assert stored_files_sweep(older_than_s=3600) == 0
    assert orphan.exists()

    # when both files are two hours old and the sweep runs again
    _age(orphan, hours=2)
    _age(media / stored_name(kept), hours=2)
    deleted = stored_files_sweep(older_than_s=3600)

    # then only the orphan is gone
    assert deleted == 1
    assert not orphan.exists()
    assert default_storage.exists(stored_name(kept))


@pytest.mark.django_db
def test_the_sweep_looks_at_direct_uploads_and_this_and_last_months_photo_folders(media: Path) -> None:
    # given orphans in the upload folder, in January and in last December
    now = dt.datetime(2025, 1, 3, tzinfo=dt.UTC)
    names = ["uploads/0f", "listings/2025/01/1a.jpg", "listings/2024/12/2b.jpg", "listings/2024/11/3c.jpg"]
    for name in names:
        default_storage.save(name, ContentFile(b"x"))
        _age(media / name, hours=48, now=now)

    # when the sweep runs on 3 January
    deleted = stored_files_sweep(older_than_s=3600, now=now)

    # then it read this month's and last month's folders only
    assert swept_folders(now=now) == ["uploads", "listings/2025/01", "listings/2024/12"]
    assert deleted == 3
    assert [name for name in names if default_storage.exists(name)] == ["listings/2024/11/3c.jpg"]


def test_s3_clients_get_timeouts_and_the_standard_retry_mode_from_the_environment(monkeypatch) -> None:
    # given S3 settings in the environment, with a read timeout and attempts of our own
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("AWS_STORAGE_BUCKET_NAME", "photos")
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_S3_READ_TIMEOUT_S", "12.5")
    monkeypatch.setenv("AWS_S3_MAX_ATTEMPTS", "4")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")

    # when the storage is built as settings.py builds it
    entry = storage_config.default_storage_from_env(environ.Env())
    from storages.backends.s3 import S3Storage

    client = S3Storage(**entry["OPTIONS"]).connection.meta.client

    # then its client has the configured timeouts and retries, and the default connect timeout
    config = client.meta.config
    assert entry["BACKEND"] == storage_config.S3_BACKEND
    assert (config.connect_timeout, config.read_timeout) == (storage_config.S3_CONNECT_TIMEOUT_S, 12.5)
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert config.signature_version == "s3v4"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"


def test_s3_client_defaults_are_bounded() -> None:
    config = storage_config.s3_client_config()
    assert (config.connect_timeout, config.read_timeout) == (5.0, 30.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}


def test_an_unknown_storage_backend_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "ftp")
    with pytest.raises(ValueError, match="STORAGE_BACKEND"):
        storage_config.default_storage_from_env(environ.Env())
