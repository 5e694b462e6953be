"""Bulk reclassification: a job re-suggests categories for the catalogue with one model version.

The job walks listings by primary key in chunks of about `BULK_CHUNK_SIZE` photos (whole
listings, so a listing's suggestion is derived inside one chunk) and sends one task per chunk to
the `bulk` queue; fresh uploads keep their own queue. Everything is restartable: chunk rows
persist progress, suggestions are upserted (unique on image + model version), a re-run skips
photos that already have a suggestion for the version, and chunk counters are absolute, so a
redelivered chunk never counts twice.

A dry run computes the same suggestions (and caches embeddings, which no one sees) but writes no
suggestion and touches no listing; its report says how many listings would change category.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from catalog.models import (
    BulkChunkStatus,
    BulkJob,
    BulkJobChunk,
    BulkJobError,
    BulkJobStatus,
    Category,
    CategorySource,
    CategorySuggestion,
    ImageEmbedding,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.queueing import enqueue_on_commit, send_task
from catalog.selectors import catalogue as catalogue_selectors
from catalog.services.suggestions import NO_KNOWN_CATEGORY
from catalog.tasks_contract import TaskName

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

_J = BulkJobStatus
_C = BulkChunkStatus
ACTIVE_STATES = (_J.PLANNING, _J.RUNNING)
#: Listings read per planner query.
PLAN_PAGE = 10_000
EMBEDDING_DIM = 1280
LOGITS_DIM = 1000
#: A photo with cached backbone outputs counts as this fraction of one to decode when chunks are
#: laid out: scoring it is ~30x cheaper, so bigger chunks spread the per-chunk queries further.
CACHED_PHOTO_COST = 0.25
#: Dry-run sample size kept per chunk and per job.
SAMPLE_PER_CHUNK = 5
SAMPLE_PER_JOB = 20

# Messages shown to staff (tests reuse them).
JOB_NOT_A_DRY_RUN = "Only a finished dry run can be applied."
JOB_NOT_RESUMABLE = "Only a cancelled, failed or stalled job can be resumed."
JOB_NOTHING_TO_RETRY = "This job has no failed photos to retry."
JOB_NOT_CANCELLABLE = "Only a planning or running job can be cancelled."
WORKER_CRASHED_ON_PHOTO = "Classifying this photo stopped the worker; it was set aside."


class BulkJobRefused(ValueError):
    """An action the job's state does not allow; `str(error)` is shown to staff."""


# --- starting, planning, dispatching ------------------------------------------------------------


def bulk_job_start(
    *,
    model_version: ModelVersion,
    category: Category | None = None,
    dry_run: bool = False,
    requested_by: AbstractBaseUser | None = None,
    chunk_size: int | None = None,
    source_job: BulkJob | None = None,
) -> BulkJob:
    """Create a job and queue its planning (after commit) on the `bulk` queue.

    `category` limits the job to listings in that subtree (their category, or suggested category
    when none is set). `chunk_size`: photos per chunk, default `settings.BULK_CHUNK_SIZE`.
    """
    job = BulkJob.objects.create(
        model_version=model_version,
        category=category,
        dry_run=dry_run,
        requested_by_id=getattr(requested_by, "pk", None),
        chunk_size=max(1, chunk_size or settings.BULK_CHUNK_SIZE),
        source_job=source_job,
    )
    enqueue_on_commit(TaskName.BULK_JOB_PLAN, args=[job.pk])
    logger.info("bulk job %s queued: version %s, dry run %s", job.pk, model_version.name, dry_run)
    return job


def bulk_job_apply(*, job: BulkJob, requested_by: AbstractBaseUser | None = None) -> BulkJob:
    """Start the real run of a finished dry run, with the same version and scope.

    Raises `BulkJobRefused` unless `job` is a dry run that is DONE.
    """
    if not job.dry_run or job.status != _J.DONE:
        raise BulkJobRefused(JOB_NOT_A_DRY_RUN)
    return bulk_job_start(
        model_version=job.model_version,
        category=job.category,
        dry_run=False,
        requested_by=requested_by,
        chunk_size=job.chunk_size,
        source_job=job,
    )


