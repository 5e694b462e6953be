"""Production settings: start-up refusals and `manage.py check --deploy`, each in a fresh process
with its own environment (settings are read once per process)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from config.settings import SECRET_KEY_MISSING
from tests.conftest import REPO_ROOT

# What a deployment behind a TLS proxy sets; every HTTPS setting keeps its DEBUG-off default.
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "marketplace.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://marketplace.example.com",
    "DJANGO_TRUSTED_PROXY": "true",
}
SHOW_SETTINGS = """
import json
from django.conf import settings
names = ["DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT",
         "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
         "SECURE_PROXY_SSL_HEADER"]
print(json.dumps({name: getattr(settings, name) for name in names}))
"""


def manage(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run manage.py with the test session's environment less every Django deployment value, plus
    `env`; RUN_DIR is empty, so no demo's services.env fills anything in."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO_ROOT,
        env={**base, "RUN_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def settings_of(env: dict[str, str], tmp_path: Path) -> dict[str, object]:
    result = manage(["shell", "-c", SHOW_SETTINGS], env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_deploy_check_passes_with_production_settings(tmp_path: Path) -> None:
    result = manage(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV, tmp_path)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "System check identified no issues" in result.stdout


def test_without_a_secret_key_the_app_refuses_to_start(tmp_path: Path) -> None:
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != "DJANGO_SECRET_KEY"}

    result = manage(["check"], env, tmp_path)

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {SECRET_KEY_MISSING}" in result.stderr


def test_a_development_process_runs_without_a_key(tmp_path: Path) -> None:
    result = manage(["check"], {"DJANGO_DEBUG": "true"}, tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]


def test_debug_off_defaults_to_https_only(tmp_path: Path) -> None:
    values = settings_of({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "k" * 50}, tmp_path)

    assert values == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        # no proxy configured: a client's X-Forwarded-Proto is not believed
        "SECURE_PROXY_SSL_HEADER": None,
    }


def test_every_https_setting_comes_from_the_environment(tmp_path: Path) -> None:
    values = settings_of(
        {
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "k" * 50,
            "DJANGO_SECURE_COOKIES": "false",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "DJANGO_SECURE_HSTS_SECONDS": "3600",
            "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS": "false",
            "DJANGO_SECURE_HSTS_PRELOAD": "false",
            "DJANGO_TRUSTED_PROXY": "true",
        },
        tmp_path,
    )

    assert values == {
        "DEBUG": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_HSTS_PRELOAD": False,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }
