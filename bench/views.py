"""When a second view pays: `python -m bench.views [--precision int8|fp32] [--model HEAD.json]`.

Runs each of the head's views of every photo of clothing-small/validation through the served
backbone once, then replays ``classifier.views.run_views`` (the code workers run) over those
outputs for a grid of margins: for each, the share of photos given the other views, backbone runs
per photo, top-1 accuracy, agreement of the top-1 category with always running every view, and
the precision and coverage of auto-accepted photos at the head's own thresholds
(``LinearHead.auto_accept``). The margin chosen is the one with the fewest backbone runs per
photo whose top-1 accuracy and auto-accept precision are within 0.3 points of every-view (not
below by more); margin 0 when the first view alone meets that, i.e. the other views never pay.
Agreement and coverage are reported, not part of the rule.

Validation chooses; clothing-small/test is reported for the chosen margin only, as a check it
never influences. Writes `bench/views-results.json` and the "Second view" section of
docs/BENCHMARKS.md; needs ../shared/datasets/clothing-small.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.datasets import CLOTHING_SMALL, dataset_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET = dataset_dir(CLOTHING_SMALL)
RESULTS = REPO_ROOT / "bench" / "views-results.json"
DOC = REPO_ROOT / "docs" / "BENCHMARKS.md"
SECTION = "## Second view"
MARGINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 1.0)
#: Tolerances of the choice, in points (percent of photos).
MAX_DIFFERENCE_POINTS = 0.3


@dataclass(frozen=True)
class PolicyRow:
    """What one margin does on a split (shares in [0, 1])."""

    margin: float
    more_views_share: float
    backbone_runs_per_photo: float
    accuracy: float
    agreement: float
    auto_accept_precision: float
    auto_accept_coverage: float


def view_outputs(
    split: str, precision: str, head_path: str | None
) -> tuple[Any, list[str], list[np.ndarray]]:
    """The classifier (served precision, CPU) and, per head view, float32 outputs of every photo
    of the split: ``(classifier, labels, [embeddings_v, logits_v for each view])``."""
    from classifier.__main__ import _load_at_precision
    from classifier.features import list_labelled_photos
    from classifier.preprocess import load_image, to_batch

    classifier = _load_at_precision(head_path, None, None, precision)
    photos = list_labelled_photos(DATASET / split)
    images = [load_image(photo.path) for photo in photos]
    arrays: list[np.ndarray] = []
    for view in classifier.head.views:
        embeddings, logits = [], []
        for start in range(0, len(images), 16):
            batch = to_batch(images[start : start + 16], resize_ratio=view.resize_ratio, mirror=view.mirror)
            e, lg = classifier.backbone.run(batch)
            embeddings.append(e)
            logits.append(lg)
        arrays += [np.concatenate(embeddings), np.concatenate(logits)]
    return classifier, [photo.label for photo in photos], arrays


def replay(classifier: Any, arrays: Sequence[np.ndarray], policy: Any) -> Any:
    """``classifier.views.run_views`` on stored outputs: the 'network' looks each input up by the
    photo and view numbers written into its first pixels."""
    from classifier.views import run_views

    count = len(arrays[0])
    views = len(arrays) // 2
    first_index = policy.first_index(views)
    others = [index for index in range(views) if index != first_index]

    def tagged(rows: Sequence[int], view: int) -> np.ndarray:
        batch = np.zeros((len(rows), 2, 1, 1), np.float32)
        batch[:, 0, 0, 0], batch[:, 1, 0, 0] = rows, view
        return batch

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, view = batch[:, 0, 0, 0].astype(int), batch[:, 1, 0, 0].astype(int)
        return (
            np.stack([arrays[2 * v][r] for r, v in zip(rows, view, strict=True)]),
            np.stack([arrays[2 * v + 1][r] for r, v in zip(rows, view, strict=True)]),
        )

    return run_views(
        tagged(range(count), first_index),
        lambda rows: np.concatenate([tagged(rows, view) for view in others]),
        view_count=views,
        run=run,
        score=classifier.scores_from_outputs,
        policy=policy,
    )


def policy_row(
    classifier: Any, labels: Sequence[str], arrays: Sequence[np.ndarray], margin: float
) -> PolicyRow:
    from classifier.calibration import auto_accept_summary
    from classifier.views import ViewPolicy

    outputs = replay(classifier, arrays, ViewPolicy(second_view_margin=margin))
    every = replay(classifier, arrays, ViewPolicy(second_view_margin=1.0))
    predicted = [classifier.slugs[column] for column in outputs.scores.argmax(axis=1)]
    right = [classifier.taxonomy.is_descendant_or_self(p, t) for p, t in zip(predicted, labels, strict=True)]
    thresholds = dict(classifier.head.auto_accept.thresholds)
    accepted = auto_accept_summary(labels, predicted, outputs.scores.max(axis=1), thresholds)
    return PolicyRow(
        margin=margin,
        more_views_share=float(np.mean(outputs.views > 1)),
        backbone_runs_per_photo=float(np.mean(outputs.views)),
        accuracy=float(np.mean(right)),
        agreement=float(np.mean(outputs.scores.argmax(axis=1) == every.scores.argmax(axis=1))),
        auto_accept_precision=accepted.precision,
        auto_accept_coverage=accepted.coverage,
    )


def acceptable(row: PolicyRow, every: PolicyRow) -> bool:
    """Top-1 accuracy and auto-accept precision no more than ``MAX_DIFFERENCE_POINTS`` below
    every-view's."""
    tolerance = MAX_DIFFERENCE_POINTS / 100 + 1e-9
    return (
        row.accuracy >= every.accuracy - tolerance
        and row.auto_accept_precision >= every.auto_accept_precision - tolerance
    )


