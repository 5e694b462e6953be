"""The faults of a run, one function each. Every scenario uploads its photos through the real
services, breaks something while a real worker classifies them, and returns a `Row` saying
how long its innocent photos took to be DONE after the fault; photos that must fail are
recorded in `Run.expected_failures` with the reason their fault calls for, for the final check."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import connections

from catalog.models import Listing, ListingImage
from catalog.queueing import classifier_readiness, queue_depths
from catalog.services.images import PHOTO_UNREADABLE_AFTER_RETRIES, images_requeue_stuck
from catalog.services.listings import listing_create, listing_delete
from classifier.integrity import manifest_path
from dev.chaos import cache
from dev.chaos.photos import (
    all_done_once,
    delivered,
    fifo_writer,
    photos_upload,
    stored_path,
    upload_with_culprit,
)
from dev.chaos.processes import WorkerProcess, kill_pool, kill_worker, start_worker, stop_worker, wait_for
from dev.chaos.servers import Servers

#: Innocent photos must be DONE this soon after their fault (the sweeper's own period is 10 min).
SETTLE_S = 150.0
#: The retry policy of the run's workers: about 25 s of backoff in all, longer than the outage.
RETRIES = {"TASK_MAX_RETRIES": "8", "TASK_RETRY_BACKOFF_S": "1", "TASK_RETRY_BACKOFF_MAX_S": "8"}
POSTGRES_OUTAGE_S = 6.0


@dataclass
class Row:
    """One scenario's line in the report."""

    scenario: str
    fault: str
    photos: int
    seconds: float = 0.0
    outcome: str = ""
    ok: bool = False


@dataclass
class Run:
    """What the scenarios share: servers, photos, the main worker and what must fail."""

    servers: Servers
    run_dir: Path
    photo_paths: list[Path]
    cache_dir: Path
    worker: WorkerProcess | None = None
    expected_failures: dict[int, str] = field(default_factory=dict)
    started: list[WorkerProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "DATABASE_URL": self.servers.database_url,
            "CELERY_BROKER_URL": self.servers.broker_url,
            "MEDIA_ROOT": str(self.run_dir / "media"),
            "CLASSIFIER_CACHE_DIR": str(self.cache_dir),
            "CLASSIFY_BATCH_INTERVAL_S": "0.5",
            "CLASSIFIER_NUM_THREADS": "2",
            **RETRIES,
            **extra,
        }

    def start(self, name: str, *, ready_line: str = "classifier loaded", **extra: str) -> WorkerProcess:
        log = self.run_dir / "logs" / f"{name}.log"
        worker = start_worker(
            log=log, env=self.env(**extra), queues="classify", ready_line=ready_line, timeout=300
        )
        self.started.append(worker)
        return worker

    def main_worker(self) -> WorkerProcess:
        if self.worker is None or self.worker.process.poll() is not None:
            self.worker = self.start(f"worker-{len(self.started) + 1}")
        return self.worker

    def stop_all(self) -> None:
        for worker in self.started:
            stop_worker(worker)

    def listing(self, title: str) -> Listing:
        seller, _ = get_user_model().objects.get_or_create(username="chaos-seller")
        return listing_create(seller=seller, title=title)


def _settle(row: Row, began: float, image_ids: list[int], timeout: float = SETTLE_S) -> Row:
    wait_for(lambda: all_done_once(image_ids), timeout=timeout, interval=0.25)
    row.seconds = time.monotonic() - began
    row.outcome = f"{len(image_ids)} DONE, one suggestion each"
    row.ok = True
    return row


def pool_kill(run: Run) -> Row:
    worker = run.main_worker()
    image_ids = photos_upload(run.photo_paths, 12, listing=run.listing("pool kill"))
    wait_for(lambda: delivered(image_ids), timeout=60)
    began = time.monotonic()
    kill_pool(worker)
    row = _settle(Row("pool-kill", "SIGKILL of the pool process mid-batch", 12), began, image_ids)
    row.ok = row.ok and worker.process.poll() is None  # the same worker, no manual restart
    return row


def worker_kill(run: Run) -> Row:
    worker = run.main_worker()
    image_ids = photos_upload(run.photo_paths, 12, listing=run.listing("worker kill"))
    wait_for(lambda: delivered(image_ids), timeout=60)
    began = time.monotonic()
    kill_worker(worker)
    run.main_worker()  # a replacement, as an orchestrator would start one
    images_requeue_stuck(older_than_s=0)  # the sweeper, as beat runs it every minute
    return _settle(Row("worker-kill", "SIGKILL of the whole worker, then a new one", 12), began, image_ids)


def redis_restart(run: Run) -> Row:
    worker = run.main_worker()
    # More photos than the worker reserves (two batches), so some still wait in Redis.
    image_ids = photos_upload(run.photo_paths, 40, listing=run.listing("redis restart"))
    wait_for(lambda: delivered(image_ids), timeout=60)
    queued = (queue_depths() or {}).get("classify", 0)
    began = time.monotonic()
    run.servers.restart_redis()  # queued and unacknowledged messages are gone
    _reconnect()
    images_requeue_stuck(older_than_s=0)
    fault = f"Redis killed and restarted empty mid-batch, {queued} photos still queued"
    row = _settle(Row("redis-restart", fault, 40), began, image_ids)
    row.ok = row.ok and worker.process.poll() is None
    return row


