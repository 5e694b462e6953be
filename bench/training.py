"""Training and calibration benchmark: `python -m bench.training`.

The product path, end to end on one machine: the photos of clothing-small train/ + validation/
become seller-labelled listings in a scratch PostgreSQL database, then a training run
(`workers.training.train`, what the `training` queue runs) trains a candidate from them twice:
from cold (no cached embeddings: every photo decoded and run through the CNN once) and again with
the embeddings cached. The candidate is then scored on clothing-small test/ (never imported):
top-1 accuracy of the full model (head + gate + zero-shot, as served), and precision and coverage
of the auto-accepted suggestions at the version's thresholds.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/marketplace python -m bench.training

The scratch database is `<name of DATABASE_URL>_training_bench` (created, migrated, emptied of
listings); photos are stored under a temporary MEDIA_ROOT. Results: `bench/training-results.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from classifier.datasets import CLOTHING_SMALL, dataset_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET = dataset_dir(CLOTHING_SMALL)
RESULTS = REPO_ROOT / "bench" / "training-results.json"


def _scratch_database(url: str) -> str:
    parts = urlsplit(url)
    name = parts.path.lstrip("/") + "_training_bench"
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _create_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    with psycopg.connect(admin, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def _setup(media_root: str) -> None:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/marketplace")
    scratch = _scratch_database(base)
    _create_database(scratch)
    os.environ["DATABASE_URL"] = scratch
    os.environ["MEDIA_ROOT"] = media_root
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Settings refuse to start without a key when DEBUG is off; a benchmark run makes its own.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _photos(split: str) -> list[tuple[Path, str]]:
    from classifier.features import list_labelled_photos

    return [(photo.path, photo.label) for photo in list_labelled_photos(DATASET / split)]


def _import(photos: Sequence[tuple[Path, str]]) -> int:
    """Seller-labelled listings with one stored photo each (rows written directly: the benchmark
    measures training, not uploads)."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from catalog.models import (
        Category,
        CategorySource,
        ClassificationStatus,
        Listing,
        ListingImage,
        ModelVersion,
        TrainingRun,
    )
    from catalog.services.listings import user_get_or_create

    TrainingRun.objects.all().delete()
    Listing.objects.all().delete()
    ModelVersion.objects.update(is_active=False)
    seller = user_get_or_create(username="bench-seller")
    categories = {c.slug: c for c in Category.objects.all()}
    listings = Listing.objects.bulk_create(
        [
            Listing(
                seller=seller,
                title=path.stem,
                category=categories[slug],
                category_source=CategorySource.SELLER,
            )
            for path, slug in photos
        ]
    )
    images = []
    for listing, (path, _) in zip(listings, photos, strict=True):
        data = path.read_bytes()
        name = default_storage.save(f"bench/{path.parent.name}/{path.name}", ContentFile(data))
        images.append(
            ListingImage(
                listing=listing,
                file=name,
                checksum=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                status=ClassificationStatus.DONE,
            )
        )
    ListingImage.objects.bulk_create(images, batch_size=500)
    return len(images)


def _train(classifier: Any) -> tuple[Any, dict[str, Any], float]:
    from catalog.models import TrainingRun
    from catalog.services.registry import training_run_request
    from workers import training

    run = training_run_request(requested_by=None)
    began = time.perf_counter()
    version = training.train(run_id=run.pk, classifier=classifier)
    seconds = time.perf_counter() - began
    return version, TrainingRun.objects.get(pk=run.pk).report, seconds


