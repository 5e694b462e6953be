"""Bulk jobs and batched uploads with real workers, one per queue as deployed: a `classify`
worker for fresh uploads and a `bulk` worker for reclassification, on real Redis and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

from catalog.models import (
    BulkJob,
    BulkJobStatus,
    CategorySuggestion,
    ClassificationStatus,
    Listing,
    ListingImage,
    ModelVersion,
)
from catalog.services.bulk.jobs import bulk_job_start
from catalog.services.images import image_add
from catalog.services.suggestions import model_version_ensure
from tests.conftest import WorkerProcess, running_workers, start_worker, stop_worker, stored_name, wait_for
from tests.factories import ListingFactory, UserFactory
from workers.bulk import WRITE_EVERY

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("taxonomy")]

FINISHED = {ClassificationStatus.DONE, ClassificationStatus.FAILED}


@pytest.fixture(scope="module")
def workers(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WorkerProcess]]:
    """A `classify` worker and a `bulk` worker. Other workers of this test session (the shared
    all-queues worker) stop consuming those two queues meanwhile, so each task lands where the
    deployment would send it."""
    from config.celery import app

    # This session's other workers, by name (a ping can miss a busy one on a loaded machine); a
    # demo's worker on the same broker is left alone. Each confirms before anything is sent.
    others = [worker.name for worker in running_workers()]
    for queue in ("classify", "bulk"):
        if others:
            app.control.cancel_consumer(queue, destination=others, reply=True, timeout=30)
    app.control.purge()
    logs = tmp_path_factory.mktemp("workers")
    started = {
        "classify": start_worker(log=logs / "classify.log", queues="classify"),
        "bulk": start_worker(log=logs / "bulk.log", queues="bulk"),
    }
    yield started
    for worker in started.values():
        stop_worker(worker)
    for queue in ("classify", "bulk"):
        if others:
            app.control.add_consumer(queue, destination=others, reply=True, timeout=30)


@pytest.fixture
def version() -> ModelVersion:
    from classifier.backbone import backbone_version
    from classifier.head import LinearHead

    return model_version_ensure(
        name=f"{backbone_version()}+{LinearHead.load().version}", backbone_version=backbone_version()
    )


def _catalogue(photo_paths: list[Path], count: int) -> list[ListingImage]:
    """`count` already-classified catalogue photos (copies of the real ones), one per listing,
    stored without queueing anything, and no cached embeddings: a job needs the CNN for them."""
    seller = UserFactory.create()
    rows = []
    for number in range(count):
        data = photo_paths[number % len(photo_paths)].read_bytes()
        name = default_storage.save(f"catalogue/{number}.jpg", ContentFile(data))
        rows.append(
            ListingImage(
                listing=ListingFactory.create(seller=seller),
                file=name,
                checksum=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                status=ClassificationStatus.DONE,
            )
        )
    return ListingImage.objects.bulk_create(rows)


def _one_suggestion_each(images: list[ListingImage], version: ModelVersion) -> bool:
    counts = Counter(
        CategorySuggestion.objects.filter(model_version=version, image__in=images).values_list(
            "image_id", flat=True
        )
    )
    return counts == Counter({image.pk: 1 for image in images})


class HeldPhoto:
    """A named pipe where a stored photo's file was: whoever reads the photo waits, however fast
    or slow this machine is, until `feed` sends the real bytes down the pipe."""

    def __init__(self, image: ListingImage) -> None:
        self.path = Path(default_storage.path(stored_name(image)))
        self.data = self.path.read_bytes()
        self.path.unlink()
        os.mkfifo(self.path)

    def restore(self) -> None:
        """Put the real file back for later readers; one already waiting on the pipe keeps waiting."""
        spare = self.path.with_suffix(".tmp")
        spare.write_bytes(self.data)
        spare.replace(self.path)

    def feed(self) -> None:
        """Send the bytes to the reader waiting on the pipe (blocks until there is one), then restore."""
        with self.path.open("wb") as pipe:
            pipe.write(self.data)
        self.restore()


def test_a_fresh_upload_is_classified_while_a_bulk_job_runs(
    workers: dict[str, WorkerProcess], version: ModelVersion, photo_paths: list[Path]
) -> None:
    # given a catalogue of 400 photos and a job over it, running on the bulk worker and held on
    # its 300th photo until the upload is done, however fast this machine is
    images = _catalogue(photo_paths, 400)
    held = HeldPhoto(sorted(images, key=lambda image: image.pk)[300])
    job = bulk_job_start(model_version=version, chunk_size=32)
    wait_for(lambda: BulkJob.objects.filter(pk=job.pk, done_chunks__gte=1).exists(), timeout=180)

    # when a seller uploads a photo
    upload = image_add(
        listing=ListingFactory.create(), upload=photo_paths[0].read_bytes(), filename="new.jpg"
    )
    wait_for(lambda: ListingImage.objects.get(pk=upload.pk).status in FINISHED, timeout=120)

    # then it was classified by the classify worker while the job was still running
    job.refresh_from_db()
    assert ListingImage.objects.get(pk=upload.pk).status == ClassificationStatus.DONE
    assert job.status == BulkJobStatus.RUNNING
    assert job.done_chunks < job.total_chunks
    # and, once the held photo's bytes arrive, the job finishes with exactly one suggestion per
    # catalogue photo, on the bulk worker only
    held.feed()
    wait_for(lambda: BulkJob.objects.get(pk=job.pk).status == BulkJobStatus.DONE, timeout=600)
    assert _one_suggestion_each(images, version)
    assert '"event": "bulk_chunk_done"' not in workers["classify"].log_text()
    assert '"event": "image_classified"' not in workers["bulk"].log_text()


def _pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def test_a_chunk_whose_worker_process_is_killed_still_ends_with_one_suggestion_per_photo(
    workers: dict[str, WorkerProcess], version: ModelVersion, photo_paths: list[Path]
) -> None:
    # given a job whose single chunk of 256 photos is half written by the bulk worker: the 101st
    # photo's bytes never arrive (a named pipe stands in its place), so the worker holds there,
    # after its first write of WRITE_EVERY results, however fast or slow this machine is
    images = _catalogue(photo_paths, 256)
    held = HeldPhoto(sorted(images, key=lambda image: image.pk)[100])
    job = bulk_job_start(model_version=version, chunk_size=256)
    wait_for(
        lambda: (
            CategorySuggestion.objects.filter(model_version=version, image__in=images).count() >= WRITE_EVERY
        ),
        timeout=180,
    )
    assert CategorySuggestion.objects.filter(model_version=version, image__in=images).count() < 100

    # when its pool process is killed (SIGKILL) mid-chunk, and the photo's bytes are back
    assert not BulkJob.objects.filter(pk=job.pk, status=BulkJobStatus.DONE).exists()
    held.restore()
    for child in _pool_children(workers["bulk"].process.pid):
        os.kill(child, signal.SIGKILL)

    # then the chunk is delivered again, finishes what was missing, and every photo ends with
    # exactly one suggestion for the version
    wait_for(lambda: BulkJob.objects.get(pk=job.pk).status == BulkJobStatus.DONE, timeout=600)
    job.refresh_from_db()
    chunk = job.chunks.get()
    assert chunk.attempts == 2
    assert job.skipped_images >= 64
    assert job.failed_images == 0
    assert _one_suggestion_each(images, version)
    assert workers["bulk"].process.poll() is None


def test_a_burst_of_uploads_is_classified_in_batches_with_single_task_semantics(
    workers: dict[str, WorkerProcess], photo_paths: list[Path]
) -> None:
    from classifier.preprocess import NOT_AN_IMAGE

    # given twelve photos uploaded in one transaction: ten real ones, a web page renamed .jpg,
    # and one whose listing is deleted before the worker gets to it
    seller = UserFactory.create()
    with transaction.atomic():
        good = [
            image_add(
                listing=ListingFactory.create(seller=seller),
                upload=photo_paths[n % len(photo_paths)].read_bytes(),
                filename="a.jpg",
            )
            for n in range(10)
        ]
        bad = image_add(
            listing=ListingFactory.create(seller=seller), upload=b"<html></html>", filename="b.jpg"
        )
        gone = image_add(
            listing=ListingFactory.create(seller=seller), upload=photo_paths[0].read_bytes(), filename="c.jpg"
        )
        Listing.objects.filter(pk=gone.listing_id).delete()

    # when the classify worker has processed them
    ids = [image.pk for image in [*good, bad]]
    wait_for(
        lambda: all(
            s in FINISHED for s in ListingImage.objects.filter(pk__in=ids).values_list("status", flat=True)
        )
    )

    # then each real photo has one suggestion, the web page failed once with its reason, the
    # deleted one left nothing behind, and the worker ran them in batches of more than one
    assert all(ListingImage.objects.get(pk=image.pk).status == ClassificationStatus.DONE for image in good)
    assert CategorySuggestion.objects.filter(image__in=good).count() == 10
    bad.refresh_from_db()
    assert (bad.status, bad.failure_reason, bad.deliveries) == (ClassificationStatus.FAILED, NOT_AN_IMAGE, 1)
    assert not CategorySuggestion.objects.filter(image_id=gone.pk).exists()
    lines = [
        json.loads(line[line.index("{") :])
        for line in workers["classify"].log_text().splitlines()
        if "image_classified" in line
    ]
    batches = {line["batch"] for line in lines if line["image_id"] in ids}
    assert max(batches) > 1
