"""The benchmark's machinery: the bench database and Redis database, Celery worker processes,
catalogues of real photos, bulk jobs, the machine's description. The phases are in `bench.run`.

Each phase builds its catalogue in a dedicated database (`BENCH_DATABASE`, default
`marketplace_bench`, dropped and created at start) and a dedicated Redis database
(`BENCH_REDIS_DB`, default 14, flushed at start), so a running system or test session on the
same servers is neither disturbed nor measured. Two runs at once need different values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from classifier.datasets import CLOTHING_SMALL, dataset_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET = dataset_dir(CLOTHING_SMALL)
# Another run on the same servers must use other names (the smoke test does).
BENCH_DATABASE = os.environ.get("BENCH_DATABASE", "marketplace_bench")
BENCH_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "14"))
#: Pool processes of the bulk worker (`celery worker -c`, as in docker/compose.yml); threads per
#: process follow (cores / processes). Two processes overlap one chunk's database work with the
#: other's scoring: head-only jobs ran ~1.1-1.4x faster than with one, CNN jobs the same.
BULK_PROCESSES = int(os.environ.get("BENCH_BULK_PROCESSES", "2"))


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def dataset_photos() -> list[Path]:
    """Every photo of clothing-small (train, validation, test), in a fixed order."""
    return sorted(DATASET.glob("*/*/*.jpg"))


# --- servers, database, workers -----------------------------------------------------------------


def prepare_environment(media_root: Path) -> None:
    """Point this process (and the workers it starts) at the bench database and Redis database,
    create the database afresh, migrate it and flush the Redis database. Needs DATABASE_URL and
    CELERY_BROKER_URL set (the embedded servers' when none were given)."""
    import psycopg

    server = os.environ["DATABASE_URL"]
    with psycopg.connect(_with_path(server, "/postgres"), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    os.environ["DATABASE_URL"] = _with_path(server, f"/{BENCH_DATABASE}")
    os.environ["CELERY_BROKER_URL"] = _with_path(os.environ["CELERY_BROKER_URL"], f"/{BENCH_REDIS_DB}")
    os.environ["MEDIA_ROOT"] = str(media_root)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # Settings refuse to start without a key when DEBUG is off; a benchmark run makes its own.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    from config.celery import app

    call_command("migrate", verbosity=0)
    with app.connection_for_write() as connection:
        connection.default_channel.client.flushdb()


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(_with_path(os.environ["DATABASE_URL"], "/postgres"), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    name: str
    log: Path
    peak_rss_mb: float = 0.0

    def pool_pids(self) -> list[int]:
        """The pool's processes; the worker itself for a solo pool (no children)."""
        pid = self.process.pid
        with contextlib.suppress(OSError):
            children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            return children or [pid]
        return []

    def sample_rss(self) -> float:
        """Peak resident size (VmHWM) of the pool processes so far, MB; kept in `peak_rss_mb`."""
        for pid in self.pool_pids():
            with contextlib.suppress(OSError, StopIteration, ValueError):
                line = next(
                    x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM")
                )
                self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        return self.peak_rss_mb


def start_worker(
    *,
    app: str,
    queues: str,
    logs: Path,
    nice: int = 0,
    concurrency: int = 1,
    host: str = "localhost",
    env: dict[str, str] | None = None,
) -> Worker:
    """A `celery worker` subprocess on the bench servers; returns once it answers a ping. With
    `CLASSIFIER_DEVICE=cuda` it runs the solo pool (one process per GPU, no fork). `host` is
    its node name's host part, `env` extra environment (e.g. its own CLASSIFIER_CACHE_DIR)."""
    from config.celery import app as control

    name = f"bench-{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@{host}"
    log_path = logs / f"{name.replace('@', '-')}.log"
    pool = ["--pool", "solo"] if os.environ.get("CLASSIFIER_DEVICE") == "cuda" else ["-c", str(concurrency)]
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, *pool,
               "-n", name, "-l", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
    if nice:
        command = ["nice", "-n", str(nice), *command]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env={**os.environ, "LOG_LEVEL": "INFO", **(env or {})},
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = Worker(process=process, name=name, log=log_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker {name} exited with {process.returncode}; see {log_path}")
        if control.control.ping(destination=[name], timeout=0.5):
            return worker
    stop_worker(worker)
    raise RuntimeError(f"worker {name} did not answer within 300 s; see {log_path}")


def stop_worker(worker: Worker) -> None:
    worker.sample_rss()
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(60)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what}: not done within {timeout:.0f} s")


# --- catalogue ------------------------------------------------------------------------------------


def reset_catalogue() -> None:
    """Empty listings (with their photos, suggestions, embeddings) and bulk jobs; delete files."""
    from django.conf import settings
    from django.db import connection

    from catalog.models import BulkJob, Listing

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {Listing._meta.db_table}, {BulkJob._meta.db_table} CASCADE")
    media = Path(settings.MEDIA_ROOT)
    for child in media.iterdir() if media.exists() else []:
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def bench_seller() -> Any:
    from catalog import services

    return services.user_get_or_create(username="bench-seller")


def make_catalogue(
    sources: list[Path], count: int, *, per_listing: int = 2, prefix: str = "catalogue"
) -> list[int]:
    """`count` photos (copies of `sources`, cycled) in listings of `per_listing`, stored in
    MEDIA_ROOT without queueing anything. Returns the photo ids."""
    from django.conf import settings

    from catalog.models import ClassificationStatus, Listing, ListingImage

    seller = bench_seller()
    listings = Listing.objects.bulk_create(
        [Listing(seller=seller, title=f"{prefix} {n}") for n in range(math.ceil(count / per_listing))],
        batch_size=2000,
    )
    checksums: dict[Path, tuple[str, int]] = {}
    folder = Path(settings.MEDIA_ROOT) / prefix
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(count):
        source = sources[number % len(sources)]
        if source not in checksums:
            data = source.read_bytes()
            checksums[source] = (hashlib.sha256(data).hexdigest(), len(data))
        target = folder / f"{number}{source.suffix}"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        rows.append(
            ListingImage(
                listing=listings[number // per_listing],
                file=f"{prefix}/{target.name}",
                checksum=checksums[source][0],
                size_bytes=checksums[source][1],
                position=number % per_listing,
                status=ClassificationStatus.DONE,
            )
        )
    return [image.pk for image in ListingImage.objects.bulk_create(rows, batch_size=2000)]


def shipped_version() -> Any:
    """The ModelVersion row of the workers' classifier (shipped head), made active."""
    from catalog import services
    from classifier.backbone import backbone_version
    from classifier.head import LinearHead

    version = services.model_version_ensure(
        name=f"{backbone_version()}+{LinearHead.load().version}", backbone_version=backbone_version()
    )
    activate(version)
    return version


def activate(version: Any) -> None:
    from catalog.models import ModelVersion

    ModelVersion.objects.exclude(pk=version.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True)


def forget(version: Any) -> None:
    """Drop the version's suggestions and every cached embedding: the next job starts cold."""
    from django.db import connection

    from catalog.models import CategorySuggestion, ImageEmbedding

    CategorySuggestion.objects.filter(model_version=version).delete()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {ImageEmbedding._meta.db_table}")


def run_job(version: Any, *, timeout: float, chunk_size: int | None = None) -> Any:
    """Start a bulk job over the catalogue, wait for it, return the finished row."""
    from catalog import services
    from catalog.models import BulkJob, BulkJobStatus

    job = services.bulk_job_start(model_version=version, chunk_size=chunk_size)
    finished = {BulkJobStatus.DONE, BulkJobStatus.FAILED, BulkJobStatus.CANCELLED}
    wait_until(
        lambda: BulkJob.objects.filter(pk=job.pk, status__in=finished).exists(),
        timeout=timeout,
        what=f"job {job.pk}",
    )
    job.refresh_from_db()
    if job.status != BulkJobStatus.DONE:
        raise RuntimeError(f"job {job.pk} ended {job.status}: {job.failure_reason}")
    return job


def steady_chunk(photos: int) -> int:
    """Chunk size for a job of `photos` that keeps every bulk process busy, as a job of thousands
    of photos does: the deployed size (`BULK_CHUNK_SIZE`), or less when there are fewer photos
    than that per process (a 192-photo job would otherwise be one chunk for one process)."""
    from django.conf import settings

    return max(1, min(settings.BULK_CHUNK_SIZE, math.ceil(photos / BULK_PROCESSES)))


def job_seconds(job: Any) -> float:
    return float((job.finished_at - job.created_at).total_seconds())


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "int8_instructions": [f for f in ("avx512_vnni", "amx_int8") if f in flags],
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "torch": version("torch"),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
