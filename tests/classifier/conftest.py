"""Fixtures for the classifier tests: real fixture photos, synthetic edge-case files, and one
classifier per session whose ONNX backbone is exported into a session temporary directory."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.backbone import OnnxBackbone, ensure_onnx
from classifier.datasets import dataset_dir
from classifier.model import ImageClassifier

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE_PHOTOS = REPO_ROOT / "tests" / "fixtures" / "photos"
SHARED_DATASETS = dataset_dir()


@pytest.fixture(scope="session")
def classifier_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Exporting takes a few seconds, so each session proves the export works from scratch.
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="session")
def onnx_path(classifier_cache_dir: Path) -> Path:
    return ensure_onnx(classifier_cache_dir)


@pytest.fixture(scope="session")
def backbone(onnx_path: Path) -> OnnxBackbone:
    return OnnxBackbone(onnx_path)


@pytest.fixture(scope="session")
def image_classifier(classifier_cache_dir: Path, onnx_path: Path) -> ImageClassifier:
    return ImageClassifier.load(cache_dir=classifier_cache_dir)


@pytest.fixture(scope="session")
def fixture_photos() -> dict[str, Path]:
    """One real CC0 photo per category folder under tests/fixtures/photos, keyed by slug."""
    photos = {path.parent.name: path for path in sorted(FIXTURE_PHOTOS.glob("*/*.jpg"))}
    assert photos, f"no fixture photos under {FIXTURE_PHOTOS}"
    return photos


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    """The image saved in ``format`` as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def halves(size: tuple[int, int] = (64, 48), left=(255, 0, 0), right=(0, 0, 255)) -> Image.Image:
    """An RGB image whose left half is ``left`` and right half ``right``."""
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


@pytest.fixture
def make_jpeg() -> Callable[..., bytes]:
    def make(size: tuple[int, int] = (64, 48), color=(200, 30, 30), **options: object) -> bytes:
        return encode(Image.new("RGB", size, color), "JPEG", **options)

    return make


@pytest.fixture
def truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise, "RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


@pytest.fixture
def decompression_bomb_png() -> bytes:
    """A valid PNG header claiming 100,000 × 100,000 pixels, with no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture
def animated_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
