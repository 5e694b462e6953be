"""A real HTTP S3 endpoint for the S3 test tier: moto's server (`moto[server]`), started by the
test session on a free loopback port like the embedded PostgreSQL and Redis, in its own process.

`S3Server.storage_env(bucket)` is what a worker process needs to use a bucket (STORAGE_BACKEND,
bucket, endpoint, fake credentials); `use_bucket` points this test process's Django storage at it;
`s3_worker_stack` runs a real worker on a bucket of its own.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.storage import s3_storage
from dev.embedded import free_port, start_redis
from tests.conftest import WorkerProcess, point_celery_app_at, start_worker, stop_worker

REGION = "us-east-1"
# moto accepts any credentials; real ones must never be needed (or used) by the tests.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class S3Server:
    process: subprocess.Popen
    endpoint_url: str
    log: Path

    def client(self) -> Any:
        """A boto3 S3 client of the test itself (to create buckets and look inside them)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self) -> str:
        """A new, empty bucket with a unique name."""
        name = f"photos-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key of `bucket` under `prefix`, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", ()))

    def storage_env(self, bucket: str) -> dict[str, str]:
        """Environment of a process (worker, manage.py) that stores photos in `bucket`."""
        return {
            "STORAGE_BACKEND": "s3",
            "AWS_STORAGE_BUCKET_NAME": bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_S3_REGION_NAME": REGION,
            **CREDENTIALS,
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_s3_server(log: Path) -> S3Server:
    """Start moto's S3 server on 127.0.0.1 and return once it answers HTTP."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    server = S3Server(process=process, endpoint_url=f"http://127.0.0.1:{port}", log=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}; see {log}")
        with contextlib.suppress(urllib.error.URLError, OSError):
            urllib.request.urlopen(f"{server.endpoint_url}/moto-api/data.json", timeout=1).close()
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"moto server did not answer on port {port}; see {log}")


def use_bucket(server: S3Server, bucket: str, *, settings: Any, monkeypatch: Any) -> None:
    """Point this process's Django storage at `bucket` (pytest-django's `settings` fixture resets
    `default_storage` on the change and back after the test)."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    settings.STORAGE_BACKEND = "s3"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": s3_storage(bucket_name=bucket, endpoint_url=server.endpoint_url, region_name=REGION),
    }


@dataclass
class S3Stack:
    server: S3Server
    bucket: str
    worker: WorkerProcess


@contextlib.contextmanager
def s3_worker_stack(server: S3Server, run_dir: Path) -> Iterator[S3Stack]:
    """A new bucket and a worker (classify and bulk queues) whose only photo storage is that
    bucket, given as the S3 environment alone, on a Redis of its own that this process's Celery
    app sends to meanwhile, so no other test worker takes its tasks. Needs the test database."""
    bucket = server.create_bucket()
    redis, port = start_redis(run_dir / "redis")
    broker = f"redis://127.0.0.1:{port}/0"
    previous = point_celery_app_at(broker)
    # An empty MEDIA_ROOT: a worker that fell back to local files would find no photo there.
    env = {**server.storage_env(bucket), "CELERY_BROKER_URL": broker, "MEDIA_ROOT": str(run_dir / "empty")}
    try:
        worker = start_worker(log=run_dir / "worker.log", queues="classify,bulk", env=env)
        try:
            yield S3Stack(server=server, bucket=bucket, worker=worker)
        finally:
            stop_worker(worker)
    finally:
        point_celery_app_at(previous)
        redis.kill()
        redis.wait()
