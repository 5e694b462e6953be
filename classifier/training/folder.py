"""Fits the head on a folder of labelled photos: ``python -m classifier train``.

Recipe (frozen backbone, linear probe, ``classifier.training.probe``): embeddings of ``train/`` +
``validation/`` → ``sqrt-l2`` transform → multinomial logistic regression (L2 penalty, C picked by
5-fold cross-validation) → temperature fit on out-of-fold scores (minimum negative log-likelihood)
→ gate statistics from out-of-fold centroid similarities → metrics on ``test/``. Deterministic:
fixed fold seed, deterministic solver. Needs scikit-learn and scipy (training only).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.backbone import OnnxBackbone, ensure_onnx, tail_trained_on
from classifier.datasets import CLOTHING_SMALL, dataset_dir
from classifier.features import LabelledFeatures, extract_features
from classifier.head import (
    ARTIFACTS_DIR,
    DEFAULT_HEAD_VERSION,
    LinearHead,
    softmax,
    transform_embeddings,
)
from classifier.model import ImageClassifier
from classifier.preprocess import RESIZE_RATIO, View
from classifier.taxonomy import Taxonomy, load_taxonomy
from classifier.training.folds import FOLDS, SEED, stratified_folds
from classifier.training.gate import GATE_TARGET_RECALL, domain_evidence
from classifier.training.logistic import C_GRID
from classifier.training.probe import fit_probe
from classifier.training.temperature import expected_calibration_error

SPLITS = ("train", "validation", "test")
FEATURE_TRANSFORM = "sqrt-l2"
#: Two crops averaged: the whole shorter side, and the ImageNet 87.5 % crop mirrored. Picked by
#: cross-validation on train + validation (0.894 vs 0.877 for the single ImageNet crop).
TRAINING_VIEWS = (View(resize_ratio=1.0, mirror=False), View(resize_ratio=RESIZE_RATIO, mirror=True))


@dataclass
class TrainingReport:
    """What ``train_head`` produced: the head, where it was written, and how long phases took (s)."""

    head: LinearHead
    manifest_path: Path | None
    extract_seconds: float
    fit_seconds: float


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes: how tail artifacts name the photos they trained on."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fit_head(
    fit: LabelledFeatures,
    *,
    taxonomy: Taxonomy,
    backbone_version: str,
    version: str = DEFAULT_HEAD_VERSION,
    calibration: np.ndarray | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> LinearHead:
    """Fits a ``LinearHead`` (weights, temperature, centroids, gate) on labelled features.

    Class order is sorted slugs. ``calibration`` (bool (N,), default all): the photos that pick C
    and fit the temperature and the gate; leave out those a tuned backbone tail trained on (their
    embeddings look easier than new photos'). Raises ``ValueError`` when a label is not a taxonomy
    slug, fewer than two classes are present or they share no taxonomy ancestor.
    """
    classes = sorted(set(fit.labels))
    if len(classes) < 2:
        raise ValueError(f"Need photos of at least two categories, found {classes}.")
    unknown = [slug for slug in classes if slug not in taxonomy]
    if unknown:
        raise ValueError(f"Folder names that are not taxonomy slugs: {unknown}.")
    targets = np.array([classes.index(label) for label in fit.labels])
    features = transform_embeddings(fit.embeddings, FEATURE_TRANSFORM).astype(np.float64)
    calibrating = np.ones(len(targets), bool) if calibration is None else np.asarray(calibration, bool)
    probe = fit_probe(
        features,
        targets,
        len(classes),
        stratified_folds(targets, FOLDS, SEED),
        domain_evidence=domain_evidence(taxonomy, classes, fit.logits),
        calibrating=calibrating,
        c_grid=C_GRID,
        log=log,
    )
    return LinearHead(
        version=version,
        backbone_version=backbone_version,
        classes=classes,
        weights=probe.weights.astype(np.float32),
        bias=probe.bias.astype(np.float32),
        centroids=probe.centroids.astype(np.float32),
        temperature=probe.temperature,
        feature_transform=FEATURE_TRANSFORM,
        gate=probe.gate,
        views=TRAINING_VIEWS,
        hyperparameters={
            "model": "multinomial logistic regression (scikit-learn lbfgs, L2)",
            "C": probe.cross_validation.c,
            "C_grid": list(C_GRID),
            "folds": FOLDS,
            "seed": SEED,
            "feature_transform": FEATURE_TRANSFORM,
            "cross_validated_accuracy": round(probe.cross_validation.accuracy, 4),
            "gate_target_recall": GATE_TARGET_RECALL,
            "training_photos": len(targets),
        },
    )


def evaluate_head(head: LinearHead, test: LabelledFeatures, taxonomy: Taxonomy) -> dict[str, float | int]:
    """Head-only and full-model top-1 on labelled features, plus calibration figures."""
    targets = np.array([head.classes.index(label) for label in test.labels])
    probabilities = head.predict_proba(test.embeddings)
    uncalibrated = softmax(head.logits(test.embeddings))
    picked = probabilities[np.arange(len(targets)), targets]
    classifier = ImageClassifier(head=head, taxonomy=taxonomy)
    scores = classifier.scores_from_outputs(test.embeddings, test.logits)
    predicted = [classifier.slugs[column] for column in scores.argmax(axis=1)]
    correct = [
        taxonomy.is_descendant_or_self(p, label) for p, label in zip(predicted, test.labels, strict=True)
    ]
    return {
        "n": len(targets),
        "head_accuracy": round(float(np.mean(probabilities.argmax(axis=1) == targets)), 4),
        "accuracy": round(float(np.mean(correct)), 4),
        "nll": round(float(-np.mean(np.log(picked + 1e-12))), 4),
        "ece": round(expected_calibration_error(probabilities, targets), 4),
        "ece_before_temperature": round(expected_calibration_error(uncalibrated, targets), 4),
    }


def train_head(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = ARTIFACTS_DIR,
    version: str = DEFAULT_HEAD_VERSION,
    cache_dir: str | os.PathLike[str] | None = None,
    taxonomy: Taxonomy | None = None,
    log: Callable[[str], None] = print,
) -> TrainingReport:
    """Extracts features for ``data_dir/{train,validation,test}``, fits the head on train +
    validation, measures it on test and writes the artifact to ``out_dir`` (``None``: do not write).

    ``data_dir`` defaults to clothing-small in the datasets folder (`classifier.datasets`). Raises
    ``FileNotFoundError`` naming the missing folder.
    """
    root = Path(data_dir) if data_dir is not None else dataset_dir(CLOTHING_SMALL)
    for split in SPLITS:
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"Training data not found: {root / split} is missing. Pass --data DIR, where DIR "
                "holds train/, validation/ and test/ folders of <category-slug>/ photo folders."
            )
    taxonomy = taxonomy or load_taxonomy()
    onnx_path = ensure_onnx(cache_dir)
    backbone = OnnxBackbone(onnx_path)
    began = time.perf_counter()
    features = {}
    for split in SPLITS:
        features[split] = extract_features(
            root / split, backbone, views=TRAINING_VIEWS, cache_dir=onnx_path.parent
        )
        log(f"{split}: {len(features[split])} photos, {len(features[split].rejected)} rejected")
    extracted = time.perf_counter()
    fit = LabelledFeatures.concatenate([features["train"], features["validation"]])
    seen = tail_trained_on()
    calibration = np.array([file_sha256(path) not in seen for path in fit.paths], dtype=bool)
    if seen:
        log(f"{int(calibration.sum())} photos the backbone's tuned tail never saw calibrate the head")
    head = fit_head(
        fit,
        taxonomy=taxonomy,
        backbone_version=backbone.version,
        version=version,
        calibration=calibration if calibration.any() else None,
        log=log,
    )
    fitted = time.perf_counter()
    head.metrics = {"clothing-small/test": evaluate_head(head, features["test"], taxonomy)}
    head.hyperparameters["fit_seconds"] = round(fitted - extracted, 1)
    log(f"test: {head.metrics['clothing-small/test']}")
    manifest = head.save(out_dir) if out_dir is not None else None
    if manifest is not None:
        log(f"wrote {manifest} and {manifest.with_suffix('.npz')}")
    return TrainingReport(
        head=head,
        manifest_path=manifest,
        extract_seconds=extracted - began,
        fit_seconds=fitted - extracted,
    )
