"""The pretrained backbone: right ImageNet answers on real photos, ONNX equal to torch, cached export."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from classifier.backbone import (
    EMBEDDING_DIM,
    OnnxBackbone,
    backbone_version,
    build_torch_model,
    ensure_onnx,
    onnx_filename,
)
from classifier.preprocess import load_image, to_batch

# ImageNet top-1 of each fixture photo, and another class of the same garment in its top-5.
EXPECTED_IMAGENET = {
    "dress": ("gown", "abaya"),
    "hat": ("bathing cap", "bonnet"),
    "longsleeve": ("sweatshirt", "jersey"),
    "outwear": ("trench coat", "cloak"),
    "pants": ("jean", "swimming trunks"),
    "shoes": ("sandal", "clog"),
    "skirt": ("sarong", "overskirt"),
    "t-shirt": ("jersey", "sweatshirt"),
}


@pytest.fixture(scope="module")
def imagenet_names() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@pytest.fixture(scope="module")
def fixture_batch(fixture_photos: dict[str, Path]) -> tuple[list[str], np.ndarray]:
    slugs = sorted(EXPECTED_IMAGENET)
    return slugs, to_batch([load_image(fixture_photos[slug]) for slug in slugs])


def test_imagenet_top1_and_top5_on_real_photos(
    backbone: OnnxBackbone, fixture_batch: tuple[list[str], np.ndarray], imagenet_names: list[str]
) -> None:
    # given real clothing photos, preprocessed with the TensorFlow scaling the weights expect
    slugs, batch = fixture_batch
    # when the backbone classifies them into ImageNet-1k
    _, logits = backbone.run(batch)
    # then each top-1 is the garment's ImageNet class and a sibling class is in the top-5
    for slug, row in zip(slugs, logits, strict=True):
        top5 = [imagenet_names[i] for i in np.argsort(-row)[:5]]
        top1, sibling = EXPECTED_IMAGENET[slug]
        assert top5[0] == top1, (slug, top5)
        assert sibling in top5, (slug, top5)


def test_onnx_matches_torch(backbone: OnnxBackbone, fixture_batch: tuple[list[str], np.ndarray]) -> None:
    import torch

    # given the same three photos
    batch = fixture_batch[1][:3]
    # when run through the eager torch network and the exported ONNX graph
    with torch.no_grad():
        torch_embeddings, torch_logits = build_torch_model()(torch.from_numpy(batch))
    onnx_embeddings, onnx_logits = backbone.run(batch)
    # then both outputs agree
    assert onnx_embeddings.shape == (3, EMBEDDING_DIM)
    assert onnx_logits.shape == (3, 1000)
    np.testing.assert_allclose(onnx_embeddings, torch_embeddings.numpy(), atol=1e-3)
    np.testing.assert_allclose(onnx_logits, torch_logits.numpy(), atol=1e-3)


def test_batch_axis_is_dynamic(backbone: OnnxBackbone, fixture_batch: tuple[list[str], np.ndarray]) -> None:
    batch = fixture_batch[1]
    embeddings_one, _ = backbone.run(batch[:1])
    embeddings_all, _ = backbone.run(batch)
    np.testing.assert_allclose(embeddings_one[0], embeddings_all[0], atol=1e-4)


def test_empty_and_malformed_batches(backbone: OnnxBackbone) -> None:
    embeddings, logits = backbone.run(np.zeros((0, 3, 224, 224), np.float32))
    assert (embeddings.shape, logits.shape) == ((0, 1280), (0, 1000))
    with pytest.raises(ValueError, match=r"Expected a batch of shape \(N, 3, 224, 224\)"):
        backbone.run(np.zeros((1, 3, 200, 200), np.float32))


def test_export_is_cached_under_a_versioned_name(onnx_path: Path, classifier_cache_dir: Path) -> None:
    # given the session's export
    modified = onnx_path.stat().st_mtime_ns
    # when asked again
    again = ensure_onnx(classifier_cache_dir)
    # then the same file is returned untouched, beside its manifest, and no temporary file is left
    assert again == onnx_path
    assert again.stat().st_mtime_ns == modified
    assert again.name == onnx_filename()
    assert re.fullmatch(r"efficientnet-lite0-[0-9a-f]{12}\.onnx", again.name)
    assert (classifier_cache_dir / f"{again.name}.manifest.json").is_file()
    assert sorted(p.name for p in classifier_cache_dir.iterdir() if p.name.endswith(".tmp")) == []


def test_backbone_version_is_recorded_in_the_onnx_file(backbone: OnnxBackbone) -> None:
    assert re.fullmatch(r"efficientnet-lite0@[0-9a-f]{8}", backbone_version())
    assert backbone.version == backbone_version()


def test_cuda_is_used_only_when_available(onnx_path: Path) -> None:
    import onnxruntime

    session = OnnxBackbone(onnx_path, num_threads=1, providers=["CUDAExecutionProvider"])
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert session.providers[0] == "CUDAExecutionProvider"
    else:
        assert session.providers == ["CPUExecutionProvider"]


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from classifier.backbone import default_cache_dir

    monkeypatch.setenv("CLASSIFIER_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("CLASSIFIER_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "marketplace-classifier"