def _evaluate(version: Any, classifier: Any, test: Sequence[tuple[Path, str]]) -> dict[str, Any]:
    import numpy as np

    from classifier.calibration import auto_accept_summary, category_reports
    from classifier.head import LinearHead
    from classifier.preprocess import load_image
    from classifier.training.outputs import LabelledOutputs, score_head
    from workers import inference

    head = LinearHead.from_bytes(version.head_manifest, bytes(version.head_npz))
    embeddings, logits = [], []
    for start in range(0, len(test), 32):
        images = [load_image(path) for path, _ in test[start : start + 32]]
        batch_embeddings, batch_logits = classifier.backbone.embed(images, head.views)
        embeddings.append(batch_embeddings)
        logits.append(batch_logits)
    labels = [slug for _, slug in test]
    data = LabelledOutputs(
        np.concatenate(embeddings), np.concatenate(logits), labels, list(range(len(labels)))
    )
    taxonomy = inference.taxonomy()
    predicted, confidence = score_head(head, taxonomy, data)
    right = np.array([p == t for p, t in zip(predicted, labels, strict=True)])
    summary = auto_accept_summary(labels, predicted, confidence, version.auto_accept_thresholds)
    shipped_predicted, _ = score_head(classifier.head, taxonomy, data)
    reports = category_reports(labels, predicted, sorted(set(labels)))
    return {
        "photos": len(labels),
        "accuracy": round(float(right.mean()), 4),
        "shipped_head_accuracy": round(
            float(np.mean([p == t for p, t in zip(shipped_predicted, labels, strict=True)])), 4
        ),
        "auto_accept": {
            "precision": round(summary.precision, 4),
            "coverage": round(summary.coverage, 4),
            "accepted": summary.accepted,
        },
        "recall": {slug: round(report.recall, 3) for slug, report in reports.items()},
    }


def throughput(rounds: int = 5, batch: int = 16, threads: int = 2) -> dict[str, Any]:
    """Images per second of the ImageNet network and of the one with the tuned tail (fp32
    onnxruntime, ``threads`` intra-op threads, batches of ``batch`` 224 px crops), measured
    alternately in the same process so a busy machine slows both alike; medians of ``rounds``."""
    import statistics

    import numpy as np

    from classifier.backbone import DEFAULT_TAIL, OnnxBackbone, ensure_onnx

    pixels = np.random.default_rng(0).uniform(-1, 1, size=(batch, 3, 224, 224)).astype(np.float32)
    networks = {"imagenet": OnnxBackbone(ensure_onnx(tail=None), num_threads=threads)}
    if DEFAULT_TAIL is not None:
        networks["tuned tail"] = OnnxBackbone(ensure_onnx(), num_threads=threads)
    samples: dict[str, list[float]] = {name: [] for name in networks}
    for network in networks.values():
        network.run(pixels)  # warm-up
    for _ in range(rounds):
        for name, network in networks.items():
            began = time.perf_counter()
            for _ in range(4):
                network.run(pixels)
            samples[name].append(4 * batch / (time.perf_counter() - began))
    return {name: round(statistics.median(values), 1) for name, values in samples.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--limit", type=int, default=0, help="import only this many photos (a smoke run)")
    parser.add_argument(
        "--throughput", action="store_true", help="only compare the networks' images/s (no database)"
    )
    args = parser.parse_args(argv)
    if args.throughput:
        print(json.dumps({"images_per_second_fp32_batch16_2_threads": throughput()}))
        return 0
    if not DATASET.is_dir():
        print(f"the benchmark needs the photos of {DATASET}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="training-bench-") as media_root:
        _setup(media_root)
        from django.conf import settings

        from workers import inference

        photos = _photos("train") + _photos("validation")
        if args.limit:
            photos = photos[:: max(1, len(photos) // args.limit)][: args.limit]
        imported = _import(photos)
        print(f"imported {imported} seller-labelled photos", flush=True)
        classifier = inference.base_classifier()
        from catalog.models import ImageEmbedding

        ImageEmbedding.objects.all().delete()
        cold_version, cold_report, cold_seconds = _train(classifier)
        print(f"cold run: {cold_seconds:.1f} s {json.dumps(cold_report['seconds'])}", flush=True)
        warm_version, warm_report, warm_seconds = _train(classifier)
        print(f"cached run: {warm_seconds:.1f} s {json.dumps(warm_report['seconds'])}", flush=True)
        test = _evaluate(warm_version, classifier, _photos("test"))
        print(f"clothing-small/test: {json.dumps(test)}", flush=True)
        held_out = warm_version.metrics.get("held_out", {})
        results = {
            "model_version": warm_version.name,
            "backbone_precision": inference.precision(),
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
            "photos": imported,
            "cold": {"seconds": round(cold_seconds, 1), "report": cold_report},
            "cached": {"seconds": round(warm_seconds, 1), "report": warm_report},
            "held_out": {
                key: held_out.get(key) for key in ("n", "accuracy", "macro_f1", "ece", "auto_accept")
            },
            "auto_accept_precision_target": settings.AUTO_ACCEPT_PRECISION,
            "auto_accept_thresholds": warm_version.auto_accept_thresholds,
            "hyperparameters": warm_version.hyperparameters,
            "test": test,
        }
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
