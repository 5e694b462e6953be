"""The periodic sweeper covers every durable state, not only photos: training runs that will
never finish are set aside with their reason, and bulk jobs left PLANNING are planned again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from catalog.models import BulkJob, BulkJobStatus, TrainingRun, TrainingStatus
from catalog.services.bulk.jobs import bulk_jobs_requeue_stuck
from catalog.services.registry import (
    TRAINING_RUN_LOST,
    TRAINING_RUN_STOPPED,
    TRAINING_RUN_SUPERSEDED,
    training_run_request,
    training_runs_sweep,
)
from dev.embedded import start_redis
from tests.conftest import point_celery_app_at
from tests.factories import BulkJobFactory, TrainingRunFactory

if TYPE_CHECKING:
    from redis import Redis

pytestmark = pytest.mark.django_db

T = 1800


@pytest.fixture(autouse=True)
def _threshold(settings: Settings) -> None:
    settings.STUCK_JOB_AFTER_S = T
    settings.TRAINING_HARD_TIME_LIMIT_S = 1800


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Redis]:
    """A Redis of this test alone, with the Celery app pointed at it; yields its client."""
    import redis

    proc, port = start_redis(tmp_path)
    previous = point_celery_app_at(f"redis://127.0.0.1:{port}/0")
    try:
        yield redis.Redis(port=port)
    finally:
        point_celery_app_at(previous)
        proc.kill()
        proc.wait()


def _run(status: str, **ages_s: int) -> TrainingRun:
    run = TrainingRunFactory.create(status=status)
    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        **{field: now - timedelta(seconds=age) for field, age in ages_s.items()}
    )
    return run


def _failure(run: TrainingRun) -> tuple[str, str]:
    run.refresh_from_db()
    return run.status, run.failure_reason


def test_the_sweeper_sets_aside_training_runs_that_will_never_finish() -> None:
    # given runs queued or running for longer than they ever could, and recent ones
    lost = _run(TrainingStatus.QUEUED, created_at=T + 60)
    waiting = _run(TrainingStatus.QUEUED, created_at=T - 60)
    dead = _run(TrainingStatus.RUNNING, created_at=2 * T + 4000, started_at=1800 + T + 60)
    working = _run(TrainingStatus.RUNNING, created_at=4000, started_at=1700)

    # when the sweeper runs
    assert training_runs_sweep() == 2

    # then only the stale ones are FAILED, each with a reason staff can read
    assert _failure(lost) == (TrainingStatus.FAILED, TRAINING_RUN_LOST.format(minutes=30))
    assert _failure(dead) == (TrainingStatus.FAILED, TRAINING_RUN_STOPPED.format(minutes=30))
    assert _failure(waiting) == (TrainingStatus.QUEUED, "")
    assert _failure(working) == (TrainingStatus.RUNNING, "")
    # and running it again changes nothing
    assert training_runs_sweep() == 0


def test_a_new_training_request_supersedes_a_stale_queued_run(
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    # given a run whose queue message was lost long ago
    stale = _run(TrainingStatus.QUEUED, created_at=T + 60)

    # when training is requested again
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        fresh = training_run_request(requested_by=None)

    # then a new run is queued and published, and the stale one says why it was replaced
    assert fresh.pk != stale.pk
    assert fresh.status == TrainingStatus.QUEUED
    assert len(callbacks) == 1
    assert _failure(stale) == (TrainingStatus.FAILED, TRAINING_RUN_SUPERSEDED.format(minutes=30))


def test_a_recent_queued_run_is_still_returned_instead_of_a_second_one() -> None:
    waiting = _run(TrainingStatus.QUEUED, created_at=60)
    assert training_run_request(requested_by=None).pk == waiting.pk
    assert TrainingRun.objects.count() == 1


def _job(status: str, age_s: int) -> BulkJob:
    job = BulkJobFactory.create(status=status)
    BulkJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - timedelta(seconds=age_s))
    return job


def test_the_sweeper_plans_again_a_bulk_job_left_planning(broker: Redis) -> None:
    # given a job whose planning message was lost long ago, a recent one and a running one
    lost = _job(BulkJobStatus.PLANNING, T + 60)
    _job(BulkJobStatus.PLANNING, 60)
    _job(BulkJobStatus.RUNNING, T + 60)

    # when the sweeper runs
    sent = bulk_jobs_requeue_stuck()

    # then the lost job's planning is on the bulk queue again, and only that
    assert sent == 1
    assert broker.llen("bulk") == 1
    message = broker.lindex("bulk", 0)
    assert isinstance(message, bytes)
    assert f"[{lost.pk}]" in message.decode()
    # and it is not sent again before another STUCK_JOB_AFTER_S has passed
    assert bulk_jobs_requeue_stuck() == 0


def test_the_job_sweeper_runs_every_minute_on_the_maintenance_queue() -> None:
    from catalog.tasks_contract import Queue
    from config.celery import app

    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert schedule["workers.tasks.jobs_sweep_task"] == 60.0
    assert app.conf.task_routes["workers.tasks.jobs_sweep_task"] == {"queue": Queue.MAINTENANCE.value}
