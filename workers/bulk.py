"""Bulk reclassification tasks on the `bulk` queue: plan a job's chunks, run one chunk.

A chunk's photos take the cheapest path available:

- photos with cached backbone outputs for the version's backbone are scored by the head alone
  (`ImageClassifier.scores_from_outputs`: a few matrix products), no decode, no CNN;
- the rest are read from storage and decoded in a thread pool, overlapped with one onnxruntime
  call per batch (`classifier.batching`), and their backbone outputs are cached for next time.

Results are written in bulk (upserts of a few hundred rows per statement) as they come, so a
killed chunk resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage

from catalog import services
from catalog.services import bulk
from catalog.services.bulk import ChunkCounts, ChunkPhoto, PhotoScores
from catalog.tasks_contract import TaskName
from config.celery import app
from workers import inference
from workers.tasks import RETRYABLE_ERRORS

logger = logging.getLogger("workers.bulk")

#: Cached-embedding photos read, scored and written at a time: a whole chunk of cached photos
#: (~4,000, see `CACHED_PHOTO_COST`) in one go, while bounding memory (~9 KB read per photo, and
#: about 60 KB of float64 temporaries while scoring) when staff choose bigger chunks.
HEAD_ONLY_BATCH = 4096
#: CNN results written to the database every this many photos (the resume granularity).
WRITE_EVERY = 64

_RETRY = {
    "autoretry_for": RETRYABLE_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@app.task(name=TaskName.BULK_JOB_PLAN, **_RETRY)
def bulk_job_plan_task(job_id: int) -> int:
    """Lay out a job's chunks and send their tasks. Returns the number of chunks created."""
    return bulk.bulk_job_plan(job_id=job_id)


CHUNK_FAILED = "Chunk {index} stopped on an unexpected error ({error}); resume the job once it is fixed."


@app.task(name=TaskName.BULK_CHUNK, **_RETRY)
def bulk_chunk_task(job_id: int, chunk_id: int) -> str:
    """Reclassify one chunk of a bulk job. Returns a short outcome word (for Flower).

    A database, storage or broker error is retried; any other error fails the job with a reason
    staff can read (instead of leaving it running forever) and gives the chunk back for a resume.
    """
    try:
        return chunk_run(chunk_id=chunk_id)
    except RETRYABLE_ERRORS:
        raise
    except Exception as error:
        index = bulk.BulkJobChunk.objects.filter(pk=chunk_id).values_list("index", flat=True).first()
        bulk.bulk_job_fail(job_id=job_id, reason=CHUNK_FAILED.format(index=index, error=type(error).__name__))
        bulk.bulk_chunk_release(chunk_id=chunk_id)
        raise


def _reader(name: str) -> Any:
    def read() -> bytes:
        with default_storage.open(name, "rb") as handle:
            return handle.read()

    return read


def _reason(error: BaseException) -> str:
    from classifier import ImageRejected

    if isinstance(error, ImageRejected):
        return error.reason
    if isinstance(error, FileNotFoundError):
        return services.PHOTO_MISSING_FROM_STORAGE
    return f"The photo could not be read from storage ({type(error).__name__})."


