"""Where a head-only job's time goes: `python -m bench.profile_head_only [--photos 100000]`.

Builds a catalogue of photos with cached backbone outputs (as the head-only phase does), plans a
bulk job for a fresh version of the shipped head, and runs its chunks in this process (no Celery:
the job's tasks are sent to the bench Redis database and never consumed), timing each step of
`workers.bulk.chunk_run`. Per step: wall seconds, CPU seconds of this process (Python and numpy)
and CPU seconds of its PostgreSQL backend (read from /proc, so the server must run on this
machine). Wall minus both is waiting (disk, locks, the other side of the socket).

Uses the bench database and Redis database (`BENCH_DATABASE`, `BENCH_REDIS_DB`, see
`bench.environment`); prints a table, changes no file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workers  # noqa: F401  (first: its BLAS thread limit, set before numpy loads, as in a worker)
from bench.environment import REPO_ROOT, log

_TICK = os.sysconf("SC_CLK_TCK")


def _backend_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` (a PostgreSQL backend), 0 when unreadable."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return 0.0


@dataclass
class Meter:
    """Inclusive wall, own-CPU and PostgreSQL-backend-CPU seconds per label."""

    backend_pid: int
    totals: dict[str, list[float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        wall, cpu, pg = time.perf_counter(), time.process_time(), _backend_cpu(self.backend_pid)
        try:
            yield
        finally:
            entry = self.totals.setdefault(label, [0.0, 0.0, 0.0, 0])
            entry[0] += time.perf_counter() - wall
            entry[1] += time.process_time() - cpu
            entry[2] += _backend_cpu(self.backend_pid) - pg
            entry[3] += 1

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Replace `owner.name` by a timed call of it (nothing when `owner` has no such name:
        the step then goes untimed, and its time shows in the step that calls it)."""
        original = getattr(owner, name, None)
        if original is None:
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.step(label):
                return original(*args, **kwargs)

        setattr(owner, name, timed)

    def table(self, photos: int) -> str:
        lines = [
            f"{'step':<44}{'calls':>6}{'wall s':>9}{'own cpu':>9}{'pg cpu':>9}{'µs/photo':>10}",
        ]
        for label, (wall, cpu, pg, calls) in self.totals.items():
            lines.append(
                f"{label:<44}{calls:>6}{wall:>9.2f}{cpu:>9.2f}{pg:>9.2f}{wall / photos * 1e6:>10.1f}"
            )
        return "\n".join(lines)


