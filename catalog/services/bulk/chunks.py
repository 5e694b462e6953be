"""One chunk of a bulk job as a worker runs it: the worker computes, this module owns the rows.

`bulk_chunk_claim` gives the worker a `ChunkRun`, the one object it talks to: the photos to
score, their cached backbone outputs, writing results as they come, whether the job was
cancelled meanwhile, and closing the chunk (the listings' suggestions, the report, the job's
progress).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from catalog.models import (
    BulkChunkStatus,
    BulkJob,
    BulkJobChunk,
    BulkJobError,
    CategorySuggestion,
    ModelVersion,
)
from catalog.services import embeddings, suggestions
from catalog.services.bulk.closing import ChunkCounts, chunk_close
from catalog.services.bulk.jobs import bulk_job_fail
from catalog.services.bulk.scope import ACTIVE_STATES, scope_images
from catalog.tasks_contract import ChunkOutcome

if TYPE_CHECKING:
    from catalog.services import top_k

WORKER_CRASHED_ON_PHOTO = "Classifying this photo stopped the worker; it was set aside."


class ChunkPhoto(NamedTuple):
    """One photo of a chunk: `has_suggestion` for the job's model version already;
    `in_flight_at_crash` when it was in the network as an earlier attempt died (it is then
    tried alone). A named tuple: a chunk builds thousands, three times faster than a frozen
    dataclass."""

    image_id: int
    listing_id: int
    file_name: str
    has_suggestion: bool
    in_flight_at_crash: bool = False


def bulk_chunk_claim(*, chunk_id: int) -> ChunkRun | ChunkOutcome:
    """Claim a chunk for a run (RUNNING, one attempt more). Returns its `ChunkRun`, or why there
    is nothing to do: GONE (row deleted), ALREADY_DONE, or the job's state (CANCELLED, FAILED,
    DONE)."""
    with transaction.atomic():
        chunk = BulkJobChunk.objects.select_for_update().filter(pk=chunk_id).first()
        if chunk is None:
            return ChunkOutcome.GONE
        job = BulkJob.objects.select_related("model_version", "category").get(pk=chunk.job_id)
        if chunk.status == BulkChunkStatus.DONE:
            return ChunkOutcome.ALREADY_DONE
        if job.status not in ACTIVE_STATES:
            return ChunkOutcome(job.status)
        in_flight = frozenset(int(i) for i in chunk.inflight_image_ids)
        BulkJobChunk.objects.filter(pk=chunk.pk).update(
            status=BulkChunkStatus.RUNNING,
            attempts=F("attempts") + 1,
            started_at=chunk.started_at or timezone.now(),
        )
        chunk.refresh_from_db()
    # A photo alone in flight when an attempt died killed it: it goes to the ledger unclassified.
    crashed_twice = in_flight if len(in_flight) == 1 else frozenset()
    return ChunkRun(job, chunk, in_flight_at_crash=in_flight - crashed_twice, crashed_twice=crashed_twice)


def bulk_chunk_fail(*, job_id: int, chunk_id: int, reason: Callable[[str], str]) -> None:
    """Fail the job of a chunk whose run stopped on an error, and give the chunk back for a
    resume. `reason(part)` is the reason staff read, for `part` "Chunk <index>"."""
    index = BulkJobChunk.objects.filter(pk=chunk_id).values_list("index", flat=True).first()
    bulk_job_fail(job_id=job_id, reason=reason(f"Chunk {index}"))
    bulk_chunk_release(chunk_id=chunk_id)


def bulk_chunk_release(*, chunk_id: int) -> None:
    """Give a chunk back (its job was cancelled or failed mid-run): PENDING, so a resume sends
    it again."""
    BulkJobChunk.objects.filter(pk=chunk_id).exclude(status=BulkChunkStatus.DONE).update(
        status=BulkChunkStatus.PENDING
    )


@dataclass
class ChunkRun:
    """A claimed chunk, for one run. `in_flight_at_crash`: photos in flight when an earlier
    attempt died, to be retried one at a time; `crashed_twice`: the photo that was alone in
    flight when an earlier attempt died (it goes to the ledger, unclassified).

    Results are kept as they are written (`write`, `fail_photos`) and the chunk is closed with
    them (`close`)."""

    job: BulkJob
    chunk: BulkJobChunk
    in_flight_at_crash: frozenset[int] = frozenset()
    crashed_twice: frozenset[int] = frozenset()
    counts: ChunkCounts = field(default_factory=ChunkCounts, init=False)
    _photos: list[ChunkPhoto] = field(default_factory=list, init=False)
    _new_top_k: list[top_k.StoredTopK] = field(default_factory=list, init=False)
    _errors: dict[int, str] = field(default_factory=dict, init=False)

    @property
    def model_version(self) -> ModelVersion:
        return self.job.model_version

    @property
    def photo_count(self) -> int:
        """The chunk's photos in the job's scope (known once `photos` was called)."""
        return len(self._photos)

    def photos(self) -> list[ChunkPhoto]:
        """The chunk's photos to score, by primary key: those without a suggestion for the
        version (all of them in a dry run), less the one that crashed an attempt twice."""
        self._photos = _chunk_photos(self.job, self.chunk, self.in_flight_at_crash)
        todo = [photo for photo in self._photos if self.job.dry_run or not photo.has_suggestion]
        self.counts.skipped = len(self._photos) - len(todo)
        self.fail_photos({pk: WORKER_CRASHED_ON_PHOTO for pk in self.crashed_twice if _has(todo, pk)})
        return [photo for photo in todo if photo.image_id not in self._errors]

    def cached_outputs(self, *, image_ids: Sequence[int], backbone_version: str) -> embeddings.CachedOutputs:
        """Cached backbone outputs of these photos (`embeddings.embeddings_read`)."""
        return embeddings.embeddings_read(image_ids=image_ids, backbone_version=backbone_version)

    def write(
        self,
        scores: top_k.ScoredPhotos | Sequence[suggestions.PhotoScores],
        *,
        outputs: Sequence[embeddings.EmbeddingRow] = (),
        backbone_version: str = "",
    ) -> None:
        """Upsert the photos' suggestions (not in a dry run; `suggestions.suggestions_record_many`)
        and cache the backbone outputs the CNN computed; a photo with no known category goes to
        the ledger."""
        stored, failed = suggestions.suggestions_record_many(
            model_version=self.model_version, scores=scores, write=not self.job.dry_run
        )
        self._new_top_k.append(stored)
        self.fail_photos(failed)
        self.counts.suggested += len(stored)
        embeddings.embeddings_write(backbone_version=backbone_version, rows=outputs)

    def fail_photos(self, errors: Mapping[int, str]) -> None:
        """Photos that could not be scored, with the reason staff read in the ledger."""
        self._errors.update(errors)

    def in_flight(self, image_ids: Sequence[int]) -> None:
        """Record the photos about to enter the network (see `BulkJobChunk.inflight_image_ids`).
        Visible at once to the next attempt; durable with the chunk's next synchronous commit."""
        from catalog.pgcopy import commit_without_waiting

        with commit_without_waiting():
            BulkJobChunk.objects.filter(pk=self.chunk.pk).update(inflight_image_ids=list(image_ids))

    def cancelled(self) -> bool:
        """True once the job was cancelled or failed: the run stops at its next batch."""
        return not BulkJob.objects.filter(pk=self.job.pk, status__in=ACTIVE_STATES).exists()

    def give_back(self) -> ChunkOutcome:
        """Stop this run of a cancelled job: the chunk is PENDING again (results so far kept)."""
        bulk_chunk_release(chunk_id=self.chunk.pk)
        return ChunkOutcome.CANCELLED

    def fail(self, reason: str) -> ChunkOutcome:
        """Fail the job with `reason` (e.g. the version cannot be served) and give the chunk back."""
        bulk_job_fail(job_id=self.job.pk, reason=reason)
        bulk_chunk_release(chunk_id=self.chunk.pk)
        return ChunkOutcome.FAILED

    def close(self) -> ChunkOutcome:
        """Record the ledger, derive the chunk's listings' suggestions and close the chunk
        (`closing.chunk_close`); after the job's last chunk, the job is finished."""
        self.counts.failed = len(self._errors)
        self.counts.processed = self.counts.suggested + self.counts.failed
        from catalog.services.listing_top_k import stored_top_k_merge

        new_ids = {image_id for stored in self._new_top_k for image_id in stored}
        _errors_record(self.chunk, self._errors)
        _errors_clear(self.job.pk, new_ids)
        chunk_close(
            job=self.job,
            chunk=self.chunk,
            listing_of={photo.image_id: photo.listing_id for photo in self._photos},
            top_k=stored_top_k_merge([self._stored_top_k(new_ids), *self._new_top_k]),
            counts=self.counts,
        )
        return ChunkOutcome.DONE

    def _stored_top_k(self, new_ids: set[int]) -> top_k.StoredTopK:
        """The stored top-k of the chunk's photos that this run did not score (`new_ids`)."""
        ids = [p.image_id for p in self._photos if p.image_id not in new_ids and p.has_suggestion]
        rows = CategorySuggestion.objects.filter(
            model_version_id=self.job.model_version_id, image_id__in=ids
        ).values_list("image_id", "top_k")
        from catalog.services.top_k import StoredTopK

        return StoredTopK.from_top_k(dict(rows))


