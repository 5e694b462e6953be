"""Accuracy and throughput of a classifier on a labelled folder: ``python -m classifier evaluate``.

The folder holds ``<category-slug>/`` subfolders of photos (any depth). A prediction is correct
when it is the folder's category or one of its descendants (a "shoes" photo in ``fashion/`` counts).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class EvaluationReport:
    """Result of ``evaluate_folder``.

    ``confusion[true][predicted]`` counts photos, where ``predicted`` is the folder category the
    prediction falls under (or the predicted slug itself when it falls under none of them).
    ``images_per_second`` is wall-clock throughput including file reading and decoding.
    """

    accuracy: float
    n: int
    per_category: dict[str, CategoryMetrics]
    confusion: dict[str, dict[str, int]]
    model_version: str
    images_per_second: float
    seconds: float
    rejected: list[dict[str, str]] = field(default_factory=list)
    mistakes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary with keys ``accuracy``, ``n``, ``per_category``, ``confusion``,
        ``model_version``, ``images_per_second``, ``seconds``, ``rejected``, ``mistakes``."""
        return asdict(self)


def _folder_category(slug: str, folders: list[str], classifier: ImageClassifier) -> str:
    for folder in folders:
        if folder in classifier.taxonomy and classifier.taxonomy.is_descendant_or_self(slug, folder):
            return folder
    return slug


def evaluate_folder(
    root: str | os.PathLike[str], classifier: ImageClassifier, *, batch_size: int = MAX_BATCH
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

    results: list[Prediction | ImageRejected] = []
    began = time.perf_counter()
    for start in range(0, len(photos), batch_size):
        chunk = photos[start : start + batch_size]
        results.extend(classifier.classify([photo.path for photo in chunk], top_k=3))
    seconds = time.perf_counter() - began

    confusion: dict[str, dict[str, int]] = {slug: {} for slug in folders}
    rejected: list[dict[str, str]] = []
    mistakes: list[dict[str, Any]] = []
    correct_count = 0
    for photo, result in zip(photos, results, strict=True):
        if isinstance(result, ImageRejected):
            rejected.append({"path": str(photo.path), "reason": result.reason})
            continue
        bucket = _folder_category(result.category, folders, classifier)
        row = confusion[photo.label]
        row[bucket] = row.get(bucket, 0) + 1
        if bucket == photo.label:
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
    return EvaluationReport(
        accuracy=round(correct_count / n, 4) if n else 0.0,
        n=n,
        per_category=per_category,
        confusion=confusion,
        model_version=classifier.model_version,
        images_per_second=round(len(photos) / seconds, 1) if seconds > 0 else 0.0,
        seconds=round(seconds, 3),
        rejected=rejected,
        mistakes=mistakes,
    )


def format_report(report: EvaluationReport) -> str:
    """Human-readable summary: accuracy, per-category precision/recall, confusion matrix, speed."""
    folders = list(report.per_category)
    predicted_columns = sorted({c for row in report.confusion.values() for c in row} - set(folders))
    columns = folders + predicted_columns
    width = max(8, *(len(c) for c in columns)) + 1
    lines = [
        f"model: {report.model_version}",
        f"top-1 accuracy: {report.accuracy:.4f} ({report.n} photos, {len(report.rejected)} rejected)",
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
