"""Head artifacts: round trip, checksum, calibration pieces, and the shipped head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifier.backbone import backbone_version
from classifier.head import ArtifactError, GateParameters, LinearHead, transform_embeddings
from classifier.preprocess import View


def small_head(version: str = "test-head") -> LinearHead:
    rng = np.random.default_rng(0)
    centroids = transform_embeddings(rng.random((3, 1280), dtype=np.float32), "sqrt-l2")
    return LinearHead(
        version=version,
        backbone_version="efficientnet-lite0@00000000",
        classes=["hat", "shoes", "pants"],
        weights=rng.normal(size=(3, 1280)).astype(np.float32),
        bias=np.array([0.1, -0.2, 0.3], dtype=np.float32),
        centroids=centroids,
        temperature=1.5,
        feature_transform="sqrt-l2",
        gate=GateParameters(cosine_threshold=0.7, cosine_weight=40.0),
        views=(View(1.0, False), View(256 / 224, True)),
        hyperparameters={"C": 10.0},
        metrics={"clothing-small/test": {"accuracy": 0.5}},
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    # given a head saved to a folder
    head = small_head()
    manifest = head.save(tmp_path)
    # when loaded back from its manifest
    loaded = LinearHead.load(manifest)
    # then every field survives
    assert manifest == tmp_path / "test-head.json"
    assert (tmp_path / "test-head.npz").is_file()
    assert loaded.classes == head.classes
    assert loaded.views == head.views
    assert loaded.gate == head.gate
    assert (loaded.temperature, loaded.feature_transform) == (1.5, "sqrt-l2")
    assert (loaded.hyperparameters, loaded.metrics) == (head.hyperparameters, head.metrics)
    np.testing.assert_array_equal(loaded.weights, head.weights)
    np.testing.assert_array_equal(loaded.bias, head.bias)
    embeddings = np.random.default_rng(1).random((4, 1280), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict_proba(embeddings), head.predict_proba(embeddings))


def test_load_accepts_npz_path_and_bare_stem(tmp_path: Path) -> None:
    small_head().save(tmp_path)
    assert LinearHead.load(tmp_path / "test-head.npz").version == "test-head"
    assert LinearHead.load(tmp_path / "test-head").version == "test-head"


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    # given an artifact whose arrays were replaced by another training's
    small_head().save(tmp_path)
    other = small_head()
    other.bias = np.zeros(3, dtype=np.float32)
    other.save(tmp_path / "other")
    (tmp_path / "test-head.npz").write_bytes((tmp_path / "other" / "test-head.npz").read_bytes())
    # when loading, then it fails with a clear message
    with pytest.raises(ArtifactError, match="Checksum mismatch for .*test-head.npz"):
        LinearHead.load(tmp_path / "test-head.json")


def test_missing_artifact_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="Head artifact not found"):
        LinearHead.load(tmp_path / "absent.json")


def test_probabilities_sum_to_one_and_temperature_softens() -> None:
    head = small_head()
    embeddings = np.random.default_rng(2).random((5, 1280), dtype=np.float32)
    probabilities = head.predict_proba(embeddings)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    head.temperature = 100.0
    assert head.predict_proba(embeddings).max() < probabilities.max()


def test_sqrt_l2_transform_gives_unit_rows() -> None:
    features = transform_embeddings(np.array([[4.0, 0.0, 9.0], [0.0, 0.0, 0.0]], np.float32), "sqrt-l2")
    np.testing.assert_allclose(features[0], [2 / np.sqrt(13), 0, 3 / np.sqrt(13)], rtol=1e-6)
    np.testing.assert_array_equal(features[1], [0, 0, 0])


def test_shipped_head_matches_the_backbone_and_records_its_test_accuracy() -> None:
    head = LinearHead.load()
    manifest = json.loads(Path(str(head_manifest())).read_text())
    assert head.backbone_version == backbone_version()
    assert head.classes == sorted(
        ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
    )
    assert manifest["metrics"]["clothing-small/test"]["accuracy"] >= 0.90
    assert (head_manifest().with_suffix(".npz")).stat().st_size < 200_000


def head_manifest() -> Path:
    from classifier.model import default_head_path

    return default_head_path()
