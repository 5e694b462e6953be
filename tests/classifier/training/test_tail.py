"""Tail training on cached trunk activations: deterministic augmented crops, and the tail's state
after training with and without mixup and weight averaging."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from classifier.backbone import DEFAULT_TAIL, build_torch_model
from classifier.tail import TRUNK_CHANNELS, tail_modules
from classifier.training.activations import augmented_batch
from classifier.training.tail import TailRecipe, train_tail

pytestmark = pytest.mark.skipif(DEFAULT_TAIL is None, reason="no tuned tail is shipped")


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
    state = train_tail(activations, targets, 2, recipe=TailRecipe(passes=1.0, batch_size=8), num_threads=1)

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
    recipe = TailRecipe(passes=1.0, batch_size=8, mixup=0.2)
    last = train_tail(activations, targets, 2, recipe=recipe, num_threads=1)
    averaged = train_tail(activations, targets, 2, recipe=replace(recipe, ema_decay=0.9), num_threads=1)

    # then both return every parameter and statistic, finite, and the average differs
    assert set(averaged) == set(last)
    assert all(np.isfinite(value).all() for value in averaged.values())
    assert not np.allclose(averaged["head.weight"], last["head.weight"])
