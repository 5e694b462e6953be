"""Scale-out phase: the same CNN-path bulk job with more worker processes and with a second node,
and the rates at which the shared services (PostgreSQL, Redis, storage) would saturate.

Configurations, each on the same catalogue, each run preceded by a `limit` run (the ratio to it
is what compares across a shared machine's load):

- one bulk worker with one process (every core's threads in it);
- one bulk worker with two processes (as `docker/compose.yml` runs it);
- two bulk workers of one process each, started as two "nodes": their own node names
  (`-n ...@node-a`, `-n ...@node-b`) and their own `CLASSIFIER_CACHE_DIR`, seeded with the model
  files as a node's image would carry them, on the same broker and database. On this machine
  they share its cores (one thread each, as the two-process worker has), so the figure shows
  that chunks spread over nodes at no cost; on separate machines each brings its own cores.

The shared services' rates, measured here once each:

- PostgreSQL: photos/s whose CNN-path results (suggestion upsert and embedding cache upsert,
  64 photos per write as the workers do) one connection writes;
- Redis: task messages/s one process publishes through Celery, and messages/s Redis itself takes
  (pipelined pushes); an upload costs one publish and a few acknowledgement and event messages,
  a bulk job one per chunk of 1,000 photos;
- storage: the bytes each photo costs to read, times the pipeline's rate.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from bench.run import Bench

#: Photos per chunk in this phase: enough chunks for two nodes to share.
CHUNK = 250
PROBE_QUEUE = "bench-probe"


def _seeded_cache() -> Path:
    """A new cache directory holding the model files this machine's workers load (hard links)."""
    from django.conf import settings

    from classifier.backbone import ensure_onnx
    from classifier.head import LinearHead
    from classifier.quantize import backbone_path
    from workers import inference

    head = LinearHead.load(settings.CLASSIFIER_HEAD_PATH or None)
    cache = settings.CLASSIFIER_CACHE_DIR or None
    files = {ensure_onnx(cache), backbone_path(inference.precision(), cache, views=head.views)}
    target = Path(tempfile.mkdtemp(prefix="bench-node-cache-"))
    for path in files:
        try:
            os.link(path, target / path.name)
        except OSError:
            shutil.copy2(path, target / path.name)
    return target


def _photos_per_worker(logs: dict[str, Path], job_id: int) -> dict[str, int]:
    """Photos each worker classified for the job, from its `bulk_chunk_done` log lines (read once
    the workers stopped: a chunk's line follows the job's end in its log)."""
    pattern = re.compile(rf"\"job_id\": {job_id}, .*?\"cnn\": (\d+)")
    return {
        role: sum(int(m.group(1)) for m in pattern.finditer(log.read_text(errors="replace")))
        for role, log in logs.items()
    }


def postgres_write_rate(
    outputs: list[tuple[np.ndarray, np.ndarray]], version: Any, image_ids: list[int]
) -> float:
    """Photos/s whose CNN-path results one connection writes, 64 photos per write."""
    from catalog.services.embeddings import embeddings_write
    from catalog.services.suggestions import PhotoScores, suggestions_record_many
    from workers.bulk import WRITE_EVERY

    top_k = [("dress", 0.7), ("shirt", 0.1), ("t-shirt", 0.1), ("skirt", 0.05), ("hat", 0.05)]
    began = time.perf_counter()
    for start in range(0, len(image_ids), WRITE_EVERY):
        batch = image_ids[start : start + WRITE_EVERY]
        suggestions_record_many(
            model_version=version, scores=[PhotoScores(image_id, top_k) for image_id in batch]
        )
        embeddings_write(
            backbone_version=version.backbone_version,
            rows=[(image_id, *outputs[n % len(outputs)]) for n, image_id in enumerate(batch)],
        )
    return len(image_ids) / (time.perf_counter() - began)


def redis_publish_rate(messages: int) -> float:
    """Task messages/s one process publishes to the broker (to a queue no worker reads)."""
    from config.celery import app

    with app.producer_or_acquire() as producer:
        began = time.perf_counter()
        for number in range(messages):
            app.send_task("bench.probe", args=[number], queue=PROBE_QUEUE, producer=producer)
        rate = messages / (time.perf_counter() - began)
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(PROBE_QUEUE)
    return rate


