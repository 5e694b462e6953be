"""Command line: ``python -m classifier {train,evaluate,predict,finetune,phone-photos,export}``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifier.head import ARTIFACTS_DIR, DEFAULT_HEAD_VERSION

PRECISIONS = ("fp32", "int8")
#: The environment variable (and default) workers read for their backbone precision.
PRECISION_ENV, DEFAULT_PRECISION = "CLASSIFIER_PRECISION", "int8"


DATA_HELP = (
    "folder with train/, validation/, test/ "
    "(default: clothing-small in $CLASSIFIER_DATASETS_DIR, else ../shared/datasets)"
)


def served_precision() -> str:
    """The backbone precision workers serve: ``$CLASSIFIER_PRECISION`` when it names one of
    ``PRECISIONS``, else int8 (the workers' default)."""
    value = os.environ.get(PRECISION_ENV, "").strip().lower()
    return value if value in PRECISIONS else DEFAULT_PRECISION


def _train(args: argparse.Namespace) -> int:
    from classifier.training.folder import train_head

    began = time.perf_counter()
    report = train_head(args.data, out_dir=args.out, version=args.version, cache_dir=args.cache_dir)
    print(
        f"feature extraction {report.extract_seconds:.1f} s, head fit {report.fit_seconds:.1f} s, "
        f"total {time.perf_counter() - began:.1f} s"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from classifier.evaluate import evaluate_folder, format_report
    from classifier.features import list_labelled_photos
    from classifier.model import ImageClassifier

    if not list_labelled_photos(args.directory):  # before building a backbone for nothing
        raise ValueError(f"No photos found under {args.directory}/<category-slug>/.")
    classifier: ImageClassifier = _load_at_precision(args.model, args.cache_dir, args.threads, args.precision)
    report = evaluate_folder(args.directory, classifier, batch_size=args.batch_size, precision=args.precision)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    print(format_report(report))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from classifier.model import ImageClassifier

    classifier = ImageClassifier.load(head_path=args.model, cache_dir=args.cache_dir)
    for path, result in zip(args.photos, classifier.classify(args.photos, top_k=args.top_k), strict=True):
        if isinstance(result, Exception):
            print(f"{path}: rejected: {result}")
            continue
        scores = ", ".join(f"{s.slug} {s.confidence:.3f}" for s in result.top_k)
        print(f"{path}: {scores}")
    return 0


def _load_at_precision(
    head_path: str | None, cache_dir: str | None, threads: int | None, precision: str
) -> Any:
    from classifier.backbone import OnnxBackbone
    from classifier.head import LinearHead
    from classifier.model import ImageClassifier
    from classifier.quantize import backbone_path
    from classifier.taxonomy import load_taxonomy

    head = LinearHead.load(head_path)
    path = backbone_path(precision, cache_dir, views=head.views)
    return ImageClassifier(
        head=head, taxonomy=load_taxonomy(), backbone=OnnxBackbone(path, num_threads=threads)
    )


def _finetune(args: argparse.Namespace) -> int:
    from classifier.training.tail import TailRecipe, finetune

    recipe = TailRecipe(
        views=args.views,
        passes=args.passes,
        seeds=args.seeds,
        augment=args.augment,
        mixup=args.mixup,
        ema_decay=args.ema,
    )
    report = finetune(
        args.data,
        tail_name=args.tail,
        head_version=args.version,
        out_dir=args.out,
        cache_dir=args.cache_dir,
        recipe=recipe,
        head_only=args.head_only,
    )
    print(f"wrote {report.head_manifest}; seconds {report.seconds}")
    return 0


def _phone_photos(args: argparse.Namespace) -> int:
    from classifier.phone_photos import DEFAULT_SEED, build_phone_photos

    began = time.perf_counter()
    seed = DEFAULT_SEED if args.seed is None else args.seed
    manifest = build_phone_photos(args.source, args.out, seed=seed)
    count = len(json.loads(manifest.read_text(encoding="utf-8"))["photos"])
    print(f"wrote {count} phone photos and {manifest} in {time.perf_counter() - began:.1f} s")
    return 0


def _export(args: argparse.Namespace) -> int:
    from classifier.backbone import backbone_version
    from classifier.head import LinearHead
    from classifier.quantize import backbone_path

    began = time.perf_counter()
    path = backbone_path(args.precision, args.cache_dir, views=LinearHead.load(args.model).views)
    seconds = time.perf_counter() - began
    print(f"{path} ({backbone_version()}, {args.precision}, verified) in {seconds:.2f} s")
    return 0


def _add_finetune(commands: Any) -> None:
    """The ``finetune`` subcommand: its options are ``classifier.training.tail.TailRecipe``'s."""
    finetune = commands.add_parser(
        "finetune", help="tune the backbone's last blocks on cached trunk activations, then fit a head on it"
    )
    finetune.add_argument(
        "--data",
        default=None,
        help=DATA_HELP,
    )
    finetune.add_argument("--out", default=str(ARTIFACTS_DIR), help="artifact folder")
    finetune.add_argument("--tail", default="fashion-tail-v1", help="tail artifact name")
    finetune.add_argument("--version", default=DEFAULT_HEAD_VERSION, help="head version name")
    finetune.add_argument("--views", type=int, default=4, help="augmented crops per photo (cached)")
    finetune.add_argument("--passes", type=float, default=1.0, help="passes over the cached crops")
    finetune.add_argument("--seeds", type=int, default=2, help="tails averaged into one (a model soup)")
    finetune.add_argument(
        "--augment", choices=("crop", "trivial"), default="crop", help="crops, or crops + TrivialAugmentWide"
    )
    finetune.add_argument("--mixup", type=float, default=0.0, help="mixup Beta parameter (0: off)")
    finetune.add_argument("--ema", type=float, default=None, help="EMA decay of the tail's weights")
    finetune.add_argument(
        "--head-only", action="store_true", help="keep the tail in --out, fit the head on it again"
    )
    finetune.set_defaults(handler=_finetune)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m classifier`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m classifier", description=__doc__)
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="where the ONNX backbone and feature caches live "
        "(default: $CLASSIFIER_CACHE_DIR or ~/.cache/marketplace-classifier)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fit the head on labelled photos and write the artifact")
    train.add_argument(
        "--data",
        default=None,
        help=DATA_HELP,
    )
    train.add_argument("--out", default=str(ARTIFACTS_DIR), help="artifact folder")
    train.add_argument("--version", default=DEFAULT_HEAD_VERSION, help="head version name")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("evaluate", help="accuracy and throughput on DIR/<category-slug>/")
    evaluate.add_argument("directory")
    evaluate.add_argument("--json", default=None, help="also write the report as JSON to this path")
    evaluate.add_argument("--model", default=None, help="head manifest (.json); default: shipped head")
    evaluate.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    evaluate.add_argument("--batch-size", type=int, default=32)
    evaluate.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=served_precision(),
        help="backbone precision (default: what workers serve, $CLASSIFIER_PRECISION or int8)",
    )
    evaluate.set_defaults(handler=_evaluate)

    predict = commands.add_parser("predict", help="print top-k categories for photo files")
    predict.add_argument("photos", nargs="+")
    predict.add_argument("--model", default=None)
    predict.add_argument("--top-k", type=int, default=5)
    predict.set_defaults(handler=_predict)

    _add_finetune(commands)

    phone = commands.add_parser(
        "phone-photos",
        help="write a deterministic 'phone photo' copy of SRC/<slug>/ to OUT (robustness set)",
    )
    phone.add_argument("source", help="labelled folder, e.g. ../shared/datasets/clothing-small/test")
    phone.add_argument("out", help="output folder (same <slug>/ layout, plus manifest.json)")
    phone.add_argument("--seed", type=int, default=None, help="random seed (default: the committed one)")
    phone.set_defaults(handler=_phone_photos)

    export = commands.add_parser(
        "export", help="export the ONNX backbone into the cache, or verify it there (rebuilt if it fails)"
    )
    export.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="int8 also builds the quantized backbone, calibrated for the head's views",
    )
    export.add_argument("--model", default=None, help="head manifest whose views calibrate int8")
    export.set_defaults(handler=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    from classifier.integrity import ModelCacheError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (OSError, ValueError, ModelCacheError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
