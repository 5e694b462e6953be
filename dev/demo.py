"""`make demo`: the whole system on one machine, from an empty database to suggestions.

Starts embedded PostgreSQL and Redis when DATABASE_URL / CELERY_BROKER_URL are unset, migrates
(which seeds the taxonomy), exports the backbone to ONNX once, starts a Celery worker (with the
beat sweeper), imports the CC0 photos under demo/photos through the real queue and prints their
suggestions. Then serves the web app on 127.0.0.1:8000 and Flower on 127.0.0.1:5555 (basic auth)
until Ctrl-C, stopping every process it started. With DEMO_ONCE=1 it exits after the table.

The demo speaks plain HTTP on loopback: it turns the production HTTPS settings off and, unless
DJANGO_SECRET_KEY is set, makes a random key for this run (shared through `.run/services.env`
with `manage.py` commands run meanwhile). Passwords travel in environment variables, never on a
command line that `ps` shows.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from dev.embedded import BASE_DIR, DEFAULT_RUN_DIR, missing_services

PYTHON = sys.executable
DEMO_PHOTOS = BASE_DIR / "demo" / "photos"
# A staff account for the review and model registry pages; its password changes every run. Its
# rights come from the two staff groups (catalog.access), as a real reviewer's would, not from
# being a superuser.
STAFF_ACCOUNT = """
import os
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from catalog.access import MODEL_MANAGER_GROUP, REVIEWER_GROUP
user, _ = get_user_model().objects.get_or_create(username="admin", defaults={"email": "admin@example.com"})
user.is_staff, user.is_superuser = True, False
user.set_password(os.environ["DEMO_ADMIN_PASSWORD"])
user.save()
user.groups.add(*Group.objects.filter(name__in=[REVIEWER_GROUP, MODEL_MANAGER_GROUP]))
"""
# Loopback only: the demo's accounts and Flower are not for the network.
BIND_ADDRESS = "127.0.0.1"
# The production HTTPS defaults (redirect, secure cookies, HSTS) would lock a plain-HTTP demo out.
PLAIN_HTTP = {
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "DJANGO_SECURE_COOKIES": "false",
    "DJANGO_SECURE_HSTS_SECONDS": "0",
}


def _spawn(args: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else None  # noqa: SIM115 - owned by the child for its lifetime
    # A session of its own: Ctrl-C reaches only this process, which then stops the children in
    # order (worker first, so it can finish or hand back its tasks).
    return subprocess.Popen(
        args,
        cwd=BASE_DIR,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )


def _stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in reversed(processes):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _configure_environment(run_dir: Path) -> None:
    """The deployment values the demo's processes inherit (values already set win)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Written to services.env with the servers' URLs: manage.py commands run in another shell
    # (import_photos) then store photos where this demo's web app and worker read them.
    os.environ.setdefault("MEDIA_ROOT", str((run_dir / "media").resolve()))
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    for key, value in PLAIN_HTTP.items():
        os.environ.setdefault(key, value)


def _start_web_and_flower(
    run_dir: Path, processes: list[subprocess.Popen], *, web_port: str, flower_port: str
) -> None:
    """Create the staff account with a fresh password, start the web app and Flower (added to
    `processes` as each starts, so a failure stops what already runs), and print where they are.
    Raises `CalledProcessError` if the account cannot be created."""
    password = secrets.token_urlsafe(12)
    subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", STAFF_ACCOUNT],
        cwd=BASE_DIR,
        env={**os.environ, "DEMO_ADMIN_PASSWORD": password},
        check=True,
    )
    processes.append(
        _spawn(
            [PYTHON, "manage.py", "runserver", "--noreload", f"{BIND_ADDRESS}:{web_port}"],
            run_dir / "web.log",
        )
    )
    # Flower reads FLOWER_BASIC_AUTH itself.
    processes.append(
        _spawn(
            [PYTHON, "-m", "celery", "-A", "config", "flower",
             f"--address={BIND_ADDRESS}", f"--port={flower_port}"],
            run_dir / "flower.log",
            env={**os.environ, "FLOWER_BASIC_AUTH": f"demo:{password}"},
        )
    )  # fmt: skip
    print(f"\nweb app:  http://127.0.0.1:{web_port}/")
    print(f"Flower:   http://127.0.0.1:{flower_port}/  (user demo, password {password})")
    print(f"staff:    http://127.0.0.1:{web_port}/staff/review/  (user admin, password {password})")
    print(f"logs:     {run_dir}/*.log\nCtrl-C stops everything.")


def main() -> int:
    # Explicit handlers: a shell may start this with SIGINT ignored, and SIGTERM (a supervisor's
    # stop) must shut down as cleanly as Ctrl-C.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    run_dir = Path(os.environ.get("RUN_DIR") or DEFAULT_RUN_DIR)
    run_dir.mkdir(parents=True, exist_ok=True)
    once = os.environ.get("DEMO_ONCE") == "1"
    web_port = os.environ.get("DEMO_WEB_PORT", "8000")
    flower_port = os.environ.get("DEMO_FLOWER_PORT", "5555")
    _configure_environment(run_dir)
    processes: list[subprocess.Popen] = []
    with missing_services(run_dir) as services:
        for key, value in services.env.items():
            print(f"embedded {key}={value}")
        try:
            subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=BASE_DIR, check=True)
            print("exporting the backbone to ONNX (cached after the first run)...")
            subprocess.run([PYTHON, "-m", "classifier", "export"], cwd=BASE_DIR, check=True)
            worker_log = run_dir / "worker.log"
            processes.append(
                _spawn(
                    [PYTHON, "-m", "celery", "-A", "config", "worker", "-B",
                     "--schedule", str(run_dir / "celerybeat-schedule"),
                     "-Q", "classify,bulk,training,maintenance", "-c", "1", "-l", "INFO",
                     "-n", "demo@%h"],
                    worker_log,
                )
            )  # fmt: skip
            print(f"worker started (log: {worker_log})")
            subprocess.run(
                # The folders name each photo's true category; the demo's sellers skip the choice,
                # so the listing's category comes from the model (auto) or waits for a person.
                [
                    PYTHON,
                    "manage.py",
                    "import_photos",
                    str(DEMO_PHOTOS),
                    "--ignore-folders",
                    "--wait",
                    "--timeout",
                    "600",
                ],
                cwd=BASE_DIR,
                check=True,
            )
            if once:
                return 0
            _start_web_and_flower(run_dir, processes, web_port=web_port, flower_port=flower_port)
            while all(proc.poll() is None for proc in processes):
                time.sleep(0.5)
            print("a demo process exited; stopping", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
        except subprocess.CalledProcessError as error:
            print(f"demo step failed: {error}", file=sys.stderr)
            return 1
        finally:
            # A second Ctrl-C must not cut the shutdown short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _stop(processes)


if __name__ == "__main__":
    sys.exit(main())
