"""Decoding uploaded photos and turning them into the backbone's input tensor.

Decoding is the part that sees hostile input, so every failure becomes an ``ImageRejected`` whose
``reason`` is one of the message constants below: callers store or show it as is, and never retry it.

Decisions:

- The format is decided by content (the decoder Pillow detects), never by the file name.
- Animated GIF/WebP/PNG are accepted; the first frame is classified, since a listing photo is a still.
- Transparent pixels are composited on white, as a marketplace page shows them.
- 16-bit and float images are reduced to 8 bits per channel; the backbone was trained on 8-bit photos.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EMPTY_FILE = "The file is empty."
NOT_AN_IMAGE = "The file is not a supported image (JPEG, PNG, WebP, GIF, BMP or TIFF)."
CORRUPT_IMAGE = "The image is damaged or incomplete and could not be decoded."
TOO_MANY_PIXELS = "The image has too many pixels (at most 40 megapixels)."
TOO_SMALL = "The image is too small (at least 16 pixels on each side)."
UNREADABLE_FILE = "The file could not be read."

#: Pillow decoders allowed. The JPEG decoder also opens MPO, the multi-picture JPEG of many cameras.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

DEFAULT_MAX_PIXELS = 40_000_000
_REDUCIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "CMYK", "YCbCr", "I", "F"})
DEFAULT_MIN_SIDE = 16
INPUT_SIZE = 224
#: Shorter side before the centre crop, as in the ImageNet evaluation recipe (256 for 224).
RESIZE_RATIO = 256 / 224

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO


class ImageRejected(Exception):
    """The input cannot be classified. ``reason`` is one of this module's message constants."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageRejected) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(self.reason)

    def __repr__(self) -> str:
        return f"ImageRejected({self.reason!r})"


def _read_bytes(source: ImageSource) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as handle:
                return handle.read()
        except OSError as error:
            raise ImageRejected(UNREADABLE_FILE) from error
    try:
        return source.read()
    except OSError as error:
        raise ImageRejected(UNREADABLE_FILE) from error


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    draft_size: int | None = round(INPUT_SIZE * RESIZE_RATIO),
) -> Image.Image:
    """Decodes a photo into an upright 8-bit RGB image.

    ``source``: raw bytes, a file path, or a binary file object (read to its end).
    ``max_pixels``: width × height limit checked from the header, before any pixel is decoded.
    ``draft_size``: for JPEG, let the decoder downscale by 1/2, 1/4 or 1/8 while keeping both sides
    ≥ this many pixels (a 12 MP photo decodes about 10× faster); then, for any format, an image
    still at least twice that size on its shorter side is shrunk by the largest whole factor that
    keeps it ≥ ``draft_size`` (``Image.reduce``, a box filter far cheaper than resampling the
    full image to 224 px later). ``None`` keeps the full size.

    EXIF orientation is applied, so the result is as a person sees the photo. Returns a loaded
    ``PIL.Image.Image`` in mode ``RGB``. Raises ``ImageRejected`` with ``EMPTY_FILE``,
    ``NOT_AN_IMAGE``, ``CORRUPT_IMAGE``, ``TOO_MANY_PIXELS``, ``TOO_SMALL`` or ``UNREADABLE_FILE``.
    """
    data = _read_bytes(source)
    if not data:
        raise ImageRejected(EMPTY_FILE)
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a bomb is never "fine".
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        except UnidentifiedImageError as error:
            raise ImageRejected(NOT_AN_IMAGE) from error
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(TOO_MANY_PIXELS) from error
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ImageRejected(CORRUPT_IMAGE) from error
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(TOO_MANY_PIXELS)
        if min(width, height) < min_side:
            raise ImageRejected(TOO_SMALL)
        try:
            if draft_size is not None and image.format in ("JPEG", "MPO"):
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            decoded = image if draft_size is None else _reduce(image, draft_size)
            return _to_rgb(ImageOps.exif_transpose(decoded))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise ImageRejected(TOO_MANY_PIXELS) from error
        # struct.error and IndexError come from some plugins on truncated headers.
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as error:
            raise ImageRejected(CORRUPT_IMAGE) from error


def _reduce(image: Image.Image, target: int) -> Image.Image:
    """``image`` shrunk by the largest whole factor keeping its shorter side ≥ ``target``; as is
    when no factor ≥ 2 does, or for modes ``Image.reduce`` does not handle (palette, 16-bit)."""
    factor = min(image.size) // target
    if factor < 2 or image.mode not in _REDUCIBLE_MODES:
        return image
    reduced = image.reduce(factor)
    # Orientation is read by exif_transpose from the original's metadata.
    reduced.info = image.info
    return reduced


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit samples (PNG, TIFF); Pillow's own convert would clip instead of rescale.
        samples = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.clip(samples / 257.0, 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        samples = np.asarray(image, dtype=np.float64)
        scale = 255.0 if samples.size and float(np.nanmax(samples)) <= 1.0 else 1.0
        samples = np.nan_to_num(samples * scale, nan=0.0)
        return Image.fromarray(np.clip(samples, 0, 255).round().astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class View:
    """One way of cropping a photo for the backbone.

    ``resize_ratio``: shorter side after resizing, relative to the crop size (1.0 keeps the whole
    shorter side; 256/224 is the ImageNet evaluation crop). ``mirror``: flip left-right.
    """

    resize_ratio: float = RESIZE_RATIO
    mirror: bool = False


#: The single view of the ImageNet evaluation recipe.
CENTRE_VIEW = View()


def to_batch(
    images: Sequence[Image.Image],
    size: int = INPUT_SIZE,
    *,
    resize_ratio: float = RESIZE_RATIO,
    mirror: bool = False,
) -> np.ndarray:
    """Builds the backbone input from RGB images.

    Each image is resized so its shorter side is ``round(size * resize_ratio)`` (default
    256 for 224) and centre-cropped to ``size`` × ``size`` (done as one resampling of the crop box),
    optionally mirrored, then scaled as (x − 127) / 128, the scaling of the TensorFlow-trained
    EfficientNet-Lite weights (see MODEL-FACTS).

    Returns float32 array (N, 3, size, size), channels RGB, values in about [−1, 1].
    """
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    short = round(size * resize_ratio)
    for index, image in enumerate(images):
        if image.mode != "RGB":
            image = _to_rgb(image)
        width, height = image.size
        # Size of the crop window in source pixels: `size` target pixels at the resize scale.
        scale = short / min(width, height)
        crop_w, crop_h = min(width, size / scale), min(height, size / scale)
        left, top = (width - crop_w) / 2, (height - crop_h) / 2
        resized = image.resize(
            (size, size),
            Image.Resampling.BILINEAR,
            box=(left, top, left + crop_w, top + crop_h),
        )
        pixels = np.asarray(resized)  # uint8 (size, size, 3)
        if mirror:
            pixels = pixels[:, ::-1]
        # Straight from uint8 into the batch in float32; multiplying by 2⁻⁷ is exact, so the values
        # are those of (float(x) − 127) / 128, at a third of the cost of converting first.
        np.subtract(pixels.transpose(2, 0, 1), np.float32(127.0), out=batch[index], dtype=np.float32)
        batch[index] *= np.float32(1 / 128)
    return batch


def to_view_batch(images: Sequence[Image.Image], views: Sequence[View], size: int = INPUT_SIZE) -> np.ndarray:
    """Stacks ``to_batch`` for each view: float32 (V × N, 3, size, size), view-major (all images
    in the first view, then all in the second, ...)."""
    return np.concatenate(
        [to_batch(images, size, resize_ratio=v.resize_ratio, mirror=v.mirror) for v in views]
    )
