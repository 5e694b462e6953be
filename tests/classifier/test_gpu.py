"""The CUDA path gives the CPU's answers. Runs only where onnxruntime has a working CUDA
provider (onnxruntime-gpu from requirements-gpu.txt and a GPU); skipped everywhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier.backbone import OnnxBackbone
from classifier.model import ImageClassifier, Prediction

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _cuda_provider() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not _cuda_provider(),
        reason="onnxruntime has no CUDA provider here (install requirements-gpu.txt on a GPU machine)",
    ),
]


@pytest.fixture(scope="module")
def cuda_backbone(onnx_path: Path) -> OnnxBackbone:
    backbone = OnnxBackbone(onnx_path, providers=CUDA)
    if backbone.providers[0] != "CUDAExecutionProvider":
        pytest.skip("the CUDA provider is installed but no GPU could be used")
    return backbone


def test_cuda_and_cpu_give_the_same_top_5(
    cuda_backbone: OnnxBackbone, image_classifier: ImageClassifier, fixture_photos: dict[str, Path]
) -> None:
    # given the shipped classifier on the CPU and the same head and network on the GPU (fp32 both)
    on_gpu = ImageClassifier(
        head=image_classifier.head,
        taxonomy=image_classifier.taxonomy,
        backbone=cuda_backbone,
        view_policy=image_classifier.view_policy,
    )
    photos = list(fixture_photos.values())
    # when both classify the fixture photos
    cpu, gpu = image_classifier.classify(photos, top_k=5), on_gpu.classify(photos, top_k=5)
    # then every photo gets the same five categories in the same order, with the same confidences
    for on_cpu, on_cuda in zip(cpu, gpu, strict=True):
        assert isinstance(on_cpu, Prediction) and isinstance(on_cuda, Prediction)
        assert [s.slug for s in on_cuda.top_k] == [s.slug for s in on_cpu.top_k]
        np.testing.assert_allclose(
            [s.confidence for s in on_cuda.top_k], [s.confidence for s in on_cpu.top_k], atol=2e-3
        )
