"""Prometheus metrics: `GET /metrics` in the text exposition format.

Flower shows workers and tasks but not how many messages wait in each queue, nor how far a bulk
job has come; this endpoint does. Access: a staff session, or `Authorization: Bearer <token>`
when `METRICS_TOKEN` is set (for the Prometheus scraper). Everyone else gets 401 (anonymous) or
403 (signed in, not staff). Light on purpose: the web process never loads the model.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from catalog.models import BulkJob
from catalog.queueing import classifier_readiness, queue_depths
from catalog.selectors import bulk as bulk_selectors


def _token_ok(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if not expected or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), expected.encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Queue depth per queue, broker reachability, each worker's classifier readiness, bulk jobs
    by status and the progress, rate and ETA of every planning or running job."""
    if not (_token_ok(request) or (request.user.is_authenticated and request.user.is_staff)):
        if request.user.is_authenticated:
            return HttpResponse("Staff only.\n", status=403, content_type="text/plain")
        response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(_collect()), content_type=CONTENT_TYPE_LATEST)


def _collect() -> CollectorRegistry:
    registry = CollectorRegistry()
    depths = queue_depths()
    Gauge("marketplace_broker_up", "1 when the broker answered this scrape.", registry=registry).set(
        0 if depths is None else 1
    )
    depth = Gauge(
        "marketplace_queue_depth", "Messages waiting in the queue (not yet reserved by a worker).", ["queue"],
        registry=registry,
    )  # fmt: skip
    for queue, length in (depths or {}).items():
        depth.labels(queue=queue).set(length)
    ready = Gauge(
        "marketplace_classifier_ready",
        "1 when the worker's model passed its checks and it consumes the model queues; 0 when it refuses.",
        ["worker"],
        registry=registry,
    )
    for worker, is_ready in (classifier_readiness() or {}).items():
        ready.labels(worker=worker).set(1 if is_ready else 0)

    jobs = Gauge(
        "marketplace_bulk_jobs", "Bulk reclassification jobs by status.", ["status"], registry=registry
    )
    for status, count in bulk_selectors.bulk_job_counts().items():
        jobs.labels(status=status).set(count)

    labels = ["job", "model_version", "kind"]
    photos = Gauge(
        "marketplace_bulk_job_photos", "Photos of a running bulk job, by state.", [*labels, "state"],
        registry=registry,
    )  # fmt: skip
    ratio = Gauge("marketplace_bulk_job_progress_ratio", "Share done, 0..1.", labels, registry=registry)
    rate = Gauge(
        "marketplace_bulk_job_rate_photos_per_second", "Photos per second since the job started.", labels,
        registry=registry,
    )  # fmt: skip
    eta = Gauge(
        "marketplace_bulk_job_eta_seconds", "Seconds left at the current rate.", labels, registry=registry
    )
    for job in bulk_selectors.bulk_jobs_active():
        values = _job_labels(job)
        progress = bulk_selectors.bulk_job_progress(job=job)
        for state, count in (
            ("total", progress.total),
            ("done", progress.done),
            ("failed", job.failed_images),
        ):
            photos.labels(*values, state).set(count)
        ratio.labels(*values).set(progress.percent / 100.0)
        if progress.rate_per_s is not None:
            rate.labels(*values).set(progress.rate_per_s)
        if progress.eta_s is not None:
            eta.labels(*values).set(progress.eta_s)
    return registry


def _job_labels(job: BulkJob) -> tuple[str, str, str]:
    return (str(job.pk), job.model_version.name, "dry_run" if job.dry_run else "apply")
