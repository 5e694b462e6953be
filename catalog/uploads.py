"""Validation and re-encoding of photos that sellers upload (Pillow only, never the model).

Every check runs before the photo is stored:

1. byte limit (`settings.UPLOAD_MAX_BYTES`) and empty files, before anything is parsed;
2. the format is decided by content (Pillow's parsers for JPEG, PNG, WebP and GIF only), never by
   the file name or the browser's content type;
3. the pixel limit (`settings.UPLOAD_MAX_PIXELS`) is read from the header, which `Image.open`
   parses lazily, before a single pixel is decoded; Pillow's `DecompressionBombWarning` is an error;
4. photos under `UPLOAD_MIN_SIDE_PX` on either side are refused (the classifier cannot read them);
5. animated images are refused; the photo is then fully decoded, so a truncated or corrupt file is
   refused here and not in the worker.

The stored copy is re-encoded: EXIF orientation applied first, then saved without EXIF, XMP or
comments (a marketplace must not publish a seller's GPS position). Only the ICC colour profile is
kept. CMYK, 16-bit, palette and alpha images are converted to 8-bit RGB, L or RGBA.

HEIC/HEIF is not accepted: browsers that can decode it (Safari) send JPEG after the page's canvas
downscale, and the web process does not carry libheif.
"""

from __future__ import annotations

import io
import uuid
import warnings
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

# User-facing messages; tests reuse them.
UPLOAD_TOO_LARGE = "The photo is larger than {limit_mb} MB."
UPLOAD_EMPTY = "The file is empty."
UPLOAD_NOT_AN_IMAGE = "This file is not a photo we can read. Upload a JPEG, PNG or WebP photo."
UPLOAD_UNSUPPORTED_FORMAT = "{format} files are not accepted. Upload a JPEG, PNG or WebP photo."
UPLOAD_ANIMATED = "Animated images are not accepted. Upload a still photo."
UPLOAD_TOO_MANY_PIXELS = "The photo has more than {limit_mp} megapixels; use a smaller photo."
UPLOAD_CORRUPT = "The photo is damaged or incomplete and cannot be read."
UPLOAD_TOO_SMALL = "The photo is too small: it must be at least {min_px} pixels wide and high."

# The classifier refuses images under 16 px on a side (classifier.preprocess.DEFAULT_MIN_SIDE);
# refusing them here tells the seller at once instead of failing in the worker.
UPLOAD_MIN_SIDE_PX = 16


class UploadRejected(ValueError):
    """An upload refused before storage; `str(error)` is shown to the seller."""


# Pillow format name → (file extension, MIME type) of the stored copy.
ACCEPTED_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
# Parsers Pillow may try on an upload: the accepted ones, plus GIF to name it when refusing it.
_PARSERS = (*ACCEPTED_FORMATS, "GIF")
_JPEG_QUALITY = 90
_WEBP_QUALITY = 90


@dataclass(frozen=True)
class CleanPhoto:
    """A validated photo, re-encoded without metadata. `data` holds the bytes to store."""

    data: bytes
    extension: str  # "jpg", "png" or "webp"
    format: str  # "JPEG", "PNG" or "WEBP"
    content_type: str
    width: int
    height: int


def read_limited(upload: bytes | IO[bytes], *, limit: int | None = None) -> bytes:
    """Read at most `limit` bytes (settings.UPLOAD_MAX_BYTES); raise `UploadRejected` beyond it or
    for an empty file. A file object is read for `limit + 1` bytes only, never whole."""
    limit = settings.UPLOAD_MAX_BYTES if limit is None else limit
    size = getattr(upload, "size", None)  # Django's UploadedFile knows it without reading
    if isinstance(size, int) and size > limit:
        raise UploadRejected(UPLOAD_TOO_LARGE.format(limit_mb=_megabytes(limit)))
    data = upload if isinstance(upload, bytes) else upload.read(limit + 1)
    if len(data) > limit:
        raise UploadRejected(UPLOAD_TOO_LARGE.format(limit_mb=_megabytes(limit)))
    if not data:
        raise UploadRejected(UPLOAD_EMPTY)
    return data


def _megabytes(limit: int) -> int:
    return limit // (1024 * 1024)


def pixels_check(width: int, height: int, *, limit: int | None = None) -> None:
    """Raise `UploadRejected` when width × height exceeds `limit` (settings.UPLOAD_MAX_PIXELS)."""
    limit = settings.UPLOAD_MAX_PIXELS if limit is None else limit
    if width * height > limit:
        raise UploadRejected(too_many_pixels_message(limit=limit))