def _reconnect() -> None:
    """Drop this process's pooled broker connections (they point at the Redis that was killed)."""
    from kombu import pools

    from config.celery import app

    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None


def postgres_outage(run: Run) -> Row:
    worker = run.main_worker()
    image_ids = photos_upload(run.photo_paths, 16, listing=run.listing("postgres outage"))
    wait_for(lambda: delivered(image_ids), timeout=60)
    began = time.monotonic()
    connections.close_all()
    down = run.servers.postgres_outage(POSTGRES_OUTAGE_S)
    fault = f"PostgreSQL stopped for {down:.0f} s mid-batch, then started"
    row = _settle(Row("postgres-outage", fault, 16), began, image_ids)
    row.ok = row.ok and worker.process.poll() is None
    return row


def deleted_listing(run: Run) -> Row:
    run.main_worker()
    doomed = run.listing("deleted while classified")
    culprit, mates = upload_with_culprit(
        run.photo_paths, os.mkfifo, culprit_listing=doomed, listing=run.listing("batch-mates"), mates=6
    )
    fifo = stored_path(culprit)
    writer = wait_for(lambda: fifo_writer(fifo), timeout=60)  # the worker is reading it now
    began = time.monotonic()
    listing_delete(listing=doomed)
    with os.fdopen(writer, "wb") as pipe:
        pipe.write(run.photo_paths[0].read_bytes())
    row = _settle(Row("deleted-listing", "listing deleted while its photo was read", 7), began, mates, 60)
    gone = not ListingImage.objects.filter(pk=culprit).exists()
    row.outcome += "; the deleted photo: gone" if gone else "; the deleted photo is still there"
    row.ok = row.ok and gone
    return row


def storage_error(run: Run) -> Row:
    run.main_worker()
    culprit, mates = upload_with_culprit(
        run.photo_paths,
        Path.mkdir,
        culprit_listing=run.listing("unreadable photo"),
        listing=run.listing("batch-mates"),
        mates=6,
    )
    attempts = int(RETRIES["TASK_MAX_RETRIES"]) + 1
    reason = PHOTO_UNREADABLE_AFTER_RETRIES.format(attempts=attempts, error="IsADirectoryError")
    run.expected_failures[culprit] = reason
    began = time.monotonic()
    row = _settle(Row("storage-error", "a read error (EISDIR) on one photo of 7", 7), began, mates, 60)
    row.outcome += f"; the culprit: FAILED after {attempts} attempts (checked at the end)"
    return row


def corrupt_cache_rebuilt(run: Run) -> Row:
    """Scrambled weights behind a rewritten checksum: the smoke inference catches them, the
    worker rebuilds the file before it consumes, and classifies."""
    if run.worker is not None:
        stop_worker(run.worker)
    damaged = cache.copy_cache(run.cache_dir, run.run_dir / "cache-scrambled")
    served = next(path for path in damaged.glob("*-int8-*.onnx") if manifest_path(path).exists())
    cache.scramble_weights(served)
    cache.rewrite_checksum(served)
    began = time.monotonic()
    worker = run.start("worker-scrambled-cache", CLASSIFIER_CACHE_DIR=str(damaged))
    try:
        rebuilt = f"rebuilding {served.name}: " in worker.log_text()
        image_ids = photos_upload(run.photo_paths, 4, listing=run.listing("after a rebuild"))
        row = _settle(Row("corrupt-cache", "int8 weights scrambled, checksum rewritten", 4), began, image_ids)
    finally:
        stop_worker(worker)
    row.outcome += "; detected by the smoke inference, rebuilt" if rebuilt else "; NOT rebuilt"
    row.ok = row.ok and rebuilt
    return row


def corrupt_cache_refused(run: Run) -> Row:
    """A truncated file that cannot be rebuilt: the worker refuses the queue and says so; the
    photos wait in Redis, untouched, until a sound worker takes them."""
    damaged = cache.copy_cache(run.cache_dir, run.run_dir / "cache-unwritable")
    fp32 = next(path for path in damaged.glob("*.onnx") if "-int8-" not in path.name)
    cache.truncate(fp32)
    cache.block_manifest(fp32)
    refusing = run.start(
        "worker-broken-cache", ready_line="classifier not ready", CLASSIFIER_CACHE_DIR=str(damaged)
    )
    try:
        image_ids = photos_upload(run.photo_paths, 4, listing=run.listing("while refused"))
        time.sleep(5)
        # Nothing taken off the queue (other photos' retries may wait there too), and it says so.
        untouched = (
            not delivered(image_ids)
            and (queue_depths() or {}).get("classify", 0) >= 4
            and "image_batch_classified" not in refusing.log_text()
        )
        not_ready = (classifier_readiness() or {}).get(refusing.name) is False
    finally:
        stop_worker(refusing)
    began = time.monotonic()
    run.main_worker()
    row = _settle(Row("corrupt-cache", "export truncated, cache unwritable", 4), began, image_ids)
    row.outcome += (
        "; refused: queue untouched, classifier_ready 0" if untouched and not_ready else "; NOT refused"
    )
    row.ok = row.ok and untouched and not_ready
    return row


SCENARIOS: list[Callable[[Run], Row]] = [
    pool_kill,
    worker_kill,
    redis_restart,
    postgres_outage,
    deleted_listing,
    storage_error,
    corrupt_cache_rebuilt,
    corrupt_cache_refused,
]