def _scope_images(*, job: BulkJob) -> QuerySet[ListingImage]:
    images = ListingImage.objects.filter(listing__is_probe=False)
    if job.category is not None:
        ids = catalogue_selectors.category_descendant_ids(category=job.category)
        images = images.filter(
            Q(listing__category_id__in=ids)
            | Q(listing__category__isnull=True, listing__suggested_category_id__in=ids)
        )
    return images


def bulk_job_plan(*, job_id: int, page: int = PLAN_PAGE) -> int:
    """Lay out the job's remaining chunks, walking listings by primary key `page` at a time.

    A chunk closes once it holds `chunk_size` photos to decode, a photo whose backbone outputs
    are cached for the version's backbone counting as `CACHED_PHOTO_COST` of one.

    Each page is one transaction holding the job row's lock (concurrent planners of one job
    wait, and never lay out a listing twice); the cursor `planned_until_listing` makes a killed
    planner resume where it stopped. Returns the number of chunks created. An empty scope
    finishes the job at once.
    """
    created = 0
    while True:
        with transaction.atomic():
            job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
            if job is None or job.planning_done or job.status not in ACTIVE_STATES:
                break
            backbone = job.model_version.backbone_version
            rows = list(
                _scope_images(job=job)
                .filter(listing_id__gt=job.planned_until_listing)
                .values("listing_id")
                .annotate(
                    photos=Count("id", distinct=True),
                    cached=Count("embeddings", filter=Q(embeddings__backbone_version=backbone)),
                )
                .order_by("listing_id")[:page]
            )
            chunks: list[BulkJobChunk] = []
            first: int | None = None
            photos, cost = 0, 0.0
            for position, row in enumerate(rows):
                first = row["listing_id"] if first is None else first
                photos += row["photos"]
                cost += row["photos"] - row["cached"] + row["cached"] * CACHED_PHOTO_COST
                if cost >= job.chunk_size or position == len(rows) - 1:
                    chunks.append(
                        BulkJobChunk(
                            job=job,
                            index=job.total_chunks + len(chunks),
                            first_listing_id=first,
                            last_listing_id=row["listing_id"],
                            planned_images=photos,
                        )
                    )
                    first, photos, cost = None, 0, 0.0
            BulkJobChunk.objects.bulk_create(chunks)
            BulkJob.objects.filter(pk=job.pk).update(
                planned_until_listing=rows[-1]["listing_id"] if rows else job.planned_until_listing,
                planning_done=len(rows) < page,
                total_chunks=F("total_chunks") + len(chunks),
                total_images=F("total_images") + sum(chunk.planned_images for chunk in chunks),
                status=_J.RUNNING,
                started_at=job.started_at or timezone.now(),
            )
            created += len(chunks)
            bulk_job_dispatch(job_id=job.pk)
    bulk_job_finish_if_complete(job_id=job_id)
    return created


def bulk_job_dispatch(*, job_id: int) -> int:
    """Send one task per PENDING chunk of the job (after commit); each becomes QUEUED once the
    broker has it. A chunk whose send fails stays PENDING for `bulk_job_resume`. Returns how many
    sends were registered."""
    chunk_ids = list(
        BulkJobChunk.objects.filter(job_id=job_id, status=_C.PENDING)
        .order_by("index")
        .values_list("pk", flat=True)
    )
    for chunk_id in chunk_ids:
        enqueue_on_commit(TaskName.BULK_CHUNK, args=[job_id, chunk_id], on_sent=_marker_queued(chunk_id))
    return len(chunk_ids)


