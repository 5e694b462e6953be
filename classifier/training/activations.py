"""The tail's training data: trunk activations of randomly augmented crops, cached on disk.

The frozen trunk (stem and MBConv blocks 0–11, ``classifier.tail``) runs once per photo on
``AUGMENTED_VIEWS`` random crops, and its activations (192 × 7 × 7 per view, float16) are cached;
the tail then trains on them (``classifier.training.tail``). Crops: random resized crops (scale
0.6–1, aspect 3/4–4/3) mirrored half the time, optionally followed by TrivialAugmentWide.
Deterministic: crop ``k`` of a photo depends only on its bytes and ``k``.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from classifier.atomic import atomic_path
from classifier.backbone import default_cache_dir, pretrained_network, weights_key
from classifier.preprocess import INPUT_SIZE, load_image
from classifier.tail import TAIL_START, TRUNK_CHANNELS, TRUNK_SIDE, trunk_forward

AUGMENTED_VIEWS = 4
CROP_SCALE = (0.6, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
AUGMENTATIONS = ("crop", "trivial")
SEED = 0


def _trivial_augment(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    """torchvision's TrivialAugmentWide (one random operation at a random strength), seeded from
    ``rng`` so a view stays reproducible."""
    import torch
    from torchvision.transforms import TrivialAugmentWide

    torch.manual_seed(int(rng.integers(2**31)))
    result: Image.Image = TrivialAugmentWide()(picture)
    return result


def _random_crop(image: Image.Image, rng: np.random.Generator, augment: str = "crop") -> np.ndarray:
    width, height = image.size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = float(np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1]))))
        crop_w, crop_h = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
            break
    else:
        crop_w = crop_h = min(width, height)
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
    resized = image.resize(
        (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h)
    )
    if rng.random() < 0.5:
        resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if augment == "trivial":
        resized = _trivial_augment(resized, rng)
    pixels = np.asarray(resized, dtype=np.float32)
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1)


def augmented_batch(
    images: Sequence[Image.Image], seeds: Sequence[int], views: int, augment: str = "crop"
) -> np.ndarray:
    """``views`` random crops of each image, view-major: float32 (views × N, 3, 224, 224). Crop
    ``k`` of an image depends only on its seed and ``k``. ``augment``: ``"crop"`` (random
    resized crop and mirror) or ``"trivial"`` (the same, then TrivialAugmentWide)."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {augment!r}; expected one of {AUGMENTATIONS}.")
    return np.stack(
        [
            _random_crop(image, np.random.default_rng([seed, view]), augment)
            for view in range(views)
            for image, seed in zip(images, seeds, strict=True)
        ]
    )


def trunk_onnx(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The frozen trunk exported to ONNX in the cache (built once, needs torch)."""
    import warnings

    import torch

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = directory / f"efficientnet-lite0-trunk{TAIL_START}-{weights_key()[:12]}.onnx"
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    network = pretrained_network()

    class Trunk(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return trunk_forward(self.network, pixels)

    with atomic_path(target) as temporary, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Trunk().eval(),
            (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),),
            str(temporary),
            input_names=["input"],
            output_names=["activations"],
            dynamic_axes={"input": {0: "batch"}, "activations": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return target


def cached_activations(
    paths: Sequence[Path],
    *,
    views: int = AUGMENTED_VIEWS,
    augment: str = "crop",
    cache_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> np.ndarray:
    """Trunk activations of ``views`` random crops of each photo: float16 (views, N, 192, 7, 7).

    Cached in ``<cache_dir>/trunk-activations-<key>.npy``, the key covering the trunk, the crop
    recipe and every file's bytes: the trunk runs once per photo and view, ever.
    """
    import onnxruntime

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    onnx_path = trunk_onnx(directory)
    recipe = f"{onnx_path.name};{views};{CROP_SCALE};{CROP_RATIO};{SEED}"
    if augment != "crop":
        recipe += f";{augment}"
    digest = hashlib.sha256(recipe.encode())
    hashes = [hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in paths]
    for value in hashes:
        digest.update(value.encode())
    target = directory / f"trunk-activations-{digest.hexdigest()[:16]}.npy"
    if target.is_file():
        return np.load(target)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or os.cpu_count() or 1
    session = onnxruntime.InferenceSession(
        str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    result = np.zeros((views, len(paths), TRUNK_CHANNELS, TRUNK_SIDE, TRUNK_SIDE), dtype=np.float16)
    began = time.perf_counter()
    for start in range(0, len(paths), 16):
        chunk = list(range(start, min(start + 16, len(paths))))
        images = [load_image(paths[i]) for i in chunk]
        seeds = [int(hashes[i][:8], 16) for i in chunk]
        batch = augmented_batch(images, seeds, views, augment)
        (activations,) = session.run(["activations"], {"input": batch})
        result[:, chunk] = activations.reshape(views, len(chunk), TRUNK_CHANNELS, TRUNK_SIDE, TRUNK_SIDE)
        if start % 640 == 0:
            log(
                f"  trunk activations {start + len(chunk)}/{len(paths)} ({time.perf_counter() - began:.0f} s)"
            )
    with atomic_path(target) as temporary, open(temporary, "wb") as out:
        np.save(out, result)
    return result
