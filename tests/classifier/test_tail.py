"""The tuned backbone tail: its artifact, and the served network built with it (embedding from the
tuned tail, ImageNet logits unchanged for zero-shot)."""

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
from classifier.head import ArtifactError
from classifier.tail import TailArtifact, tail_modules

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
