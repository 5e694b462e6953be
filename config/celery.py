"""The Celery app, shared by the web process (which sends tasks by name) and the workers.

It lives in `config` beside the Django settings, as Django's Celery layout has it, so the catalog
can publish tasks without importing `workers`; the tasks themselves live in `workers/` and are
registered when a worker imports `TASK_MODULES`. Run a worker with `celery -A config worker`.
Configuration comes from Django settings (see README "Settings"), read when the app is first
configured rather than at import, so importing this module does not load the settings.

Delivery guarantees (acks late, redelivery on worker loss, bounded time, JSON only) follow the
project's reliability rules; the Redis visibility timeout is longer than the hard time limit and
than any retry countdown so a running task is never delivered twice by timeout.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from django.conf import settings

from catalog.tasks_contract import TASK_MODULES, TASK_QUEUES, Queue, TaskName

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _configuration() -> dict[str, Any]:
    """Celery settings from Django's, read when the app is first configured."""
    transport_options = {"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT_S}
    return {
        "broker_url": settings.CELERY_BROKER_URL,
        "result_backend": settings.CELERY_RESULT_BACKEND,
        "result_extended": settings.CELERY_RESULT_EXTENDED,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 3,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.CELERY_TASK_HARD_TIME_LIMIT_S,
        "task_soft_time_limit": settings.CELERY_TASK_SOFT_TIME_LIMIT_S,
        "worker_max_memory_per_child": settings.CELERY_WORKER_MAX_MEMORY_PER_CHILD_KB,
        # Loading the ONNX model happens in worker_process_init; give it time.
        "worker_proc_alive_timeout": 120,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "task_default_queue": Queue.CLASSIFY.value,
        "task_routes": {name.value: {"queue": queue.value} for name, queue in TASK_QUEUES.items()},
        "beat_schedule": {
            "requeue-stuck-images": {"task": TaskName.IMAGES_REQUEUE_STUCK.value, "schedule": 60.0},
            "delete-expired-classify-probes": {
                "task": TaskName.CLASSIFY_PROBES_DELETE_EXPIRED.value,
                "schedule": 600.0,
            },
            "delete-expired-api-tokens": {
                "task": TaskName.API_TOKENS_DELETE_EXPIRED.value,
                "schedule": 3600.0,
            },
            "sweep-orphan-files": {"task": TaskName.STORED_FILES_SWEEP.value, "schedule": 3600.0},
        },
        "timezone": "UTC",
        "imports": TASK_MODULES,
    }


app = Celery("marketplace")
app.add_defaults(_configuration)
