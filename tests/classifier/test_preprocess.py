"""Decoding hostile and unusual files, and building the backbone batch."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.preprocess import (
    CORRUPT_IMAGE,
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TOO_MANY_PIXELS,
    TOO_SMALL,
    UNREADABLE_FILE,
    ImageRejected,
    ImageSource,
    load_image,
    to_batch,
)
from tests.classifier.conftest import encode, halves

SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"></svg>'
HTML = b"<!DOCTYPE html><html><head><title>Not found</title></head><body>404</body></html>"


def _rgb(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The pixel at `xy` of an RGB image."""
    pixel = image.getpixel(xy)
    assert isinstance(pixel, tuple), pixel
    return pixel


def rejection(source: object, **options: object) -> str:
    with pytest.raises(ImageRejected) as caught:
        load_image(source, **options)  # type: ignore[arg-type]
    return caught.value.reason


def test_empty_file_is_rejected() -> None:
    assert rejection(b"") == EMPTY_FILE


def test_html_renamed_to_jpg_is_rejected(tmp_path: Path) -> None:
    # given an error page saved under a photo's name
    path = tmp_path / "photo.jpg"
    path.write_bytes(HTML)
    # then the name does not make it a JPEG
    assert rejection(path) == NOT_AN_IMAGE


def test_svg_is_rejected() -> None:
    assert rejection(SVG) == NOT_AN_IMAGE


def test_unsupported_format_is_rejected() -> None:
    # given an image format Pillow reads but the marketplace does not accept (PCX)
    data = encode(Image.new("RGB", (32, 32)), "PCX")
    assert rejection(data) == NOT_AN_IMAGE


def test_truncated_jpeg_is_rejected(truncated_jpeg: bytes) -> None:
    assert rejection(truncated_jpeg) == CORRUPT_IMAGE


def test_decompression_bomb_is_rejected_before_decoding(decompression_bomb_png: bytes) -> None:
    assert rejection(decompression_bomb_png) == TOO_MANY_PIXELS


def test_pixel_limit_is_configurable(make_jpeg: Callable[..., bytes]) -> None:
    data = make_jpeg((100, 100))
    assert rejection(data, max_pixels=9_999) == TOO_MANY_PIXELS
    assert load_image(data, max_pixels=10_000).size == (100, 100)


def test_tiny_image_is_rejected() -> None:
    assert rejection(encode(Image.new("RGB", (15, 64)), "PNG")) == TOO_SMALL


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    assert rejection(tmp_path / "absent.jpg") == UNREADABLE_FILE


def test_rejection_is_an_exception_with_a_readable_message() -> None:
    error = ImageRejected(CORRUPT_IMAGE)
    assert str(error) == CORRUPT_IMAGE
    assert error == ImageRejected(CORRUPT_IMAGE)


def test_format_is_decided_by_content_not_name(tmp_path: Path) -> None:
    # given a PNG saved as .jpg
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(Image.new("RGB", (40, 30), (10, 20, 30)), "PNG"))
    # when loaded, then it decodes as the PNG it is
    image = load_image(path)
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (40, 30), (10, 20, 30))


@pytest.mark.parametrize("source_kind", ["bytes", "path", "file"])
def test_sources_bytes_path_and_file_object(tmp_path: Path, source_kind: str) -> None:
    data = encode(Image.new("RGB", (32, 32), (0, 255, 0)), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    sources: dict[str, ImageSource] = {"bytes": data, "path": path, "file": io.BytesIO(data)}
    source = sources[source_kind]
    assert load_image(source).getpixel((5, 5)) == (0, 255, 0)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    image = load_image(data)
    assert image.mode == "RGB"
    red, green, blue = _rgb(image, (16, 16))
    assert red > 200 and green < 50 and blue < 50


def test_palette_png_becomes_rgb() -> None:
    data = encode(Image.new("RGB", (32, 32), (0, 0, 255)).convert("P"), "PNG")
    image = load_image(data)
    assert (image.mode, image.getpixel((3, 3))) == ("RGB", (0, 0, 255))


def test_transparent_pixels_are_composited_on_white() -> None:
    # given an RGBA PNG whose left half is transparent and right half opaque red
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 32))
    image = load_image(encode(rgba, "PNG"))
    # then transparency shows white, opaque pixels keep their colour
    assert image.mode == "RGB"
    assert image.getpixel((4, 4)) == (255, 255, 255)
    assert image.getpixel((28, 4)) == (255, 0, 0)


def test_palette_with_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image = load_image(encode(rgba.convert("P"), "PNG", transparency=0))
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_grey_with_alpha_becomes_rgb() -> None:
    image = load_image(encode(Image.new("LA", (32, 32), (100, 255)), "PNG"))
    assert (image.mode, image.getpixel((0, 0))) == ("RGB", (100, 100, 100))


def test_sixteen_bit_greyscale_is_rescaled_not_clipped() -> None:
    # given a 16-bit PNG: left half full white (65535), right half mid grey (32896)
    samples = np.full((32, 32), 32896, dtype=np.uint16)
    samples[:, :16] = 65535
    data = encode(Image.fromarray(samples), "PNG")
    image = load_image(data)
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert image.getpixel((31, 0)) == (128, 128, 128)


