"""Import a folder of photos as listings, through the real queue.

    python manage.py import_photos DIR [--seller NAME] [--ignore-folders] [--wait] [--timeout SECONDS]

One listing per photo. When a photo's parent folder is a category slug, that category is the
seller's choice, unless --ignore-folders: then the listing's category comes from the model
(auto-accept) or a person, as for a seller who skipped the choice. A photo already imported for
the same seller (same SHA-256) is not imported twice, so the command can be re-run. With --wait,
it waits for every photo to be classified or to fail, then prints a table (photo, suggested
category, confidence, the listing's category and who set it, model version).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from catalog.models import Category, CategorySource, ClassificationStatus, Listing, ListingImage
from catalog.selectors import suggestions as suggestions_selectors
from catalog.services.images import image_add
from catalog.services.listings import listing_create, user_get_or_create
from catalog.uploads import UploadRejected

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic"}


class Command(BaseCommand):
    help = "Create one listing per photo under DIR and classify them through the queue."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--seller", default="demo-seller", help="username of the seller")
        parser.add_argument(
            "--ignore-folders",
            action="store_true",
            help="folder names are not the seller's category choice (the model or a person sets it)",
        )
        parser.add_argument("--wait", action="store_true", help="wait for suggestions, print a table")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (--wait)")
        parser.add_argument(
            "--all-files",
            action="store_true",
            help="import every file, not only those with a photo suffix (to test rejection)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        directory: Path = options["directory"]
        if not directory.is_dir():
            raise CommandError(f"not a directory: {directory}")
        paths = sorted(
            p
            for p in directory.rglob("*")
            if p.is_file() and (options["all_files"] or p.suffix.lower() in PHOTO_SUFFIXES)
        )
        if not paths:
            raise CommandError(f"no photos under {directory}")
        seller = user_get_or_create(username=options["seller"])
        categories = {} if options["ignore_folders"] else {c.slug: c for c in Category.objects.all()}
        image_ids: list[tuple[Path, int]] = []
        created = 0
        for path in paths:
            data = path.read_bytes()
            checksum = hashlib.sha256(data).hexdigest()
            existing = ListingImage.objects.filter(listing__seller=seller, checksum=checksum).first()
            if existing is not None:
                image_ids.append((path, existing.pk))
                continue
            try:
                with transaction.atomic():
                    listing = listing_create(
                        seller=seller,
                        title=path.stem.replace("_", " ").replace("-", " "),
                        category=categories.get(path.parent.name),
                    )
                    image = image_add(listing=listing, upload=data, filename=path.name)
            except UploadRejected as error:
                self.stderr.write(f"{path}: {error}")
                continue
            image_ids.append((path, image.pk))
            created += 1
        self.stdout.write(f"{created} new listings, {len(image_ids) - created} already imported")
        if options["wait"]:
            self._wait_and_print(directory, image_ids, options["timeout"])

    def _wait_and_print(self, root: Path, image_ids: list[tuple[Path, int]], timeout: float) -> None:
        ids = [pk for _, pk in image_ids]
        finished = {ClassificationStatus.DONE, ClassificationStatus.FAILED}
        deadline = time.monotonic() + timeout
        while True:
            statuses = dict(ListingImage.objects.filter(pk__in=ids).values_list("pk", "status"))
            waiting = [pk for pk in ids if statuses.get(pk) not in finished]
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"{len(waiting)} photos not classified after {timeout:.0f} s")
            time.sleep(0.25)
        rows = []
        for path, pk in image_ids:
            image = ListingImage.objects.select_related("listing__category").get(pk=pk)
            suggestion = suggestions_selectors.image_latest_suggestion(image=image)
            listing_category = _listing_category(image.listing)
            if suggestion is not None:
                rows.append(
                    (
                        str(path.relative_to(root)),
                        suggestion.category.slug,
                        f"{suggestion.confidence:.2f}",
                        listing_category,
                        suggestion.model_version.name,
                    )
                )
            else:
                name = str(path.relative_to(root))
                rows.append((name, "FAILED", "-", listing_category, image.failure_reason))
        header = ("photo", "suggested category", "confidence", "listing category (source)", "model version")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, tuple("-" * w for w in widths), *rows]:
            self.stdout.write(
                "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
            )
        auto = sum(1 for row in rows if row[3].endswith(f"({CategorySource.AUTO.value})"))
        self.stdout.write(f"\n{auto} of {len(rows)} listings auto-accepted (category set by the model).")


def _listing_category(listing: Listing) -> str:
    """The listing's category and who set it: "dress (auto)", "shoes (seller)", or "none"."""
    if listing.category is None:
        return "none"
    return f"{listing.category.slug} ({listing.category_source or 'none'})"
