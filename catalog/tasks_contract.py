"""The task contract between the web process and the workers: queue names and task names.

The catalog sends tasks by name and the workers register them under the same names, so both
sides import this module and neither imports the other's code (`workers` may import `catalog`;
`catalog` never imports `workers`). The names are part of the wire format: a message already in
Redis carries its task name, so renaming a task means keeping the old name registered until the
queues have drained.
"""

from enum import StrEnum


class Queue(StrEnum):
    """Celery queues, one per workload: bulk work never delays a fresh upload."""

    CLASSIFY = "classify"  # a seller's fresh upload: latency matters
    BULK = "bulk"  # reclassification of the catalogue
    TRAINING = "training"  # head training
    MAINTENANCE = "maintenance"  # sweeper and other periodic jobs


class TaskName(StrEnum):
    """Registered task names (the `name=` of each task decorator)."""

    IMAGE_CLASSIFY = "workers.tasks.image_classify_task"
    IMAGES_REQUEUE_STUCK = "workers.tasks.images_requeue_stuck_task"
    JOBS_SWEEP = "workers.tasks.jobs_sweep_task"
    CLASSIFY_PROBES_DELETE_EXPIRED = "workers.tasks.classify_probes_delete_expired_task"
    API_TOKENS_DELETE_EXPIRED = "workers.tasks.api_tokens_delete_expired_task"
    STORED_FILES_SWEEP = "workers.tasks.stored_files_sweep_task"
    BULK_JOB_PLAN = "workers.bulk.bulk_job_plan_task"
    BULK_CHUNK = "workers.bulk.bulk_chunk_task"
    MODEL_TRAIN = "workers.training.model_train_task"
    MODEL_COMPARE = "workers.training.model_compare_task"


class ChunkOutcome(StrEnum):
    """How one run of a bulk chunk task ended (its return value, shown by Flower)."""

    DONE = "done"  # its photos are scored and the chunk is closed
    ALREADY_DONE = "already-done"  # an earlier run closed it
    GONE = "gone"  # its row was deleted (the job with it)
    CANCELLED = "cancelled"  # staff cancelled the job; the chunk is given back for a resume
    FAILED = "failed"  # the job failed (this run's error, or the version cannot be served)


#: The queue each task is routed to (Celery's `task_routes`).
TASK_QUEUES: dict[TaskName, Queue] = {
    TaskName.IMAGE_CLASSIFY: Queue.CLASSIFY,
    TaskName.IMAGES_REQUEUE_STUCK: Queue.MAINTENANCE,
    TaskName.JOBS_SWEEP: Queue.MAINTENANCE,
    TaskName.CLASSIFY_PROBES_DELETE_EXPIRED: Queue.MAINTENANCE,
    TaskName.API_TOKENS_DELETE_EXPIRED: Queue.MAINTENANCE,
    TaskName.STORED_FILES_SWEEP: Queue.MAINTENANCE,
    TaskName.BULK_JOB_PLAN: Queue.BULK,
    TaskName.BULK_CHUNK: Queue.BULK,
    TaskName.MODEL_TRAIN: Queue.TRAINING,
    TaskName.MODEL_COMPARE: Queue.TRAINING,
}

#: Modules that register the tasks above; a worker imports them at start-up.
TASK_MODULES = ["workers.tasks", "workers.bulk", "workers.training"]
