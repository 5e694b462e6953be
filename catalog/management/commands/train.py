"""Train a new model version on the human-labelled photos, on the `training` queue.

    python manage.py train [--wait] [--timeout SECONDS]

Queues a training run (or reports the one already queued or running). With --wait, waits for
the worker and prints the candidate's held-out figures; the version stays inactive until staff
activate it on the registry page (after comparing it with the active version).
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.models import TrainingRun, TrainingStatus
from catalog.services.registry import training_run_request


class Command(BaseCommand):
    help = "Queue a training run on the human-labelled photos (a worker on the training queue runs it)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--wait", action="store_true", help="wait for the run and print its figures")
        parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait (--wait)")

    def handle(self, *args: Any, **options: Any) -> None:
        run = training_run_request(requested_by=None)
        self.stdout.write(f"training run {run.pk} {run.status}")
        if not options["wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        while True:
            run = TrainingRun.objects.select_related("model_version").get(pk=run.pk)
            if run.status in (TrainingStatus.DONE, TrainingStatus.FAILED):
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"training run {run.pk} still {run.status} after {options['timeout']:.0f} s"
                )
            time.sleep(1.0)
        if run.status == TrainingStatus.FAILED:
            raise CommandError(f"training run {run.pk} failed: {run.failure_reason}")
        version = run.model_version
        assert version is not None
        held_out = (version.metrics or {}).get("held_out", {})
        self.stdout.write(f"model version {version.name}")
        self.stdout.write(
            json.dumps(
                {
                    "report": run.report,
                    "held_out": {
                        key: held_out.get(key) for key in ("n", "accuracy", "macro_f1", "ece", "auto_accept")
                    },
                    "auto_accept_thresholds": version.auto_accept_thresholds,
                },
                indent=2,
            )
        )
