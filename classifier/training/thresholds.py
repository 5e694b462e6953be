"""Auto-accept thresholds of a candidate head from out-of-fold predictions of the full model.

Each fold's model (its logistic solution and centroids, with the final head's temperature and
gate) scores the fold's held-out training photos as the served model would (head, gate and
zero-shot together); on the calibrating photos among them, each category gets its own threshold
only where a 95 % lower confidence bound on its precision reaches the target, else its parent's
pooled one (``calibration.auto_accept_policy``). The registry's held-out photos stay untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from classifier.autoaccept import AutoAcceptPolicy
from classifier.calibration import auto_accept_policy, evaluation_metrics
from classifier.head import LinearHead
from classifier.taxonomy import Taxonomy
from classifier.training.outputs import LabelledOutputs, score_head
from classifier.training.probe import ProbeFit


def out_of_fold_predictions(
    head: LinearHead,
    probe: ProbeFit,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    taxonomy: Taxonomy,
    train: LabelledOutputs,
) -> tuple[list[str], np.ndarray]:
    """Top-1 slug and confidence (N,) of every row of ``train``, each from the model of the fold
    that held it out (``probe``'s fold solutions and centroids, ``head``'s other settings)."""
    predicted: list[str] = [""] * len(train)
    confidence = np.zeros(len(train))
    for fold, (_, held_rows) in enumerate(folds):
        weights, bias = probe.cross_validation.solutions[fold]
        fold_head = replace(
            head,
            version=f"{head.version}-fold{fold}",
            weights=weights.astype(np.float32),
            bias=bias.astype(np.float32),
            centroids=probe.fold_centroids[fold].astype(np.float32),
            hyperparameters={},
            metrics={},
        )
        slugs, values = score_head(fold_head, taxonomy, train.subset(held_rows))
        for row, slug, value in zip(held_rows, slugs, values, strict=True):
            predicted[row] = slug
            confidence[row] = value
    return predicted, confidence


def out_of_fold_policy(
    head: LinearHead,
    probe: ProbeFit,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    taxonomy: Taxonomy,
    train: LabelledOutputs,
    *,
    calibrating: np.ndarray,
    precision: float,
    min_support: int,
) -> tuple[AutoAcceptPolicy, dict[str, Any]]:
    """The auto-accept policy from the out-of-fold predictions of the ``calibrating`` rows (bool
    (N,)), and what it does on them: ``{"n", "accuracy", "ece", "auto_accept"}``
    (``calibration.evaluation_metrics``)."""
    predicted, confidence = out_of_fold_predictions(head, probe, folds, taxonomy, train)
    rows = np.flatnonzero(calibrating)
    labels = [train.labels[i] for i in rows]
    chosen = [predicted[i] for i in rows]
    policy = auto_accept_policy(
        labels,
        chosen,
        confidence[rows],
        classes=head.classes,
        parent_of={slug: taxonomy.parent(slug) for slug in taxonomy.slugs},
        precision=precision,
        min_support=min_support,
        calibration=f"out-of-fold predictions of {len(rows)} training photos",
    )
    figures = evaluation_metrics(
        labels, chosen, confidence[rows], classes=head.classes, thresholds=dict(policy.thresholds)
    )
    return policy, {key: figures[key] for key in ("n", "accuracy", "ece", "auto_accept")}
