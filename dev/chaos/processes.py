"""Real Celery worker processes to start, stop and kill: shared by the fault-injection run
(`python -m dev.chaos`) and the tests that inject faults (`tests/workers/`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class WorkerNotReady(RuntimeError):
    """A worker exited or did not become ready in time; the message ends with its log's tail."""


@dataclass
class WorkerProcess:
    """A `celery worker` this process started, its node name and its log file."""

    process: subprocess.Popen
    name: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 90.0, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns a truthy value, which is returned. Raises TimeoutError
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout:.0f} s")


def start_worker(
    *,
    log: Path,
    env: Mapping[str, str],
    queues: str = "classify,bulk,training,maintenance",
    concurrency: int = 1,
    ready_line: str = "classifier loaded",
    timeout: float = 600.0,
    name_prefix: str = "worker",
    app: str = "config",
    name: str | None = None,
    nice: int = 0,
    solo: bool = False,
) -> WorkerProcess:
    """Start `celery -A <app> worker` with `env` added to this process's environment; returns
    once it answers a ping (through this process's Celery app, which must use the same broker)
    and its log shows `ready_line` (by default: its pool process has loaded the model; a first
    start may export and quantize the backbone; "" waits for the ping only). `name`: its node
    name (default `<name_prefix>-<random>@localhost`); `nice`: CPU priority (`nice -n`); `solo`: the
    solo pool (one process, no fork) instead of `concurrency` prefork processes. Raises
    `WorkerNotReady`."""
    from config.celery import app as control

    name = name or f"{name_prefix}-{uuid.uuid4().hex[:8]}@localhost"
    log.parent.mkdir(parents=True, exist_ok=True)
    pool = ["--pool", "solo"] if solo else ["-c", str(concurrency)]
    command = [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, *pool,
               "-n", name, "-l", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
    if nice:
        command = ["nice", "-n", str(nice), *command]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )
    worker = WorkerProcess(process=process, name=name, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WorkerNotReady(f"worker exited with {process.returncode}:\n{worker.log_text()[-4000:]}")
        if ready_line in worker.log_text() and _answers(control, name):
            return worker
        time.sleep(0.2)
    stop_worker(worker)
    raise WorkerNotReady(f"worker not ready within {timeout:.0f} s:\n{worker.log_text()[-4000:]}")


def _answers(app: object, name: str) -> bool:
    try:
        return bool(app.control.ping(destination=[name], timeout=0.5))  # type: ignore[attr-defined]
    except OSError:  # the broker restarted under a pooled connection: the next ping reconnects
        from kombu import pools

        pools.reset()
        return False


def stop_worker(worker: WorkerProcess, timeout: float = 30.0) -> None:
    """Warm shutdown (SIGTERM, as a deploy stops it); SIGKILL after `timeout` seconds."""
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_worker(worker)


def kill_pool(worker: WorkerProcess) -> int:
    """SIGKILL every pool process of the worker (its main process replaces them). Returns how many."""
    children = psutil.Process(worker.process.pid).children(recursive=True)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
    return len(children)


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL the whole worker, pool processes first, as a lost machine would stop it."""
    if worker.process.poll() is not None:
        return
    kill_pool(worker)
    worker.process.kill()
    worker.process.wait()
