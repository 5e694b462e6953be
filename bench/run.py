"""The benchmark's phases. See `bench/__init__.py` and docs/BENCHMARKS.md ("Throughput and latency");
the machinery they use (databases, workers, catalogues, jobs) is in `bench.system`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.system import (
    BULK_PROCESSES,
    Worker,
    activate,
    bench_seller,
    dataset_photos,
    forget,
    job_seconds,
    log,
    make_catalogue,
    reset_catalogue,
    run_job,
    shipped_version,
    start_worker,
    steady_chunk,
    stop_worker,
    wait_until,
)

LARGE_PIXELS = 12_000_000
#: CPU priority of the bulk worker while uploads are measured: a bulk worker that shares a host
#: with a classify worker runs niced (see README, deployment), so uploads take the CPU first.
BULK_NICE = 10
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "limit": 2000, "limit_reps": 3, "raw": 1000, "raw_reps": 3, "pipeline": 2000, "pipeline_reps": 3,
        "large": 384, "large_unique": 24, "large_reps": 3, "baseline": 100,
        "head_only": [1000, 10_000, 100_000], "head_only_1m": 1_000_000, "latency_s": 60,
        "latency_rate": 10.0, "scaleout": 1000,
    },
    "quick": {
        "limit": 512, "limit_reps": 2, "raw": 256, "raw_reps": 2, "pipeline": 400, "pipeline_reps": 2,
        "large": 48, "large_unique": 8, "large_reps": 1, "baseline": 40, "head_only": [1000, 10_000],
        "head_only_1m": 0, "latency_s": 15, "latency_rate": 10.0, "scaleout": 300,
    },
    "smoke": {
        "limit": 32, "limit_reps": 1, "raw": 8, "raw_reps": 1, "pipeline": 12, "pipeline_reps": 1,
        "large": 2, "large_unique": 1, "large_reps": 1, "baseline": 2, "head_only": [50],
        "head_only_1m": 0, "latency_s": 2, "latency_rate": 4.0, "scaleout": 8,
    },
}  # fmt: skip
#: In the order they run; head_only_1m last (full mode only), it writes ~9 GB of cached outputs.
PHASES = ("limit", "raw", "head_only", "pipeline", "baseline", "large", "latency", "scaleout", "head_only_1m")


# --- the phases ------------------------------------------------------------------------------------


@dataclass
class Bench:
    sizes: dict[str, Any]
    logs: Path
    results: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    _sample_outputs: list[tuple[bytes, bytes]] = field(default_factory=list)
    _batchers: dict[str, Any] = field(default_factory=dict)
    _yardstick: Any = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        entry: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
        began = time.monotonic()
        log(f"{name}: start (load average {entry['load_average_before'][0]})")
        yield entry
        entry["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        entry["phase_seconds"] = round(time.monotonic() - began, 1)
        self.results[name] = entry
        log(f"{name}: {summary_line(name, entry)} ({entry['phase_seconds']} s)")

    def worker(
        self,
        role: str,
        *,
        app: str = "config",
        queues: str,
        nice: int = 0,
        concurrency: int = 1,
        host: str = "localhost",
        env: dict[str, str] | None = None,
    ) -> Worker:
        if role not in self.workers:
            self.workers[role] = start_worker(
                app=app, queues=queues, logs=self.logs, nice=nice, concurrency=concurrency, host=host, env=env
            )
        return self.workers[role]

    def bulk_worker(self, *, nice: int = 0) -> Worker:
        role = "bulk-niced" if nice else "bulk"
        return self.worker(role, queues="bulk", nice=nice, concurrency=BULK_PROCESSES)

    def retire(self, role: str) -> None:
        worker = self.workers.pop(role, None)
        if worker is not None:
            stop_worker(worker)
            self.results.setdefault("worker_peak_rss_mb", {})[role] = round(worker.peak_rss_mb, 1)

    def close(self) -> None:
        for role in list(self.workers):
            self.retire(role)
        for batcher in self._batchers.values():
            batcher.close()

    # 0. limit -------------------------------------------------------------------------------------
    def _limit_run(self) -> float:
        """One yardstick run (see `bench.limit`): images/s of the served backbone alone."""
        from bench.limit import yardstick

        if self._yardstick is None:
            self._yardstick = yardstick(dataset_photos()[::53])
        return float(self._yardstick.run(self.sizes["limit"]))

    def limit(self) -> None:
        """The served backbone alone on pre-decoded photos, one view, all cores (`bench.limit`)."""
        self._limit_run()  # loads the model and decodes the photos outside the timing
        with self.phase("limit") as entry:
            runs = [self._limit_run() for _ in range(self.sizes["limit_reps"])]
            assert self._yardstick is not None
            entry.update(
                _throughput(self.sizes["limit"], runs),
                batch=self._yardstick.batch,
                threads=self._yardstick.threads,
                precision=self._yardstick.precision,
                distinct_photos=len(self._yardstick.inputs),
            )

    # 1. raw ---------------------------------------------------------------------------------------
    def _raw_batchers(self) -> dict[str, Any]:
        """In-process classifiers at the default precision and at fp32, loaded once."""
        from django.conf import settings

        from workers import inference

        if not self._batchers:
            default_precision = settings.CLASSIFIER_PRECISION
            inference.set_process_count(1)
            for precision in dict.fromkeys([default_precision, "fp32"]):
                settings.CLASSIFIER_PRECISION = precision
                inference.reset_after_fork()
                self._batchers[precision] = inference.batch_classifier_for(inference.get_classifier())
            settings.CLASSIFIER_PRECISION = default_precision
            inference.reset_after_fork()
        return self._batchers

    def _raw_run(self, precision: str, photos: list[bytes]) -> tuple[float, list[Any]]:
        batcher = self._raw_batchers()[precision]
        began = time.perf_counter()
        outcomes = batcher.classify_all([(n, _constant(data)) for n, data in enumerate(photos)])
        return len(outcomes) / (time.perf_counter() - began), outcomes

    def _keep_outputs(self, outcomes: list[Any]) -> None:
        """Backbone outputs of up to 512 real photos, to synthesise a cached catalogue from."""
        self._sample_outputs = [
            (o.prediction.embedding.astype("<f4").tobytes(), o.prediction.logits.astype("<f4").tobytes())
            for o in outcomes[:512]
            if o.prediction is not None and o.prediction.logits is not None
        ]

    def sample_outputs(self) -> list[tuple[bytes, bytes]]:
        """Backbone outputs of real photos (from the raw phase, else 256 photos run now)."""
        from django.conf import settings

        if not self._sample_outputs:
            photos = [path.read_bytes() for path in dataset_photos()[:256]]
            _, outcomes = self._raw_run(settings.CLASSIFIER_PRECISION, photos)
            self._keep_outputs(outcomes)
        return self._sample_outputs

    def raw(self) -> None:
        """In-process limit: decode + batched onnxruntime, the workers' code without Celery or the
        database, default precision and fp32 alternately so both see the same machine."""
        from django.conf import settings

        count, reps = self.sizes["raw"], self.sizes["raw_reps"]
        photos = [path.read_bytes() for path in dataset_photos()[:count]]
        default_precision = settings.CLASSIFIER_PRECISION
        batchers = self._raw_batchers()
        for precision in batchers:
            self._raw_run(precision, photos[:32])  # warm-up
        with self.phase("raw") as entry:
            runs: dict[str, list[float]] = {precision: [] for precision in batchers}
            for _ in range(reps):
                for precision in batchers:
                    rate, outcomes = self._raw_run(precision, photos)
                    runs[precision].append(rate)
                    if not self._sample_outputs:
                        self._keep_outputs(outcomes)
            entry.update(_throughput(count, runs[default_precision]), precision=default_precision)
            if default_precision != "fp32":
                entry["fp32"] = _throughput(count, runs["fp32"])

    # 5. head only ----------------------------------------------------------------------------------
    def _head_only_job(self, sizes: list[int], phase: str) -> None:
        """Reclassification from cached embeddings at growing catalogue sizes; each size gets its
        own version (same head, stored on the version) so every photo is scored and written."""
        from django.db import connection

        from bench.catalogue import copy_embeddings, synthesise_catalogue
        from catalog.models import ModelVersion
        from classifier.backbone import backbone_version
        from classifier.head import LinearHead

        reset_catalogue()
        self.bulk_worker()
        manifest, payload = LinearHead.load().to_bytes()
        backbone = backbone_version()
        outputs = self.sample_outputs()
        scaling = []
        with self.phase(phase) as entry:
            have = 0
            for size in sizes:
                began = time.perf_counter()
                ids = synthesise_catalogue(size - have, prefix=f"cached{size}", seller=bench_seller())
                rows_made = time.perf_counter()
                copy_embeddings(ids, backbone, outputs)
                copied = time.perf_counter()
                with connection.cursor() as cursor:
                    cursor.execute("ANALYZE")
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
        self.workers["bulk"].sample_rss()
        reset_catalogue()

    def head_only(self) -> None:
        """Head-only reclassification at 1k, 10k and 100k photos (the target is at 100k)."""
        self._head_only_job(self.sizes["head_only"], "head_only")

    def head_only_1m(self) -> None:
        """The same at a million photos (full mode only: ~9 GB of cached outputs are written)."""
        if self.sizes.get("head_only_1m"):
            self._head_only_job([self.sizes["head_only_1m"]], "head_only_1m")
        else:
            log("head_only_1m: full mode only, skipped")

    # 2. pipeline and 3. baseline -------------------------------------------------------------------
    def pipeline(self) -> None:
        """A bulk job through the whole system on the CNN path: real photos, fresh catalogue rows,
        no cached embeddings (dropped before each run). Each run follows a `limit` run (the
        served backbone alone), and pipeline/limit is the median of those pairs, so a busy spell
        on the shared machine weighs on both sides of the ratio."""
        reset_catalogue()
        count, reps = self.sizes["pipeline"], self.sizes["pipeline_reps"]
        sources = dataset_photos()
        make_catalogue(sources, count)
        bulk = self.bulk_worker()
        version = shipped_version()
        with self.phase("pipeline") as entry:
            runs, paired, ratios = [], [], []
            for _ in range(reps):
                forget(version)
                limit_rate = self._limit_run()
                job = run_job(version, timeout=3600, chunk_size=steady_chunk(count))
                assert job.cnn_images == count and job.failed_images == 0, (job.cnn_images, job.failed_images)
                runs.append(count / job_seconds(job))
                paired.append(limit_rate)
                ratios.append(runs[-1] / limit_rate)
                bulk.sample_rss()
            entry.update(
                _throughput(count, runs),
                chunk_size=job.chunk_size,
                bulk_processes=BULK_PROCESSES,
                paired_limit_images_per_second=[round(rate, 1) for rate in paired],
                pipeline_over_paired_limit=round(statistics.median(ratios), 3),
            )

    def baseline(self) -> None:
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

        count = self.sizes["baseline"]
        version, _ = ModelVersion.objects.get_or_create(
            name=naive.VERSION, defaults={"backbone_version": "resnet50"}
        )
        images = list(ListingImage.objects.order_by("pk")[:count])
        ids = [image.pk for image in images]
        with self.phase("baseline") as entry:
            variants, paired_limit = {}, {}
            for threads in (os.cpu_count() or 1, 1):
                os.environ["NAIVE_THREADS"] = str(threads)
                worker = self.worker(f"naive-{threads}", app="bench.naive", queues=naive.QUEUE)
                CategorySuggestion.objects.filter(model_version=version).delete()
                before = self._limit_run()
                started = timezone.now()
                for image_id in ids:
                    naive.app.send_task(naive.TASK, args=[image_id], queue=naive.QUEUE)
                done = CategorySuggestion.objects.filter(model_version=version, image_id__in=ids)
                wait_until(_count_is(done, len(ids)), timeout=3600, what="baseline")
                seconds = (max(done.values_list("updated_at", flat=True)) - started).total_seconds()
                after = self._limit_run()
                key = f"torch_threads_{threads}"
                variants[key] = round(len(ids) / seconds, 2)
                paired_limit[key] = round((before + after) / 2, 1)
                worker.sample_rss()
                self.retire(f"naive-{threads}")
            os.environ.pop("NAIVE_THREADS", None)
            best = max(variants, key=lambda key: variants[key])
            entry.update(
                images=len(ids),
                images_per_second=variants[best],
                variants=variants,
                paired_limit_images_per_second=paired_limit,
                limit_over_paired_baseline=round(paired_limit[best] / variants[best], 2),
            )

    # 4. large photos ------------------------------------------------------------------------------
    def large(self) -> None:
        """12 MP JPEGs (real photos upscaled, saved at quality 90) through a bulk job (CNN path)."""
        from PIL import Image

        reset_catalogue()
        count, unique, reps = self.sizes["large"], self.sizes["large_unique"], self.sizes["large_reps"]
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
            bulk = self.bulk_worker()
            version = shipped_version()
            with self.phase("large") as entry:
                runs, paired = [], []
                for _ in range(reps):
                    forget(version)
                    paired.append(self._limit_run())
                    job = run_job(version, timeout=3600, chunk_size=steady_chunk(count))
                    assert job.cnn_images == count and job.failed_images == 0, (
                        job.cnn_images,
                        job.failed_images,
                    )
                    runs.append(count / job_seconds(job))
                    bulk.sample_rss()
                mean_bytes = sum(p.stat().st_size for p in sources) / len(sources)
                entry.update(
                    _throughput(count, runs),
                    megapixels=round(megapixels, 1),
                    mean_file_mb=round(mean_bytes / 1e6, 2),
                    paired_limit_images_per_second=[round(rate, 1) for rate in paired],
                    large_over_paired_limit=round(
                        statistics.median(run / limit for run, limit in zip(runs, paired, strict=True)), 3
                    ),
                )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # 7. scale-out ---------------------------------------------------------------------------------
    def scaleout(self) -> None:
        """More processes, a second node, and the shared services' rates (`bench.scaleout`)."""
        from bench.scaleout import scaleout

        scaleout(self)

    # 6. latency ------------------------------------------------------------------------------------
    def latency(self) -> None:
        """Steady uploads to the classify worker while a bulk job keeps the bulk worker busy."""
        import numpy as np

        from catalog import services
        from catalog.models import (
            BulkJob,
            BulkJobStatus,
            CategorySuggestion,
            ClassificationStatus,
            Listing,
            ListingImage,
        )

        seconds, rate = self.sizes["latency_s"], self.sizes["latency_rate"]
        pipeline_rate = self.results.get("pipeline", {}).get("images_per_second", 100.0)
        backlog = int(min(30_000, max(1000, pipeline_rate * (seconds + 60))))
        reset_catalogue()
        make_catalogue(dataset_photos(), backlog, prefix="backlog")
        self.retire("bulk")  # the niced one below replaces it
        self.worker("classify", queues="classify")
        self.bulk_worker(nice=BULK_NICE)
        version = shipped_version()
        forget(version)
        uploads = [path.read_bytes() for path in dataset_photos()[-200:]]
        seller = bench_seller()
        job = services.bulk_job_start(model_version=version)
        wait_until(
            lambda: BulkJob.objects.filter(pk=job.pk, processed_images__gt=0).exists(),
            timeout=600,
            what="job",
        )
        with self.phase("latency") as entry:
            total = int(seconds * rate)
            sent: list[int] = []
            began = time.monotonic()
            done_before = BulkJob.objects.get(pk=job.pk).processed_images
            for number in range(total):
                delay = began + number / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                listing = Listing.objects.create(seller=seller, title=f"upload {number}")
                image = services.image_add(
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
                self.workers[role].sample_rss()
        with contextlib.suppress(services.BulkJobRefused):
            services.bulk_job_cancel(job=BulkJob.objects.get(pk=job.pk))


def _count_is(queryset: Any, count: int) -> Callable[[], bool]:
    return lambda: bool(queryset.count() == count)


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _throughput(images: int, runs: list[float]) -> dict[str, Any]:
    return {
        "images": images,
        "runs_images_per_second": [round(run, 1) for run in runs],
        "images_per_second": round(statistics.median(runs), 1),
    }


def summary_line(name: str, entry: dict[str, Any]) -> str:
    if name == "latency":
        return f"p50 {entry['p50_ms']} ms, p95 {entry['p95_ms']} ms, p99 {entry['p99_ms']} ms"
    if name == "scaleout":
        return ", ".join(
            f"{row['configuration']}: {row['images_per_second']} images/s" for row in entry["configurations"]
        )
    return f"{entry.get('images_per_second')} images/s over {entry.get('images')} photos"