def redis_push_rate(messages: int, size: int = 1500) -> float:
    """Messages/s Redis itself takes: LPUSH of `size`-byte messages (a task message's size),
    pipelined 100 at a time from one client, so the server rather than Python is measured."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    payload, key = b"x" * size, f"{PROBE_QUEUE}-raw"
    began = time.perf_counter()
    for start in range(0, messages, 100):
        pipeline = client.pipeline(transaction=False)
        for _ in range(min(100, messages - start)):
            pipeline.lpush(key, payload)
        pipeline.execute()
    rate = messages / (time.perf_counter() - began)
    client.delete(key)
    client.close()
    return rate


def scaleout(bench: Bench) -> None:
    from bench.catalogue import (
        dataset_photos,
        forget,
        job_seconds,
        make_catalogue,
        reset_catalogue,
        run_job,
        shipped_version,
    )
    from bench.environment import BULK_PROCESSES, log
    from catalog.models import CategorySuggestion, ImageEmbedding, ListingImage

    for role in ("bulk", "bulk-niced"):
        bench.retire(role)
    reset_catalogue()
    count = bench.sizes["scaleout"]
    ids = make_catalogue(dataset_photos(), count, prefix="scale")
    version = shipped_version()
    node_cache = _seeded_cache()
    one_thread = {"CLASSIFIER_NUM_THREADS": "1", "CLASSIFIER_DECODE_THREADS": "1"}
    configurations: list[tuple[str, list[dict[str, Any]]]] = [
        ("1 worker × 1 process", [{"role": "scale-1p", "concurrency": 1}]),
        (f"1 worker × {BULK_PROCESSES} processes", [{"role": "scale-2p", "concurrency": BULK_PROCESSES}]),
        (
            "2 nodes × 1 process",
            [
                {"role": "node-a", "concurrency": 1, "host": "node-a", "env": one_thread},
                {
                    "role": "node-b",
                    "concurrency": 1,
                    "host": "node-b",
                    "env": {**one_thread, "CLASSIFIER_CACHE_DIR": str(node_cache)},
                },
            ],
        ),
    ]
    try:
        with bench.phase("scaleout") as entry:
            rows = []
            for label, workers in configurations:
                roles = [_start(bench, spec) for spec in workers]
                forget(version)
                limit_rate = bench.limit_run()
                job = run_job(version, timeout=3600, chunk_size=CHUNK)
                rate = count / job_seconds(job)
                logs = {role: bench.workers[role].log for role in roles}
                for role in roles:
                    bench.retire(role)
                rows.append(
                    {
                        "configuration": label,
                        "images_per_second": round(rate, 1),
                        "paired_limit_images_per_second": round(limit_rate, 1),
                        "over_limit": round(rate / limit_rate, 3),
                        "photos_per_worker": _photos_per_worker(logs, job.pk),
                    }
                )
                log(f"scaleout: {label}: {rate:.1f} images/s ({rows[-1]['photos_per_worker']})")
            forget(version)
            CategorySuggestion.objects.filter(model_version=version).delete()
            ImageEmbedding.objects.all().delete()
            postgres = postgres_write_rate(bench.sample_outputs(), version, ids)
            redis = redis_publish_rate(max(200, count))
            redis_raw = redis_push_rate(max(2000, 20 * count))
            sizes = ListingImage.objects.filter(pk__in=ids).values_list("size_bytes", flat=True)
            mean_bytes = statistics.mean(sizes)
            entry.update(
                images=count,
                chunk_size=CHUNK,
                configurations=rows,
                postgres_cnn_writes_per_second=round(postgres, 1),
                redis_publishes_per_second=round(redis, 1),
                redis_pushes_per_second=round(redis_raw, 1),
                mean_photo_bytes=round(mean_bytes),
            )
    finally:
        shutil.rmtree(node_cache, ignore_errors=True)


def _start(bench: Bench, spec: dict[str, Any]) -> str:
    role = str(spec["role"])
    bench.worker(
        role,
        queues="bulk",
        concurrency=int(spec.get("concurrency", 1)),
        host=str(spec.get("host", "localhost")),
        env=spec.get("env"),
    )
    return role


#: Redis messages per upload: the task's publish and delivery acknowledgement, and its events
#: (sent, received, started, succeeded), as Flower needs them.
MESSAGES_PER_UPLOAD = 6


def render(results: dict[str, Any]) -> list[str]:
    """The scale-out table and how the figures extend to N machines."""
    entry = results.get("scaleout")
    if not entry:
        return []
    lines = [
        "",
        "### Scale-out",
        "",
        f"The same CNN-path bulk job ({entry['images']:,} photos, chunks of {entry['chunk_size']}) with more "
        "worker processes, and with a second worker started as a separate node (its own node name and "
        "`CLASSIFIER_CACHE_DIR`) on the same broker and database. Both nodes share this machine's cores "
        "here (one thread each, as the two-process worker has): the figure shows that chunks spread "
        "over nodes; on separate machines each node brings its own cores.",
        "",
        "| configuration | images/s | limit run before it | over limit | photos per worker |",
        "|---|---:|---:|---:|---|",
        *[_row(row) for row in entry["configurations"]],
    ]
    per_node = (
        results.get("pipeline", {}).get("images_per_second")
        or entry["configurations"][-1]["images_per_second"]
    )
    postgres = entry["postgres_cnn_writes_per_second"]
    redis, redis_raw = entry["redis_publishes_per_second"], entry.get("redis_pushes_per_second", 0.0)
    megabytes = entry["mean_photo_bytes"] / 1e6
    large = results.get("large", {})
    head = results.get("head_only", {})
    lines += [
        "",
        "How the figures extend to N machines. Workers share nothing but the broker, the database and the",
        "storage; chunks and uploads go to whichever worker asks first, so CNN-path throughput is N × the",
        f"per-node figure ({per_node:g} images/s per 2-core node here) until a shared service saturates:",
        "",
        "- **PostgreSQL writes** saturate "
        + ("first" if postgres < redis_raw / MESSAGES_PER_UPLOAD else "after Redis")
        + ". One connection on this machine took the CNN path's writes "
        f"(suggestion and embedding-cache upserts, 64 photos per statement) for {postgres:,.0f} photos/s, "
        f"about {postgres / per_node:.0f} nodes' worth; the embedding cache takes a page (8 KB) per photo, "
        f"so each node writes ~{per_node * 8.2 / 1000:.1f} MB/s of table and as much again of WAL. Head-only "
        "jobs are bound by PostgreSQL alone (reading 4.6 KB and writing one row per photo"
        + (f"; {head['images_per_second']:,.0f} images/s here" if head else "")
        + "): more workers do not make them faster, a bigger database server does. Past that point: a "
        "database server with more cores and faster disks, then embedding reads from a replica.",
        f"- **Redis**: it took {redis_raw:,.0f} pushes/s of task-sized messages from one "
        f"pipelining client; an upload costs about {MESSAGES_PER_UPLOAD} messages (publish, acknowledgement, "
        f"four task events), so ~{redis_raw / MESSAGES_PER_UPLOAD:,.0f} uploads/s. One Python process "
        f"publishes {redis:,.0f} task messages/s through Celery, so the web tier's processes, not Redis, "
        "bound the enqueue rate. A bulk job sends one message per chunk of 1,000 photos.",
        f"- **Storage reads**: {megabytes * 1000:,.0f} KB per photo here, {per_node * megabytes:.1f} MB/s "
        "per node; "
        + (
            f"12 MP photos ({large['mean_file_mb']:g} MB) at {large['images_per_second']:g} images/s are "
            f"{large['mean_file_mb'] * large['images_per_second']:.0f} MB/s per node. "
            if large
            else ""
        )
        + "A local disk or S3 (thousands of GETs/s per prefix) keeps up with tens of nodes; the network "
        "link of a node is the bound to watch for large originals.",
    ]
    return lines


def _row(row: dict[str, Any]) -> str:
    workers = ", ".join(f"{role} {photos:,}" for role, photos in row["photos_per_worker"].items())
    return (
        f"| {row['configuration']} | {row['images_per_second']:g} | "
        f"{row['paired_limit_images_per_second']:g} | {row['over_limit']:g} | {workers} |"
    )
