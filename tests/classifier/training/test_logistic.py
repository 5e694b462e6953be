"""The probe's steps: stratified folds, the logistic regression (two classes optimise the same
objective as more), and the temperature fit."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.head import softmax
from classifier.training.folds import stratified_folds
from classifier.training.logistic import cross_validate, fit_logistic, scores
from classifier.training.temperature import fit_temperature


def test_folds_hold_every_row_once_and_spread_each_class() -> None:
    targets = np.array([0] * 10 + [1] * 5 + [2] * 3)
    folds = stratified_folds(targets, 3)
    held = np.concatenate([rows for _, rows in folds])
    assert sorted(held.tolist()) == list(range(18))
    for fit_rows, held_rows in folds:
        assert sorted(np.concatenate([fit_rows, held_rows]).tolist()) == list(range(18))
        counts = np.bincount(targets[held_rows], minlength=3)
        assert counts[0] in (3, 4) and counts[1] in (1, 2) and counts[2] == 1
    # and the same seed gives the same folds
    again = stratified_folds(targets, 3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def _objective_gradient(
    features: np.ndarray, targets: np.ndarray, weights: np.ndarray, bias: np.ndarray, c: float
) -> np.ndarray:
    """Gradient of C · Σ cross-entropy + ½ ‖W‖² with respect to (W, b), flattened."""
    probabilities = softmax(features @ weights.T + bias)
    probabilities[np.arange(len(targets)), targets] -= 1.0
    return np.concatenate([(c * probabilities.T @ features + weights).ravel(), c * probabilities.sum(axis=0)])


@pytest.mark.parametrize("classes", [2, 3])
def test_logistic_regression_minimises_the_multinomial_objective(classes: int) -> None:
    # given a small problem with two or three classes
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 8))
    targets = (features[:, 0] > 0.3).astype(int) + (classes == 3) * (features[:, 1] > 0.5).astype(int)

    # when it is fitted with C = 2
    weights, bias = fit_logistic(features, targets, classes, 2.0)

    # then one row per class, at the multinomial optimum (the gradient vanishes), also for two
    assert weights.shape == (classes, 8) and bias.shape == (classes,)
    gradient = _objective_gradient(features, targets, weights, bias, 2.0)
    assert np.abs(gradient).max() < 1e-2 * 120


def test_a_missing_class_is_refused() -> None:
    features = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="Every one of the 3 classes"):
        fit_logistic(features, np.array([0, 1] * 5), 3, 1.0)


def test_cross_validation_scores_every_row_out_of_fold_and_keeps_the_best_c() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(90, 5))
    targets = np.repeat([0, 1, 2], 30)
    features[:, 0] += 2 * targets
    folds = stratified_folds(targets, 3)

    result = cross_validate(features, targets, 3, folds, c_grid=(0.01, 1.0))

    assert set(result.accuracies) == {"0.01", "1"}
    assert round(result.accuracy, 4) == max(result.accuracies.values())
    assert result.accuracy == np.mean(result.scores.argmax(axis=1) == targets)
    _, held_rows = folds[0]
    np.testing.assert_allclose(result.scores[held_rows], scores(features[held_rows], result.solutions[0]))


def test_temperature_fit_recovers_a_known_temperature() -> None:
    # given labels drawn from softmax(scores / 2)
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(4000, 5))
    probabilities = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(5, p=row) for row in probabilities])
    # then the fitted temperature is close to 2
    assert fit_temperature(logits, targets) == pytest.approx(2.0, rel=0.1)
