"""The Celery app. Configuration comes from Django settings (see README "Settings").

Delivery guarantees (acks late, redelivery on worker loss, bounded time, JSON only) follow the
project's reliability rules; the Redis visibility timeout is longer than the hard time limit and
than any retry countdown so a running task is never delivered twice by timeout.
"""

from __future__ import annotations

import os

from celery import Celery
from django.conf import settings

from workers.queues import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("marketplace")

_transport_options = {"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT_S}

app.conf.update(
    broker_url=settings.CELERY_BROKER_URL,
    result_backend=settings.CELERY_RESULT_BACKEND,
    result_extended=settings.CELERY_RESULT_EXTENDED,
    broker_transport_options=_transport_options,
    result_backend_transport_options=_transport_options,
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=3,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_time_limit=settings.CELERY_TASK_HARD_TIME_LIMIT_S,
    task_soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT_S,
    worker_max_memory_per_child=settings.CELERY_WORKER_MAX_MEMORY_PER_CHILD_KB,
    # Loading the ONNX model happens in worker_process_init; give it time.
    worker_proc_alive_timeout=120,
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_track_started=True,
    task_default_queue=Queue.CLASSIFY.value,
    task_routes={
        "workers.tasks.image_classify_task": {"queue": Queue.CLASSIFY.value},
        "workers.tasks.images_requeue_stuck_task": {"queue": Queue.MAINTENANCE.value},
        "workers.tasks.classify_probes_delete_expired_task": {"queue": Queue.MAINTENANCE.value},
        "workers.tasks.api_tokens_delete_expired_task": {"queue": Queue.MAINTENANCE.value},
        "workers.tasks.stored_files_sweep_task": {"queue": Queue.MAINTENANCE.value},
        "workers.bulk.bulk_job_plan_task": {"queue": Queue.BULK.value},
        "workers.bulk.bulk_chunk_task": {"queue": Queue.BULK.value},
        "workers.training.model_train_task": {"queue": Queue.TRAINING.value},
        "workers.training.model_compare_task": {"queue": Queue.TRAINING.value},
    },
    beat_schedule={
        "requeue-stuck-images": {
            "task": "workers.tasks.images_requeue_stuck_task",
            "schedule": 60.0,
        },
        "delete-expired-classify-probes": {
            "task": "workers.tasks.classify_probes_delete_expired_task",
            "schedule": 600.0,
        },
        "delete-expired-api-tokens": {
            "task": "workers.tasks.api_tokens_delete_expired_task",
            "schedule": 3600.0,
        },
        "sweep-orphan-files": {
            "task": "workers.tasks.stored_files_sweep_task",
            "schedule": 3600.0,
        },
    },
    timezone="UTC",
    imports=["workers.tasks", "workers.bulk", "workers.training"],
)
