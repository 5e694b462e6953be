"""Training a candidate head from labelled backbone outputs, for the model registry.

Input: cached backbone outputs (embedding and ImageNet logits per photo, computed once per photo
and backbone version) with the category a person gave each photo, and a held-out mask. Output:
a ``LinearHead`` plus everything a model version records: hyperparameters, held-out metrics
(accuracy, per-category precision/recall/F1, confusion matrix, reliability bins, ECE) and the
auto-accept thresholds with their coverage.

Recipe: categories with at least ``min_photos`` labelled photos (leaves of the taxonomy, under one
common ancestor) → the serving head's feature transform → multinomial logistic regression fit
with full-batch L-BFGS (torch, one thread: the problem is small, and a second thread only adds
contention on a busy machine), L2 strength C picked by stratified k-fold cross-validation →
temperature fit on the out-of-fold scores → centroids and gate as in ``classifier.train`` →
auto-accept thresholds from the out-of-fold predictions of the full model (head, gate and
zero-shot together, as served), each category's only where a 95 % lower confidence bound on its
precision reaches the target, else its parent's pooled one (``calibration.auto_accept_policy``),
so the held-out photos stay untouched for the reported figures.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifier.calibration import auto_accept_policy, evaluation_metrics
from classifier.head import GateParameters, LinearHead, softmax, transform_embeddings
from classifier.model import ImageClassifier, ZeroShotScorer
from classifier.preprocess import View
from classifier.taxonomy import Taxonomy

C_GRID: tuple[float, ...] = (3.0, 10.0, 30.0)
FOLDS = 5
SEED = 0
MAX_ITERATIONS = 100
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


@dataclass
class LabelledOutputs:
    """Backbone outputs of labelled photos, row-aligned: ``embeddings`` float32 (N, D), ``logits``
    float32 (N, 1000), ``labels`` (category slugs) and ``keys`` (e.g. photo ids), length N."""

    embeddings: np.ndarray
    logits: np.ndarray
    labels: list[str]
    keys: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, rows: np.ndarray) -> LabelledOutputs:
        """The rows selected by a boolean mask or an index array."""
        index = np.flatnonzero(rows) if rows.dtype == bool else rows
        return LabelledOutputs(
            embeddings=self.embeddings[index],
            logits=self.logits[index],
            labels=[self.labels[i] for i in index],
            keys=[self.keys[i] for i in index],
        )


@dataclass
class Candidate:
    """A trained head and what the registry records about it.

    ``metrics["held_out"]``: ``calibration.evaluation_metrics`` on the held-out photos;
    ``metrics["cross_validated"]``: out-of-fold accuracy and auto-accept coverage on the training
    photos. ``held_out``: ``[(key, label), ...]`` scored for ``metrics["held_out"]``.
    ``excluded``: ``{slug: reason}`` for labelled categories left out. ``seconds``: phase timings.
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


