"""Shared fixtures: a real Celery worker process on the test database, photos, users."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from pytest_django import Settings

from classifier.datasets import dataset_dir
from dev.chaos import processes
from dev.chaos.processes import WorkerProcess, stop_worker

if TYPE_CHECKING:
    from catalog.models import ListingImage

__all__ = [
    "WorkerProcess",
    "running_workers",
    "start_worker",
    "stop_worker",
    "wait_for",
    "point_celery_app_at",
    "stored_name",
]

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PHOTOS = REPO_ROOT / "tests" / "fixtures" / "photos"
SHARED_DATASETS = dataset_dir()


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 90.0, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns a truthy value; fail the test after `timeout` seconds."""
    try:
        return processes.wait_for(predicate, timeout=timeout, interval=interval)
    except TimeoutError as error:
        pytest.fail(str(error))


def stored_name(image: ListingImage) -> str:
    """The storage name of a photo's file; fails the test when the row has none."""
    name = image.file.name
    assert name, f"image {image.pk} has no stored file"
    return name


def point_celery_app_at(url: str) -> str:
    """Send this process's tasks to the broker at `url` from now on; returns the previous URL.

    Resets kombu's connection and producer pools, which would otherwise keep the old broker.
    """
    from kombu import pools

    from config.celery import app

    previous = str(app.conf.broker_write_url)
    app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = url
    pools.reset()
    app._pool = None
    app.amqp._producer_pool = None
    return previous


def fixture_photo_paths() -> list[Path]:
    """Real CC0 photos shipped with the tests (tests/fixtures/photos/<slug>/*.jpg)."""
    return sorted(p for p in FIXTURE_PHOTOS.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


@pytest.fixture
def photo_paths() -> list[Path]:
    paths = fixture_photo_paths()
    if not paths:
        pytest.skip("no fixture photos under tests/fixtures/photos")
    return paths


@pytest.fixture(scope="session", autouse=True)
def _media_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Photos stored by tests go to a temporary MEDIA_ROOT shared with the worker process."""
    from django.conf import settings

    media = tmp_path_factory.mktemp("media")
    previous = settings.MEDIA_ROOT
    settings.MEDIA_ROOT = str(media)
    os.environ["MEDIA_ROOT"] = str(media)
    yield media
    settings.MEDIA_ROOT = previous


def _database_url_for(name: str) -> str:
    url = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit((url.scheme, url.netloc, "/" + name, url.query, url.fragment))


_started: list[WorkerProcess] = []


def running_workers() -> list[WorkerProcess]:
    """The workers this test session started (`start_worker`) that are still running."""
    return [worker for worker in _started if worker.process.poll() is None]


def start_worker(
    *,
    log: Path,
    queues: str = "classify,bulk,training,maintenance",
    concurrency: int = 1,
    env: dict | None = None,
    ready_line: str = "classifier loaded",
) -> WorkerProcess:
    """Start `celery worker` on the test database (see `chaos.processes.start_worker`); fails the
    test when it does not become ready."""
    from django.db import connection

    worker_env = {
        "DATABASE_URL": _database_url_for(connection.settings_dict["NAME"]),
        "CLASSIFIER_NUM_THREADS": "2",
        **(env or {}),
    }
    try:
        worker = processes.start_worker(
            log=log,
            env=worker_env,
            queues=queues,
            concurrency=concurrency,
            ready_line=ready_line,
            name_prefix="test",
        )
    except processes.WorkerNotReady as error:
        pytest.fail(str(error))
    _started.append(worker)
    return worker


@pytest.fixture(scope="session")
def verified_model_files() -> None:
    """The backbone files this process serves, built or verified as a worker's main process does
    before it consumes (`prepare_backbone_files`): in-process classifiers only load verified files."""
    from workers import inference

    problem = inference.prepare_backbone_files()
    assert problem is None, problem


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One real worker (prefork, 1 process) for the session, on the test database.

    Queues are purged first so tasks left by an earlier run cannot touch this run's rows.
    """
    from config.celery import app

    app.control.purge()
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(log=log)
    yield worker
    stop_worker(worker)


@pytest.fixture(autouse=True)
def _own_throttle_counters(settings: Settings) -> None:
    """Each test counts API requests (throttles) from zero, under a key prefix of its own in the
    shared cache; never FLUSHDB, which would also empty whatever else that Redis database holds.
    Login lockouts need nothing: their attempts are database rows, rolled back with the test."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"test-{uuid.uuid4().hex}"}}


@pytest.fixture
def taxonomy(transactional_db: None) -> None:
    """Categories from the taxonomy file (transactional tests truncate migration data)."""
    from catalog.services.listings import taxonomy_load

    taxonomy_load()


@pytest.fixture
def shipped_version(celery_worker_process: WorkerProcess, taxonomy: None, photo_paths: list[Path]):
    """The version the session's worker registers for its shipped head, active, with the head's
    artifact and auto-accept thresholds, as on a fresh install.

    Transactional tests truncate the row between tests, and a worker looks the active version up
    (and registers its own) only every ACTIVE_MODEL_CHECK_S: waiting that long first makes the
    worker register it again before it scores the warm-up photo, as it does at start-up.
    """
    from django.conf import settings

    from catalog.models import ClassificationStatus, ListingImage, ModelVersion
    from catalog.services.images import image_add
    from tests.factories import ListingFactory

    time.sleep(settings.ACTIVE_MODEL_CHECK_S + 0.5)
    image = image_add(
        listing=ListingFactory.create(title="warm-up"),
        upload=photo_paths[0].read_bytes(),
        filename="warm-up.jpg",
    )
    wait_for(
        lambda: ListingImage.objects.filter(pk=image.pk, status=ClassificationStatus.DONE).exists(),
        timeout=120,
    )
    return ModelVersion.objects.get(is_active=True)


@pytest.fixture
def seller(transactional_db: None):
    from tests.factories import UserFactory

    return UserFactory.create()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """moto's S3 server on a free loopback port, for the session (the S3 test tier)."""
    from tests.s3_server import start_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the S3 server, used by this test process's Django storage
    (STORAGE_BACKEND=s3) for this test only. Returns the bucket name."""
    from tests.s3_server import use_bucket

    bucket = s3_server.create_bucket()
    use_bucket(s3_server, bucket, settings=settings, monkeypatch=monkeypatch)
    return bucket
