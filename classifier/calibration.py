"""Held-out evaluation of a classifier: per-category precision/recall/F1, confusion matrix,
reliability diagram, expected calibration error, and the auto-accept thresholds.

Pure numpy. Inputs are per photo: the true label, the predicted label (top-1) and its confidence.

Auto-accept: for each category, the lowest confidence threshold ``t`` at which the predictions of
that category with confidence ``≥ t`` on held-out photos reach the target precision (e.g. 0.97)
with 95 % confidence (a one-sided Clopper–Pearson lower bound), else the threshold pooled over the
parent category's failing categories (``auto_accept_policy``). A suggestion of that category with
confidence ``≥ t`` may then set a listing's category without a person; the rest wait for one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from classifier.autoaccept import BOUND_METHOD, CONFIDENCE_LEVEL, AutoAcceptPolicy, auto_accepted


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


def precision_lower_bound(
    correct: int | np.ndarray, accepted: int | np.ndarray, *, level: float = CONFIDENCE_LEVEL
) -> np.ndarray:
    """One-sided ``level`` lower confidence bound on a precision measured as ``correct`` right of
    ``accepted`` (exact binomial, Clopper–Pearson): the ``1 − level`` quantile of
    Beta(correct, accepted − correct + 1); 0 where ``correct`` is 0. Element-wise over arrays;
    returns float64. Needs scipy."""
    from scipy.stats import beta

    k = np.asarray(correct, dtype=np.float64)
    n = np.asarray(accepted, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(1.0 - level, np.maximum(k, 1.0), np.maximum(n - k + 1.0, 1.0))
    return np.where(k > 0, bound, 0.0)


def auto_accept_thresholds(
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    *,
    precision: float,
    level: float | None = CONFIDENCE_LEVEL,
    min_support: int = 1,
) -> dict[str, float]:
    """Per predicted category, the lowest threshold ``t`` (one of the observed confidences) such
    that the photos predicted as that category with confidence ``≥ t`` number at least
    ``min_support`` and their precision reaches ``precision``: its one-sided ``level`` lower
    confidence bound (``precision_lower_bound``) does, or with ``level=None`` the measured share.

    The bound is what makes a threshold trustworthy on a small held-out set: the lowest threshold
    whose measured precision happens to reach 0.97 is an optimistic pick, while a bound of 0.97
    at 95 % needs at least 99 accepted photos with no error (about 150 with one).

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
        if level is None:
            reaches = hits >= precision * counts - 1e-12
        else:
            reaches = precision_lower_bound(hits, counts, level=level) >= precision - 1e-12
        qualifies = (counts >= min_support) & reaches
        if qualifies.any():
            thresholds[slug] = float(candidates[qualifies].min())
    return thresholds


def auto_accept_policy(
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    *,
    classes: Sequence[str],
    parent_of: Mapping[str, str | None],
    precision: float,
    level: float = CONFIDENCE_LEVEL,
    min_support: int = 1,
    calibration: str = "",
) -> AutoAcceptPolicy:
    """The auto-accept policy of a head whose ``classes`` were predicted as ``predicted`` with
    ``confidence`` on held-out photos labelled ``true`` (top-1 of the served model, one row per
    photo; photos no training step saw).

    A category whose own predictions reach ``precision`` at 95 % confidence (see
    ``auto_accept_thresholds``) keeps its own threshold (source ``"own"``). The others fall back
    to their parent category (``parent_of``): the predictions of all of that parent's failing
    categories are pooled and one threshold is chosen for the pool by the same rule, which each
    of them inherits (source: the parent's slug), so the precision of what they accept together
    is bounded as well; a pool that fails moves up to the grandparent, and so on. Categories that
    fail at every level, or were never predicted, never auto-accept.
    """
    true_array, predicted_array, confidence_array = _as_arrays(true, predicted, confidence)
    known = [slug for slug in classes if np.any(predicted_array == slug)]
    rows = np.isin(predicted_array, known)
    thresholds = auto_accept_thresholds(
        true_array[rows].tolist(),
        predicted_array[rows].tolist(),
        confidence_array[rows],
        precision=precision,
        level=level,
        min_support=min_support,
    )
    sources = dict.fromkeys(thresholds, "own")
    # Each failing category and the ancestor whose pool it tries next.
    pending = {slug: parent_of.get(slug) for slug in known if slug not in thresholds}
    while pending:
        groups: dict[str, list[str]] = {}
        for slug, ancestor in pending.items():
            if ancestor is not None:
                groups.setdefault(ancestor, []).append(slug)
        pending = {}
        for ancestor, members in sorted(groups.items()):
            pool = np.isin(predicted_array, members)
            right = np.where(true_array[pool] == predicted_array[pool], "right", "wrong")
            pooled = auto_accept_thresholds(
                right.tolist(),
                ["right"] * int(pool.sum()),
                confidence_array[pool],
                precision=precision,
                level=level,
                min_support=min_support,
            )
            if "right" in pooled:
                for slug in members:
                    thresholds[slug] = pooled["right"]
                    sources[slug] = ancestor
            else:
                pending.update({slug: parent_of.get(ancestor) for slug in members})
    return AutoAcceptPolicy(
        target_precision=precision,
        thresholds={slug: round(value, 6) for slug, value in sorted(thresholds.items())},
        confidence_level=level,
        method=BOUND_METHOD,
        sources=dict(sorted(sources.items())),
        calibration=calibration,
    )


def auto_accept_summary(
    true: Sequence[str],
    predicted: Sequence[str],
    confidence: Sequence[float] | np.ndarray,
    thresholds: Mapping[str, float],
) -> AutoAcceptSummary:
    """Coverage and precision of the predictions ``auto_accepted`` under ``thresholds``."""
    true_array, predicted_array, confidence_array = _as_arrays(true, predicted, confidence)
    accepted = np.array(
        [
            auto_accepted(str(slug), float(value), thresholds)
            for slug, value in zip(predicted_array, confidence_array, strict=True)
        ],
        dtype=bool,
    )
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