def stratified_folds(targets: np.ndarray, folds: int, seed: int = SEED) -> list[np.ndarray]:
    """Row indices of ``folds`` held-out parts, each class spread evenly over them (shuffled with
    ``seed``). Every row is in exactly one part."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for value in np.unique(targets):
        rows = np.flatnonzero(targets == value)
        rng.shuffle(rows)
        for position, row in enumerate(rows):
            parts[(offset + position) % folds].append(int(row))
        offset += len(rows)
    return [np.array(sorted(part), dtype=np.int64) for part in parts]


def fit_logistic(
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    c: float,
    *,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    iterations: int = MAX_ITERATIONS,
    class_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression: minimises mean cross-entropy + ‖W‖² / (2·C·N) (the
    scikit-learn objective divided by N) with full-batch L-BFGS.

    ``features`` float32 (N, D), ``targets`` int (N,) in [0, classes). ``start``: initial
    ``(weights (C, D), bias (C,))``, e.g. the solution for a neighbouring C. Returns
    ``(weights float32 (C, D), bias float32 (C,))``. Deterministic on one thread.
    """
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        y = torch.from_numpy(np.asarray(targets, dtype=np.int64))
        if start is None:
            weights = torch.zeros(features.shape[1], classes)
            bias = torch.zeros(classes)
        else:
            weights = torch.tensor(np.asarray(start[0], dtype=np.float32).T.copy())
            bias = torch.tensor(np.asarray(start[1], dtype=np.float32).copy())
        weights.requires_grad_(True)
        bias.requires_grad_(True)
        penalty = 1.0 / (c * len(targets))
        balance = None if class_weights is None else torch.tensor(np.asarray(class_weights, dtype=np.float32))
        optimiser = torch.optim.LBFGS(
            [weights, bias],
            lr=1.0,
            max_iter=iterations,
            history_size=10,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-5,
            tolerance_change=1e-9,
        )

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weights + bias, y, weight=balance)
            loss = loss + 0.5 * penalty * (weights * weights).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        optimiser.step(closure)  # type: ignore[no-untyped-call]
        return weights.detach().numpy().T.copy(), bias.detach().numpy().copy()
    finally:
        torch.set_num_threads(previous_threads)


def _fit_temperature(scores: np.ndarray, targets: np.ndarray) -> float:
    from classifier.train import _fit_temperature

    return _fit_temperature(scores, targets)


