"""The benchmark's yardstick: the served backbone alone, on photos decoded and cropped beforehand.

The same network file and precision the workers load (int8 on the CPU, fp32 with CUDA), one
view per photo, batches of 16 on the CPU (the workers' batch on a GPU), every core: what the
hardware gives when there is no decoding, no database and no queue. Each run times two sessions
back to back, with onnxruntime's idle threads spinning (its default, fastest on a quiet machine)
and without (the workers' setting, faster when other processes want the cores), and keeps the
faster: the yardstick is never the easier of the two. Pipeline figures are divided by it,
measured side by side, so a ratio says how much of the machine the whole system uses.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Distinct photos decoded for the yardstick; batches cycle through them.
DISTINCT_PHOTOS = 64
CPU_BATCH = 16


@dataclass
class Yardstick:
    """`run(images)` → images/s of the backbone on `inputs` (float32 (M, 3, 224, 224)), the
    faster of its sessions (`backbones`: idle threads spinning, and not)."""

    backbones: tuple[Any, ...]
    inputs: np.ndarray
    batch: int
    threads: int
    precision: str

    def _timed(self, backbone: Any, images: int) -> float:
        batches = max(1, images // self.batch)
        count = len(self.inputs) // self.batch
        backbone.run(self.inputs[: self.batch])  # warm (first call allocates)
        began = time.perf_counter()
        for number in range(batches):
            start = (number % count) * self.batch
            backbone.run(self.inputs[start : start + self.batch])
        return batches * self.batch / (time.perf_counter() - began)

    def run(self, images: int) -> float:
        return max(self._timed(backbone, images) for backbone in self.backbones)


def yardstick(photos: list[Path]) -> Yardstick:
    """The served backbone (workers' file, precision and device) with every core, and the first
    view of `DISTINCT_PHOTOS` of `photos`."""
    from django.conf import settings

    from classifier.backbone import OnnxBackbone
    from classifier.head import LinearHead
    from classifier.preprocess import load_image, to_batch
    from classifier.quantize import backbone_path
    from classifier.views import ViewPolicy
    from workers import inference

    head = LinearHead.load(settings.CLASSIFIER_HEAD_PATH or None)
    precision = inference.precision()
    path = backbone_path(precision, settings.CLASSIFIER_CACHE_DIR or None, views=head.views)
    threads = os.cpu_count() or 1
    backbones = tuple(
        OnnxBackbone(path, num_threads=threads, providers=inference.providers(), spin=spin)
        for spin in (True, False)
    )
    view = head.views[ViewPolicy().first_index(len(head.views))]
    images = [load_image(photo) for photo in photos[:DISTINCT_PHOTOS]]
    inputs = to_batch(images, resize_ratio=view.resize_ratio, mirror=view.mirror)
    batch = CPU_BATCH if settings.CLASSIFIER_DEVICE != "cuda" else inference.batch_size()
    while len(inputs) < batch:
        inputs = np.concatenate([inputs, inputs])
    return Yardstick(backbones=backbones, inputs=inputs, batch=batch, threads=threads, precision=precision)
