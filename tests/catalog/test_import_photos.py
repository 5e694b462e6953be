"""`manage.py import_photos DIR --wait` through the real queue and a real worker."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command

from catalog.models import CategorySource, ClassificationStatus, Listing, ListingImage, ModelVersion
from tests.catalog.review_helpers import slug_of
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]


def test_import_photos_creates_listings_and_prints_the_suggestions(
    celery_worker_process: WorkerProcess, photo_paths: list[Path], tmp_path: Path
) -> None:
    # given a folder with two photos under a category slug, one loose photo and one broken file
    (tmp_path / "shoes").mkdir()
    shutil.copy(photo_paths[0], tmp_path / "shoes" / "first.jpg")
    shutil.copy(photo_paths[1], tmp_path / "shoes" / "second.jpg")
    shutil.copy(photo_paths[2], tmp_path / "loose.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a photo at all")

    # when the folder is imported and waited for
    out = io.StringIO()
    call_command("import_photos", str(tmp_path), "--wait", "--timeout", "180", stdout=out)

    # then one listing per photo exists, the folder name is the seller's category choice
    assert Listing.objects.count() == 4
    chosen = Listing.objects.filter(category__slug="shoes")
    assert chosen.count() == 2
    assert set(chosen.values_list("category_source", flat=True)) == {CategorySource.SELLER}
    statuses = sorted(ListingImage.objects.values_list("status", flat=True))
    assert statuses == sorted([ClassificationStatus.DONE] * 3 + [ClassificationStatus.FAILED])
    # and the table lists every photo with its suggestion or its failure
    table = out.getvalue()
    assert "4 new listings, 0 already imported" in table
    assert "photo" in table and "suggested category" in table and "model version" in table
    assert "listing category (source)" in table and "shoes (seller)" in table
    for name in ("shoes/first.jpg", "shoes/second.jpg", "loose.jpg", "broken.jpg"):
        assert name in table
    assert "FAILED" in table

    # when it is imported again, then nothing is duplicated
    again = io.StringIO()
    call_command("import_photos", str(tmp_path), "--wait", "--timeout", "60", stdout=again)
    assert "0 new listings, 4 already imported" in again.getvalue()
    assert Listing.objects.count() == 4


def test_imported_photos_without_a_seller_choice_get_their_category_from_the_model(
    shipped_version: ModelVersion, tmp_path: Path
) -> None:
    from tests.conftest import FIXTURE_PHOTOS

    # given a clear photo of shoes in a folder named after its category
    (tmp_path / "shoes").mkdir()
    shutil.copy(next((FIXTURE_PHOTOS / "shoes").glob("*.jpg")), tmp_path / "shoes" / "boots.jpg")

    # when it is imported with folder names ignored (the seller skipped the choice)
    out = io.StringIO()
    call_command("import_photos", str(tmp_path), "--ignore-folders", "--wait", "--timeout", "180", stdout=out)

    # then the model set the listing's category, and the table says so
    listing = Listing.objects.get(title="boots")
    assert (listing.category_source, slug_of(listing.category)) == (CategorySource.AUTO, "shoes")
    table = out.getvalue()
    assert "shoes (auto)" in table
    assert "1 of 1 listings auto-accepted" in table