def bulk_jobs_requeue_stuck() -> int:
    """Periodic sweeper: send the planning task again for jobs left PLANNING longer than
    `STUCK_JOB_AFTER_S` (its message was lost to a broker outage at commit or a Redis restart;
    a job leaves PLANNING with its first planned page). Planning is idempotent and serialised by
    the job row's lock, so a duplicate planner does nothing; each job is sent again at most once
    per `STUCK_JOB_AFTER_S`. Returns how many were sent."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.STUCK_JOB_AFTER_S)
    sent = 0
    for job_id in BulkJob.objects.filter(status=_J.PLANNING, updated_at__lt=cutoff).values_list(
        "pk", flat=True
    ):
        if send_task(TaskName.BULK_JOB_PLAN, args=[job_id]):
            BulkJob.objects.filter(pk=job_id).update(updated_at=now)
            logger.warning("bulk job %s: planning sent again", job_id)
            sent += 1
    return sent


def _marker_queued(chunk_id: int) -> Callable[[], None]:
    def mark() -> None:
        BulkJobChunk.objects.filter(pk=chunk_id, status=_C.PENDING).update(status=_C.QUEUED)

    return mark


# --- staff actions --------------------------------------------------------------------------------


def bulk_job_cancel(*, job: BulkJob) -> None:
    """Stop the job: queued chunks return without work, running ones stop at their next batch.
    Raises `BulkJobRefused` unless the job is planning or running."""
    if not BulkJob.objects.filter(pk=job.pk, status__in=ACTIVE_STATES).update(
        status=_J.CANCELLED, finished_at=timezone.now()
    ):
        raise BulkJobRefused(JOB_NOT_CANCELLABLE)
    job.refresh_from_db()


def bulk_job_resume(*, job: BulkJob) -> int:
    """Finish what a cancelled, failed or killed job left: every chunk not DONE is sent again
    (its photos that already have a suggestion are skipped), and planning continues if it had not
    finished. Returns the number of chunks sent. Raises `BulkJobRefused` for a finished job."""
    with transaction.atomic():
        locked = BulkJob.objects.select_for_update().get(pk=job.pk)
        if locked.status == _J.DONE:
            raise BulkJobRefused(JOB_NOT_RESUMABLE)
        BulkJob.objects.filter(pk=job.pk).update(
            status=_J.RUNNING if locked.planning_done else _J.PLANNING, failure_reason="", finished_at=None
        )
        BulkJobChunk.objects.filter(job=job).exclude(status=_C.DONE).update(status=_C.PENDING)
        sent = bulk_job_dispatch(job_id=job.pk)
        if not locked.planning_done:
            enqueue_on_commit(TaskName.BULK_JOB_PLAN, args=[job.pk])
    job.refresh_from_db()
    return sent


def bulk_job_retry_failed(*, job: BulkJob) -> int:
    """Run again the chunks that hold photos of the error ledger; photos classified meanwhile are
    skipped and leave the ledger. Returns the number of chunks sent. Raises `BulkJobRefused` when
    the ledger is empty or the job is still active."""
    with transaction.atomic():
        locked = BulkJob.objects.select_for_update().get(pk=job.pk)
        chunk_ids = set(BulkJobError.objects.filter(job=job).values_list("chunk_id", flat=True))
        if not chunk_ids or locked.status in ACTIVE_STATES:
            raise BulkJobRefused(JOB_NOTHING_TO_RETRY)
        BulkJobChunk.objects.filter(pk__in=chunk_ids).update(status=_C.PENDING)
        BulkJob.objects.filter(pk=job.pk).update(status=_J.RUNNING, finished_at=None, failure_reason="")
        sent = bulk_job_dispatch(job_id=job.pk)
    _progress_refresh(job_id=job.pk)
    job.refresh_from_db()
    return sent


def bulk_job_fail(*, job_id: int, reason: str) -> None:
    """Mark an active job FAILED with a reason staff can read (e.g. the version cannot be loaded)."""
    BulkJob.objects.filter(pk=job_id, status__in=ACTIVE_STATES).update(
        status=_J.FAILED, failure_reason=reason, finished_at=timezone.now()
    )
    logger.warning("bulk job %s failed: %s", job_id, reason)


# --- one chunk, as the worker runs it --------------------------------------------------------------


@dataclass(frozen=True)
class ChunkStart:
    """What a worker needs to run a chunk. `suspects`: photos in flight when an earlier attempt
    died, to be retried one at a time; `convicted`: the photo that was alone in flight when an
    earlier attempt died (it goes to the ledger, unclassified)."""

    job: BulkJob
    chunk: BulkJobChunk
    suspects: frozenset[int]
    convicted: frozenset[int]


def bulk_chunk_begin(*, chunk_id: int) -> ChunkStart | str:
    """Claim a chunk for a run. Returns a `ChunkStart`, or a word saying why there is nothing to
    do: "gone" (row deleted), "already-done", or the job's state ("cancelled", "failed", "done")."""
    with transaction.atomic():
        chunk = BulkJobChunk.objects.select_for_update().filter(pk=chunk_id).first()
        if chunk is None:
            return "gone"
        job = BulkJob.objects.select_related("model_version", "category").get(pk=chunk.job_id)
        if chunk.status == _C.DONE:
            return "already-done"
        if job.status not in ACTIVE_STATES:
            return str(job.status)
        inflight = frozenset(int(i) for i in chunk.inflight_image_ids)
        now = timezone.now()
        BulkJobChunk.objects.filter(pk=chunk.pk).update(
            status=_C.RUNNING, attempts=F("attempts") + 1, started_at=chunk.started_at or now
        )
        chunk.refresh_from_db()
    convicted = inflight if len(inflight) == 1 else frozenset()
    return ChunkStart(job=job, chunk=chunk, suspects=inflight - convicted, convicted=convicted)


