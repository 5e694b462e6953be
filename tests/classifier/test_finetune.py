"""The tuned backbone tail: its artifact, the served network built with it (embedding from the
tuned tail, ImageNet logits unchanged for zero-shot), and tail training on cached activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from classifier.backbone import (
    DEFAULT_TAIL,
    backbone_version,
    build_torch_model,
    tail_trained_on,
)
from classifier.finetune import (
    TRUNK_CHANNELS,
    TailArtifact,
    augmented_batch,
    tail_modules,
    train_tail,
)
from classifier.head import ArtifactError

pytestmark = pytest.mark.skipif(DEFAULT_TAIL is None, reason="no tuned tail is shipped")


def test_the_shipped_tail_loads_with_its_training_photos() -> None:
    # given the shipped tail artifact
    tail = TailArtifact.load(str(DEFAULT_TAIL))

    # then it fits the network's tail and lists the SHA-256 of the photos it trained on
    expected = set(tail_modules(build_torch_model(None).network).state_dict())
    assert set(tail.state) == {key for key in expected if not key.endswith("num_batches_tracked")}
    assert len(tail.trained_on) == tail.recipe["photos"] > 1000
    assert all(len(digest) == 64 for digest in tail.trained_on)
    assert tail_trained_on() == tail.trained_on
    assert tail_trained_on(None) == frozenset()


def test_a_corrupt_tail_is_refused(tmp_path: Path) -> None:
    # given a copy of a small artifact whose arrays were changed after saving
    artifact = TailArtifact(name="tiny", state={"head.weight": np.ones((2, 2), np.float32)})
    manifest = artifact.save(tmp_path)
    npz = manifest.with_suffix(".npz")
    npz.write_bytes(npz.read_bytes()[:-8] + b"\0" * 8)

    # then loading it fails with a clear error
    with pytest.raises(ArtifactError, match="Checksum mismatch"):
        TailArtifact.load(str(manifest))


def test_the_tuned_network_keeps_the_imagenet_logits_and_changes_the_embedding() -> None:
    # given the ImageNet network and the one with the shipped tail, and two random inputs
    pixels = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        plain_embedding, plain_logits = build_torch_model(None)(pixels)
        tuned_embedding, tuned_logits = build_torch_model(DEFAULT_TAIL)(pixels)

    # then the zero-shot logits are the same, the embedding is the tuned tail's
    torch.testing.assert_close(tuned_logits, plain_logits, atol=1e-4, rtol=1e-4)
    assert tuned_embedding.shape == plain_embedding.shape == (2, 1280)
    assert not torch.allclose(tuned_embedding, plain_embedding, atol=1e-2)
    # and the two networks have different backbone versions
    assert backbone_version(DEFAULT_TAIL) != backbone_version(None)


def test_augmented_crops_are_deterministic_per_photo_and_view() -> None:
    from PIL import Image

    image = Image.new("RGB", (400, 533), (120, 30, 200))
    first = augmented_batch([image], [7], views=3)
    again = augmented_batch([image], [7], views=3)
    assert first.shape == (3, 3, 224, 224) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)


def test_tail_training_on_cached_activations_returns_the_tail_state() -> None:
    # given random activations of 16 photos × 2 views in 2 classes
    rng = np.random.default_rng(0)
    activations = rng.uniform(0, 3, (2, 16, TRUNK_CHANNELS, 7, 7)).astype(np.float16)
    targets = np.array([0, 1] * 8)

    # when the tail trains for one pass
    state = train_tail(activations, targets, 2, passes=1.0, batch_size=8, num_threads=1)

    # then every tail parameter comes back, changed from the ImageNet weights
    original = tail_modules(build_torch_model(None).network).state_dict()
    assert set(state) == set(original)
    assert not np.allclose(state["head.weight"], original["head.weight"].numpy())


def test_trivial_augment_views_are_deterministic_and_differ_from_plain_crops() -> None:
    from PIL import Image

    # given a photo with some structure (TrivialAugmentWide acts on contrast, colour, geometry)
    pixels = np.random.default_rng(1).integers(0, 256, (533, 400, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")

    # when its augmented views are drawn twice, and once as plain crops
    first = augmented_batch([image], [7], views=4, augment="trivial")
    again = augmented_batch([image], [7], views=4, augment="trivial")
    plain = augmented_batch([image], [7], views=4)

    # then they repeat exactly, and differ from the plain crops
    np.testing.assert_array_equal(first, again)
    assert first.shape == plain.shape and not np.array_equal(first, plain)
    with pytest.raises(ValueError, match="Unknown augmentation"):
        augmented_batch([image], [7], views=1, augment="sepia")


def test_mixup_and_weight_averaging_return_a_full_tail_state() -> None:
    # given random activations of 16 photos × 2 views in 2 classes
    rng = np.random.default_rng(0)
    activations = rng.uniform(0, 3, (2, 16, TRUNK_CHANNELS, 7, 7)).astype(np.float16)
    targets = np.array([0, 1] * 8)

    # when the tail trains with mixup, with and without an exponential moving average
    common = {"passes": 1.0, "batch_size": 8, "num_threads": 1, "mixup": 0.2}
    last = train_tail(activations, targets, 2, **common)  # type: ignore[arg-type]
    averaged = train_tail(activations, targets, 2, ema_decay=0.9, **common)  # type: ignore[arg-type]

    # then both return every parameter and statistic, finite, and the average differs
    assert set(averaged) == set(last)
    assert all(np.isfinite(value).all() for value in averaged.values())
    assert not np.allclose(averaged["head.weight"], last["head.weight"])
