"""A deterministic "phone photo" copy of a labelled folder, for robustness figures:
``python -m classifier phone-photos SRC OUT [--seed N]``.

Sellers' photos are taken in poor light, a little tilted, off-centre, and recompressed by apps
and browsers. Each photo of ``SRC/<slug>/`` gets all of these, with parameters drawn from its own
random stream (the seed and the photo's path inside ``SRC``, so adding a photo changes no other):

- rotation by up to ±10° (corners filled with the photo's mean border colour);
- an off-centre crop keeping 80 % of each side, placed anywhere in the frame;
- brightness and contrast each scaled by 0.7–1.3 (±30 %);
- Gaussian blur of radius 0.5–1.5 px;
- downscaling so the longer side is 320 px;
- JPEG recompression at quality 40–70 (4:2:0 chroma subsampling, no metadata).

Pillow only. The same seed, photos and Pillow version give byte-identical files; ``OUT/manifest.json``
records the recipe and each photo's parameters.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from classifier.features import list_labelled_photos

RECIPE_VERSION = "1"
DEFAULT_SEED = 20240917
LONG_SIDE = 320
CROP_SHARE = 0.8
MAX_ROTATION_DEGREES = 10.0
BRIGHTNESS = (0.7, 1.3)
CONTRAST = (0.7, 1.3)
BLUR_RADIUS = (0.5, 1.5)
JPEG_QUALITY = (40, 70)


@dataclass(frozen=True)
class PhoneParameters:
    """What was done to one photo (see the module docstring); ``crop_left`` and ``crop_top``
    place the 80 % crop as shares of the free margin (0: left/top edge, 1: right/bottom)."""

    rotation: float
    crop_left: float
    crop_top: float
    brightness: float
    contrast: float
    blur_radius: float
    quality: int


def draw_parameters(seed: int, relative_path: str) -> PhoneParameters:
    """The parameters of the photo at ``relative_path`` (POSIX, inside the source folder)."""
    key = int.from_bytes(hashlib.sha256(relative_path.encode()).digest()[:8], "big")
    rng = np.random.default_rng([seed, key])
    return PhoneParameters(
        rotation=round(float(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES)), 3),
        crop_left=round(float(rng.uniform(0.0, 1.0)), 3),
        crop_top=round(float(rng.uniform(0.0, 1.0)), 3),
        brightness=round(float(rng.uniform(*BRIGHTNESS)), 3),
        contrast=round(float(rng.uniform(*CONTRAST)), 3),
        blur_radius=round(float(rng.uniform(*BLUR_RADIUS)), 3),
        quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)),
    )


def _border_colour(image: Image.Image) -> tuple[int, int, int]:
    pixels = np.asarray(image, dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    red, green, blue = (int(round(value)) for value in border.mean(axis=0))
    return red, green, blue


def phone_photo(image: Image.Image, parameters: PhoneParameters) -> bytes:
    """``image`` (upright, as ``preprocess.load_image`` returns it) as a phone would deliver it:
    JPEG bytes."""
    picture = image.convert("RGB")
    picture = picture.rotate(
        parameters.rotation,
        resample=Image.Resampling.BILINEAR,
        expand=False,
        fillcolor=_border_colour(picture),
    )
    width, height = picture.size
    crop_w, crop_h = round(width * CROP_SHARE), round(height * CROP_SHARE)
    left = round((width - crop_w) * parameters.crop_left)
    top = round((height - crop_h) * parameters.crop_top)
    picture = picture.crop((left, top, left + crop_w, top + crop_h))
    picture = ImageEnhance.Brightness(picture).enhance(parameters.brightness)
    picture = ImageEnhance.Contrast(picture).enhance(parameters.contrast)
    picture = picture.filter(ImageFilter.GaussianBlur(parameters.blur_radius))
    scale = LONG_SIDE / max(picture.size)
    if scale < 1.0:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=parameters.quality, subsampling="4:2:0", optimize=False)
    return buffer.getvalue()


def build_phone_photos(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, seed: int = DEFAULT_SEED
) -> Path:
    """Writes the phone copy of every photo under ``source/<slug>/`` to ``target/<slug>/`` (same
    relative paths, ``.jpg``) and ``target/manifest.json``; returns the manifest's path.

    Raises ``FileNotFoundError`` for a missing source folder and ``ValueError`` when it holds no
    photos. Undecodable files are listed in the manifest under ``skipped`` and not copied.
    """
    from classifier.preprocess import ImageRejected, load_image

    root, out = Path(source), Path(target)
    photos = list_labelled_photos(root)
    if not photos:
        raise ValueError(f"No photos found under {root}/<category-slug>/.")
    entries: dict[str, dict[str, object]] = {}
    skipped: dict[str, str] = {}
    for photo in photos:
        relative = photo.path.relative_to(root).as_posix()
        try:
            image = load_image(photo.path, draft_size=None)
        except ImageRejected as error:
            skipped[relative] = error.reason
            continue
        parameters = draw_parameters(seed, relative)
        destination = (out / relative).with_suffix(".jpg")
        destination.parent.mkdir(parents=True, exist_ok=True)
        data = phone_photo(image, parameters)
        destination.write_bytes(data)
        entries[relative] = {**asdict(parameters), "sha256": hashlib.sha256(data).hexdigest()}
    import PIL

    manifest = {
        "recipe_version": RECIPE_VERSION,
        "seed": seed,
        "source": "/".join(root.resolve().parts[-2:]),
        "pillow": PIL.__version__,
        "photos": entries,
        "skipped": skipped,
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path