@dataclass(frozen=True)
class ChunkPhoto:
    """One photo of a chunk: `has_suggestion` for the job's model version already."""

    image_id: int
    listing_id: int
    file_name: str
    has_suggestion: bool


def bulk_chunk_photos(*, job: BulkJob, chunk: BulkJobChunk) -> list[ChunkPhoto]:
    """The chunk's photos in the job's scope, by primary key (two queries).

    Which of them already have a suggestion is looked up by their ids, through the unique index
    on (image, model version): selecting the version's suggestions of the chunk's listings made
    PostgreSQL scan every suggestion of the version for each chunk, a cost that grew with the
    job (0.7 s a chunk three quarters into a million-photo job).
    """
    rows = list(
        _scope_images(job=job)
        .filter(listing_id__gte=chunk.first_listing_id, listing_id__lte=chunk.last_listing_id)
        .order_by("pk")
        .values_list("pk", "listing_id", "file")
    )
    with connection.cursor() as cursor:  # one array parameter, not thousands of IN (...) ones
        cursor.execute(
            f"SELECT image_id FROM {CategorySuggestion._meta.db_table} "
            "WHERE model_version_id = %s AND image_id = ANY(%s)",
            [job.model_version_id, [pk for pk, _, _ in rows]],
        )
        done = {image_id for (image_id,) in cursor.fetchall()}
    return [ChunkPhoto(pk, listing_id, str(name), pk in done) for pk, listing_id, name in rows]


def bulk_job_is_active(*, job_id: int) -> bool:
    """False once the job was cancelled or failed: running chunks stop at their next batch."""
    return BulkJob.objects.filter(pk=job_id, status__in=ACTIVE_STATES).exists()


def bulk_chunk_inflight_set(*, chunk_id: int, image_ids: Sequence[int]) -> None:
    """Record the photos about to enter the network (see `BulkJobChunk.inflight_image_ids`).
    Visible at once to the next attempt; durable with the chunk's next synchronous commit."""
    from catalog.pgcopy import commit_without_waiting

    with commit_without_waiting():
        BulkJobChunk.objects.filter(pk=chunk_id).update(inflight_image_ids=list(image_ids))


def bulk_chunk_release(*, chunk_id: int) -> None:
    """Give a chunk back (its job was cancelled mid-run): PENDING, so a resume sends it again."""
    BulkJobChunk.objects.filter(pk=chunk_id).exclude(status=_C.DONE).update(status=_C.PENDING)