def too_many_pixels_message(*, limit: int | None = None) -> str:
    """`UPLOAD_TOO_MANY_PIXELS` for `limit` pixels (settings.UPLOAD_MAX_PIXELS)."""
    limit = settings.UPLOAD_MAX_PIXELS if limit is None else limit
    return UPLOAD_TOO_MANY_PIXELS.format(limit_mp=f"{limit / 1e6:g}")


def photo_open(data: bytes) -> Image.Image:
    """Parse the header of `data` (nothing decoded yet) and check format, pixels and animation.

    Returns the lazily opened image. Raises `UploadRejected` with one of the messages above.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_PARSERS)
        except UnidentifiedImageError as error:
            raise UploadRejected(UPLOAD_NOT_AN_IMAGE) from error
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise UploadRejected(too_many_pixels_message()) from error
        except (OSError, SyntaxError, ValueError) as error:
            raise UploadRejected(UPLOAD_CORRUPT) from error
    if image.format not in ACCEPTED_FORMATS:
        raise UploadRejected(UPLOAD_UNSUPPORTED_FORMAT.format(format=image.format or "These"))
    pixels_check(*image.size)
    if min(image.size) < UPLOAD_MIN_SIDE_PX:
        raise UploadRejected(UPLOAD_TOO_SMALL.format(min_px=UPLOAD_MIN_SIDE_PX))
    if getattr(image, "is_animated", False):  # animated PNG or WebP
        raise UploadRejected(UPLOAD_ANIMATED)
    return image


def photo_clean(upload: bytes | IO[bytes]) -> CleanPhoto:
    """Validate one uploaded photo and re-encode it without metadata.

    Returns a `CleanPhoto` in the upload's own format (JPEG, PNG or WebP), EXIF orientation applied,
    no EXIF/XMP/GPS. Raises `UploadRejected` (its message is one of this module's constants) for an
    empty, oversized, non-image, unsupported, too small, animated, over-pixel-limit, truncated or
    corrupt file.
    """
    data = read_limited(upload)
    image = photo_open(data)
    source_format = image.format or "JPEG"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
            raise UploadRejected(UPLOAD_CORRUPT) from error
    icc_profile = image.info.get("icc_profile")
    clean = _to_8bit(upright)
    clean.info = {}  # drop EXIF, XMP, comments and everything else Pillow would carry over
    out_format = source_format
    if out_format == "JPEG" and clean.mode not in ("RGB", "L"):
        out_format = "PNG"  # JPEG has no alpha channel
    buffer = io.BytesIO()
    options: dict[str, object] = {}
    if icc_profile and clean.mode in ("RGB", "RGBA"):
        options["icc_profile"] = icc_profile
    if out_format == "JPEG":
        options.update(quality=_JPEG_QUALITY, optimize=True)
    elif out_format == "WEBP":
        options.update(quality=_WEBP_QUALITY, method=4)
    clean.save(buffer, format=out_format, **options)
    extension, content_type = ACCEPTED_FORMATS[out_format]
    return CleanPhoto(
        data=buffer.getvalue(),
        extension=extension,
        format=out_format,
        content_type=content_type,
        width=clean.width,
        height=clean.height,
    )


def _to_8bit(image: Image.Image) -> Image.Image:
    """RGB, L or RGBA with 8 bits per channel, whatever the source mode (CMYK, I;16, P, LA...)."""
    mode = image.mode
    if mode in ("RGB", "L", "RGBA"):
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grey: scale to 8 bits rather than clip everything above 255 to white.
        scaled = image.convert("I").point(lambda value: value / 256)
        return scaled.convert("L")
    if mode == "F":
        return image.convert("L")
    has_alpha = (
        mode in ("LA", "La", "PA", "RGBa") or "A" in mode or (mode == "P" and "transparency" in image.info)
    )
    return image.convert("RGBA" if has_alpha else "RGB")


def photo_storage_name(filename: str) -> str:
    """The name a photo is stored under: a random UUID with the lower-cased extension of `filename`
    (e.g. "IMG_0001.JPG" → "3f2a…c9.jpg"), never the uploader's own file name, which can carry
    personal details and collides across sellers. An odd or missing extension is dropped."""
    suffix = PurePath(filename or "").suffix.lower()
    if not (2 <= len(suffix) <= 6 and suffix[1:].isascii() and suffix[1:].isalnum()):
        suffix = ""
    return f"{uuid.uuid4().hex}{suffix}"
