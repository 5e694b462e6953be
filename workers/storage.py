"""Reading photos through Django's storage API (local disk or S3), with errors sorted for the
retry policy (`workers.retry`): the bytes never travel through the broker."""

from __future__ import annotations

from collections.abc import Callable

from django.core.files.storage import default_storage

from workers.retry import StorageUnavailable, describe, storage_error_is_missing, storage_error_is_transient


def photo_read(name: str) -> bytes:
    """The stored file `name`, whole.

    Raises FileNotFoundError when it is missing (also S3's 404), `StorageUnavailable` when a
    retry may succeed (connection, timeout, throttling, 5xx, an OSError such as EIO or a
    permission problem), and anything else unchanged.
    """
    try:
        with default_storage.open(name, "rb") as handle:
            return bytes(handle.read())
    except Exception as error:
        sorted_error = storage_error(error)
        if sorted_error is error:
            raise
        raise sorted_error from error


def storage_error(error: BaseException) -> BaseException:
    """`error`, raised by Django's storage API, as the retry policy knows it: FileNotFoundError
    for a missing file (also S3's 404), `StorageUnavailable` when a retry may succeed, else
    `error` itself."""
    if storage_error_is_missing(error):
        return error if isinstance(error, FileNotFoundError) else FileNotFoundError(str(error))
    if storage_error_is_transient(error) and not isinstance(error, StorageUnavailable):
        return StorageUnavailable(describe(error))
    return error


def photo_reader(name: str) -> Callable[[], bytes]:
    """A loader for `classifier.batching.BatchClassifier`: reads `name` when called."""
    return lambda: photo_read(name)
