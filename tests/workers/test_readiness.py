"""Worker readiness: a worker that cannot classify leaves out the model queues, and `/metrics`
shows each worker's readiness from what the workers publish in Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from django.test import Client

from catalog.queueing import CLASSIFIER_READY_KEY
from dev.embedded import start_redis
from tests.conftest import point_celery_app_at
from tests.factories import UserFactory
from workers import readiness


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    proc, port = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    previous = point_celery_app_at(url)
    monkeypatch.setattr(readiness, "_hostname", "")
    monkeypatch.setattr(readiness, "_refused", "")
    try:
        yield url
    finally:
        point_celery_app_at(previous)
        proc.kill()
        proc.wait()


def test_a_worker_that_cannot_classify_consumes_only_the_maintenance_queue(broker: str) -> None:
    # given a worker app about to consume every queue
    app = Celery("worker-under-test", broker=broker, set_as_current=False)
    app.conf.task_queues = None
    app.amqp.queues.select(["classify", "bulk", "training", "maintenance"])
    readiness.set_hostname("w1@host")

    # when its model fails its checks
    refused = readiness.refuse_queues(app, "efficientnet-lite0-x.onnx is truncated")

    # then it leaves out the queues whose tasks need the model, and pool processes know why
    assert refused == ["classify", "bulk", "training"]
    assert list(app.amqp.queues.consume_from) == ["maintenance"]
    assert readiness.refused() == "efficientnet-lite0-x.onnx is truncated"


@pytest.mark.django_db
def test_metrics_show_each_running_workers_readiness(broker: str, client: Client) -> None:
    from config.celery import app

    # given one worker ready, one refusing, and one that stopped publishing (its key expired)
    for name, ready in (("ready@host", True), ("refusing@host", False), ("gone@host", True)):
        readiness.set_hostname(name)
        readiness.publish(app, ready=ready, reason="" if ready else "truncated")
    with app.connection_for_write() as connection:
        connection.default_channel.client.delete(CLASSIFIER_READY_KEY.format(worker="gone@host"))

    # when staff scrape the metrics
    client.force_login(UserFactory.create(is_staff=True))
    lines = client.get("/metrics").content.decode().splitlines()

    # then each running worker has its gauge
    gauges = sorted(line for line in lines if line.startswith("marketplace_classifier_ready{"))
    assert gauges == [
        'marketplace_classifier_ready{worker="ready@host"} 1.0',
        'marketplace_classifier_ready{worker="refusing@host"} 0.0',
    ]
