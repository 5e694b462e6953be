"""Training a candidate head for the registry: which categories train, the whole recipe on
synthetic outputs; a new category learned from 20 photos on the real dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from classifier.datasets import dataset_dir
from classifier.head import LinearHead, transform_embeddings
from classifier.preprocess import CENTRE_VIEW
from classifier.taxonomy import load_taxonomy
from classifier.training.candidate import (
    NOT_A_LEAF,
    UNKNOWN_CATEGORY,
    Candidate,
    CandidateConfig,
    select_classes,
    train_candidate,
)
from classifier.training.outputs import LabelledOutputs, score_head

SHARED_DATASETS = dataset_dir()


def test_categories_train_from_the_minimum_number_of_photos_on_leaves_only() -> None:
    # given 20 shoes, 19 hats, 25 photos labelled with the parent "fashion", one unknown slug
    labels = ["shoes"] * 20 + ["hat"] * 19 + ["fashion"] * 25 + ["martian-hats"] * 30

    # when classes are selected with a minimum of 20
    classes, excluded = select_classes(labels, load_taxonomy(), min_photos=20)

    # then only shoes trains; each other category says why not
    assert classes == ["shoes"]
    assert excluded == {
        "hat": "fewer than 20 labelled photos (19)",
        "fashion": NOT_A_LEAF,
        "martian-hats": UNKNOWN_CATEGORY,
    }


def test_a_head_keeps_to_the_branch_with_most_labelled_photos() -> None:
    # given fashion leaves and a few phones
    labels = ["shoes"] * 30 + ["hat"] * 30 + ["phones"] * 25

    # when classes are selected
    classes, excluded = select_classes(labels, load_taxonomy(), min_photos=20)

    # then the head serves fashion; phones wait (a head serves one branch of the tree)
    assert classes == ["hat", "shoes"]
    assert set(excluded) == {"phones"} and "fashion" in excluded["phones"]


def _synthetic(per_class: int, seed: int = 0) -> LabelledOutputs:
    """Non-negative embeddings clustered per class (like pooled ReLU6 features)."""
    rng = np.random.default_rng(seed)
    slugs = ["dress", "hat", "shoes"]
    centres = rng.uniform(0, 1, size=(3, 1280)) * (rng.uniform(size=(3, 1280)) < 0.1)
    rows, labels = [], []
    for index, slug in enumerate(slugs):
        rows.append(np.abs(centres[index] + rng.normal(scale=0.05, size=(per_class, 1280))))
        labels += [slug] * per_class
    embeddings = np.concatenate(rows).astype(np.float32)
    logits = np.zeros((len(labels), 1000), np.float32)
    return LabelledOutputs(embeddings=embeddings, logits=logits, labels=labels, keys=list(range(len(labels))))


def _train(data: LabelledOutputs, held_out: np.ndarray, **settings: Any) -> Candidate:
    config = CandidateConfig(backbone_version="bb", version="v1", views=(CENTRE_VIEW,), **settings)
    return train_candidate(data, held_out, taxonomy=load_taxonomy(), config=config)


def test_a_candidate_from_synthetic_outputs_records_everything_the_registry_needs() -> None:
    # given 3 classes × 60 photos, every fourth held out
    data = _synthetic(60)
    held_out = np.arange(len(data)) % 4 == 0

    # when a candidate is trained twice
    first = _train(data, held_out, min_support=1)
    second = _train(data, held_out, min_support=1)

    # then the head knows the 3 classes, is deterministic, and round-trips as bytes
    head = first.head
    assert head.classes == ["dress", "hat", "shoes"]
    np.testing.assert_array_equal(head.weights, second.head.weights)
    manifest, payload = head.to_bytes()
    assert LinearHead.from_bytes(manifest, payload).classes == head.classes
    # and the held-out figures are complete, on exactly the held-out rows
    figures = first.metrics["held_out"]
    assert figures["n"] == int(held_out.sum()) == len(first.held_out)
    assert [key for key, _ in first.held_out] == [k for k, h in zip(data.keys, held_out, strict=True) if h]
    assert figures["accuracy"] == 1.0
    assert len(figures["confusion"]["matrix"]) == 3 and len(figures["reliability"]) == 10
    assert first.training_photos == len(data) - int(held_out.sum())
    # and separable classes get thresholds, which accept every held-out photo at precision 1:
    # 45 training photos per class are too few to bound a class's own precision at 0.97, so
    # all three share the threshold of their pool under "fashion" (135 photos)
    assert set(first.auto_accept_thresholds) == {"dress", "hat", "shoes"}
    assert first.head.auto_accept.sources == dict.fromkeys(["dress", "hat", "shoes"], "fashion")
    assert first.head.auto_accept.thresholds == first.auto_accept_thresholds
    assert figures["auto_accept"]["precision"] == 1.0 and figures["auto_accept"]["coverage"] > 0.9
    assert first.head.hyperparameters["C"] in first.head.hyperparameters["C_grid"]


def test_too_few_categories_is_a_clear_error() -> None:
    data = _synthetic(30)
    only_dress = data.subset(np.array([label == "dress" for label in data.labels]))
    with pytest.raises(ValueError, match="at least two categories"):
        _train(only_dress, np.zeros(len(only_dress), bool))


@pytest.mark.dataset
def test_a_new_category_is_learned_from_twenty_labelled_photos() -> None:
    from classifier.backbone import OnnxBackbone, default_cache_dir, ensure_onnx
    from classifier.features import LabelledFeatures, extract_features
    from classifier.training.folder import TRAINING_VIEWS

    root = SHARED_DATASETS / "clothing-small"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the shared datasets live beside the repository checkout")
    # given ImageNet-pretrained backbone outputs of clothing-small (cached on disk after one run)
    cache = default_cache_dir()
    # (the ImageNet network: the shipped tail was tuned on these categories, pants included)
    backbone = OnnxBackbone(ensure_onnx(cache, tail=None))
    splits = {
        s: extract_features(root / s, backbone, views=TRAINING_VIEWS, cache_dir=cache)
        for s in ("train", "validation", "test")
    }
    fit = LabelledFeatures.concatenate([splits["train"], splits["validation"]])
    taxonomy = load_taxonomy()
    test = LabelledOutputs(
        splits["test"].embeddings,
        splits["test"].logits,
        splits["test"].labels,
        list(range(len(splits["test"]))),
    )
    labels = np.array(fit.labels)
    others = np.flatnonzero(labels != "pants")
    twenty = np.random.default_rng(0).choice(np.flatnonzero(labels == "pants"), 20, replace=False)

    def pants_recall(rows: np.ndarray) -> tuple[list[str], float]:
        rows = np.sort(rows)
        data = LabelledOutputs(
            fit.embeddings[rows], fit.logits[rows], [fit.labels[i] for i in rows], rows.tolist()
        )
        config = CandidateConfig(backbone_version=backbone.version, version="v", views=TRAINING_VIEWS)
        candidate = train_candidate(data, np.zeros(len(rows), bool), taxonomy=taxonomy, config=config)
        predicted, _ = score_head(candidate.head, taxonomy, test)
        truth = np.array(test.labels)
        return candidate.head.classes, float(np.mean(np.array(predicted)[truth == "pants"] == "pants"))

    # when the head is trained without pants, then with 20 labelled pants photos added
    without_classes, without_recall = pants_recall(others)
    with_classes, with_recall = pants_recall(np.concatenate([others, twenty]))

    # then pants is learned: recall on the test split reaches 0.70 (zero-shot alone stays far below)
    assert "pants" not in without_classes and "pants" in with_classes
    assert without_recall < 0.5
    assert with_recall >= 0.70


def test_score_head_answers_with_head_classes_for_in_domain_outputs() -> None:
    data = _synthetic(10)
    candidate = _train(data, np.zeros(len(data), bool), folds=2, min_photos=5)
    predicted, confidence = score_head(candidate.head, load_taxonomy(), data)
    assert predicted == data.labels
    assert np.all((confidence > 0) & (confidence <= 1))
    assert transform_embeddings(data.embeddings[:1], "sqrt-l2").shape == (1, 1280)
