"""The benchmark's harness: sizes per mode, a `Bench` that records each phase's figures, keeps its
workers by role and the measurements phases share (the backbone-alone yardstick, the in-process
classifiers, real photos' backbone outputs). The phases are in `bench.phases`.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.catalogue import dataset_photos
from bench.environment import BULK_PROCESSES, Worker, log, start_worker, stop_worker

if TYPE_CHECKING:
    import numpy as np

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


@dataclass
class Bench:
    """One benchmark run: its sizes (a `SIZES` entry), worker logs folder, results by phase, its
    workers by role, and the measurements its phases share."""

    sizes: dict[str, Any]
    logs: Path
    results: dict[str, Any] = field(default_factory=dict)
    workers: dict[str, Worker] = field(default_factory=dict)
    _sample_outputs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    _batchers: dict[str, Any] = field(default_factory=dict)
    yardstick: Any = None

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

    # shared measurements ---------------------------------------------------------------------------
    def limit_run(self) -> float:
        """One yardstick run (see `bench.limit`): images/s of the served backbone alone."""
        from bench.limit import yardstick

        if self.yardstick is None:
            self.yardstick = yardstick(dataset_photos()[::53])
        return float(self.yardstick.run(self.sizes["limit"]))

    def raw_batchers(self) -> dict[str, Any]:
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

    def raw_run(self, precision: str, photos: list[bytes]) -> tuple[float, list[Any]]:
        batcher = self.raw_batchers()[precision]
        began = time.perf_counter()
        outcomes = batcher.classify_all([(n, _constant(data)) for n, data in enumerate(photos)])
        return len(outcomes) / (time.perf_counter() - began), outcomes

    def keep_outputs(self, outcomes: list[Any]) -> None:
        """Backbone outputs of up to 512 real photos, to synthesise a cached catalogue from (kept
        from the first call only)."""
        if self._sample_outputs:
            return
        self._sample_outputs = [
            (o.prediction.embedding, o.prediction.logits)
            for o in outcomes[:512]
            if o.prediction is not None and o.prediction.logits is not None
        ]

    def sample_outputs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Backbone outputs of real photos (from the raw phase, else 256 photos run now)."""
        from django.conf import settings

        if not self._sample_outputs:
            photos = [path.read_bytes() for path in dataset_photos()[:256]]
            _, outcomes = self.raw_run(settings.CLASSIFIER_PRECISION, photos)
            self.keep_outputs(outcomes)
        return self._sample_outputs


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def throughput(images: int, runs: list[float]) -> dict[str, Any]:
    """Images, each run's images/s and their median (the phase's figure)."""
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
