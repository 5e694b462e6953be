"""The int8 backbone (the workers' default precision): calibration photos, cache naming, and the
accuracy floors it must hold like the fp32 export."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier import quantize
from classifier.backbone import OnnxBackbone
from classifier.evaluate import evaluate_folder
from classifier.head import LinearHead
from classifier.model import ImageClassifier
from classifier.taxonomy import load_taxonomy
from tests.classifier.conftest import SHARED_DATASETS


def test_calibration_uses_the_shipped_photos_when_the_datasets_are_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given no shared datasets beside the checkout
    monkeypatch.setattr(quantize, "SHARED_CALIBRATION_DIR", Path("/nonexistent/clothing-small/train"))

    # when calibration photos are chosen
    photos = quantize.calibration_photos()

    # then they are the photos shipped in the repository, in a fixed order
    assert photos
    assert all(any(root in photo.parents for root in quantize.SHIPPED_CALIBRATION_DIRS) for photo in photos)
    assert photos == sorted(photos)


def test_the_cached_int8_file_name_follows_the_calibration_photos_and_views(tmp_path: Path) -> None:
    # given two sets of calibration photos and two view lists
    fp32 = tmp_path / "efficientnet-lite0-000000000000.onnx"
    photos = quantize.calibration_photos()
    views = LinearHead.load().views

    # then each combination names its own cache file, beside the fp32 export's name
    names = {
        quantize.quantized_filename(fp32, photos, views),
        quantize.quantized_filename(fp32, photos[:-1], views),
        quantize.quantized_filename(fp32, photos, views[:1]),
    }
    assert len(names) == 3
    assert all(name.startswith("efficientnet-lite0-000000000000-int8-") for name in names)


@pytest.mark.dataset
def test_the_int8_backbone_holds_the_accuracy_floors() -> None:
    for folder in ("clothing-small/test", "marketplace-smoke"):
        if not (SHARED_DATASETS / folder).is_dir():
            pytest.skip(f"{SHARED_DATASETS / folder} is absent")
    # given the classifier the workers serve by default: the shipped head on the int8 backbone
    head = LinearHead.load()
    backbone = OnnxBackbone(quantize.backbone_path("int8", views=head.views))
    classifier = ImageClassifier(head=head, taxonomy=load_taxonomy(), backbone=backbone)

    # when it classifies the held-out clothing photos and the marketplace smoke set
    clothing = evaluate_folder(SHARED_DATASETS / "clothing-small/test", classifier)
    smoke = evaluate_folder(SHARED_DATASETS / "marketplace-smoke", classifier)

    # then both floors hold, as for the fp32 export
    assert (clothing.n, smoke.n) == (372, 51)
    assert clothing.accuracy >= 0.90, clothing.per_category
    assert smoke.accuracy >= 0.90, smoke.mistakes
