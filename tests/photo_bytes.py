"""Encoded test images made with Pillow: valid photos of every mode, and the bad inputs sellers send."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image
from PIL.ExifTags import IFD

# Not photos, each named .jpg by the tests that upload them.
HTML_PAGE = b"<!doctype html><html><body><h1>Hello</h1></body></html>"
SVG_IMAGE = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'
PDF_DOCUMENT = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
ZIP_ARCHIVE = b"PK\x05\x06" + b"\0" * 18


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg_bytes(
    size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30), **options: Any
) -> bytes:
    return encoded(Image.new("RGB", size, color), "JPEG", **options)


def noisy_jpeg_bytes(size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG with real entropy (a flat one compresses to almost nothing), for truncation tests."""
    return encoded(Image.effect_noise(size, 64).convert("RGB"), "JPEG", quality=90)


def gps_exif(*, orientation: int = 6) -> bytes:
    """EXIF with a camera make, an orientation and a GPS position (Paris)."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0112] = orientation
    gps = exif.get_ifd(IFD.GPSInfo)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 24.0), "E", (2.0, 21.0, 3.0)
    return exif.tobytes()


def animated_png_bytes() -> bytes:
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "green", "blue")]
    return encoded(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_gif_bytes() -> bytes:
    frames = [Image.new("RGB", (16, 16), color).convert("P") for color in ("red", "green", "blue")]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def bomb_png_bytes(side: int = 20_000) -> bytes:
    """A ~50 kB PNG whose header claims side × side pixels (400 MP at the default)."""
    return encoded(Image.new("1", (side, side)), "PNG")