def embeddings_cached(
    *, image_ids: Sequence[int], backbone_version: str
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Cached backbone outputs of the photos that have them for `backbone_version`.

    Returns `(image_ids, embeddings float32 (N, 1280), logits float32 (N, 1000))`, rows aligned,
    in primary-key order of the photos. A row whose arrays are not of those sizes (damaged) is
    left out, so the photo takes the CNN path. One binary COPY, read in place by numpy: no
    Python object per row (see `catalog.pgcopy`).
    """
    import numpy as np

    from catalog.pgcopy import copy_out, fixed_width_rows

    empty: tuple[list[int], np.ndarray, np.ndarray] = (
        [],
        np.zeros((0, EMBEDDING_DIM), np.float32),
        np.zeros((0, LOGITS_DIM), np.float32),
    )
    if not image_ids:
        return empty
    data = copy_out(
        f"SELECT image_id, embedding, logits FROM {ImageEmbedding._meta.db_table} "
        "WHERE backbone_version = %s AND image_id = ANY(%s::bigint[]) "
        "AND octet_length(embedding) = %s AND octet_length(logits) = %s ORDER BY image_id",
        [backbone_version, list(image_ids), 4 * EMBEDDING_DIM, 4 * LOGITS_DIM],
    )
    rows = fixed_width_rows(
        data, [("image_id", ">i8", 1), ("embedding", "<f4", EMBEDDING_DIM), ("logits", "<f4", LOGITS_DIM)]
    )
    if rows is None:  # cannot happen with the sizes filtered above; never misread a row
        raise ValueError("Unexpected layout of the embedding cache's COPY output.")
    if not len(rows):
        return empty
    return rows["image_id"].tolist(), rows["embedding"], rows["logits"]


def embeddings_record_many(*, backbone_version: str, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
    """Cache backbone outputs `(image_id, embedding float32 LE bytes, logits float32 LE bytes)`,
    replacing a photo's earlier row for `backbone_version` (e.g. a damaged one).

    One upsert with the arrays bound in binary: a `bulk_create` quoted ~9 KB of bytea per photo
    into hex SQL text, which cost the CNN path a few percent of its throughput. Committed without
    waiting for the disk (`catalog.pgcopy.commit_without_waiting`): the chunk's end makes it
    durable.
    """
    import psycopg

    if not rows:
        return
    from catalog.pgcopy import commit_without_waiting

    connection.ensure_connection()
    with commit_without_waiting(), psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"INSERT INTO {ImageEmbedding._meta.db_table} "
            "(image_id, backbone_version, embedding, logits, created_at) "
            "SELECT v.image_id, %s, v.embedding, v.logits, now() "
            "FROM unnest(%b::bigint[], %b::bytea[], %b::bytea[]) AS v(image_id, embedding, logits) "
            "ON CONFLICT (image_id, backbone_version) DO UPDATE SET "
            "embedding = EXCLUDED.embedding, logits = EXCLUDED.logits",
            [
                backbone_version,
                [image_id for image_id, _, _ in rows],
                [embedding for _, embedding, _ in rows],
                [logits for _, _, logits in rows],
            ],
        )


@dataclass(frozen=True)
class PhotoScores:
    """A photo's top-k as `(category slug, confidence)` pairs, best first."""

    image_id: int
    top_k: Sequence[tuple[str, float]]


def suggestions_record_many(
    *, model_version: ModelVersion, scores: Sequence[PhotoScores], write: bool = True
) -> tuple[dict[int, list[dict[str, Any]]], dict[int, str]]:
    """Upsert one suggestion per photo for `model_version`, unique on image + model version, so a
    repeated run rewrites the same rows.

    The rows are those `image_classification_record` writes for the same top-k (the upload
    path): categories the database does not know are dropped from each top-k, confidences kept
    to 6 decimals in the top-k. They go in by one binary COPY into a staging table and one
    `INSERT ... SELECT ... ON CONFLICT DO UPDATE` (`catalog.pgcopy.staged_upsert`), so the cost
    per photo is PostgreSQL's. With `write=False` (dry run) nothing is written. Returns `(top_k
    JSON by image id, reasons by image id for photos with no known category)`.
    """
    from catalog.pgcopy import staged_upsert

    known = dict(Category.objects.values_list("slug", "pk"))
    stored: dict[int, list[dict[str, Any]]] = {}
    failed: dict[int, str] = {}
    rows: list[tuple[int, int, float, str]] = []
    quoted = {slug: _json_string(slug) for slug in known}
    for photo in scores:
        entries = [(slug, float(confidence)) for slug, confidence in photo.top_k if slug in known]
        if not entries:
            failed[photo.image_id] = NO_KNOWN_CATEGORY
            continue
        rounded = [(slug, round(value, 6)) for slug, value in entries]
        stored[photo.image_id] = [{"slug": slug, "confidence": value} for slug, value in rounded]
        text = ", ".join(f'{{"slug": {quoted[slug]}, "confidence": {value!r}}}' for slug, value in rounded)
        rows.append((photo.image_id, known[entries[0][0]], entries[0][1], f"[{text}]"))
    if write and rows:
        table = CategorySuggestion._meta.db_table
        staged_upsert(
            staging="bulk_suggestion_staging",
            columns=[
                ("image_id", "int8"),
                ("category_id", "int8"),
                ("confidence", "float8"),
                ("top_k", "text"),
            ],
            rows=rows,
            upsert=f"INSERT INTO {table} "
            "(image_id, model_version_id, category_id, confidence, top_k, created_at, updated_at) "
            "SELECT image_id, %s, category_id, confidence, top_k::jsonb, now(), now() "
            "FROM bulk_suggestion_staging "
            "ON CONFLICT (image_id, model_version_id) DO UPDATE SET category_id = EXCLUDED.category_id, "
            "confidence = EXCLUDED.confidence, top_k = EXCLUDED.top_k, updated_at = EXCLUDED.updated_at",
            params=[model_version.pk],
        )
    return stored, failed


def _json_string(value: str) -> str:
    import json

    return json.dumps(value)


def bulk_errors_record(*, chunk: BulkJobChunk, errors: Mapping[int, str]) -> None:
    """Add photos to the job's error ledger (or count one more attempt for those already there)."""
    if not errors:
        return
    table = BulkJobError._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (job_id, chunk_id, image_id, reason, attempts, created_at, updated_at) "
            "VALUES (%s, %s, %s, %s, 1, %s, %s) ON CONFLICT (job_id, image_id) DO UPDATE SET "
            f"reason = EXCLUDED.reason, chunk_id = EXCLUDED.chunk_id, attempts = {table}.attempts + 1, "
            "updated_at = EXCLUDED.updated_at",
            [(chunk.job_id, chunk.pk, image_id, reason, now, now) for image_id, reason in errors.items()],
        )


