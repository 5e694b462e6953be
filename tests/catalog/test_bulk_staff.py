"""What staff see of bulk jobs: the Prometheus endpoint, the admin page and `manage.py reclassify`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from catalog.models import BulkJob, BulkJobStatus, ModelVersion
from tests.factories import BulkJobFactory, ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-for-tests"


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersionFactory.create(
        name="lite0+head-v2", backbone_version="lite0@1", is_active=True, bare=True
    )


@pytest.fixture
def running_job(version: ModelVersion) -> BulkJob:
    """A job half-way: 400 of 1,000 photos done (390 classified, 10 skipped) in 100 s."""
    return BulkJobFactory.create(
        model_version=version,
        status=BulkJobStatus.RUNNING,
        planning_done=True,
        total_chunks=10,
        done_chunks=4,
        total_images=1000,
        processed_images=390,
        skipped_images=10,
        failed_images=2,
        started_at=timezone.now() - timedelta(seconds=100),
    )


@pytest.fixture
def isolated_broker() -> Iterator[object]:
    """The Celery app pointed at an otherwise unused Redis database; yields its client."""
    from kombu import pools

    from config.celery import app

    previous = app.conf.broker_write_url
    isolated = previous.rsplit("/", 1)[0] + "/15"

    def reconnect(url: str) -> None:
        app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = url
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    reconnect(isolated)
    with app.connection_for_write() as connection:
        client = connection.default_channel.client
        client.flushdb()
        yield client
        client.flushdb()
    reconnect(previous)


def test_metrics_answer_staff_and_the_token_holder_only(settings: object, client: Client) -> None:
    # given a scrape token
    settings.METRICS_TOKEN = TOKEN  # type: ignore[attr-defined]

    # when the endpoint is called without credentials, with a wrong token, as a seller, with the
    # token and as staff
    anonymous = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    client.force_login(UserFactory.create())
    seller = client.get("/metrics")
    client.logout()
    scraper = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    client.force_login(UserFactory.create(is_staff=True))
    staff = client.get("/metrics")

    # then only the token holder and staff get the figures
    assert (anonymous.status_code, wrong.status_code, seller.status_code) == (401, 401, 403)
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert (scraper.status_code, staff.status_code) == (200, 200)
    assert scraper["Content-Type"].startswith("text/plain")
    assert b"marketplace_queue_depth" in scraper.content


def test_metrics_report_queue_depths_and_the_progress_of_running_jobs(
    settings: object, client: Client, running_job: BulkJob, isolated_broker: object
) -> None:
    # given three messages waiting in the bulk queue and one in the classify queue
    settings.METRICS_TOKEN = TOKEN  # type: ignore[attr-defined]
    for _ in range(3):
        isolated_broker.lpush("bulk", b"{}")  # type: ignore[attr-defined]
    isolated_broker.lpush("classify", b"{}")  # type: ignore[attr-defined]

    # when Prometheus scrapes
    body = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode()

    # then queue depths and the job's progress, rate and ETA are there
    lines = set(body.splitlines())
    labels = f'job="{running_job.pk}",kind="apply",model_version="lite0+head-v2"'
    assert "marketplace_broker_up 1.0" in lines
    assert 'marketplace_queue_depth{queue="bulk"} 3.0' in lines
    assert 'marketplace_queue_depth{queue="classify"} 1.0' in lines
    assert 'marketplace_queue_depth{queue="training"} 0.0' in lines
    assert 'marketplace_bulk_jobs{status="running"} 1.0' in lines
    assert f'marketplace_bulk_job_photos{{{labels},state="total"}} 1000.0' in lines
    assert f'marketplace_bulk_job_photos{{{labels},state="done"}} 400.0' in lines
    assert f'marketplace_bulk_job_photos{{{labels},state="failed"}} 2.0' in lines
    assert f"marketplace_bulk_job_progress_ratio{{{labels}}} 0.4" in lines
    rate = next(line for line in lines if line.startswith("marketplace_bulk_job_rate_photos_per_second{"))
    eta = next(line for line in lines if line.startswith("marketplace_bulk_job_eta_seconds{"))
    assert 3.9 < float(rate.rsplit(" ", 1)[1]) <= 4.0  # 400 photos in a little over 100 s
    assert 150 <= float(eta.rsplit(" ", 1)[1]) < 155  # 600 photos left at that rate


def test_staff_start_watch_and_cancel_jobs_in_the_admin(
    client: Client, version: ModelVersion, running_job: BulkJob
) -> None:
    # given a staff member
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))

    # when they open the job list, then the running job shows its progress, rate and ETA
    page = client.get("/admin/catalog/bulkjob/").content.decode()
    assert '<progress value="400" max="1000"' in page
    assert "40% (400 of 1000 photos)" in page
    assert "photos/s" in page
    assert "2 min 3" in page or "2 min 2" in page  # about 150 s left

    # when they start a dry run from the add form
    response = client.post(
        "/admin/catalog/bulkjob/add/", {"model_version": version.pk, "dry_run": "on", "chunk_size": 500}
    )
    assert response.status_code == 302
    started = BulkJob.objects.exclude(pk=running_job.pk).get()
    assert (started.dry_run, started.chunk_size, started.status) == (True, 500, BulkJobStatus.PLANNING)

    # when they cancel the running job with the admin action
    client.post("/admin/catalog/bulkjob/", {"action": "cancel_jobs", "_selected_action": [running_job.pk]})

    # then it is cancelled
    running_job.refresh_from_db()
    assert running_job.status == BulkJobStatus.CANCELLED


def test_reclassify_command_queues_a_dry_run_and_prints_a_finished_report(version: ModelVersion) -> None:
    # when a dry run is started from the command line without waiting
    out = StringIO()
    call_command("reclassify", "--model-version", "active", "--dry-run", "--no-wait", stdout=out)

    # then it is queued for the active version
    job = BulkJob.objects.get()
    assert (job.model_version, job.dry_run) == (version, True)
    assert out.getvalue().startswith(f"dry run {job.pk} queued: lite0+head-v2, all listings")

    # given the dry run finished with two moves
    BulkJob.objects.filter(pk=job.pk).update(
        status=BulkJobStatus.DONE,
        processed_images=3,
        total_images=3,
        report={
            "changes": [
                {"from": "shirt", "to": "t-shirt", "listings": 2},
                {"from": None, "to": "shoes", "listings": 1},
            ],
            "sample": [
                {"listing": 7, "title": "Blue tee", "from": "shirt", "to": "t-shirt", "confidence": 0.91}
            ],
        },
    )

    # when its status is asked for, then the report says what would change
    out = StringIO()
    call_command("reclassify", "--status", str(job.pk), stdout=out)
    lines = out.getvalue().splitlines()
    assert "3 listings would change category" in lines
    assert "       2  from shirt to t-shirt" in lines
    assert "       1  from (none) to shoes" in lines
    assert "  e.g. listing 7 “Blue tee”: shirt → t-shirt (0.91)" in lines
    assert f"apply with: python manage.py reclassify --apply {job.pk}" in lines
