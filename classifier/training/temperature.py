"""Calibration of the head's softmax: one temperature dividing the scores."""

from __future__ import annotations

import numpy as np

from classifier.head import softmax

#: The temperature is searched in this range (bounded scalar minimisation of log T).
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(scores: np.ndarray, targets: np.ndarray) -> float:
    """The temperature ``T`` minimising the mean negative log-likelihood of ``softmax(scores / T)``
    for ``targets``; ``scores`` float (N, C) should be out-of-fold, ``targets`` int (N,). Needs scipy."""
    from scipy.optimize import minimize_scalar

    def nll(log_temperature: float) -> float:
        probabilities = softmax(scores / np.exp(log_temperature))
        return float(-np.mean(np.log(probabilities[np.arange(len(targets)), targets] + 1e-12)))

    low, high = TEMPERATURE_RANGE
    result = minimize_scalar(nll, bounds=(np.log(low), np.log(high)), method="bounded")
    return float(np.exp(result.x))


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 10) -> float:
    """Σ (share of photos) · |accuracy − mean confidence| over ``bins`` equal-width bins of top-1
    confidence; ``probabilities`` (N, C), ``targets`` int (N,)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(error)