def choose(rows: Sequence[PolicyRow]) -> PolicyRow:
    """Of the rows acceptable against the every-view row (the last, margin 1), the one with the
    fewest backbone runs per photo (the smaller margin on a tie)."""
    every = rows[-1]
    candidates = [row for row in rows if acceptable(row, every)] or [every]
    return min(candidates, key=lambda row: (row.backbone_runs_per_photo, row.margin))


def render(results: dict[str, Any]) -> str:
    def points(value: float) -> str:
        return f"{100 * value:.1f}"

    lines = [
        SECTION,
        "",
        "Each photo runs the head's first view (the whole shorter side); the second (the ImageNet crop,",
        "mirrored) runs only when the first leaves the top two categories closer than a margin",
        "(`classifier/views.py`, setting `CLASSIFIER_SECOND_VIEW_MARGIN`). Trade-off on",
        f"clothing-small/validation ({results['validation_photos']} photos), head `{results['head']}`, "
        f"backbone {results['precision']}, auto-accept at the head's own thresholds (photos, not listings):",
        "",
        "```sh",
        ".venv/bin/python -m bench.views",
        "```",
        "",
        "| margin | photos given the second view | backbone runs per photo | top-1 | top-1 agrees with "
        "both views | auto-accept precision | auto-accept coverage |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in (PolicyRow(**entry) for entry in results["validation"]):
        mark = " **(chosen)**" if row.margin == results["chosen_margin"] else ""
        lines.append(
            f"| {row.margin:g}{mark} | {points(row.more_views_share)} % | {row.backbone_runs_per_photo:.2f} "
            f"| {points(row.accuracy)} | {points(row.agreement)} % | {points(row.auto_accept_precision)} "
            f"| {points(row.auto_accept_coverage)} % |"
        )
    test = {key: PolicyRow(**value) for key, value in results.get("test", {}).items()}
    lines += [
        "",
        f"Margin 0 is the first view alone, 1 both views for every photo (the behaviour before). The rule: "
        f"the fewest backbone runs per photo with top-1 and auto-accept precision within "
        f"{MAX_DIFFERENCE_POINTS:g} points of both views (agreement and coverage are reported, not part of "
        f"it); it chose **{results['chosen_margin']:g}**"
        + ("; the second view never pays for itself on this head." if results["chosen_margin"] == 0 else "."),
    ]
    if test:
        chosen, every = test["chosen"], test["every_view"]
        lines += [
            "",
            f"Check on clothing-small/test ({results['test_photos']} photos; never used to choose): "
            f"top-1 {points(chosen.accuracy)} with the chosen margin against {points(every.accuracy)} with "
            f"both views, agreement {points(chosen.agreement)} %, auto-accept precision "
            f"{points(chosen.auto_accept_precision)} against {points(every.auto_accept_precision)}, coverage "
            f"{points(chosen.auto_accept_coverage)} % against {points(every.auto_accept_coverage)} %, "
            f"{chosen.backbone_runs_per_photo:.2f} backbone runs per photo instead of 2.",
        ]
    lines += [
        "",
        "What it costs: the shipped head was trained, and its temperature and thresholds fit, on both",
        "views averaged; one view gives somewhat lower confidences, so fewer photos clear those",
        "thresholds (coverage column) while the precision of the accepted ones holds. Versions trained",
        "in the product (`manage.py train`, the model registry) learn from the cached outputs of what",
        "the workers served, so their thresholds are fit to the same mix of one and two views. The",
        "right margin depends on the head: rerun this script after training one.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.views", description=__doc__)
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="served backbone")
    parser.add_argument("--model", default=None, help="head manifest (.json); default: shipped head")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--doc", default=str(DOC), help="markdown to update ('' for none)")
    args = parser.parse_args(argv)
    if not DATASET.is_dir():
        print(f"needs the photos of {DATASET}", file=sys.stderr)
        return 2
    classifier, labels, arrays = view_outputs("validation", args.precision, args.model)
    rows = [policy_row(classifier, labels, arrays, margin) for margin in MARGINS]
    chosen = choose(rows)
    results: dict[str, Any] = {
        "head": classifier.head.version,
        "precision": args.precision,
        "validation_photos": len(labels),
        "validation": [asdict(row) for row in rows],
        "chosen_margin": chosen.margin,
    }
    _, test_labels, test_arrays = view_outputs("test", args.precision, args.model)
    results["test_photos"] = len(test_labels)
    results["test"] = {
        "chosen": asdict(policy_row(classifier, test_labels, test_arrays, chosen.margin)),
        "every_view": asdict(policy_row(classifier, test_labels, test_arrays, 1.0)),
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    text = render(results)
    print(text)
    if args.doc:
        from bench.report import replace_section

        replace_section(Path(args.doc), text, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
