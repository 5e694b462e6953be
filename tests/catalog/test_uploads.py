"""Upload validation and re-encoding (catalog.uploads): every bad input gets its message; every
accepted photo is stored as 8-bit RGB/L/RGBA without EXIF or GPS."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageFile

from catalog import uploads
from catalog.uploads import UploadRejected, photo_clean
from tests import photo_bytes as pb


def _rejected(data: bytes) -> str:
    with pytest.raises(UploadRejected) as error:
        photo_clean(data)
    return str(error.value)


def _opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    "data",
    [pb.HTML_PAGE, pb.SVG_IMAGE, pb.PDF_DOCUMENT, pb.ZIP_ARCHIVE],
    ids=["html", "svg", "pdf", "zip"],
)
def test_files_that_are_not_photos_are_refused_by_content_whatever_their_name(data: bytes) -> None:
    # given a non-image named .jpg, when it is cleaned, then it is refused as not a photo
    assert _rejected(data) == uploads.UPLOAD_NOT_AN_IMAGE


def test_an_empty_file_is_refused() -> None:
    assert _rejected(b"") == uploads.UPLOAD_EMPTY


def test_a_file_over_the_byte_limit_is_refused_before_parsing(settings) -> None:
    # given a 1 MiB limit and a file one byte over it
    settings.UPLOAD_MAX_BYTES = 1024 * 1024
    data = b"\xff" * (1024 * 1024 + 1)

    # then it is refused as too large, not as "not a photo"
    assert _rejected(data) == uploads.UPLOAD_TOO_LARGE.format(limit_mb=1)


def test_a_file_object_is_read_only_up_to_the_limit(settings) -> None:
    # given a 10-byte limit and a stream of 1000 bytes
    settings.UPLOAD_MAX_BYTES = 10
    stream = io.BytesIO(b"x" * 1000)

    # when it is read, then 11 bytes are consumed and the upload refused
    with pytest.raises(UploadRejected):
        uploads.read_limited(stream)
    assert stream.tell() == 11


def test_a_truncated_or_corrupt_jpeg_is_refused_as_damaged() -> None:
    data = pb.noisy_jpeg_bytes()
    assert _rejected(data[: len(data) // 2]) == uploads.UPLOAD_CORRUPT
    assert _rejected(b"\xff\xd8\xff\xe0 only a JPEG signature") == uploads.UPLOAD_CORRUPT


def test_a_photo_over_the_pixel_limit_is_refused_from_its_header(settings) -> None:
    # given a 1 MP limit and a 1200 × 1000 photo
    settings.UPLOAD_MAX_PIXELS = 1_000_000
    data = pb.jpeg_bytes((1200, 1000))

    assert _rejected(data) == uploads.UPLOAD_TOO_MANY_PIXELS.format(limit_mp="1")


def test_a_decompression_bomb_is_refused_without_decoding_a_pixel(monkeypatch) -> None:
    # given a 50 kB PNG claiming 400 megapixels, and decoding made impossible
    data = pb.bomb_png_bytes()
    assert len(data) < 100_000

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)

    # then it is refused from its header alone
    assert _rejected(data) == uploads.too_many_pixels_message()


def test_gif_is_refused_and_animated_png_too() -> None:
    assert _rejected(pb.animated_gif_bytes()) == uploads.UPLOAD_UNSUPPORTED_FORMAT.format(format="GIF")
    assert _rejected(pb.animated_png_bytes()) == uploads.UPLOAD_ANIMATED


def test_exif_orientation_is_applied_and_exif_with_gps_is_stripped() -> None:
    # given an 80 × 40 JPEG whose EXIF says "rotate 90°" and carries a GPS position
    data = pb.jpeg_bytes((80, 40), exif=pb.gps_exif(orientation=6))
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)

    # when it is cleaned
    clean = photo_clean(data)

    # then the stored copy is upright (40 × 80) and carries no EXIF, GPS or XMP
    stored = _opened(clean.data)
    assert (clean.format, clean.extension, stored.size) == ("JPEG", "jpg", (40, 80))
    assert dict(stored.getexif()) == {}
    assert b"Exif" not in clean.data and b"PhoneMaker" not in clean.data
    assert not {"exif", "xmp", "XML:com.adobe.xmp"} & set(stored.info)


def test_cmyk_jpeg_is_accepted_as_rgb() -> None:
    data = pb.encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG")
    clean = photo_clean(data)
    stored = _opened(clean.data)
    assert (clean.format, stored.mode) == ("JPEG", "RGB")
    red, green, blue = stored.getpixel((16, 16))  # type: ignore[misc]
    assert red > 200 and green < 60 and blue < 60


def test_16_bit_grey_png_is_scaled_to_8_bits_not_clipped() -> None:
    image = Image.new("I;16", (16, 16), 0)
    image.putpixel((0, 0), 65535)
    image.putpixel((1, 0), 32768)
    clean = photo_clean(pb.encoded(image, "PNG"))
    stored = _opened(clean.data)
    assert (clean.format, stored.mode) == ("PNG", "L")
    assert (stored.getpixel((0, 0)), stored.getpixel((1, 0)), stored.getpixel((2, 0))) == (255, 128, 0)


@pytest.mark.parametrize(
    ("image", "options", "mode"),
    [
        (Image.new("P", (16, 16), 0), {"transparency": 0}, "RGBA"),
        (Image.new("P", (16, 16), 3), {}, "RGB"),
        (Image.new("RGBA", (16, 16), (10, 20, 30, 128)), {}, "RGBA"),
        (Image.new("LA", (16, 16), (10, 128)), {}, "RGBA"),
        (Image.new("1", (16, 16), 1), {}, "RGB"),
    ],
    ids=["palette-transparent", "palette", "rgba", "grey-alpha", "bilevel"],
)
def test_palette_and_alpha_pngs_are_accepted_and_converted(
    image: Image.Image, options: dict, mode: str
) -> None:
    clean = photo_clean(pb.encoded(image, "PNG", **options))
    assert (clean.format, _opened(clean.data).mode) == ("PNG", mode)


def test_webp_stays_webp() -> None:
    clean = photo_clean(pb.encoded(Image.new("RGB", (20, 16), "blue"), "WEBP"))
    assert (clean.format, clean.content_type, clean.extension, (clean.width, clean.height)) == (
        "WEBP",
        "image/webp",
        "webp",
        (20, 16),
    )


@pytest.mark.parametrize("size", [(8, 8), (200, 15), (15, 200)], ids=["8x8", "15-high", "15-wide"])
def test_a_photo_under_16_pixels_on_either_side_is_refused(size: tuple[int, int]) -> None:
    # given a photo under 16 px on one side, which the classifier could never read
    data = pb.jpeg_bytes(size)

    # then it is refused at upload with the message for it
    assert _rejected(data) == uploads.UPLOAD_TOO_SMALL.format(min_px=16)


def test_a_16_pixel_photo_is_accepted() -> None:
    assert photo_clean(pb.jpeg_bytes((16, 16))).width == 16


@pytest.mark.parametrize(
    ("filename", "suffix"),
    [
        ("IMG_0001.JPG", ".jpg"),
        ("Jane Doe 12 Main Street.png", ".png"),
        ("no-extension", ""),
        ("../../etc/passwd", ""),
        ("weird.ext with space", ""),
        ("", ""),
    ],
)
def test_stored_names_are_random_uuids_that_keep_only_a_plain_extension(filename: str, suffix: str) -> None:
    # when two photos with the same name get their stored names
    first, second = uploads.photo_storage_name(filename), uploads.photo_storage_name(filename)

    # then each is a fresh UUID (hex) with the lower-cased extension, and no part of the name
    assert first != second
    stem = first.removesuffix(suffix)
    assert len(stem) == 32 and int(stem, 16) >= 0
    assert first.endswith(suffix) and "." not in stem