def _has(photos: Sequence[ChunkPhoto], image_id: int) -> bool:
    return any(photo.image_id == image_id for photo in photos)


def _chunk_photos(job: BulkJob, chunk: BulkJobChunk, in_flight_at_crash: frozenset[int]) -> list[ChunkPhoto]:
    """The chunk's photos in the job's scope, by primary key (two queries).

    Which of them already have a suggestion is looked up by their ids, joined one by one to the
    unique index on (image, model version). Selecting the version's suggestions of the chunk's
    listings, or filtering them with `image_id = ANY(ids)`, let PostgreSQL read every
    suggestion of the version for each chunk (its statistics, taken before the job, say the
    version has none), a cost that grew with the job: 146 ms a chunk of 4,000 photos ten chunks
    in, 3 s fifty chunks into a million-photo job; joined to the ids, 5-20 ms.
    """
    rows = list(
        scope_images(job=job)
        .filter(listing_id__gte=chunk.first_listing_id, listing_id__lte=chunk.last_listing_id)
        .order_by("pk")
        .values_list("pk", "listing_id", "file")
    )
    with connection.cursor() as cursor:  # one array parameter, not thousands of IN (...) ones
        cursor.execute(
            "SELECT s.image_id FROM unnest(%s::bigint[]) AS i(id) "
            f"JOIN {CategorySuggestion._meta.db_table} s ON s.image_id = i.id AND s.model_version_id = %s",
            [[pk for pk, _, _ in rows], job.model_version_id],
        )
        done = {image_id for (image_id,) in cursor.fetchall()}
    return [
        ChunkPhoto(pk, listing_id, str(name), pk in done, pk in in_flight_at_crash)
        for pk, listing_id, name in rows
    ]


def _errors_record(chunk: BulkJobChunk, errors: Mapping[int, str]) -> None:
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


def _errors_clear(job_id: int, image_ids: Iterable[int]) -> None:
    """Remove classified photos from the job's ledger (a retry that succeeded)."""
    ids = list(image_ids)
    errors = BulkJobError.objects.filter(job_id=job_id)
    if ids and errors.exists():
        errors.filter(image_id__in=ids).delete()
