"""The embedded PostgreSQL and Redis of a fault-injection run, which it stops and restarts."""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dev.embedded import start_postgres, start_redis, stop_postgres


@dataclass
class Servers:
    """PostgreSQL (unix socket) and Redis (loopback port, no persistence) under `run_dir`."""

    run_dir: Path
    database_url: str = ""
    broker_url: str = ""
    _postgres_pid: int = 0
    _redis: subprocess.Popen | None = None
    _redis_port: int = 0

    def start(self) -> None:
        self.database_url, self._postgres_pid = start_postgres(self.run_dir)
        self._redis, self._redis_port = start_redis(self.run_dir)
        self.broker_url = f"redis://127.0.0.1:{self._redis_port}/0"

    def restart_redis(self) -> None:
        """Kill Redis (SIGKILL) and start it again on the same port, empty: every message it held,
        queued or unacknowledged, is lost."""
        if self._redis is not None:
            self._redis.kill()
            self._redis.wait()
        self._redis, _ = start_redis(self.run_dir, port=self._redis_port)

    def postgres_outage(self, seconds: float) -> float:
        """Stop PostgreSQL (fast shutdown: open connections are cut), wait `seconds`, start it
        again. Returns how long it was down."""
        began = time.monotonic()
        stop_postgres(self._postgres_pid)
        time.sleep(seconds)
        url, self._postgres_pid = start_postgres(self.run_dir)
        if url != self.database_url:
            raise RuntimeError(f"PostgreSQL came back at {url}, not {self.database_url}")
        return time.monotonic() - began

    def stop(self) -> None:
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.terminate()
                self._redis.wait(10)
        if self._postgres_pid:
            stop_postgres(self._postgres_pid)
