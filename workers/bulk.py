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

import functools
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings

from catalog.services.bulk import jobs, planning
from catalog.services.bulk.chunks import ChunkPhoto, ChunkRun, bulk_chunk_claim, bulk_chunk_fail
from catalog.services.embeddings import EmbeddingRow
from catalog.services.images import PHOTO_MISSING_FROM_STORAGE, PHOTO_UNREADABLE
from catalog.services.suggestions import PhotoScores
from catalog.services.top_k import ScoredPhotos
from catalog.tasks_contract import ChunkOutcome, TaskName
from config.celery import app
from workers import inference, retry
from workers.storage import photo_reader

logger = logging.getLogger("workers.bulk")

#: Cached-embedding photos read, scored and written at a time: a whole chunk of cached photos
#: (~4,000, see `CACHED_PHOTO_COST`) in one go, while bounding memory (4.6 KB read per photo, and
#: about 25 KB of temporaries while scoring) when staff choose bigger chunks.
HEAD_ONLY_BATCH = 4096
#: CNN results written to the database every this many photos (the resume granularity).
WRITE_EVERY = 64

_RETRY = retry.policy().task_options()


# Reasons shown to staff (tests reuse them); {part} is "Planning" or "Chunk 3".
JOB_PART_FAILED = "{part} stopped on an unexpected error ({error}); resume the job once it is fixed."
JOB_PART_UNAVAILABLE = (
    "{part} could not reach a service it needs in {attempts} attempts ({error}); "
    "resume the job once it answers again."
)


def _failure_reason(part: str, error: BaseException) -> str:
    if isinstance(error, retry.RETRYABLE_ERRORS):
        attempts = retry.policy().max_retries + 1
        return JOB_PART_UNAVAILABLE.format(part=part, attempts=attempts, error=retry.describe(error))
    return JOB_PART_FAILED.format(part=part, error=retry.describe(error))


@app.task(name=TaskName.BULK_JOB_PLAN, bind=True, **_RETRY)
def bulk_job_plan_task(self: Any, job_id: int) -> int:
    """Lay out a job's chunks and send their tasks. Returns the number of chunks created.

    Retried like every task (`workers.retry`); when the retries run out, or on any other error,
    the job fails with a reason staff can read instead of staying PLANNING."""
    try:
        return planning.bulk_job_plan(job_id=job_id)
    except Exception as error:
        if not retry.gave_up(self.request.retries, error):
            raise
        jobs.bulk_job_fail(job_id=job_id, reason=_failure_reason("Planning", error))
        return 0


@app.task(name=TaskName.BULK_CHUNK, bind=True, **_RETRY)
def bulk_chunk_task(self: Any, job_id: int, chunk_id: int) -> str:
    """Reclassify one chunk of a bulk job. Returns its `ChunkOutcome` (a word, for Flower).

    A database, storage or broker error is retried (`workers.retry`); when the retries run out,
    or on any other error, the job fails with a reason staff can read (instead of staying
    RUNNING forever) and the chunk is given back for a resume.
    """
    try:
        return chunk_run(chunk_id=chunk_id)
    except Exception as error:
        if not retry.gave_up(self.request.retries, error):
            raise
        bulk_chunk_fail(
            job_id=job_id, chunk_id=chunk_id, reason=functools.partial(_failure_reason, error=error)
        )
        return ChunkOutcome.FAILED


def _reason(error: BaseException) -> str:
    from classifier import ImageRejected

    if isinstance(error, ImageRejected):
        return error.reason
    if isinstance(error, FileNotFoundError):
        return PHOTO_MISSING_FROM_STORAGE
    return PHOTO_UNREADABLE.format(error=retry.describe(error))


def chunk_run(*, chunk_id: int) -> ChunkOutcome:
    """Run one chunk: score its photos with the job's model version, write suggestions (unless a
    dry run), record failures in the ledger, then close the chunk. Returns DONE, CANCELLED,
    FAILED (the version cannot be loaded) or why nothing was done (ALREADY_DONE, GONE, the
    job's state)."""
    started = time.perf_counter()
    run = bulk_chunk_claim(chunk_id=chunk_id)
    if isinstance(run, ChunkOutcome):
        return run
    try:
        classifier = inference.classifier_for_version(run.model_version)
    except inference.ModelVersionUnavailable as error:
        return run.fail(str(error))
    todo = run.photos()
    timings: dict[str, float] = {}

    # 1. Cached backbone outputs: the head alone, one read, one matrix product and one write per
    # HEAD_ONLY_BATCH photos.
    began = time.perf_counter()
    cached_ids = _score_cached(run, todo, classifier, timings)
    timings["head_only_ms"] = (time.perf_counter() - began) * 1000

    # 2. The rest through the CNN; photos in flight when an earlier attempt died go one at a time.
    began = time.perf_counter()
    rest = [photo for photo in todo if photo.image_id not in cached_ids]
    groups = (
        ([p for p in rest if not p.in_flight_at_crash], None),
        ([p for p in rest if p.in_flight_at_crash], 1),
    )
    for group, batch_size in groups:
        if group and not _run_cnn(run, group, batch_size, classifier, timings):
            return run.give_back()
    timings["cnn_ms"] = (time.perf_counter() - began) * 1000

    outcome = run.close()
    timings["total_ms"] = (time.perf_counter() - started) * 1000
    _log_chunk(run, timings)
    return outcome


