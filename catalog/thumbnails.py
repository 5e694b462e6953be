"""Thumbnails of listing photos, generated with Pillow on first request and cached through
Django's storage API (local disk or S3) under `thumbs/`. Pages never serve the stored upload.

A thumbnail's name carries the photo's id and checksum, so it is never stale: photos are immutable.
"""

from __future__ import annotations

import io
import logging
import warnings

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from PIL import Image, ImageOps, UnidentifiedImageError

from catalog.models import ListingImage
from catalog.uploads import UploadRejected, pixels_check

logger = logging.getLogger(__name__)

# Long side in pixels, by the name used in URLs.
THUMBNAIL_SIZES: dict[str, int] = {"small": 360, "large": 1200}
THUMBNAIL_CONTENT_TYPE = "image/webp"
_QUALITY = 80
# Photos stored by `import_photos` were not validated: read them with these parsers only.
_PARSERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def thumbnail_name(*, image_id: int, checksum: str, size: str) -> str:
    """Storage name of one thumbnail, e.g. `thumbs/42/3fa4c1e9a0b2d7e1-small.webp`."""
    return f"thumbs/{image_id}/{checksum[:16]}-{size}.webp"


def thumbnail_get_or_create(*, image: ListingImage, size: str) -> bytes | None:
    """WebP bytes of the photo's thumbnail whose long side is `THUMBNAIL_SIZES[size]` px.

    Read from storage when cached, else rendered from the stored photo and saved (not yet for a
    direct upload that no worker has validated: it has no checksum to name it). Returns None when
    the stored photo cannot be read as an image (it then failed classification too).
    Raises `KeyError` for an unknown size.
    """
    long_side = THUMBNAIL_SIZES[size]
    name = thumbnail_name(image_id=image.pk, checksum=image.checksum, size=size)
    # A direct upload has no checksum until a worker validated it: render it, cache nothing yet.
    cacheable = bool(image.checksum)
    if cacheable:
        try:
            with default_storage.open(name, "rb") as handle:
                return handle.read()
        except (FileNotFoundError, OSError):
            pass
    try:
        with default_storage.open(str(image.file.name), "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError):
        return None
    thumbnail = thumbnail_render(data, long_side=long_side)
    if thumbnail is None:
        return None
    if cacheable and not default_storage.exists(name):
        default_storage.save(name, ContentFile(thumbnail))
    return thumbnail


def thumbnail_render(data: bytes, *, long_side: int) -> bytes | None:
    """Downscale encoded image `data` to at most `long_side` px (EXIF orientation applied), as
    WebP bytes without metadata. Returns None for undecodable or over-pixel-limit input."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            source = Image.open(io.BytesIO(data), formats=_PARSERS)
            pixels_check(*source.size)
            # JPEG DCT scaling: decode at 1/2, 1/4 or 1/8 size when that is still large enough.
            source.draft("RGB", (long_side, long_side))
            upright = ImageOps.exif_transpose(source)
            image = upright.convert("RGBA" if _has_alpha(upright) else "RGB")
            image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        except (UploadRejected, UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            logger.info("no thumbnail: %s", error)
            return None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return None
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=_QUALITY, method=4)
    return buffer.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return "A" in image.mode or (image.mode == "P" and "transparency" in image.info)


def thumbnails_delete(*, image_id: int, checksum: str) -> None:
    """Remove every cached thumbnail of a photo from storage (missing ones are fine)."""
    for size in THUMBNAIL_SIZES:
        default_storage.delete(thumbnail_name(image_id=image_id, checksum=checksum, size=size))
