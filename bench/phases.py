"""The benchmark's phases, each a function of the `bench.run.Bench` harness, in the order they run
(`PHASES`). See `bench/__init__.py` and docs/BENCHMARKS.md ("Throughput and latency"); the
environment (databases, workers) is in `bench.environment`, the catalogues and jobs in
`bench.catalogue`, the scale-out phase in `bench.scaleout`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.catalogue import (
    activate,
    bench_seller,
    dataset_photos,
    forget,
    job_seconds,
    make_catalogue,
    reset_catalogue,
    run_job,
    shipped_version,
    steady_chunk,
)
from bench.environment import BULK_PROCESSES, log, wait_until
from bench.run import Bench, throughput
from bench.scaleout import scaleout

LARGE_PIXELS = 12_000_000
#: CPU priority of the bulk worker while uploads are measured: a bulk worker that shares a host
#: with a classify worker runs niced (see README, deployment), so uploads take the CPU first.
BULK_NICE = 10


def limit(bench: Bench) -> None:
    """The served backbone alone on pre-decoded photos, one view, all cores (`bench.limit`)."""
    bench.limit_run()  # loads the model and decodes the photos outside the timing
    with bench.phase("limit") as entry:
        runs = [bench.limit_run() for _ in range(bench.sizes["limit_reps"])]
        assert bench.yardstick is not None
        entry.update(
            throughput(bench.sizes["limit"], runs),
            batch=bench.yardstick.batch,
            threads=bench.yardstick.threads,
            precision=bench.yardstick.precision,
            distinct_photos=len(bench.yardstick.inputs),
        )


def raw(bench: Bench) -> None:
    """In-process limit: decode + batched onnxruntime, the workers' code without Celery or the
    database, default precision and fp32 alternately so both see the same machine."""
    from django.conf import settings

    count, reps = bench.sizes["raw"], bench.sizes["raw_reps"]
    photos = [path.read_bytes() for path in dataset_photos()[:count]]
    default_precision = settings.CLASSIFIER_PRECISION
    batchers = bench.raw_batchers()
    for precision in batchers:
        bench.raw_run(precision, photos[:32])  # warm-up
    with bench.phase("raw") as entry:
        runs: dict[str, list[float]] = {precision: [] for precision in batchers}
        for _ in range(reps):
            for precision in batchers:
                rate, outcomes = bench.raw_run(precision, photos)
                runs[precision].append(rate)
                bench.keep_outputs(outcomes)
        entry.update(throughput(count, runs[default_precision]), precision=default_precision)
        if default_precision != "fp32":
            entry["fp32"] = throughput(count, runs["fp32"])


def settle_catalogue() -> None:
    """Bring a catalogue just written into the state of one written long before a job: VACUUM
    (hint bits and the visibility map set, as autovacuum leaves them; otherwise the job's first
    reads rewrite every page of the cache), ANALYZE, and a CHECKPOINT, so that writing back the
    catalogue's own pages does not land inside the job's timing. The job's own writes still do."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")


def head_only_job(bench: Bench, sizes: list[int], phase: str) -> None:
    """Reclassification from cached embeddings at growing catalogue sizes; each size gets its
    own version (same head, stored on the version) so every photo is scored and written."""
    from bench.catalogue import copy_embeddings, synthesise_catalogue
    from catalog.models import ModelVersion
    from classifier.backbone import backbone_version
    from classifier.head import LinearHead

    reset_catalogue()
    bench.bulk_worker()
    manifest, payload = LinearHead.load().to_bytes()
    backbone = backbone_version()
    outputs = bench.sample_outputs()
    scaling = []
    with bench.phase(phase) as entry:
        have = 0
        for size in sizes:
            began = time.perf_counter()
            ids = synthesise_catalogue(size - have, prefix=f"cached{size}", seller=bench_seller())
            rows_made = time.perf_counter()
            copy_embeddings(ids, backbone, outputs)
            copied = time.perf_counter()
            settle_catalogue()
            have = size
            log(
                f"{phase}: catalogue of {size:,} photos in {time.perf_counter() - began:.1f} s "
                f"({len(ids):,} embeddings copied at {len(ids) / max(copied - rows_made, 1e-9):,.0f}/s)"
            )
            version = ModelVersion.objects.create(
                name=f"bench-head-only-{size}",
                backbone_version=backbone,
                head_manifest=manifest,
                head_npz=payload,
            )
            activate(version)
            job = run_job(version, timeout=3600)
            seconds = job_seconds(job)
            assert job.cached_images == size and job.cnn_images == 0, (job.cached_images, job.cnn_images)
            scaling.append(
                {
                    "images": size,
                    "seconds": round(seconds, 2),
                    "images_per_second": round(size / seconds, 1),
                    "embeddings_copied_per_second": round(len(ids) / max(copied - rows_made, 1e-9)),
                }
            )
            log(f"{phase}: {size:,} photos in {seconds:.1f} s")
        entry.update(scaling[-1], scaling=scaling, chunk_size=job.chunk_size)
    bench.workers["bulk"].sample_rss()
    reset_catalogue()