def _centroids(features: np.ndarray, targets: np.ndarray, count: int) -> np.ndarray:
    means = np.stack([features[targets == k].mean(axis=0) for k in range(count)])
    return (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _full_model_top1(
    head: LinearHead, taxonomy: Taxonomy, data: LabelledOutputs
) -> tuple[list[str], np.ndarray]:
    classifier = ImageClassifier(head=head, taxonomy=taxonomy)
    scores = classifier.scores_from_outputs(data.embeddings, data.logits)
    columns = scores.argmax(axis=1)
    return [classifier.slugs[column] for column in columns], scores[np.arange(len(columns)), columns]


def score_head(head: LinearHead, taxonomy: Taxonomy, data: LabelledOutputs) -> tuple[list[str], np.ndarray]:
    """Top-1 category slug and its confidence per row, as the served model (head, gate and
    zero-shot together) would answer from these backbone outputs."""
    return _full_model_top1(head, taxonomy, data)


def train_candidate(
    data: LabelledOutputs,
    held_out: np.ndarray,
    *,
    taxonomy: Taxonomy,
    backbone_version: str,
    version: str,
    views: Sequence[View],
    feature_transform: str = "sqrt-l2",
    precision: float = 0.97,
    min_photos: int = DEFAULT_MIN_PHOTOS,
    min_support: int = 10,
    c_grid: Sequence[float] = C_GRID,
    folds: int = FOLDS,
    class_balance: float = CLASS_BALANCE,
    calibration: np.ndarray | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Candidate:
    """Fits a candidate head on the rows of ``data`` outside ``held_out`` (bool (N,)) and measures
    it on the rows inside. See the module docstring for the recipe.

    ``views`` must be the views the cached outputs were computed with (the serving head's), so
    the head predicts from the same kind of embedding it was trained on. ``calibration`` (bool
    (N,), default all rows): the photos whose outputs are unbiased, i.e. not among those a tuned
    backbone tail trained on; only they choose C and set the temperature, the gate and the
    thresholds (a tail's own training photos look easier than new ones). Raises ``ValueError``
    when fewer than two categories qualify or a category has too few training photos to fold.
    """
    began = time.perf_counter()
    held_out = np.asarray(held_out, dtype=bool)
    classes, excluded = select_classes(data.labels, taxonomy, min_photos)
    if len(classes) < 2:
        raise ValueError(
            f"Training needs at least two categories with {min_photos} or more labelled photos; "
            f"found {len(classes)} ({', '.join(classes) or 'none'})."
        )
    known = np.array([label in classes for label in data.labels], dtype=bool)
    unbiased = np.ones(len(data), bool) if calibration is None else np.asarray(calibration, dtype=bool)
    train = data.subset(known & ~held_out)
    test = data.subset(known & held_out)
    targets = np.array([classes.index(label) for label in train.labels])
    smallest = int(np.bincount(targets, minlength=len(classes)).min())
    folds = min(folds, smallest)
    if folds < 2:
        raise ValueError(
            "Every trained category needs at least two training photos outside the held-out split."
        )
    features = transform_embeddings(train.embeddings, feature_transform)
    counts = np.bincount(targets, minlength=len(classes)).astype(np.float64)
    class_weights = (counts.mean() / counts) ** class_balance
    parts = stratified_folds(targets, folds)
    calibrating = unbiased[known & ~held_out]
    if calibrating.sum() < MIN_CALIBRATION_PHOTOS or len(set(targets[calibrating])) < len(classes):
        calibrating = np.ones(len(targets), bool)
    log(
        f"training on {len(train)} photos of {len(classes)} categories ({int(calibrating.sum())} "
        f"calibrate), {len(test)} held out, {folds} folds"
    )

    # Cross-validation over C, warm-starting each fold from its solution for the previous C.
    best: tuple[float, float, np.ndarray, list[tuple[np.ndarray, np.ndarray]]] | None = None
    starts: list[tuple[np.ndarray, np.ndarray] | None] = [None] * folds
    cv_accuracy: dict[str, float] = {}
    for c in sorted(c_grid):
        scores = np.zeros((len(targets), len(classes)), dtype=np.float64)
        solutions = []
        for fold, rows in enumerate(parts):
            fit_rows = np.setdiff1d(np.arange(len(targets)), rows)
            weights, bias = fit_logistic(
                features[fit_rows],
                targets[fit_rows],
                len(classes),
                c,
                start=starts[fold],
                class_weights=class_weights,
            )
            starts[fold] = (weights, bias)
            solutions.append((weights, bias))
            scores[rows] = features[rows].astype(np.float64) @ weights.T.astype(np.float64) + bias
        accuracy = float(np.mean(scores[calibrating].argmax(axis=1) == targets[calibrating]))
        cv_accuracy[f"{c:g}"] = round(accuracy, 4)
        log(f"  C={c:g}: cross-validated accuracy {accuracy:.4f}")
        if best is None or accuracy > best[1]:
            best = (c, accuracy, scores, solutions)
    assert best is not None
    best_c, best_accuracy, oof_scores, fold_solutions = best
    temperature = _fit_temperature(oof_scores[calibrating], targets[calibrating])
    fitted = time.perf_counter()
    weights, bias = fit_logistic(
        features, targets, len(classes), best_c, start=fold_solutions[0], class_weights=class_weights
    )

    # Gate: centroid similarity as a held-out photo would see it (out of fold), zero-shot evidence.
    from classifier.train import GATE_TARGET_RECALL, fit_gate

    similarity = np.zeros(len(targets))
    fold_centroids = []
    for rows in parts:
        fit_rows = np.setdiff1d(np.arange(len(targets)), rows)
        centroids = _centroids(features[fit_rows], targets[fit_rows], len(classes))
        fold_centroids.append(centroids)
        similarity[rows] = (features[rows] @ centroids.T).max(axis=1)
    domain = taxonomy.lowest_common_ancestor(classes)
    assert domain is not None  # select_classes keeps one branch
    scorer = ZeroShotScorer(taxonomy)
    share = scorer.domain_evidence(train.logits, scorer.subtree_mask(domain))
    cosine_weight, cosine_threshold = fit_gate(similarity[calibrating], share[calibrating])
    gate = GateParameters(cosine_threshold=cosine_threshold, cosine_weight=cosine_weight)
    hyperparameters: dict[str, Any] = {
        "model": "multinomial logistic regression (L-BFGS, L2)",
        "C": best_c,
        "C_grid": sorted(c_grid),
        "cross_validated_accuracy": cv_accuracy,
        "folds": folds,
        "seed": SEED,
        "feature_transform": feature_transform,
        "class_balance": class_balance,
        "temperature": round(temperature, 4),
        "gate_target_recall": GATE_TARGET_RECALL,
        "min_photos_per_category": min_photos,
        "training_photos": len(train),
        "calibration_photos": int(calibrating.sum()),
    }
    head = LinearHead(
        version=version,
        backbone_version=backbone_version,
        classes=list(classes),
        weights=weights.astype(np.float32),
        bias=bias.astype(np.float32),
        centroids=_centroids(features, targets, len(classes)),
        temperature=temperature,
        feature_transform=feature_transform,
        gate=gate,
        views=tuple(views),
        hyperparameters=hyperparameters,
    )

    # Thresholds from out-of-fold predictions of the full model, as it is served.
    oof_predicted: list[str] = [""] * len(targets)
    oof_confidence = np.zeros(len(targets))
    for fold, rows in enumerate(parts):
        fold_head = LinearHead(
            version=f"{version}-fold{fold}",
            backbone_version=backbone_version,
            classes=list(classes),
            weights=fold_solutions[fold][0],
            bias=fold_solutions[fold][1],
            centroids=fold_centroids[fold],
            temperature=temperature,
            feature_transform=feature_transform,
            gate=gate,
            views=tuple(views),
        )
        predicted, confidence = score_head(fold_head, taxonomy, train.subset(rows))
        for row, slug, value in zip(rows, predicted, confidence, strict=True):
            oof_predicted[row] = slug
            oof_confidence[row] = value
    rows = np.flatnonzero(calibrating)
    calibration_labels = [train.labels[i] for i in rows]
    calibration_predicted = [oof_predicted[i] for i in rows]
    policy = auto_accept_policy(
        calibration_labels,
        calibration_predicted,
        oof_confidence[rows],
        classes=classes,
        parent_of={slug: taxonomy.parent(slug) for slug in taxonomy.slugs},
        precision=precision,
        min_support=min_support,
        calibration=f"out-of-fold predictions of {len(rows)} training photos",
    )
    head.auto_accept = policy
    thresholds = dict(policy.thresholds)
    cross_validated = evaluation_metrics(
        calibration_labels,
        calibration_predicted,
        oof_confidence[rows],
        classes=classes,
        thresholds=thresholds,
    )
    metrics: dict[str, Any] = {
        "cross_validated": {
            "n": cross_validated["n"],
            "accuracy": cross_validated["accuracy"],
            "ece": cross_validated["ece"],
            "auto_accept": cross_validated["auto_accept"],
        }
    }
    if len(test):
        predicted, confidence = score_head(head, taxonomy, test)
        metrics["held_out"] = evaluation_metrics(
            test.labels, predicted, confidence, classes=classes, thresholds=thresholds
        )
        summary = metrics["held_out"]
        log(f"held-out accuracy {summary['accuracy']:.4f}, auto-accept {summary['auto_accept']}")
    head.metrics = {
        "held_out": {key: metrics.get("held_out", {}).get(key) for key in ("n", "accuracy", "ece")}
    }
    finished = time.perf_counter()
    return Candidate(
        head=head,
        auto_accept_thresholds=thresholds,
        auto_accept_precision=precision,
        metrics=metrics,
        training_photos=len(train),
        held_out=list(zip(test.keys, test.labels, strict=True)),
        excluded=excluded,
        seconds={
            "cross_validation": round(fitted - began, 2),
            "fit_and_calibrate": round(finished - fitted, 2),
        },
    )


def held_out_probabilities(head: LinearHead, embeddings: np.ndarray) -> np.ndarray:
    """Head-only class probabilities (rows sum to 1), for diagnostics."""
    return softmax(head.logits(embeddings) / head.temperature)
