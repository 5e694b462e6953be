"""Accuracy, calibration, auto-accept and throughput of a classifier on a labelled folder:
``python -m classifier evaluate``.

The folder holds ``<category-slug>/`` subfolders of photos (any depth). A prediction is correct
when it is the folder's category or one of its descendants (a "shoes" photo in ``fashion/`` counts).
Auto-accept figures apply the head's own policy (``classifier.autoaccept``: the thresholds the
registry serves, the rule the live path applies) to each photo's top-1.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from classifier.calibration import expected_calibration_error, reliability_bins
from classifier.features import list_labelled_photos
from classifier.model import MAX_BATCH, ImageClassifier, Prediction
from classifier.preprocess import ImageRejected


@dataclass(frozen=True)
class CategoryMetrics:
    """Precision and recall of one folder category; ``support`` is its number of photos.

    A prediction counts for category X when it is X or a descendant of X.
    """

    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class AutoAcceptFigures:
    """Photos whose top-1 cleared its category's threshold (``accepted``), how many of them were
    right (``correct``), ``precision`` = correct / accepted (1.0 when none) and ``coverage`` =
    accepted / photos."""

    precision: float
    coverage: float
    accepted: int
    correct: int


@dataclass
class EvaluationReport:
    """Result of ``evaluate_folder``.

    ``confusion[true][predicted]`` counts photos, where ``predicted`` is the folder category the
    prediction falls under (or the predicted slug itself when it falls under none of them).
    ``images_per_second`` is wall-clock throughput including file reading and decoding.
    ``top3``: share of photos whose folder category is among the top 3. ``ece``: expected
    calibration error of the top-1 confidence (10 equal-width bins). ``auto_accept``: the head's
    thresholds applied to each top-1 (see ``AutoAcceptFigures``); ``precision``: the backbone
    precision measured (``fp32`` or ``int8``).
    """

    accuracy: float
    n: int
    top3: float
    ece: float
    auto_accept: AutoAcceptFigures
    per_category: dict[str, CategoryMetrics]
    confusion: dict[str, dict[str, int]]
    model_version: str
    images_per_second: float
    seconds: float
    precision: str = ""
    rejected: list[dict[str, str]] = field(default_factory=list)
    mistakes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with keys ``accuracy``, ``n``, ``top3``, ``ece``, ``auto_accept``
        (``precision``, ``coverage``, ``accepted``, ``correct``), ``per_category``,
        ``confusion``, ``model_version``, ``images_per_second``, ``seconds``, ``precision``,
        ``rejected``, ``mistakes``."""
        return asdict(self)


def _folder_category(slug: str, folders: list[str], classifier: ImageClassifier) -> str:
    for folder in folders:
        if folder in classifier.taxonomy and classifier.taxonomy.is_descendant_or_self(slug, folder):
            return folder
    return slug


def _classify_in_batches(
    classifier: ImageClassifier, paths: list[Path], batch_size: int
) -> list[Prediction | ImageRejected]:
    """``classifier.classify`` (top-3) over ``paths`` in batches of ``batch_size``, in order."""
    results: list[Prediction | ImageRejected] = []
    for start in range(0, len(paths), batch_size):
        results.extend(classifier.classify(paths[start : start + batch_size], top_k=3))
    return results


def _per_category(confusion: dict[str, dict[str, int]], folders: list[str]) -> dict[str, CategoryMetrics]:
    """Precision, recall and support per folder from ``confusion`` ({true: {predicted: count}})."""
    per_category = {}
    for slug in folders:
        true_positive = confusion[slug].get(slug, 0)
        support = sum(confusion[slug].values())
        predicted = sum(row.get(slug, 0) for row in confusion.values())
        per_category[slug] = CategoryMetrics(
            precision=round(true_positive / predicted, 4) if predicted else 0.0,
            recall=round(true_positive / support, 4) if support else 0.0,
            support=support,
        )
    return per_category


