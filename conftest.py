"""Start embedded PostgreSQL/Redis for the test session when no URLs are configured.

Runs before pytest-django reads the settings, so DATABASE_URL and CELERY_BROKER_URL point at
the servers started here. In CI, .ci/run sets both URLs and nothing is started.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.embedded import BASE_DIR, EmbeddedServices, start_missing_services

_services: EmbeddedServices | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _services
    if os.environ.get("DATABASE_URL") and os.environ.get("CELERY_BROKER_URL"):
        return
    if hasattr(config, "workerinput"):  # an xdist worker: the controller started them
        return
    run_dir = Path(os.environ.get("TEST_RUN_DIR") or BASE_DIR / ".run" / "test-services")
    _services = start_missing_services(run_dir)
    os.environ.update(_services.env)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _services is not None:
        _services.stop()