def head_only(bench: Bench) -> None:
    """Head-only reclassification at 1k, 10k and 100k photos (the target is at 100k)."""
    head_only_job(bench, bench.sizes["head_only"], "head_only")


def head_only_1m(bench: Bench) -> None:
    """The same at a million photos (full mode only: ~8 GB of cached outputs are written)."""
    if bench.sizes.get("head_only_1m"):
        head_only_job(bench, [bench.sizes["head_only_1m"]], "head_only_1m")
    else:
        log("head_only_1m: full mode only, skipped")


def pipeline(bench: Bench) -> None:
    """A bulk job through the whole system on the CNN path: real photos, fresh catalogue rows,
    no cached embeddings (dropped before each run). Each run follows a `limit` run (the
    served backbone alone), and pipeline/limit is the median of those pairs, so a busy spell
    on the shared machine weighs on both sides of the ratio."""
    reset_catalogue()
    count, reps = bench.sizes["pipeline"], bench.sizes["pipeline_reps"]
    sources = dataset_photos()
    make_catalogue(sources, count)
    bulk = bench.bulk_worker()
    version = shipped_version()
    with bench.phase("pipeline") as entry:
        runs, paired, ratios = [], [], []
        for _ in range(reps):
            forget(version)
            limit_rate = bench.limit_run()
            job = run_job(version, timeout=3600, chunk_size=steady_chunk(count))
            assert job.cnn_images == count and job.failed_images == 0, (job.cnn_images, job.failed_images)
            runs.append(count / job_seconds(job))
            paired.append(limit_rate)
            ratios.append(runs[-1] / limit_rate)
            bulk.sample_rss()
        entry.update(
            throughput(count, runs),
            chunk_size=job.chunk_size,
            bulk_processes=BULK_PROCESSES,
            paired_limit_images_per_second=[round(rate, 1) for rate in paired],
            pipeline_over_paired_limit=round(statistics.median(ratios), 3),
        )


def baseline(bench: Bench) -> None:
    """One task per photo, full decode, eager torchvision ResNet-50, on the pipeline's photos.

    Run twice, with torch's default threads (one per core) and with one thread: eager torch's
    OpenMP threads slow down badly on a busy machine, and the faster of the two is the
    baseline the pipeline is compared with, so the comparison never flatters the pipeline.
    Each run sits between two `limit` runs: limit/baseline is then measured side by side,
    like pipeline/limit, and their product is a pipeline/baseline ratio that a change of load
    between phases does not move.
    """
    from django.utils import timezone

    from bench import naive
    from catalog.models import CategorySuggestion, ListingImage, ModelVersion

    count = bench.sizes["baseline"]
    version, _ = ModelVersion.objects.get_or_create(
        name=naive.VERSION, defaults={"backbone_version": "resnet50"}
    )
    images = list(ListingImage.objects.order_by("pk")[:count])
    ids = [image.pk for image in images]
    with bench.phase("baseline") as entry:
        variants, paired_limit = {}, {}
        for threads in (os.cpu_count() or 1, 1):
            os.environ["NAIVE_THREADS"] = str(threads)
            worker = bench.worker(f"naive-{threads}", app="bench.naive", queues=naive.QUEUE)
            CategorySuggestion.objects.filter(model_version=version).delete()
            before = bench.limit_run()
            started = timezone.now()
            for image_id in ids:
                naive.app.send_task(naive.TASK, args=[image_id], queue=naive.QUEUE)
            done = CategorySuggestion.objects.filter(model_version=version, image_id__in=ids)
            wait_until(_count_is(done, len(ids)), timeout=3600, what="baseline")
            seconds = (max(done.values_list("updated_at", flat=True)) - started).total_seconds()
            after = bench.limit_run()
            key = f"torch_threads_{threads}"
            variants[key] = round(len(ids) / seconds, 2)
            paired_limit[key] = round((before + after) / 2, 1)
            worker.sample_rss()
            bench.retire(f"naive-{threads}")
        os.environ.pop("NAIVE_THREADS", None)
        best = max(variants, key=lambda key: variants[key])
        entry.update(
            images=len(ids),
            images_per_second=variants[best],
            variants=variants,
            paired_limit_images_per_second=paired_limit,
            limit_over_paired_baseline=round(paired_limit[best] / variants[best], 2),
        )


