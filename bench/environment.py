"""The benchmark's environment: the bench database and Redis database, Celery worker processes
(started by `dev.chaos.processes`, as the tests start theirs), the machine's description.

Each phase builds its catalogue in a dedicated database (`BENCH_DATABASE`, default
`marketplace_bench`, dropped and created at start) and a dedicated Redis database
(`BENCH_REDIS_DB`, default 14, flushed at start), so a running system or test session on the
same servers is neither disturbed nor measured. Two runs at once need different values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dev.chaos import processes

REPO_ROOT = Path(__file__).resolve().parent.parent
# Another run on the same servers must use other names (the smoke test does).
BENCH_DATABASE = os.environ.get("BENCH_DATABASE", "marketplace_bench")
BENCH_REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "14"))
#: Pool processes of the bulk worker (`celery worker -c`, as in docker/compose.yml); threads per
#: process follow (cores / processes). Two processes overlap one chunk's database work with the
#: other's scoring: head-only jobs ran ~1.1-1.4x faster than with one, CNN jobs the same.
BULK_PROCESSES = int(os.environ.get("BENCH_BULK_PROCESSES", "2"))
#: Seconds a worker has to answer its first ping.
WORKER_START_TIMEOUT = 300.0
#: Seconds a stopping worker has for a warm shutdown before it is killed.
WORKER_STOP_TIMEOUT = 60.0


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# --- servers and databases ------------------------------------------------------------------------


def prepare_environment(media_root: Path) -> None:
    """Point this process (and the workers it starts) at the bench database and Redis database,
    create the database afresh, migrate it and flush the Redis database. Needs DATABASE_URL and
    CELERY_BROKER_URL set (the embedded servers' when none were given)."""
    import psycopg

    server = os.environ["DATABASE_URL"]
    with psycopg.connect(_with_path(server, "/postgres"), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    os.environ["DATABASE_URL"] = _with_path(server, f"/{BENCH_DATABASE}")
    os.environ["CELERY_BROKER_URL"] = _with_path(os.environ["CELERY_BROKER_URL"], f"/{BENCH_REDIS_DB}")
    os.environ["MEDIA_ROOT"] = str(media_root)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # Settings refuse to start without a key when DEBUG is off; a benchmark run makes its own.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    from config.celery import app

    call_command("migrate", verbosity=0)
    with app.connection_for_write() as connection:
        connection.default_channel.client.flushdb()


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(_with_path(os.environ["DATABASE_URL"], "/postgres"), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")


# --- workers ------------------------------------------------------------------------------------


@dataclass
class Worker:
    """A benchmark's `celery worker` (`dev.chaos.processes.WorkerProcess`) and the peak resident
    size of its pool processes seen so far."""

    handle: processes.WorkerProcess
    peak_rss_mb: float = 0.0

    @property
    def name(self) -> str:
        return self.handle.name

    @property
    def log(self) -> Path:
        return self.handle.log

    def pool_pids(self) -> list[int]:
        """The pool's processes; the worker itself for a solo pool (no children)."""
        pid = self.handle.process.pid
        with contextlib.suppress(OSError):
            children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            return children or [pid]
        return []

    def sample_rss(self) -> float:
        """Peak resident size (VmHWM) of the pool processes so far, MB; kept in `peak_rss_mb`."""
        for pid in self.pool_pids():
            with contextlib.suppress(OSError, StopIteration, ValueError):
                line = next(
                    x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM")
                )
                self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        return self.peak_rss_mb


def start_worker(
    *,
    app: str,
    queues: str,
    logs: Path,
    nice: int = 0,
    concurrency: int = 1,
    host: str = "localhost",
    env: dict[str, str] | None = None,
) -> Worker:
    """A `celery worker` subprocess on the bench servers (`dev.chaos.processes.start_worker`);
    returns once it answers a ping. With `CLASSIFIER_DEVICE=cuda` it runs the solo pool (one
    process per GPU, no fork). `host` is its node name's host part, `env` extra environment
    (e.g. its own CLASSIFIER_CACHE_DIR). Raises `dev.chaos.processes.WorkerNotReady`."""
    name = f"bench-{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@{host}"
    handle = processes.start_worker(
        log=logs / f"{name.replace('@', '-')}.log",
        env={"LOG_LEVEL": "INFO", **(env or {})},
        queues=queues,
        concurrency=concurrency,
        ready_line="",
        timeout=WORKER_START_TIMEOUT,
        app=app,
        name=name,
        nice=nice,
        solo=os.environ.get("CLASSIFIER_DEVICE") == "cuda",
    )
    return Worker(handle=handle)


def stop_worker(worker: Worker) -> None:
    """Sample its peak memory, then stop it (warm shutdown, killed after a minute)."""
    worker.sample_rss()
    processes.stop_worker(worker.handle, timeout=WORKER_STOP_TIMEOUT)


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll `predicate` until it is true. Raises TimeoutError naming `what` after `timeout` s."""
    try:
        processes.wait_for(predicate, timeout=timeout, interval=interval)
    except TimeoutError as error:
        raise TimeoutError(f"{what}: not done within {timeout:.0f} s") from error


# --- the machine ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "int8_instructions": [f for f in ("avx512_vnni", "amx_int8") if f in flags],
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "torch": version("torch"),
    }


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
