"""Where photos are stored: Django's `STORAGES["default"]`, built from the environment.

`STORAGE_BACKEND=local` (the default) keeps files under `MEDIA_ROOT`. `STORAGE_BACKEND=s3` stores
them in an S3 bucket with django-storages (AWS S3, MinIO, or any S3-compatible server), and the
browser then uploads photos straight to the bucket (see `catalog.services.direct_uploads`).
README "Storage" documents every variable read here.

Every S3 client gets a botocore `Config` with bounded connect and read timeouts and botocore's
"standard" retry mode (exponential backoff with jitter on throttling, 5xx and connection errors),
instead of botocore's 60 s timeouts and legacy retries: a stalled endpoint then fails a request in
seconds, and the worker's own retry policy takes over.
"""

from __future__ import annotations

from typing import Any

import environ

S3_BACKEND = "storages.backends.s3.S3Storage"
LOCAL_BACKEND = "django.core.files.storage.FileSystemStorage"

# Defaults of the S3 client settings (seconds, attempts); see README "Storage".
S3_CONNECT_TIMEOUT_S = 5.0
S3_READ_TIMEOUT_S = 30.0
S3_MAX_ATTEMPTS = 5


def s3_client_config(
    *,
    connect_timeout_s: float = S3_CONNECT_TIMEOUT_S,
    read_timeout_s: float = S3_READ_TIMEOUT_S,
    max_attempts: int = S3_MAX_ATTEMPTS,
    addressing_style: str | None = None,
) -> Any:
    """A `botocore.config.Config` for S3 clients: timeouts in seconds, `max_attempts` tries in all
    (first one included) in the "standard" retry mode, SigV4 signatures (presigned POSTs need
    them), and `addressing_style` ("path" for MinIO; None lets botocore choose)."""
    from botocore.config import Config  # only S3 deployments pay for importing botocore

    return Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        signature_version="s3v4",
        s3={"addressing_style": addressing_style} if addressing_style else {},
    )


def s3_storage(
    *,
    bucket_name: str,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    client_config: Any = None,
) -> dict[str, Any]:
    """The `STORAGES["default"]` entry for photos in `bucket_name`: private objects (no ACL), never
    overwritten, read with the given botocore config (`s3_client_config()` when None)."""
    return {
        "BACKEND": S3_BACKEND,
        "OPTIONS": {
            "bucket_name": bucket_name,
            "endpoint_url": endpoint_url,
            "region_name": region_name,
            "default_acl": None,
            "file_overwrite": False,
            "querystring_auth": True,
            "client_config": client_config if client_config is not None else s3_client_config(),
        },
    }


def default_storage_from_env(env: environ.Env) -> dict[str, Any]:
    """`STORAGES["default"]` from `STORAGE_BACKEND` and the `AWS_*` variables.

    Raises `ImproperlyConfigured` (django-environ) when `STORAGE_BACKEND=s3` and
    `AWS_STORAGE_BUCKET_NAME` is unset, and `ValueError` for an unknown backend.
    """
    backend = env.str("STORAGE_BACKEND", default="local")
    if backend == "local":
        return {"BACKEND": LOCAL_BACKEND}
    if backend != "s3":
        raise ValueError(f"STORAGE_BACKEND must be 'local' or 's3', not {backend!r}")
    return s3_storage(
        bucket_name=env.str("AWS_STORAGE_BUCKET_NAME"),
        endpoint_url=env.str("AWS_S3_ENDPOINT_URL", default=None),
        region_name=env.str("AWS_S3_REGION_NAME", default=None),
        client_config=s3_client_config(
            connect_timeout_s=env.float("AWS_S3_CONNECT_TIMEOUT_S", default=S3_CONNECT_TIMEOUT_S),
            read_timeout_s=env.float("AWS_S3_READ_TIMEOUT_S", default=S3_READ_TIMEOUT_S),
            max_attempts=env.int("AWS_S3_MAX_ATTEMPTS", default=S3_MAX_ATTEMPTS),
            addressing_style=env.str("AWS_S3_ADDRESSING_STYLE", default=None),
        ),
    )


def is_s3(storages: dict[str, Any]) -> bool:
    """Whether `STORAGES["default"]` of `storages` is an S3 bucket (no boto3 import)."""
    return storages.get("default", {}).get("BACKEND") == S3_BACKEND
