"""Fits the head on labelled photos: ``python -m classifier train``.

Recipe (frozen backbone, linear probe): embeddings of ``train/`` + ``validation/`` →
``sqrt-l2`` transform → multinomial logistic regression (L2 penalty, C picked by 5-fold
cross-validation) → temperature fit on out-of-fold scores (minimum negative log-likelihood) →
gate statistics from out-of-fold centroid similarities → metrics on ``test/``. Deterministic:
fixed fold seed, deterministic solver. Needs scikit-learn and scipy (training only).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.backbone import OnnxBackbone, ensure_onnx, tail_trained_on
from classifier.datasets import CLOTHING_SMALL, dataset_dir
from classifier.features import LabelledFeatures, extract_features
from classifier.head import (
    ARTIFACTS_DIR,
    DEFAULT_HEAD_VERSION,
    GateParameters,
    LinearHead,
    softmax,
    transform_embeddings,
)
from classifier.model import ImageClassifier, ZeroShotScorer
from classifier.preprocess import RESIZE_RATIO, View
from classifier.taxonomy import Taxonomy, load_taxonomy

SPLITS = ("train", "validation", "test")
FEATURE_TRANSFORM = "sqrt-l2"
#: Two crops averaged: the whole shorter side, and the ImageNet 87.5 % crop mirrored. Picked by
#: cross-validation on train + validation (0.894 vs 0.877 for the single ImageNet crop).
TRAINING_VIEWS = (View(resize_ratio=1.0, mirror=False), View(resize_ratio=RESIZE_RATIO, mirror=True))
C_GRID = (3.0, 10.0, 30.0)
FOLDS = 5
SEED = 0
#: Share of training photos the gate must keep in the domain (g ≥ 0.5).
GATE_TARGET_RECALL = 0.98


@dataclass
class TrainingReport:
    """What ``train_head`` produced: the head, where it was written, and how long phases took (s)."""

    head: LinearHead
    manifest_path: Path | None
    extract_seconds: float
    fit_seconds: float


def _sha256(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fold_indices(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    return list(folds.split(np.zeros(len(labels)), labels))


def _logistic_regression(c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=3000)


def _fit_temperature(scores: np.ndarray, targets: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    def nll(log_temperature: float) -> float:
        probabilities = softmax(scores / np.exp(log_temperature))
        return float(-np.mean(np.log(probabilities[np.arange(len(targets)), targets] + 1e-12)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def _centroids(features: np.ndarray, targets: np.ndarray, count: int) -> np.ndarray:
    means = np.stack([features[targets == k].mean(axis=0) for k in range(count)])
    return means / np.linalg.norm(means, axis=1, keepdims=True)


def _expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)


def fit_gate(similarity: np.ndarray, share: np.ndarray) -> tuple[float, float]:
    """Gate parameters ``(cosine_weight, cosine_threshold)`` from in-domain training photos.

    ``similarity``: out-of-fold centroid cosine similarity (N,); ``share``: zero-shot domain
    evidence (N,), see ``ZeroShotScorer.domain_evidence``. The weight makes the cosine term fall
    from 0.5 to 0.1 over one standard deviation of the similarity; the threshold is the highest
    that still keeps ``GATE_TARGET_RECALL`` of the photos at ``g ≥ 0.5``, so photos from elsewhere
    need to look that much like the training photos.
    """
    weight = float(np.log(9.0) / max(float(np.std(similarity)), 1e-6))
    candidates = np.sort(similarity)[::-1]
    threshold = float(candidates[-1])
    for candidate in candidates:
        resemblance = 1.0 / (1.0 + np.exp(-weight * (similarity - candidate)))
        gate = 1.0 - (1.0 - share) * (1.0 - resemblance)
        if float(np.mean(gate >= 0.5)) >= GATE_TARGET_RECALL:
            threshold = float(candidate)
            break
    return weight, threshold


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
    slug or fewer than two classes are present.
    """
    classes = sorted(set(fit.labels))
    if len(classes) < 2:
        raise ValueError(f"Need photos of at least two categories, found {classes}.")
    unknown = [slug for slug in classes if slug not in taxonomy]
    if unknown:
        raise ValueError(f"Folder names that are not taxonomy slugs: {unknown}.")
    targets = np.array([classes.index(label) for label in fit.labels])
    features = transform_embeddings(fit.embeddings, FEATURE_TRANSFORM).astype(np.float64)
    folds = _fold_indices(targets)
    calibrating = np.ones(len(targets), bool) if calibration is None else np.asarray(calibration, bool)

    # Out-of-fold scores for every C: the best C by accuracy, its scores for the temperature.
    best_c, best_accuracy, best_scores = C_GRID[0], -1.0, np.zeros((len(targets), len(classes)))
    for c in C_GRID:
        scores = np.zeros((len(targets), len(classes)))
        for fit_rows, held_rows in folds:
            model = _logistic_regression(c).fit(features[fit_rows], targets[fit_rows])
            scores[held_rows] = model.decision_function(features[held_rows])
        accuracy = float(np.mean(scores[calibrating].argmax(axis=1) == targets[calibrating]))
        log(f"  C={c:g}: cross-validated accuracy {accuracy:.4f}")
        if accuracy > best_accuracy:
            best_c, best_accuracy, best_scores = c, accuracy, scores
    temperature = _fit_temperature(best_scores[calibrating], targets[calibrating])
    log(f"  chose C={best_c:g}; temperature {temperature:.3f}")
    model = _logistic_regression(best_c).fit(features, targets)

    # Centroid similarity as a held-out photo would see it, so the threshold is not optimistic.
    similarity = np.zeros(len(targets))
    for fit_rows, held_rows in folds:
        fold_centroids = _centroids(features[fit_rows], targets[fit_rows], len(classes))
        similarity[held_rows] = (features[held_rows] @ fold_centroids.T).max(axis=1)
    scorer = ZeroShotScorer(taxonomy)
    domain = taxonomy.lowest_common_ancestor(classes)
    if domain is None:
        raise ValueError(f"Categories {classes} share no taxonomy ancestor.")
    share = scorer.domain_evidence(fit.logits, scorer.subtree_mask(domain))
    weight, threshold = fit_gate(similarity[calibrating], share[calibrating])
    log(f"  gate: cosine threshold {threshold:.4f}, weight {weight:g}")

    return LinearHead(
        version=version,
        backbone_version=backbone_version,
        classes=classes,
        weights=model.coef_.astype(np.float32),
        bias=model.intercept_.astype(np.float32),
        centroids=_centroids(features, targets, len(classes)).astype(np.float32),
        temperature=temperature,
        feature_transform=FEATURE_TRANSFORM,
        gate=GateParameters(cosine_threshold=threshold, cosine_weight=weight),
        views=TRAINING_VIEWS,
        hyperparameters={
            "model": "multinomial logistic regression (scikit-learn lbfgs, L2)",
            "C": best_c,
            "C_grid": list(C_GRID),
            "folds": FOLDS,
            "seed": SEED,
            "feature_transform": FEATURE_TRANSFORM,
            "cross_validated_accuracy": round(best_accuracy, 4),
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
        "ece": round(_expected_calibration_error(probabilities, targets), 4),
        "ece_before_temperature": round(_expected_calibration_error(uncalibrated, targets), 4),
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
    calibration = np.array([_sha256(path) not in seen for path in fit.paths], dtype=bool)
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
