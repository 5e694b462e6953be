"""The one retry policy of every task: uploads, bulk chunks and training.

Errors fall in two families, as Celery's `autoretry_for` and `throws` separate them (Saleor's
tasks do the same):

- RETRYABLE_ERRORS: the database, the broker or the storage did not answer (a connection,
  a timeout, throttling, a 5xx, an I/O error), or this worker cannot classify (another may).
  The work is tried again after an exponential backoff with full jitter, at most
  `max_retries` times; after that it fails with its reason.
- FINAL_ERRORS: the input itself is at fault (not an image, a file missing from storage). Never
  retried: the photo ends FAILED with a readable reason at once.

Anything else is unexpected, and final for the one photo or job that raised it.

Storage errors come from Django's storage API (local files or S3 through boto3), so
`storage_error_is_transient` sorts them: botocore's own lists of transient and throttling
errors (`botocore.retries.standard`, the "standard" retry mode) and any OSError other than a
missing file. `workers.storage.photo_read` raises them as `StorageUnavailable`, a member of
the retryable family.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError

from classifier.preprocess import ImageRejected
from workers.inference import ClassifierUnavailable


class StorageUnavailable(OSError):
    """Storage did not answer a read (connection, timeout, throttling, 5xx, an I/O error).
    `str(error)` names the underlying error without any file path."""


RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
    StorageUnavailable,
    ClassifierUnavailable,
)
FINAL_ERRORS: tuple[type[BaseException], ...] = (ImageRejected, FileNotFoundError)
#: Any error the database raised (so the worker modules need no import of `django.db`).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (DatabaseError,)


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: `max_retries` retries, the n-th after a random 0..min(`backoff_max_s`,
    `backoff_s` × 2^n) seconds (exponential backoff, full jitter, as Celery's `retry_jitter`)."""

    max_retries: int
    backoff_s: int
    backoff_max_s: int

    def exhausted(self, retries: int) -> bool:
        """Whether a task that was already retried `retries` times gets no further attempt."""
        return retries >= self.max_retries

    def countdown(self, retries: int) -> float:
        """Seconds to wait before retry number `retries + 1`."""
        return random.uniform(0.0, float(min(self.backoff_max_s, self.backoff_s * 2**retries)))

    def task_options(self) -> dict[str, Any]:
        """Keyword arguments of `@app.task` that apply this policy through Celery's autoretry."""
        return {
            "autoretry_for": RETRYABLE_ERRORS,
            "throws": FINAL_ERRORS,
            "retry_backoff": self.backoff_s,
            "retry_backoff_max": self.backoff_max_s,
            "retry_jitter": True,
            "max_retries": self.max_retries,
        }


def gave_up(retries: int, error: BaseException) -> bool:
    """Whether a task that caught `error` on its attempt after `retries` retries should stop and
    record a failure: a final or unexpected error, or a retryable one with no retry left. (When
    False it re-raises, and Celery's autoretry schedules the next attempt.)"""
    return not isinstance(error, RETRYABLE_ERRORS) or policy().exhausted(retries)


def policy() -> RetryPolicy:
    """The policy from settings (TASK_MAX_RETRIES, TASK_RETRY_BACKOFF_S, TASK_RETRY_BACKOFF_MAX_S)."""
    return RetryPolicy(
        max_retries=settings.TASK_MAX_RETRIES,
        backoff_s=settings.TASK_RETRY_BACKOFF_S,
        backoff_max_s=settings.TASK_RETRY_BACKOFF_MAX_S,
    )


def storage_error_is_missing(error: BaseException) -> bool:
    """A read of a file that does not exist: FileNotFoundError, or S3's 404 / NoSuchKey."""
    if isinstance(error, FileNotFoundError):
        return True
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"NoSuchKey", "404", "NotFound"} or status == 404


def storage_error_is_transient(error: BaseException) -> bool:
    """Whether a storage read may succeed if tried again.

    True for botocore's transient errors (connection errors, timeouts, 500/502/503/504,
    RequestTimeout) and throttling (SlowDown, Throttling, ...), and for any OSError that is not
    a missing file (EIO, a permission or mount problem). False for the rest: a missing file, an
    access the bucket denies, a bug.
    """
    if storage_error_is_missing(error):
        return False
    try:
        from botocore.exceptions import ClientError
        from botocore.retries.standard import (
            RetryContext,
            ThrottledRetryableChecker,
            TransientRetryableChecker,
        )
    except ImportError:  # local storage only: botocore is not installed
        return isinstance(error, OSError)
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        context = RetryContext(
            attempt_number=1,
            parsed_response=error.response,
            http_response=SimpleNamespace(status_code=status, headers={}),
        )
    else:
        context = RetryContext(attempt_number=1, caught_exception=error)
    checkers = (TransientRetryableChecker(), ThrottledRetryableChecker())
    if any(checker.is_retryable(context) for checker in checkers):
        return True
    return isinstance(error, OSError)


def describe(error: BaseException) -> str:
    """A short, path-free name of an error for a reason shown to people, e.g. ``IsADirectoryError``
    or ``ClientError SlowDown``."""
    if isinstance(error, StorageUnavailable) and error.args:
        return str(error.args[0])
    response = getattr(error, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code"):
        return f"{type(error).__name__} {response['Error']['Code']}"
    return type(error).__name__