def _score_cached(
    run: ChunkRun, todo: Sequence[ChunkPhoto], classifier: Any, timings: dict[str, float]
) -> set[int]:
    """Score the photos of `todo` with cached backbone outputs for the classifier's backbone by
    the head alone, `HEAD_ONLY_BATCH` at a time; returns their ids (none when the job's version
    has another backbone)."""
    backbone_version = run.model_version.backbone_version or classifier.backbone_version
    cached_ids: set[int] = set()
    if backbone_version != classifier.backbone_version:
        return cached_ids
    todo_ids = [photo.image_id for photo in todo]
    for start in range(0, len(todo_ids), HEAD_ONLY_BATCH):
        fetching = time.perf_counter()
        cached = run.cached_outputs(
            image_ids=todo_ids[start : start + HEAD_ONLY_BATCH], backbone_version=backbone_version
        )
        _add_ms(timings, "fetch_ms", fetching)
        if not cached.image_ids:
            continue
        scores = classifier.scores_from_outputs(cached.embeddings, cached.logits)
        # A damaged cache row (NaN, inf) scores nothing sensible: that photo takes the CNN path.
        usable = np.isfinite(scores).all(axis=1)
        kept = [image_id for image_id, ok in zip(cached.image_ids, usable.tolist(), strict=True) if ok]
        writing = time.perf_counter()
        run.write(_top_k_arrays(kept, scores[usable], classifier.slugs))
        _add_ms(timings, "write_ms", writing)
        cached_ids.update(kept)
    run.counts.cached = len(cached_ids)
    return cached_ids


def _add_ms(timings: dict[str, float], key: str, since: float) -> None:
    timings[key] = timings.get(key, 0.0) + (time.perf_counter() - since) * 1000


def _log_chunk(run: ChunkRun, timings: dict[str, float]) -> None:
    counts = run.counts
    logger.info(
        json.dumps(
            {
                "event": "bulk_chunk_done",
                "job_id": run.job.pk,
                "chunk": run.chunk.index,
                "model_version": run.model_version.name,
                "dry_run": run.job.dry_run,
                "photos": run.photo_count,
                "cached": counts.cached,
                "cnn": counts.cnn,
                "skipped": counts.skipped,
                "failed": counts.failed,
                "ms": {key: round(value, 1) for key, value in timings.items()},
            }
        )
    )


def _top_k_arrays(image_ids: Sequence[int], scores: np.ndarray, slugs: Sequence[str]) -> ScoredPhotos:
    """Top-k of each row of `scores` (N, K), as `ImageClassifier.top_k_from_scores` orders them,
    as arrays (this runs for every photo of a head-only job: no object per photo)."""
    keep = max(1, min(settings.SUGGESTION_TOP_K, len(slugs)))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    values = np.take_along_axis(scores, order, axis=1).astype(np.float64)
    return ScoredPhotos(np.asarray(image_ids, dtype=np.int64), order, values, slugs)


def _photo_scores(image_id: int, top_k: Sequence[Any]) -> PhotoScores:
    return PhotoScores(image_id=image_id, top_k=[(s.slug, float(s.confidence)) for s in top_k])


def _run_cnn(
    run: ChunkRun,
    photos: Sequence[ChunkPhoto],
    batch_size: int | None,
    classifier: Any,
    timings: dict[str, float],
) -> bool:
    """Decode and classify `photos`, writing results and backbone outputs every `WRITE_EVERY`;
    returns False when the job was cancelled meanwhile (the results so far are kept)."""
    batcher = inference.batch_classifier_for(classifier)
    scores: list[PhotoScores] = []
    outputs: list[EmbeddingRow] = []

    def flush() -> bool:
        writing = time.perf_counter()
        run.write(scores, outputs=outputs, backbone_version=classifier.backbone_version)
        _add_ms(timings, "write_ms", writing)
        scores.clear()
        outputs.clear()
        return not run.cancelled()

    results = batcher.classify(
        ((photo.image_id, photo_reader(photo.file_name)) for photo in photos),
        top_k=settings.SUGGESTION_TOP_K,
        batch_size=batch_size,
        on_batch=run.in_flight,
    )
    for result in results:
        if result.prediction is None:
            run.fail_photos({result.key: _reason(result.error or RuntimeError("no prediction"))})
            continue
        run.counts.cnn += 1
        prediction = result.prediction
        scores.append(_photo_scores(result.key, prediction.top_k))
        if prediction.logits is not None:
            outputs.append((result.key, prediction.embedding, prediction.logits))
        if len(scores) >= WRITE_EVERY and not flush():
            return False
    return flush()
