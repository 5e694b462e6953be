"""A linear probe on frozen embeddings: the steps every head training shares.

Transformed embeddings and their class targets → C by stratified cross-validation
(``logistic.cross_validate``) → temperature on the out-of-fold scores (``temperature``) → the
regression refitted on every row at that C → class centroids and the gate from out-of-fold
centroid similarity and zero-shot domain evidence (``gate``). Only the ``calibrating`` rows choose
C and set the temperature and the gate: photos a tuned backbone tail trained on look easier than
new ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from classifier.head import GateParameters
from classifier.training.gate import centroids, fit_gate, out_of_fold_similarity
from classifier.training.logistic import C_GRID, CrossValidation, cross_validate, fit_logistic
from classifier.training.temperature import fit_temperature


@dataclass
class ProbeFit:
    """What ``fit_probe`` produced. ``weights`` float64 (C, D), ``bias`` (C,), ``centroids``
    (C, D) unit length; ``fold_centroids``: the centroids of each fold's fitting rows (the
    out-of-fold models of ``cross_validation.solutions`` use them). ``cross_validation_seconds``:
    how long choosing C and the temperature took."""

    cross_validation: CrossValidation
    temperature: float
    weights: np.ndarray
    bias: np.ndarray
    centroids: np.ndarray
    fold_centroids: list[np.ndarray]
    gate: GateParameters
    cross_validation_seconds: float


def fit_probe(
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    domain_evidence: np.ndarray,
    calibrating: np.ndarray,
    c_grid: Sequence[float] = C_GRID,
    sample_weight: np.ndarray | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> ProbeFit:
    """Fits the probe on ``features`` float64 (N, D) (already transformed, see
    ``head.transform_embeddings``) with ``targets`` int (N,) in [0, classes), over ``folds``
    (``folds.stratified_folds``). ``domain_evidence`` (N,): ``gate.domain_evidence`` of the rows;
    ``calibrating`` bool (N,): the rows that choose C and set the temperature and the gate."""
    began = time.perf_counter()
    rows = np.asarray(calibrating, dtype=bool)
    cross_validation = cross_validate(
        features,
        targets,
        classes,
        folds,
        c_grid=c_grid,
        calibrating=rows,
        sample_weight=sample_weight,
        log=log,
    )
    temperature = fit_temperature(cross_validation.scores[rows], targets[rows])
    log(f"  chose C={cross_validation.c:g}; temperature {temperature:.3f}")
    cross_validated = time.perf_counter()
    weights, bias = fit_logistic(features, targets, classes, cross_validation.c, sample_weight=sample_weight)
    similarity, fold_centroids = out_of_fold_similarity(features, targets, classes, folds)
    gate = fit_gate(similarity[rows], domain_evidence[rows])
    log(f"  gate: cosine threshold {gate.cosine_threshold:.4f}, weight {gate.cosine_weight:g}")
    return ProbeFit(
        cross_validation=cross_validation,
        temperature=temperature,
        weights=weights,
        bias=bias,
        centroids=centroids(features, targets, classes),
        fold_centroids=fold_centroids,
        gate=gate,
        cross_validation_seconds=cross_validated - began,
    )
