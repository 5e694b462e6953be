"""A web process stays small: loading the WSGI app and every web module never imports the model."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

PROBE = """
import sys
import config.wsgi
from django.urls import resolve
import catalog.admin, catalog.services, catalog.views, catalog.queueing
import catalog.selectors.bulk, catalog.selectors.catalogue, catalog.selectors.registry
import catalog.selectors.review, catalog.selectors.suggestions
import catalog.api.views, catalog.uploads, catalog.thumbnails
import config.celery
resolve("/")
resolve("/api/classify")
heavy = sorted(n for n in ("torch", "onnxruntime", "torchvision", "timm", "classifier") if n in sys.modules)
print(",".join(heavy))
"""


def test_wsgi_app_never_imports_torch_or_onnxruntime() -> None:
    # when the WSGI application and all web-facing modules are loaded in a fresh interpreter
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )

    # then none of the model's libraries were imported
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