def evaluate_folder(
    root: str | os.PathLike[str],
    classifier: ImageClassifier,
    *,
    batch_size: int = MAX_BATCH,
    precision: str = "",
) -> EvaluationReport:
    """Classifies every photo under ``root/<slug>/`` and measures top-1 accuracy.

    Photos that cannot be decoded are listed in ``rejected`` and excluded from ``n``. Raises
    ``FileNotFoundError`` for a missing folder and ``ValueError`` when it holds no photos or a
    folder name is not a taxonomy slug.
    """
    photos = list_labelled_photos(root)
    if not photos:
        raise ValueError(f"No photos found under {root}/<category-slug>/.")
    folders = sorted({photo.label for photo in photos})
    unknown = [slug for slug in folders if slug not in classifier.taxonomy]
    if unknown:
        raise ValueError(f"Folder names that are not taxonomy slugs: {unknown}.")

    began = time.perf_counter()
    results = _classify_in_batches(classifier, [photo.path for photo in photos], batch_size)
    seconds = time.perf_counter() - began

    confusion: dict[str, dict[str, int]] = {slug: {} for slug in folders}
    rejected: list[dict[str, str]] = []
    mistakes: list[dict[str, Any]] = []
    correct_count = top3_count = accepted_count = accepted_correct = 0
    confidences: list[float] = []
    rights: list[bool] = []
    policy = classifier.head.auto_accept
    for photo, result in zip(photos, results, strict=True):
        if isinstance(result, ImageRejected):
            rejected.append({"path": str(photo.path), "reason": result.reason})
            continue
        bucket = _folder_category(result.category, folders, classifier)
        row = confusion[photo.label]
        row[bucket] = row.get(bucket, 0) + 1
        right = bucket == photo.label
        confidences.append(result.confidence)
        rights.append(right)
        top3_count += any(
            _folder_category(score.slug, folders, classifier) == photo.label for score in result.top_k[:3]
        )
        if policy.accepts(result.category, result.confidence):
            accepted_count += 1
            accepted_correct += right
        if right:
            correct_count += 1
        else:
            mistakes.append(
                {
                    "path": str(photo.path),
                    "expected": photo.label,
                    "top_k": [[score.slug, round(score.confidence, 4)] for score in result.top_k],
                }
            )
    n = sum(sum(row.values()) for row in confusion.values())
    return EvaluationReport(
        accuracy=round(correct_count / n, 4) if n else 0.0,
        n=n,
        top3=round(top3_count / n, 4) if n else 0.0,
        ece=round(expected_calibration_error(reliability_bins(rights, confidences)), 4),
        auto_accept=AutoAcceptFigures(
            precision=round(accepted_correct / accepted_count, 4) if accepted_count else 1.0,
            coverage=round(accepted_count / n, 4) if n else 0.0,
            accepted=accepted_count,
            correct=accepted_correct,
        ),
        per_category=_per_category(confusion, folders),
        confusion=confusion,
        model_version=classifier.model_version,
        images_per_second=round(len(photos) / seconds, 1) if seconds > 0 else 0.0,
        seconds=round(seconds, 3),
        precision=precision,
        rejected=rejected,
        mistakes=mistakes,
    )


def format_report(report: EvaluationReport) -> str:
    """Human-readable summary: accuracy, per-category precision/recall, confusion matrix, speed."""
    folders = list(report.per_category)
    predicted_columns = sorted({c for row in report.confusion.values() for c in row} - set(folders))
    columns = folders + predicted_columns
    width = max(8, *(len(c) for c in columns)) + 1
    auto = report.auto_accept
    lines = [
        f"model: {report.model_version}" + (f" ({report.precision})" if report.precision else ""),
        f"top-1 accuracy: {report.accuracy:.4f} ({report.n} photos, {len(report.rejected)} rejected)",
        f"top-3 accuracy: {report.top3:.4f}; expected calibration error {report.ece:.4f}",
        f"auto-accept: precision {auto.precision:.4f} ({auto.correct} right of {auto.accepted}), "
        f"coverage {auto.coverage:.4f}",
        f"throughput: {report.images_per_second:.1f} images/s ({report.seconds:.2f} s, incl. decode)",
        "",
        f"{'category':<{width}}{'precision':>10}{'recall':>10}{'support':>9}",
    ]
    for slug, metrics in report.per_category.items():
        lines.append(f"{slug:<{width}}{metrics.precision:>10.4f}{metrics.recall:>10.4f}{metrics.support:>9d}")
    lines += [
        "",
        "confusion (rows: folder, columns: predicted)",
        " " * width + "".join(f"{c[: width - 1]:>{width}}" for c in columns),
    ]
    for slug in folders:
        row = report.confusion[slug]
        lines.append(f"{slug:<{width}}" + "".join(f"{row.get(c, 0):>{width}d}" for c in columns))
    for item in report.rejected:
        lines.append(f"rejected {Path(item['path']).name}: {item['reason']}")
    return "\n".join(lines)