def test_float_tiff_in_unit_range_is_scaled_to_eight_bits() -> None:
    data = encode(Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32), "F"), "TIFF")
    assert load_image(data).getpixel((0, 0)) == (128, 128, 128)


def test_one_bit_image_becomes_rgb() -> None:
    image = load_image(encode(Image.new("1", (32, 32), 1), "PNG"))
    assert (image.mode, image.getpixel((0, 0))) == ("RGB", (255, 255, 255))


def test_exif_orientation_is_applied() -> None:
    # given a landscape JPEG (left red, right blue) tagged "rotate 90° clockwise to display"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves((64, 48)), "JPEG", quality=95, exif=exif.tobytes())
    # when loaded
    image = load_image(data)
    # then it is upright: portrait, with the former left edge on top
    assert image.size == (48, 64)
    top, bottom = _rgb(image, (24, 4)), _rgb(image, (24, 60))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_gives_its_first_frame(animated_gif: bytes) -> None:
    image = load_image(animated_gif)
    assert (image.mode, image.size, image.getpixel((5, 5))) == ("RGB", (32, 32), (255, 0, 0))


def test_webp_is_accepted() -> None:
    data = encode(Image.new("RGB", (32, 32), (0, 128, 0)), "WEBP", lossless=True)
    assert load_image(data).getpixel((0, 0)) == (0, 128, 0)


def test_large_jpeg_is_decoded_at_reduced_size(make_jpeg: Callable[..., bytes]) -> None:
    # given a 2400 × 1600 JPEG
    data = make_jpeg((2400, 1600))
    # when loaded with the default draft size, the decoder scales by 1/4 (the largest scale that
    # keeps both sides ≥ 256); without draft it decodes every pixel
    assert load_image(data).size == (600, 400)
    assert load_image(data, draft_size=None).size == (2400, 1600)


def test_large_png_is_reduced_by_a_whole_factor() -> None:
    # given a 1200 × 800 PNG (no DCT scaling for PNG) with a red left and blue right half
    data = encode(halves((1200, 800)), "PNG")
    # when loaded, it is shrunk by 3, the largest whole factor keeping the shorter side ≥ 256
    image = load_image(data)
    assert image.size == (400, 267)
    assert image.getpixel((50, 100)) == (255, 0, 0) and image.getpixel((350, 100)) == (0, 0, 255)
    # and without a draft size it keeps every pixel
    assert load_image(data, draft_size=None).size == (1200, 800)


def test_very_large_jpeg_is_drafted_then_reduced_and_still_turned_upright() -> None:
    # given a 4096 × 4096 JPEG (red left, blue right) whose EXIF says "rotate 90° clockwise"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(halves((4096, 4096)), "JPEG", exif=exif.tobytes())
    # when loaded: 1/8 by the decoder (512 px), then halved by Image.reduce (256 px)
    image = load_image(data)
    # then it is 256 px and upright: the red half is now on top
    assert image.size == (256, 256)
    top, bottom = _rgb(image, (128, 20)), _rgb(image, (128, 236))
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_sixteen_bit_images_are_not_reduced_but_still_decoded() -> None:
    data = encode(Image.new("I;16", (1200, 800), 65535), "PNG")
    image = load_image(data)
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (1200, 800), (255, 255, 255))


def test_batch_shape_dtype_and_scaling() -> None:
    # given a white and a black image of different sizes
    images = [Image.new("RGB", (300, 200), (255, 255, 255)), Image.new("RGB", (224, 500), (0, 0, 0))]
    # when batched
    batch = to_batch(images)
    # then pixels are scaled as (x - 127) / 128 into a float32 NCHW array
    assert batch.shape == (2, 3, 224, 224)
    assert batch.dtype == np.float32
    assert np.allclose(batch[0], 1.0)
    assert np.allclose(batch[1], -127.0 / 128.0)


def test_batch_channels_are_rgb_in_order() -> None:
    batch = to_batch([Image.new("RGB", (256, 256), (255, 127, 0))])
    assert np.allclose(batch[0, :, 100, 100], [1.0, 0.0, -127.0 / 128.0])


def test_batch_crops_the_centre_and_can_mirror() -> None:
    # given a 512 × 256 image: left quarter red, the rest blue; the 256/224 centre crop sees
    # columns 16..240 of the 256-wide resized image, i.e. the middle of the source
    image = Image.new("RGB", (512, 256), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 128, 256))
    batch = to_batch([image])
    assert batch[0, 0].max() < 0  # no red survives the centre crop
    # and the whole-shorter-side view with mirroring keeps the same content, flipped
    centre = to_batch([halves((448, 448))], resize_ratio=1.0)
    mirrored = to_batch([halves((448, 448))], resize_ratio=1.0, mirror=True)
    assert np.array_equal(mirrored[0], centre[0][:, :, ::-1])


def test_empty_batch() -> None:
    assert to_batch([]).shape == (0, 3, 224, 224)


def test_batch_accepts_non_rgb_images() -> None:
    batch = to_batch([Image.new("L", (64, 64), 255)])
    assert np.allclose(batch, 1.0)