def chunk_run(*, chunk_id: int) -> str:
    """Run one chunk: score its photos with the job's model version, write suggestions (unless a
    dry run), record failures in the ledger, then close the chunk. Returns "done", "cancelled",
    "failed" (the version cannot be loaded) or why nothing was done ("already-done", "gone")."""
    started = time.perf_counter()
    begin = bulk.bulk_chunk_begin(chunk_id=chunk_id)
    if isinstance(begin, str):
        return begin
    job, chunk = begin.job, begin.chunk
    try:
        classifier = inference.classifier_for_version(job.model_version)
    except inference.ModelVersionUnavailable as error:
        bulk.bulk_job_fail(job_id=job.pk, reason=str(error))
        bulk.bulk_chunk_release(chunk_id=chunk.pk)
        return "failed"
    photos = bulk.bulk_chunk_photos(job=job, chunk=chunk)
    todo = photos if job.dry_run else [photo for photo in photos if not photo.has_suggestion]
    counts = ChunkCounts(skipped=len(photos) - len(todo))
    errors = {
        photo.image_id: services.WORKER_CRASHED_ON_PHOTO
        for photo in todo
        if photo.image_id in begin.convicted
    }
    todo = [photo for photo in todo if photo.image_id not in errors]
    new_top_k: dict[int, list[dict[str, Any]]] = {}
    timings: dict[str, float] = {}

    def record(scores: Sequence[PhotoScores]) -> None:
        began = time.perf_counter()
        stored, failed = bulk.suggestions_record_many(
            model_version=job.model_version, scores=scores, write=not job.dry_run
        )
        new_top_k.update(stored)
        errors.update(failed)
        counts.suggested += len(stored)
        timings["write_ms"] = timings.get("write_ms", 0.0) + (time.perf_counter() - began) * 1000

    # 1. Cached backbone outputs: the head alone, one read, one matrix product and one write per
    # HEAD_ONLY_BATCH photos.
    began = time.perf_counter()
    backbone_version = job.model_version.backbone_version or classifier.backbone_version
    cached_ids: set[int] = set()
    if backbone_version == classifier.backbone_version:
        todo_ids = [photo.image_id for photo in todo]
        for start in range(0, len(todo_ids), HEAD_ONLY_BATCH):
            fetching = time.perf_counter()
            ids, embeddings, logits = bulk.embeddings_cached(
                image_ids=todo_ids[start : start + HEAD_ONLY_BATCH], backbone_version=backbone_version
            )
            timings["fetch_ms"] = timings.get("fetch_ms", 0.0) + (time.perf_counter() - fetching) * 1000
            if not ids:
                continue
            scores = classifier.scores_from_outputs(embeddings, logits)
            # A damaged cache row (NaN, inf) scores nothing sensible: that photo takes the CNN path.
            usable = np.isfinite(scores).all(axis=1)
            kept = [image_id for image_id, ok in zip(ids, usable.tolist(), strict=True) if ok]
            record(_top_k_arrays(kept, scores[usable], classifier.slugs))
            cached_ids.update(kept)
        counts.cached = len(cached_ids)
    timings["head_only_ms"] = (time.perf_counter() - began) * 1000

    # 2. The rest through the CNN; photos in flight when an earlier attempt died go one at a time.
    began = time.perf_counter()
    rest = [photo for photo in todo if photo.image_id not in cached_ids]
    groups = (
        ([p for p in rest if p.image_id not in begin.suspects], None),
        ([p for p in rest if p.image_id in begin.suspects], 1),
    )
    for group, batch_size in groups:
        if group and not _run_cnn(job.pk, chunk.pk, group, batch_size, classifier, counts, errors, record):
            bulk.bulk_chunk_release(chunk_id=chunk.pk)
            return "cancelled"
    timings["cnn_ms"] = (time.perf_counter() - began) * 1000

    counts.failed = len(errors)
    counts.processed = counts.suggested + counts.failed
    bulk.bulk_errors_record(chunk=chunk, errors=errors)
    bulk.bulk_errors_clear(job_id=job.pk, image_ids=new_top_k)
    bulk.bulk_chunk_finish(job=job, chunk=chunk, photos=photos, new_top_k=new_top_k, counts=counts)
    timings["total_ms"] = (time.perf_counter() - started) * 1000
    logger.info(
        json.dumps(
            {
                "event": "bulk_chunk_done",
                "job_id": job.pk,
                "chunk": chunk.index,
                "model_version": job.model_version.name,
                "dry_run": job.dry_run,
                "photos": len(photos),
                "cached": counts.cached,
                "cnn": counts.cnn,
                "skipped": counts.skipped,
                "failed": counts.failed,
                "ms": {key: round(value, 1) for key, value in timings.items()},
            }
        )
    )
    return "done"


def _top_k_arrays(image_ids: Sequence[int], scores: np.ndarray, slugs: Sequence[str]) -> list[PhotoScores]:
    """Top-k of each row of `scores` (N, K), as `ImageClassifier.top_k_from_scores` orders them,
    without building an object per category (this runs for every photo of a head-only job)."""
    keep = max(1, min(settings.SUGGESTION_TOP_K, len(slugs)))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    names = np.asarray(slugs, dtype=object)[order].tolist()
    values = np.take_along_axis(scores, order, axis=1).tolist()
    return [
        PhotoScores(image_id=image_id, top_k=list(zip(row_names, row_values, strict=True)))
        for image_id, row_names, row_values in zip(image_ids, names, values, strict=True)
    ]


def _photo_scores(image_id: int, top_k: Sequence[Any]) -> PhotoScores:
    return PhotoScores(image_id=image_id, top_k=[(s.slug, float(s.confidence)) for s in top_k])


def _run_cnn(
    job_id: int,
    chunk_id: int,
    photos: Sequence[ChunkPhoto],
    batch_size: int | None,
    classifier: Any,
    counts: ChunkCounts,
    errors: dict[int, str],
    record: Any,
) -> bool:
    """Decode and classify `photos`, writing results every `WRITE_EVERY`; returns False when the
    job was cancelled meanwhile (the results so far are kept)."""
    batcher = inference.batch_classifier_for(classifier)
    scores: list[PhotoScores] = []
    cached: list[tuple[int, bytes, bytes]] = []

    def flush() -> bool:
        record(scores)
        bulk.embeddings_record_many(backbone_version=classifier.backbone_version, rows=cached)
        scores.clear()
        cached.clear()
        return bulk.bulk_job_is_active(job_id=job_id)

    outcomes = batcher.classify(
        ((photo.image_id, _reader(photo.file_name)) for photo in photos),
        top_k=settings.SUGGESTION_TOP_K,
        batch_size=batch_size,
        on_batch=lambda keys: bulk.bulk_chunk_inflight_set(chunk_id=chunk_id, image_ids=keys),
    )
    for outcome in outcomes:
        if outcome.prediction is None:
            errors[outcome.key] = _reason(outcome.error or RuntimeError("no prediction"))
            continue
        counts.cnn += 1
        prediction = outcome.prediction
        scores.append(_photo_scores(outcome.key, prediction.top_k))
        if prediction.logits is not None:
            cached.append(
                (
                    outcome.key,
                    prediction.embedding.astype("<f4").tobytes(),
                    prediction.logits.astype("<f4").tobytes(),
                )
            )
        if len(scores) >= WRITE_EVERY and not flush():
            return False
    return flush()
