"""Training a candidate head from labelled backbone outputs, for the model registry.

Input: cached backbone outputs (embedding and ImageNet logits per photo, computed once per photo
and backbone version) with the category a person gave each photo, and a held-out mask. Output:
a ``LinearHead`` plus everything a model version records: hyperparameters, held-out metrics
(accuracy, per-category precision/recall/F1, confusion matrix, reliability bins, ECE) and the
auto-accept thresholds with their coverage.

Recipe: categories with at least ``min_photos`` labelled photos (leaves of the taxonomy, under one
common ancestor) → the serving head's feature transform → the linear probe of
``classifier.training.probe`` (logistic regression with C by stratified k-fold cross-validation,
temperature, centroids, gate) → auto-accept thresholds from the out-of-fold predictions of the
full model (``classifier.training.thresholds``), so the held-out photos stay untouched for the
reported figures.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifier.calibration import evaluation_metrics
from classifier.head import LinearHead, transform_embeddings
from classifier.preprocess import View
from classifier.taxonomy import Taxonomy
from classifier.training.folds import FOLDS, SEED, stratified_folds
from classifier.training.gate import GATE_TARGET_RECALL, domain_evidence
from classifier.training.logistic import C_GRID
from classifier.training.outputs import LabelledOutputs, score_head
from classifier.training.probe import ProbeFit, fit_probe
from classifier.training.thresholds import out_of_fold_policy

DEFAULT_MIN_PHOTOS = 20
#: Class weights (mean count / class count) ** CLASS_BALANCE in the loss. 0 (unweighted), chosen
#: on out-of-fold predictions of clothing-small/validation (int8, shipped tail): accuracy 0.903 /
#: 0.900 / 0.909 at 0 / 0.5 / 1 (within two photos of 341), auto-accept coverage at the 0.97
#: bound 0.645 / 0.548 / 0.537. A new category with 20 labelled photos among ~300 per category
#: still reaches 0.79 recall.
CLASS_BALANCE = 0.0
#: With fewer unbiased photos than this (see ``train_candidate``), every photo calibrates.
MIN_CALIBRATION_PHOTOS = 100

# Why a category was left out of training (shown on the training run).
TOO_FEW_PHOTOS = "fewer than {minimum} labelled photos ({count})"
NOT_A_LEAF = "has subcategories: label its photos with one of them"
OUTSIDE_DOMAIN = "outside {domain}, the part of the tree with most labelled photos"
UNKNOWN_CATEGORY = "not in the taxonomy"


@dataclass(frozen=True)
class CandidateConfig:
    """How to train a candidate head.

    ``views`` must be the views the cached outputs were computed with (the serving head's), so
    the head predicts from the same kind of embedding it was trained on; ``feature_transform``
    likewise. ``precision``: the auto-accept target precision, bounded at 95 % confidence, with
    at least ``min_support`` accepted photos. ``min_photos``: labelled photos a category needs
    to train. ``c_grid``, ``folds``, ``class_balance``: see ``logistic``, ``folds`` and
    ``CLASS_BALANCE``.
    """

    backbone_version: str
    version: str
    views: tuple[View, ...]
    feature_transform: str = "sqrt-l2"
    precision: float = 0.97
    min_photos: int = DEFAULT_MIN_PHOTOS
    min_support: int = 10
    c_grid: tuple[float, ...] = C_GRID
    folds: int = FOLDS
    class_balance: float = CLASS_BALANCE


@dataclass
class Candidate:
    """A trained head and what the registry records about it.

    ``metrics["held_out"]``: ``calibration.evaluation_metrics`` on the held-out photos;
    ``metrics["cross_validated"]``: out-of-fold accuracy and auto-accept coverage on the training
    photos. ``held_out``: ``[(key, label), ...]`` scored for ``metrics["held_out"]``.
    ``excluded``: ``{slug: reason}`` for labelled categories left out. ``seconds``: phase timings,
    ``cross_validation`` (the split, C and the temperature) and ``fit_and_calibrate`` (the final
    fit, the gate, the thresholds and the held-out figures).
    """

    head: LinearHead
    auto_accept_thresholds: dict[str, float]
    auto_accept_precision: float
    metrics: dict[str, Any]
    training_photos: int
    held_out: list[tuple[int, str]]
    excluded: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def select_classes(
    labels: Sequence[str], taxonomy: Taxonomy, min_photos: int
) -> tuple[list[str], dict[str, str]]:
    """The categories to train on, sorted, and ``{slug: reason}`` for the others.

    A category is trained when it is a leaf of ``taxonomy`` with at least ``min_photos`` labelled
    photos; when the trained categories would span several top-level branches, only the branch
    with most labelled photos is kept (a head serves one domain, see ``classifier.model``).
    """
    counts = Counter(labels)
    excluded: dict[str, str] = {}
    kept = []
    for slug, count in sorted(counts.items()):
        if slug not in taxonomy:
            excluded[slug] = UNKNOWN_CATEGORY
        elif taxonomy.children(slug):
            excluded[slug] = NOT_A_LEAF
        elif count < min_photos:
            excluded[slug] = TOO_FEW_PHOTOS.format(minimum=min_photos, count=count)
        else:
            kept.append(slug)
    if kept and taxonomy.lowest_common_ancestor(kept) is None:
        roots: Counter[str] = Counter()
        for slug in kept:
            roots[taxonomy.root(slug)] += counts[slug]
        domain = roots.most_common(1)[0][0]
        for slug in list(kept):
            if taxonomy.root(slug) != domain:
                kept.remove(slug)
                excluded[slug] = OUTSIDE_DOMAIN.format(domain=domain)
    return kept, excluded


@dataclass
class _Split:
    """The rows that train (``train``, with ``targets`` and ``calibrating``) and those held out."""

    classes: list[str]
    excluded: dict[str, str]
    train: LabelledOutputs
    test: LabelledOutputs
    targets: np.ndarray
    calibrating: np.ndarray
    folds: int


def _split(
    data: LabelledOutputs,
    held_out: np.ndarray,
    calibration: np.ndarray | None,
    config: CandidateConfig,
    taxonomy: Taxonomy,
) -> _Split:
    classes, excluded = select_classes(data.labels, taxonomy, config.min_photos)
    if len(classes) < 2:
        raise ValueError(
            f"Training needs at least two categories with {config.min_photos} or more labelled photos; "
            f"found {len(classes)} ({', '.join(classes) or 'none'})."
        )
    known = np.array([label in classes for label in data.labels], dtype=bool)
    unbiased = np.ones(len(data), bool) if calibration is None else np.asarray(calibration, dtype=bool)
    train = data.subset(known & ~held_out)
    targets = np.array([classes.index(label) for label in train.labels])
    folds = min(config.folds, int(np.bincount(targets, minlength=len(classes)).min()))
    if folds < 2:
        raise ValueError(
            "Every trained category needs at least two training photos outside the held-out split."
        )
    calibrating = unbiased[known & ~held_out]
    if calibrating.sum() < MIN_CALIBRATION_PHOTOS or len(set(targets[calibrating])) < len(classes):
        calibrating = np.ones(len(targets), bool)
    return _Split(classes, excluded, train, data.subset(known & held_out), targets, calibrating, folds)


def _head(split: _Split, probe: ProbeFit, config: CandidateConfig) -> LinearHead:
    hyperparameters: dict[str, Any] = {
        "model": "multinomial logistic regression (scikit-learn lbfgs, L2)",
        "C": probe.cross_validation.c,
        "C_grid": sorted(config.c_grid),
        "cross_validated_accuracy": probe.cross_validation.accuracies,
        "folds": split.folds,
        "seed": SEED,
        "feature_transform": config.feature_transform,
        "class_balance": config.class_balance,
        "temperature": round(probe.temperature, 4),
        "gate_target_recall": GATE_TARGET_RECALL,
        "min_photos_per_category": config.min_photos,
        "training_photos": len(split.train),
        "calibration_photos": int(split.calibrating.sum()),
    }
    return LinearHead(
        version=config.version,
        backbone_version=config.backbone_version,
        classes=list(split.classes),
        weights=probe.weights.astype(np.float32),
        bias=probe.bias.astype(np.float32),
        centroids=probe.centroids.astype(np.float32),
        temperature=probe.temperature,
        feature_transform=config.feature_transform,
        gate=probe.gate,
        views=tuple(config.views),
        hyperparameters=hyperparameters,
    )


def train_candidate(
    data: LabelledOutputs,
    held_out: np.ndarray,
    *,
    taxonomy: Taxonomy,
    config: CandidateConfig,
    calibration: np.ndarray | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Candidate:
    """Fits a candidate head on the rows of ``data`` outside ``held_out`` (bool (N,)) and measures
    it on the rows inside. See the module docstring for the recipe.

    ``calibration`` (bool (N,), default all rows): the photos whose outputs are unbiased, i.e. not
    among those a tuned backbone tail trained on; only they choose C and set the temperature, the
    gate and the thresholds (a tail's own training photos look easier than new ones). Raises
    ``ValueError`` when fewer than two categories qualify or a category has too few training
    photos to fold.
    """
    began = time.perf_counter()
    split = _split(data, np.asarray(held_out, dtype=bool), calibration, config, taxonomy)
    log(
        f"training on {len(split.train)} photos of {len(split.classes)} categories "
        f"({int(split.calibrating.sum())} calibrate), {len(split.test)} held out, {split.folds} folds"
    )
    counts = np.bincount(split.targets, minlength=len(split.classes)).astype(np.float64)
    balance = (counts.mean() / counts) ** config.class_balance
    folds = stratified_folds(split.targets, split.folds, SEED)
    features = transform_embeddings(split.train.embeddings, config.feature_transform).astype(np.float64)
    prepared = time.perf_counter()
    probe = fit_probe(
        features,
        split.targets,
        len(split.classes),
        folds,
        domain_evidence=domain_evidence(taxonomy, split.classes, split.train.logits),
        calibrating=split.calibrating,
        c_grid=sorted(config.c_grid),
        sample_weight=None if config.class_balance == 0 else balance[split.targets],
        log=log,
    )
    # Phase timings: the split, the features, C and the temperature; then the rest.
    cross_validation = prepared - began + probe.cross_validation_seconds
    head = _head(split, probe, config)
    head.auto_accept, out_of_fold = out_of_fold_policy(
        head,
        probe,
        folds,
        taxonomy,
        split.train,
        calibrating=split.calibrating,
        precision=config.precision,
        min_support=config.min_support,
    )
    thresholds = dict(head.auto_accept.thresholds)
    metrics: dict[str, Any] = {"cross_validated": out_of_fold}
    if len(split.test):
        predicted, confidence = score_head(head, taxonomy, split.test)
        metrics["held_out"] = evaluation_metrics(
            split.test.labels, predicted, confidence, classes=split.classes, thresholds=thresholds
        )
        summary = metrics["held_out"]
        log(f"held-out accuracy {summary['accuracy']:.4f}, auto-accept {summary['auto_accept']}")
    head.metrics = {
        "held_out": {key: metrics.get("held_out", {}).get(key) for key in ("n", "accuracy", "ece")}
    }
    return Candidate(
        head=head,
        auto_accept_thresholds=thresholds,
        auto_accept_precision=config.precision,
        metrics=metrics,
        training_photos=len(split.train),
        held_out=list(zip(split.test.keys, split.test.labels, strict=True)),
        excluded=split.excluded,
        seconds={
            "cross_validation": round(cross_validation, 2),
            "fit_and_calibrate": round(time.perf_counter() - began - cross_validation, 2),
        },
    )
