"""Held-out evaluation of a classifier: per-category precision/recall/F1, confusion matrix,
reliability diagram, expected calibration error, and the auto-accept thresholds.

Pure numpy. Inputs are per photo: the true label, the predicted label (top-1) and its confidence.

Auto-accept: for each category, the lowest confidence threshold ``t`` at which the predictions of
that category with confidence ``≥ t`` reach the target precision (e.g. 0.97) on held-out photos,
counting at least ``min_support`` such predictions. A suggestion of that category with confidence
``≥ t`` may then set a listing's category without a person; the rest wait for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class CategoryReport:
    """Precision, recall and F1 of one category (0 when undefined); ``support`` true photos."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ReliabilityBin:
    """Photos whose top-1 confidence lies in ``(lower, upper]``: how many, their mean confidence
    and their accuracy (both 0 for an empty bin)."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


@dataclass(frozen=True)
class AutoAcceptSummary:
    """What the thresholds do on a set of photos: ``coverage`` is the share of photos accepted,
    ``precision`` the share of accepted photos whose prediction was right (1.0 when none)."""

    photos: int
    accepted: int
    correct: int
    coverage: float
    precision: float


def _as_arrays(
    true: Sequence[str], predicted: Sequence[str], confidence: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    true_array = np.asarray(list(true), dtype=object)
    predicted_array = np.asarray(list(predicted), dtype=object)
    confidence_array = np.asarray(confidence, dtype=np.float64)
    if not len(true_array) == len(predicted_array) == len(confidence_array):
        raise ValueError("true, predicted and confidence must have the same length")
    return true_array, predicted_array, confidence_array


def auto_accept_thresholds(
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    *,
    precision: float,
    min_support: int = 1,
    prior_errors: float = 0.0,
) -> dict[str, float]:
    """Per predicted category, the lowest threshold ``t`` (one of the observed confidences) such
    that the photos predicted as that category with confidence ``≥ t`` number at least
    ``min_support`` and are right in a share ``≥ precision`` of cases.

    ``prior_errors`` counts that many extra wrong predictions above every threshold (precision
    estimated as right / (accepted + prior_errors)): on a small held-out set, the lowest
    threshold that happens to reach the target is an optimistic pick, and one assumed error makes
    a threshold need about 1 / (1 − precision) supporting photos before it is trusted.

    Categories where no threshold qualifies are absent (their suggestions are never
    auto-accepted). Returns ``{slug: t}``, sorted by slug.
    """
    true_array, predicted_array, confidence_array = _as_arrays(true, predicted, confidence)
    thresholds: dict[str, float] = {}
    for slug in sorted(set(predicted_array.tolist())):
        rows = predicted_array == slug
        scores = confidence_array[rows]
        right = (true_array[rows] == slug).astype(np.int64)
        order = np.argsort(-scores, kind="stable")
        scores, right = scores[order], right[order]
        # Accepting everything down to a distinct score means accepting every tie of it as well.
        last_of_tie = np.r_[scores[1:] != scores[:-1], True]
        counts = np.arange(1, len(scores) + 1)[last_of_tie]
        hits = np.cumsum(right)[last_of_tie]
        candidates = scores[last_of_tie]
        qualifies = (counts >= min_support) & (hits >= precision * (counts + prior_errors) - 1e-12)
        if qualifies.any():
            thresholds[slug] = float(candidates[qualifies].min())
    return thresholds


def pooled_threshold(
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    *,
    precision: float,
) -> float | None:
    """The lowest confidence ``t`` at which all predictions with confidence ``≥ t``, whatever
    their category, are right in a share ``≥ precision``; None when none qualifies."""
    pooled = auto_accept_thresholds(
        ["right" if t == p else "wrong" for t, p in zip(true, predicted, strict=True)],
        ["right"] * len(true),
        confidence,
        precision=precision,
    )
    return pooled.get("right")


def shrink_thresholds(
    thresholds: dict[str, float],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    *,
    floor: float | None,
    strong_support: int,
) -> dict[str, float]:
    """Raise to ``floor`` (the pooled threshold) every category threshold supported by fewer
    than ``strong_support`` predictions at or above it: a precision measured on a few dozen
    photos is too rough to trust below the pooled one. With no floor, such categories are
    dropped. Returns the new ``{slug: threshold}``."""
    predicted_array = np.asarray(list(predicted), dtype=object)
    scores = np.asarray(confidence, dtype=np.float64)
    result = {}
    for slug, threshold in thresholds.items():
        support = int(np.sum((predicted_array == slug) & (scores >= threshold)))
        if support >= strong_support:
            result[slug] = threshold
        elif floor is not None:
            result[slug] = max(threshold, floor)
    return result


def auto_accept_summary(
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    thresholds: dict[str, float],
) -> AutoAcceptSummary:
    """Coverage and precision of the auto-accepted predictions under ``thresholds``."""
    true_array, predicted_array, confidence_array = _as_arrays(true, predicted, confidence)
    limits = np.array([thresholds.get(slug, np.inf) for slug in predicted_array], dtype=np.float64)
    accepted = confidence_array >= limits
    correct = int(np.sum(accepted & (true_array == predicted_array)))
    count = int(accepted.sum())
    photos = len(true_array)
    return AutoAcceptSummary(
        photos=photos,
        accepted=count,
        correct=correct,
        coverage=count / photos if photos else 0.0,
        precision=correct / count if count else 1.0,
    )


def reliability_bins(
    correct: Sequence[bool] | np.ndarray, confidence: Sequence[float] | np.ndarray, bins: int = 10
) -> list[ReliabilityBin]:
    """Equal-width bins over (0, 1] of top-1 confidence; a confidence of exactly 0 goes to the first."""
    right = np.asarray(correct, dtype=bool)
    scores = np.asarray(confidence, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.ceil(scores * bins).astype(int) - 1, 0, bins - 1)
    result = []
    for position in range(bins):
        inside = index == position
        count = int(inside.sum())
        result.append(
            ReliabilityBin(
                lower=float(edges[position]),
                upper=float(edges[position + 1]),
                count=count,
                confidence=float(scores[inside].mean()) if count else 0.0,
                accuracy=float(right[inside].mean()) if count else 0.0,
            )
        )
    return result


def expected_calibration_error(bins: Sequence[ReliabilityBin]) -> float:
    """Σ (bin share of photos) · |accuracy − mean confidence| over the reliability bins."""
    total = sum(item.count for item in bins)
    if not total:
        return 0.0
    return float(sum(item.count / total * abs(item.accuracy - item.confidence) for item in bins))


def category_reports(
    true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
) -> dict[str, CategoryReport]:
    """Precision, recall and F1 per category of ``classes`` (exact matches of slugs)."""
    true_array = np.asarray(list(true), dtype=object)
    predicted_array = np.asarray(list(predicted), dtype=object)
    reports = {}
    for slug in classes:
        hits = int(np.sum((true_array == slug) & (predicted_array == slug)))
        support = int(np.sum(true_array == slug))
        claimed = int(np.sum(predicted_array == slug))
        precision = hits / claimed if claimed else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        reports[slug] = CategoryReport(precision=precision, recall=recall, f1=f1, support=support)
    return reports


def confusion_matrix(
    true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
) -> list[list[int]]:
    """Counts ``[row: true class][column: predicted]`` over ``classes`` plus a last column "other"
    for predictions outside ``classes`` (e.g. a zero-shot category)."""
    index = {slug: position for position, slug in enumerate(classes)}
    matrix = [[0] * (len(classes) + 1) for _ in classes]
    for truth, guess in zip(true, predicted, strict=True):
        if truth in index:
            matrix[index[truth]][index.get(guess, len(classes))] += 1
    return matrix


def evaluation_metrics(
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    *,
    classes: Sequence[str],
    thresholds: dict[str, float],
    bins: int = 10,
) -> dict[str, object]:
    """Every held-out figure a model version records, JSON-ready:
    ``n``, ``accuracy``, ``macro_f1``, ``per_category`` ({slug: {precision, recall, f1, support}}),
    ``confusion`` ({"classes": [...], "matrix": [[...]]}), ``reliability`` (list of bins), ``ece``,
    ``auto_accept`` (coverage and precision at ``thresholds``)."""
    true_list, predicted_list = list(true), list(predicted)
    right = np.array([t == p for t, p in zip(true_list, predicted_list, strict=True)], dtype=bool)
    reports = category_reports(true_list, predicted_list, classes)
    reliability = reliability_bins(right, confidence, bins)
    present = [report for report in reports.values() if report.support]
    return {
        "n": len(true_list),
        "accuracy": round(float(right.mean()) if len(right) else 0.0, 4),
        "macro_f1": round(float(np.mean([r.f1 for r in present])) if present else 0.0, 4),
        "per_category": {
            slug: {
                key: round(value, 4) if isinstance(value, float) else value
                for key, value in asdict(r).items()
            }
            for slug, r in reports.items()
        },
        "confusion": {
            "classes": list(classes),
            "matrix": confusion_matrix(true_list, predicted_list, classes),
        },
        "reliability": [asdict(item) for item in reliability],
        "ece": round(expected_calibration_error(reliability), 4),
        "auto_accept": asdict(auto_accept_summary(true_list, predicted_list, confidence, thresholds)),
    }
