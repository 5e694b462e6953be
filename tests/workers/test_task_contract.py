"""The task contract: every name the catalog sends is registered by a worker and routed to a queue."""

from __future__ import annotations

import importlib

from catalog.tasks_contract import TASK_MODULES, TASK_QUEUES, Queue, TaskName
from config.celery import app


def test_every_task_name_is_registered_by_the_worker_modules() -> None:
    # when a worker imports the task modules named by the contract
    for module in TASK_MODULES:
        importlib.import_module(module)

    # then each name of the contract is a registered task
    missing = sorted(name.value for name in TaskName if name.value not in app.tasks)
    assert missing == []


def test_every_task_is_routed_to_a_queue_of_the_contract() -> None:
    # given the app's routes
    routes = app.conf.task_routes

    # then each task goes to the queue the contract names, and only contract queues are used
    assert set(TASK_QUEUES) == set(TaskName)
    assert {name: routes[name.value] for name in TaskName} == {
        name: {"queue": TASK_QUEUES[name].value} for name in TaskName
    }
    assert {task["task"] for task in app.conf.beat_schedule.values()} <= {name.value for name in TaskName}
    assert app.conf.task_default_queue == Queue.CLASSIFY.value
