"""The head's classifier: multinomial logistic regression (scikit-learn, L-BFGS, L2 penalty), with
its strength C chosen by cross-validation.

One implementation serves every training path. Objective: ``C · Σ wᵢ · cross-entropyᵢ + ½ ‖W‖²``
(the bias is not penalised), ``wᵢ`` the optional per-photo weights scaled to mean 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

C_GRID: tuple[float, ...] = (3.0, 10.0, 30.0)
#: L-BFGS iterations at most; the head's problems (a few thousand photos) converge well before.
MAX_ITERATIONS = 3000
#: BLAS threads while fitting. One: on a busy 2-core machine (load 5) a fit on clothing-small/train
#: (3,068 photos, 10 classes) took 0.4–0.6 s on one thread and 2–4 s on two, where the threads
#: only contend; the problem is too small to gain from more.
BLAS_THREADS = 1


def fit_logistic(
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    c: float,
    *,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fits the regression on ``features`` float (N, D) and ``targets`` int (N,) in
    ``[0, classes)``, each class present. Returns ``(weights float64 (classes, D), bias float64
    (classes,))``: softmax scores ``features @ weights.T + bias``. Deterministic.

    With two classes scikit-learn fits one logistic row ``d``; the two-class multinomial optimum
    is ``(−d/2, d/2)`` at twice the C, which is what is returned, so every class count optimises
    the same objective. Raises ``ValueError`` when a class has no row.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    present = np.unique(targets)
    if len(present) != classes or present[0] != 0 or present[-1] != classes - 1:
        raise ValueError(
            f"Every one of the {classes} classes needs a training row; found {present.tolist()}."
        )
    weight = None if sample_weight is None else sample_weight / np.mean(sample_weight)
    with threadpool_limits(limits=BLAS_THREADS):
        model = LogisticRegression(C=2.0 * c if classes == 2 else c, max_iter=MAX_ITERATIONS)
        model.fit(features, targets, weight)
    if classes == 2:
        row, offset = model.coef_[0] / 2.0, float(model.intercept_[0]) / 2.0
        return np.stack([-row, row]), np.array([-offset, offset])
    return np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)


def scores(features: np.ndarray, solution: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Softmax scores (logits) float64 (N, C) of ``features`` (N, D) under ``(weights, bias)``."""
    weights, bias = solution
    return np.asarray(features, dtype=np.float64) @ weights.T.astype(np.float64) + bias


@dataclass
class CrossValidation:
    """The C chosen by cross-validation and what it produced.

    ``accuracy``: its out-of-fold top-1 accuracy on the calibrating rows; ``accuracies``: that
    figure for every C of the grid (``{"3": 0.91, ...}``, rounded to 4 places); ``scores``:
    out-of-fold scores float64 (N, C) at the chosen C; ``solutions``: its ``(weights, bias)`` per fold.
    """

    c: float
    accuracy: float
    accuracies: dict[str, float]
    scores: np.ndarray
    solutions: list[tuple[np.ndarray, np.ndarray]]


def cross_validate(
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    c_grid: Sequence[float] = C_GRID,
    calibrating: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> CrossValidation:
    """Picks C from ``c_grid`` (in the given order; the first wins a tie) by out-of-fold accuracy
    on the ``calibrating`` rows (bool (N,), default all), fitting on each fold's ``fit_rows`` and
    scoring its ``held_rows`` (``folds.stratified_folds``)."""
    rows = np.ones(len(targets), bool) if calibrating is None else np.asarray(calibrating, bool)
    best: CrossValidation | None = None
    accuracies: dict[str, float] = {}
    for c in c_grid:
        out_of_fold = np.zeros((len(targets), classes), dtype=np.float64)
        solutions = []
        for fit_rows, held_rows in folds:
            weight = None if sample_weight is None else sample_weight[fit_rows]
            solution = fit_logistic(features[fit_rows], targets[fit_rows], classes, c, sample_weight=weight)
            solutions.append(solution)
            out_of_fold[held_rows] = scores(features[held_rows], solution)
        accuracy = float(np.mean(out_of_fold[rows].argmax(axis=1) == targets[rows]))
        accuracies[f"{c:g}"] = round(accuracy, 4)
        log(f"  C={c:g}: cross-validated accuracy {accuracy:.4f}")
        if best is None or accuracy > best.accuracy:
            best = CrossValidation(c, accuracy, accuracies, out_of_fold, solutions)
    if best is None:
        raise ValueError("The C grid is empty.")
    return best
