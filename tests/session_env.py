"""Pytest plugin: the deployment values a test session sets for itself before settings are read.

Loaded with ``-p tests.session_env`` (pyproject's ``addopts``), before pytest-django imports
``config.settings``. With DEBUG off the settings refuse to start without DJANGO_SECRET_KEY and
default to HTTPS-only behaviour; the test client, the live server and the browser tests speak
plain HTTP, so the session sets a random key and turns the HTTPS redirect and secure cookies off
(values already in the environment win). Worker processes started by tests inherit them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Generator

import pytest

PLAIN_HTTP = {
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "DJANGO_SECURE_COOKIES": "false",
    "DJANGO_SECURE_HSTS_SECONDS": "0",
}


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    for key, value in PLAIN_HTTP.items():
        os.environ.setdefault(key, value)
    return (yield)