def bulk_errors_clear(*, job_id: int, image_ids: Iterable[int]) -> None:
    """Remove classified photos from the job's ledger (a retry that succeeded)."""
    ids = list(image_ids)
    errors = BulkJobError.objects.filter(job_id=job_id)
    if ids and errors.exists():
        errors.filter(image_id__in=ids).delete()


@dataclass
class ChunkCounts:
    """Photos of one chunk run, by outcome (see `BulkJob` for the meaning of each)."""

    processed: int = 0
    suggested: int = 0
    skipped: int = 0
    failed: int = 0
    cached: int = 0
    cnn: int = 0


@dataclass(frozen=True)
class ListingOutcome:
    """A listing's suggestion derived from its photos' top-k (`catalog.suggestion_tree.derive`):
    the best category, its mean confidence, the averaged top-k (best first), the margin between
    its first two confidences and whether confident photos disagree; `slug` None when no photo
    has a suggestion."""

    listing_id: int
    slug: str | None
    confidence: float | None
    top_k: list[dict[str, Any]] = field(default_factory=list)
    margin: float | None = None
    photos_disagree: bool = False


def listing_outcomes(
    top_k_by_listing: Mapping[int, Sequence[Sequence[Mapping[str, Any]]]],
) -> list[ListingOutcome]:
    """Per listing, what `listing_suggestion_refresh` derives, by the same rule."""
    from catalog import suggestion_tree

    parents = catalogue_selectors.category_parents()
    outcomes = []
    for listing_id, photos in top_k_by_listing.items():
        derived = suggestion_tree.derive(
            photos, parents, keep=settings.SUGGESTION_TOP_K, confident=settings.PHOTO_CONFIDENT_MIN
        )
        if derived is None:
            outcomes.append(ListingOutcome(listing_id, None, None))
            continue
        outcomes.append(
            ListingOutcome(
                listing_id,
                str(derived.top_k[0]["slug"]),
                derived.confidence,
                top_k=list(derived.top_k),
                margin=derived.margin,
                photos_disagree=derived.photos_disagree,
            )
        )
    return outcomes


def _listings_write(
    outcomes: Sequence[ListingOutcome], categories: Mapping[str, int], model_version: ModelVersion
) -> None:
    """The listings' suggestion fields, as `listing_suggestion_refresh` sets them, in one UPDATE."""
    import json

    import psycopg

    if not outcomes:
        return
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"UPDATE {Listing._meta.db_table} AS l SET suggested_category_id = v.category_id, "
            "suggested_confidence = v.confidence, suggested_top_k = v.top_k::jsonb, "
            "suggested_margin = v.margin, photos_disagree = v.disagree, suggested_model_version_id = "
            "CASE WHEN v.category_id IS NULL THEN NULL ELSE %s::bigint END, updated_at = now() "
            "FROM unnest(%b::bigint[], %b::bigint[], %b::float8[], %b::text[], %b::float8[], %b::bool[]) "
            "AS v(id, category_id, confidence, top_k, margin, disagree) WHERE l.id = v.id",
            [
                model_version.pk,
                [o.listing_id for o in outcomes],
                [categories.get(o.slug) if o.slug else None for o in outcomes],
                [o.confidence for o in outcomes],
                [json.dumps(o.top_k) for o in outcomes],
                [o.margin for o in outcomes],
                [o.photos_disagree for o in outcomes],
            ],
        )


