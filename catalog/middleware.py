"""A cap on request bodies, enforced before anything reads them.

Django reads a multipart body into memory and temporary files before any view can look at a
file's size, so a 300 MB upload to a 15 MB endpoint used to be spooled to disk in full. This
middleware runs first and answers 413 from the `Content-Length` header alone. A chunked body has
no length: it is read up to the cap (in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, then a
temporary file), refused past it, and otherwise handed on with its length, so Django parses it.
Behind docker/compose's nginx the same cap applies at the proxy (`client_max_body_size`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse

from catalog.api.errors import API_PREFIX, error_response

# User-facing messages; tests reuse them.
REQUEST_TOO_LARGE = "The request is larger than {limit_mb:g} MB; nothing was stored."
LENGTH_REQUIRED = "Send the request with a Content-Length header."
BAD_CONTENT_LENGTH = "The Content-Length header is not a number of bytes."

_READ_BLOCK = 64 * 1024
# The `code` of each refusal in the API's error shape (catalog.api.errors).
_ERROR_CODES = {400: "bad_request", 411: "length_required", 413: "request_too_large"}


class RequestBodyLimitMiddleware:
    """Refuse a request whose body is over settings.REQUEST_MAX_BYTES with 413, unread."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.REQUEST_MAX_BYTES
        declared = request.META.get("CONTENT_LENGTH")
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return _refuse(request, 400, BAD_CONTENT_LENGTH)
            if length > limit:
                return _refuse(request, 413, REQUEST_TOO_LARGE.format(limit_mb=limit / 2**20))
        elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            if not request.META.get("wsgi.input_terminated"):
                # Only a server that ends the input with the body (gunicorn says so) can be read
                # to the end; on any other this read would wait for bytes that never come.
                return _refuse(request, 411, LENGTH_REQUIRED)
            with tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as body:
                if not _chunked_body_take(request, body, limit):
                    return _refuse(request, 413, REQUEST_TOO_LARGE.format(limit_mb=limit / 2**20))
                return self.get_response(request)
        return self.get_response(request)


def _chunked_body_take(request: HttpRequest, body: IO[bytes], limit: int) -> bool:
    """Copy a chunked body into `body` and give it to Django as a body of known length.
    Returns False, having read `limit` + 1 bytes at most, when it is longer than `limit`."""
    source = request.META["wsgi.input"]
    size = 0
    while block := source.read(min(_READ_BLOCK, limit + 1 - size)):
        body.write(block)
        size += len(block)
        if size > limit:
            return False
    body.seek(0)
    request.META["CONTENT_LENGTH"] = str(size)
    request._stream = LimitedStream(body, size)  # type: ignore[assignment,arg-type]
    return True


def _refuse(request: HttpRequest, status: int, message: str) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        response: HttpResponse = error_response(status, message, _ERROR_CODES[status])
    else:
        response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    return response