def large(bench: Bench) -> None:
    """12 MP JPEGs (real photos upscaled, saved at quality 90) through a bulk job (CNN path)."""
    from PIL import Image

    reset_catalogue()
    count, unique, reps = bench.sizes["large"], bench.sizes["large_unique"], bench.sizes["large_reps"]
    folder = Path(tempfile.mkdtemp(prefix="bench-large-"))
    try:
        began = time.perf_counter()
        sources = []
        for number, photo in enumerate(dataset_photos()[::97][:unique]):
            with Image.open(photo) as image:
                scale = math.sqrt(LARGE_PIXELS / (image.width * image.height))
                big = image.convert("RGB").resize(
                    (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
                )
            target = folder / f"large-{number}.jpg"
            big.save(target, quality=90)
            sources.append(target)
        megapixels = big.width * big.height / 1e6
        log(f"large: {unique} photos of {megapixels:.1f} MP made in {time.perf_counter() - began:.1f} s")
        make_catalogue(sources, count, prefix="large")
        bulk = bench.bulk_worker()
        version = shipped_version()
        with bench.phase("large") as entry:
            runs, paired = [], []
            for _ in range(reps):
                forget(version)
                paired.append(bench.limit_run())
                job = run_job(version, timeout=3600, chunk_size=steady_chunk(count))
                assert job.cnn_images == count and job.failed_images == 0, (
                    job.cnn_images,
                    job.failed_images,
                )
                runs.append(count / job_seconds(job))
                bulk.sample_rss()
            mean_bytes = sum(p.stat().st_size for p in sources) / len(sources)
            entry.update(
                throughput(count, runs),
                megapixels=round(megapixels, 1),
                mean_file_mb=round(mean_bytes / 1e6, 2),
                paired_limit_images_per_second=[round(rate, 1) for rate in paired],
                large_over_paired_limit=round(
                    statistics.median(run / limit for run, limit in zip(runs, paired, strict=True)), 3
                ),
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def latency(bench: Bench) -> None:
    """Steady uploads to the classify worker while a bulk job keeps the bulk worker busy."""
    import numpy as np

    from catalog.models import (
        BulkJob,
        BulkJobStatus,
        CategorySuggestion,
        ClassificationStatus,
        Listing,
        ListingImage,
    )
    from catalog.services.bulk.jobs import BulkJobRefused, bulk_job_cancel, bulk_job_start
    from catalog.services.images import image_add

    seconds, rate = bench.sizes["latency_s"], bench.sizes["latency_rate"]
    pipeline_rate = bench.results.get("pipeline", {}).get("images_per_second", 100.0)
    backlog = int(min(30_000, max(1000, pipeline_rate * (seconds + 60))))
    reset_catalogue()
    make_catalogue(dataset_photos(), backlog, prefix="backlog")
    bench.retire("bulk")  # the niced one below replaces it
    bench.worker("classify", queues="classify")
    bench.bulk_worker(nice=BULK_NICE)
    version = shipped_version()
    forget(version)
    uploads = [path.read_bytes() for path in dataset_photos()[-200:]]
    seller = bench_seller()
    job = bulk_job_start(model_version=version)
    wait_until(
        lambda: BulkJob.objects.filter(pk=job.pk, processed_images__gt=0).exists(),
        timeout=600,
        what="job",
    )
    with bench.phase("latency") as entry:
        total = int(seconds * rate)
        sent: list[int] = []
        began = time.monotonic()
        done_before = BulkJob.objects.get(pk=job.pk).processed_images
        for number in range(total):
            delay = began + number / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            listing = Listing.objects.create(seller=seller, title=f"upload {number}")
            image = image_add(
                listing=listing, upload=uploads[number % len(uploads)], filename=f"upload-{number}.jpg"
            )
            sent.append(image.pk)
        window = time.monotonic() - began
        state = BulkJob.objects.get(pk=job.pk)
        finished = {ClassificationStatus.DONE, ClassificationStatus.FAILED}
        images = ListingImage.objects.filter(pk__in=sent)
        wait_until(
            lambda: images.filter(status__in=finished).count() == len(sent), timeout=300, what="uploads"
        )
        created = dict(images.values_list("pk", "created_at"))
        stored = dict(
            CategorySuggestion.objects.filter(image_id__in=sent, model_version=version).values_list(
                "image_id", "created_at"
            )
        )
        milliseconds = np.array(
            [(stored[pk] - created[pk]).total_seconds() * 1000 for pk in sent if pk in stored]
        )
        entry.update(
            uploads=len(sent),
            classified=len(milliseconds),
            window_seconds=round(window, 1),
            achieved_rate_per_s=round(len(sent) / window, 2),
            p50_ms=round(float(np.percentile(milliseconds, 50, method="inverted_cdf")), 1),
            p95_ms=round(float(np.percentile(milliseconds, 95, method="inverted_cdf")), 1),
            p99_ms=round(float(np.percentile(milliseconds, 99, method="inverted_cdf")), 1),
            max_ms=round(float(milliseconds.max()), 1),
            bulk_job_running_throughout=state.status == BulkJobStatus.RUNNING,
            bulk_photos_during_window=state.processed_images - done_before,
            bulk_worker_nice=BULK_NICE,
        )
        for role in ("classify", "bulk-niced"):
            bench.workers[role].sample_rss()
    with contextlib.suppress(BulkJobRefused):
        bulk_job_cancel(job=BulkJob.objects.get(pk=job.pk))


def _count_is(queryset: Any, count: int) -> Callable[[], bool]:
    return lambda: bool(queryset.count() == count)


#: In the order they run; head_only_1m last (full mode only), it writes ~8 GB of cached outputs.
PHASES: dict[str, Callable[[Bench], None]] = {
    "limit": limit,
    "raw": raw,
    "head_only": head_only,
    "pipeline": pipeline,
    "baseline": baseline,
    "large": large,
    "latency": latency,
    "scaleout": scaleout,
    "head_only_1m": head_only_1m,
}
