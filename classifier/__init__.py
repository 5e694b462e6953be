"""Marketplace photo classifier: decode → preprocess → backbone → head → calibrated top-k.

Pure Python (numpy, Pillow, onnxruntime; torch only to export the backbone or train). Public names
are imported lazily, so ``import classifier.taxonomy`` stays light::

    from classifier import ImageClassifier
    classifier = ImageClassifier.load()
    [prediction] = classifier.classify([photo_bytes])
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from classifier.backbone import OnnxBackbone, backbone_version, ensure_onnx
    from classifier.head import ArtifactError, LinearHead
    from classifier.model import CategoryScore, ImageClassifier, Prediction
    from classifier.preprocess import ImageRejected, load_image, to_batch
    from classifier.taxonomy import Taxonomy, load_taxonomy

_EXPORTS = {
    "ArtifactError": "classifier.head",
    "CategoryScore": "classifier.model",
    "ImageClassifier": "classifier.model",
    "ImageRejected": "classifier.preprocess",
    "LinearHead": "classifier.head",
    "OnnxBackbone": "classifier.backbone",
    "Prediction": "classifier.model",
    "Taxonomy": "classifier.taxonomy",
    "backbone_version": "classifier.backbone",
    "ensure_onnx": "classifier.backbone",
    "load_image": "classifier.preprocess",
    "load_taxonomy": "classifier.taxonomy",
    "to_batch": "classifier.preprocess",
}

__all__ = [
    "ArtifactError",
    "CategoryScore",
    "ImageClassifier",
    "ImageRejected",
    "LinearHead",
    "OnnxBackbone",
    "Prediction",
    "Taxonomy",
    "backbone_version",
    "ensure_onnx",
    "load_image",
    "load_taxonomy",
    "to_batch",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'classifier' has no attribute {name!r}")