def _listings_auto_accept(outcomes: Sequence[ListingOutcome], model_version: ModelVersion) -> None:
    """Auto-accept, as after an upload, for the listings whose new suggestion clears its
    category's threshold. `listing_auto_accept` checks each of those one by one, except listings
    where it could change nothing: a person chose their category, or it already holds that
    category by auto-accept (one query for all of them)."""
    from catalog.services.decisions import HUMAN_SOURCES, listing_auto_accept

    thresholds = model_version.auto_accept_thresholds or {}
    if not settings.AUTO_ACCEPT_ENABLED or not thresholds:
        return
    suggested: dict[int, str] = {
        o.listing_id: o.slug
        for o in outcomes
        if o.slug is not None
        and o.slug in thresholds
        and o.confidence is not None
        and o.confidence >= float(thresholds[o.slug])
        and not o.photos_disagree
    }
    if not suggested:
        return
    categories = dict(Category.objects.filter(slug__in=set(suggested.values())).values_list("slug", "pk"))
    unchanged = {
        pk
        for pk, category_id, source in Listing.objects.filter(pk__in=suggested).values_list(
            "pk", "category_id", "category_source"
        )
        if source in HUMAN_SOURCES
        or (source == CategorySource.AUTO and category_id == categories.get(suggested[pk]))
    }
    for listing in Listing.objects.filter(pk__in=set(suggested) - unchanged):
        listing_auto_accept(listing=listing, model_version=model_version)


def bulk_chunk_finish(
    *,
    job: BulkJob,
    chunk: BulkJobChunk,
    photos: Sequence[ChunkPhoto],
    new_top_k: Mapping[int, list[dict[str, Any]]],
    counts: ChunkCounts,
) -> None:
    """Derive the chunk's listings' suggested categories, record what changed, close the chunk.

    `new_top_k`: this run's top-k by image id (in a dry run, never written). Photos that already
    had a suggestion for the version contribute their stored top-k. When the job applies the
    active version, the listings' suggestion fields are rewritten in one statement, as
    `listing_suggestion_refresh` sets them, and listings whose suggestion clears its category's
    auto-accept threshold get it as their category (never over a person's choice, see
    `listing_auto_accept`). Then the job's counters are refreshed and, after its last chunk, the
    job is finished.
    """
    listing_of = {photo.image_id: photo.listing_id for photo in photos}
    stored_ids = [
        photo.image_id for photo in photos if photo.image_id not in new_top_k and photo.has_suggestion
    ]
    previous = dict(
        CategorySuggestion.objects.filter(
            model_version_id=job.model_version_id, image_id__in=stored_ids
        ).values_list("image_id", "top_k")
    )
    by_listing: dict[int, list[Sequence[Mapping[str, Any]]]] = {
        listing_id: [] for listing_id in listing_of.values()
    }
    for image_id, top_k in [*previous.items(), *new_top_k.items()]:
        if image_id in listing_of:
            by_listing[listing_of[image_id]].append(top_k)
    outcomes = listing_outcomes(by_listing)
    current = {
        pk: (category_id, title)
        for pk, category_id, title in Listing.objects.filter(pk__in=by_listing).values_list(
            "pk", "suggested_category_id", "title"
        )
    }
    slugs = dict(Category.objects.values_list("pk", "slug"))
    categories = {slug: pk for pk, slug in slugs.items()}
    changes: Counter[tuple[str | None, str | None]] = Counter()
    sample: list[dict[str, Any]] = []
    for outcome in sorted(outcomes, key=lambda o: o.listing_id):
        if outcome.listing_id not in current or outcome.slug is None:
            continue
        before = slugs.get(current[outcome.listing_id][0]) if current[outcome.listing_id][0] else None
        if before == outcome.slug:
            continue
        changes[(before, outcome.slug)] += 1
        if len(sample) < SAMPLE_PER_CHUNK:
            sample.append(
                {
                    "listing": outcome.listing_id,
                    "title": current[outcome.listing_id][1],
                    "from": before,
                    "to": outcome.slug,
                    "confidence": round(outcome.confidence or 0.0, 4),
                }
            )
    with transaction.atomic():
        version = ModelVersion.objects.get(pk=job.model_version_id)
        if not job.dry_run and version.is_active:
            kept = [o for o in outcomes if o.listing_id in current]
            _listings_write(kept, categories, version)
            _listings_auto_accept(kept, version)
        BulkJobChunk.objects.filter(pk=chunk.pk).update(
            status=_C.DONE,
            inflight_image_ids=[],
            processed_images=counts.processed,
            suggested_images=counts.suggested,
            skipped_images=counts.skipped,
            failed_images=counts.failed,
            cached_images=counts.cached,
            cnn_images=counts.cnn,
            changed_listings=sum(changes.values()),
            report={
                "changes": [
                    {"from": a, "to": b, "listings": n} for (a, b), n in sorted(changes.items(), key=str)
                ],
                "sample": sample,
            },
            finished_at=timezone.now(),
        )
    _progress_refresh(job_id=job.pk)
    bulk_job_finish_if_complete(job_id=job.pk)