def _staged_upsert(meter: Meter) -> Callable[..., None]:
    """`catalog.pgcopy.staged_upsert` with its COPY and its INSERT timed apart."""
    import psycopg
    from django.db import connection

    from catalog.pgcopy import commit_without_waiting, copy_write

    def staged_upsert(
        *,
        staging: str,
        columns: Sequence[tuple[str, str]],
        rows: Any,
        upsert: str,
        params: Sequence[Any] = (),
    ) -> None:
        connection.ensure_connection()
        with (
            meter.step("  write: commit (whole transaction)"),
            commit_without_waiting(),
            psycopg.Cursor(connection.connection) as cursor,
        ):
            definition = ", ".join(f"{name} {kind}" for name, kind in columns)
            with meter.step("  write: create/truncate staging"):
                cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({definition})")
                cursor.execute(f"TRUNCATE {staging}")
            with (
                meter.step("  write: COPY into staging"),
                cursor.copy(f"COPY {staging} FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy_write(copy, [kind for _, kind in columns], rows)
            with meter.step("  write: INSERT ... ON CONFLICT"):
                cursor.execute(upsert, list(params))

    return staged_upsert


def instrument(meter: Meter, classifier: Any) -> None:
    """Time the steps of `workers.bulk.chunk_run` and of the services it calls (each wrapped where
    its caller looks it up)."""
    from catalog import pgcopy
    from catalog.services import embeddings, listing_top_k, suggestions
    from catalog.services.bulk import chunks, closing
    from workers import bulk as workers_bulk

    meter.wrap(workers_bulk, "bulk_chunk_claim", "bulk_chunk_claim")
    meter.wrap(chunks, "_chunk_photos", "chunk photos (ChunkRun.photos)")
    meter.wrap(embeddings, "embeddings_read", "embeddings_read")
    meter.wrap(pgcopy, "copy_out", "  read: COPY out")
    meter.wrap(pgcopy, "fixed_width_rows", "  read: numpy view of COPY")
    meter.wrap(classifier, "scores_from_outputs", "scores_from_outputs (head)")
    meter.wrap(classifier.zero_shot, "exclusive_mass", "  head: zero-shot mass")
    meter.wrap(classifier.head, "proba_and_similarity", "  head: probabilities and similarity")
    meter.wrap(workers_bulk, "_top_k_arrays", "top-k (workers.bulk._top_k_arrays)")
    meter.wrap(suggestions, "suggestions_record_many", "suggestions_record_many")
    pgcopy.staged_upsert = _staged_upsert(meter)
    meter.wrap(chunks, "_errors_record", "errors record")
    meter.wrap(chunks, "_errors_clear", "errors clear")
    meter.wrap(chunks.ChunkRun, "_stored_top_k", "stored top-k")
    meter.wrap(chunks, "chunk_close", "chunk_close")
    meter.wrap(suggestions, "listing_suggestions_derive", "  close: listing_suggestions_derive")
    meter.wrap(
        listing_top_k, "listings_suggestions_derive_arrays", "  close: listings_suggestions_derive_arrays"
    )
    meter.wrap(suggestions, "listings_suggestion_store", "  close: listings_suggestion_store")
    meter.wrap(suggestions, "listings_auto_accept", "  close: listings_auto_accept")
    meter.wrap(closing, "progress_refresh", "  close: progress_refresh")
    meter.wrap(closing, "bulk_job_finish_if_complete", "  close: bulk_job_finish_if_complete")


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def build(photos: int, *, vacuum: bool = False) -> Any:
    """A catalogue of `photos` with cached outputs and an active version of the shipped head;
    `vacuum`: VACUUM it too, as autovacuum leaves a cache written long before the job (hint bits
    set, so the job's reads write nothing)."""
    from django.db import connection

    from bench.catalogue import activate, bench_seller, copy_embeddings, dataset_photos, synthesise_catalogue
    from catalog.models import ModelVersion
    from classifier.backbone import backbone_version
    from classifier.head import LinearHead
    from workers import inference

    inference.set_process_count(1)
    batcher = inference.batch_classifier_for(inference.get_classifier())
    sources = [path.read_bytes() for path in dataset_photos()[::41][:64]]
    outcomes = batcher.classify_all([(n, _constant(data)) for n, data in enumerate(sources)])
    outputs = [
        (o.prediction.embedding, o.prediction.logits)
        for o in outcomes
        if o.prediction is not None and o.prediction.logits is not None
    ]
    began = time.perf_counter()
    ids = synthesise_catalogue(photos, prefix="profile", seller=bench_seller())
    copy_embeddings(ids, backbone_version(), outputs)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if vacuum else "ANALYZE")
    log(f"catalogue of {len(ids):,} photos with cached outputs in {time.perf_counter() - began:.1f} s")
    manifest, payload = LinearHead.load().to_bytes()
    version = ModelVersion.objects.create(
        name="profile-head-only",
        backbone_version=backbone_version(),
        head_manifest=manifest,
        head_npz=payload,
    )
    activate(version)
    return version


def profile(photos: int, *, vacuum: bool = False) -> str:
    from django.db import connection

    from catalog.models import BulkJob, BulkJobChunk
    from catalog.services.bulk import jobs, planning
    from workers import bulk as workers_bulk
    from workers import inference

    version = build(photos, vacuum=vacuum)
    classifier = inference.classifier_for_version(version)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        meter = Meter(backend_pid=int(cursor.fetchone()[0]))
    instrument(meter, classifier)
    job = jobs.bulk_job_start(model_version=version)
    began = time.perf_counter()
    with meter.step("bulk_job_plan"):
        planning.bulk_job_plan(job_id=job.pk)
    chunks = list(BulkJobChunk.objects.filter(job=job).order_by("index").values_list("pk", flat=True))
    with meter.step("chunk_run (all chunks)"):
        for chunk_id in chunks:
            workers_bulk.chunk_run(chunk_id=chunk_id)
    seconds = time.perf_counter() - began
    job = BulkJob.objects.get(pk=job.pk)
    assert job.cached_images == photos and job.cnn_images == 0, (job.cached_images, job.cnn_images)
    return (
        f"{photos:,} photos in {len(chunks)} chunks, one process: {seconds:.2f} s, "
        f"{photos / seconds:,.0f} images/s (status {job.status})\n" + meter.table(photos)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_head_only", description=__doc__)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--vacuum", action="store_true", help="VACUUM the catalogue before the job")
    args = parser.parse_args(argv)
    from bench import environment
    from dev.embedded import missing_services

    with missing_services(REPO_ROOT / ".run" / "bench-services"):
        media = Path(tempfile.mkdtemp(prefix="bench-media-"))
        environment.prepare_environment(media)
        try:
            print(profile(args.photos, vacuum=args.vacuum))
        finally:
            environment.drop_database()
    return 0


if __name__ == "__main__":
    sys.exit(main())