_COUNTERS = ("processed", "suggested", "skipped", "failed", "cached", "cnn")


def _progress_refresh(*, job_id: int) -> None:
    sums = BulkJobChunk.objects.filter(job_id=job_id).aggregate(
        done_chunks=Count("pk", filter=Q(status=_C.DONE)),
        changed_listings=Sum("changed_listings"),
        **{f"{name}_images": Sum(f"{name}_images") for name in _COUNTERS},
    )
    BulkJob.objects.filter(pk=job_id).update(**{key: value or 0 for key, value in sums.items()})


def bulk_job_finish_if_complete(*, job_id: int) -> bool:
    """Close an active job whose planning is done and whose chunks are all DONE: status DONE,
    finish time, and the report merged from its chunks. Returns True when this call closed it."""
    with transaction.atomic():
        job = BulkJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status not in ACTIVE_STATES or not job.planning_done:
            return False
        if BulkJobChunk.objects.filter(job_id=job_id).exclude(status=_C.DONE).exists():
            return False
        changes: Counter[tuple[str | None, str | None]] = Counter()
        sample: list[dict[str, Any]] = []
        for report in (
            BulkJobChunk.objects.filter(job_id=job_id).order_by("index").values_list("report", flat=True)
        ):
            for entry in report.get("changes", []):
                changes[(entry["from"], entry["to"])] += int(entry["listings"])
            sample.extend(report.get("sample", [])[: max(0, SAMPLE_PER_JOB - len(sample))])
        BulkJob.objects.filter(pk=job_id).update(
            status=_J.DONE,
            finished_at=timezone.now(),
            report={
                "changes": [
                    {"from": a, "to": b, "listings": n}
                    for (a, b), n in sorted(changes.items(), key=lambda item: (-item[1], str(item[0])))
                ],
                "sample": sample,
            },
        )
    _progress_refresh(job_id=job_id)
    logger.info("bulk job %s done", job_id)
    return True


@dataclass
class DryRunSummary:
    """Readable summary of a job's report: "N listings would change category" and the moves."""

    listings: int
    moves: list[tuple[str | None, str | None, int]] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)

    def lines(self, *, dry_run: bool = True) -> list[str]:
        verb = "would change" if dry_run else "changed"
        lines = [f"{self.listings} listings {verb} category"]
        lines += [f"  {n:>6}  from {a or '(none)'} to {b or '(none)'}" for a, b, n in self.moves]
        return lines


def bulk_job_summary(*, job: BulkJob) -> DryRunSummary:
    """The job's report as a `DryRunSummary` (moves sorted by count, then names)."""
    moves = [(entry["from"], entry["to"], int(entry["listings"])) for entry in job.report.get("changes", [])]
    return DryRunSummary(
        listings=sum(n for _, _, n in moves), moves=moves, sample=job.report.get("sample", [])
    )
