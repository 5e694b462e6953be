"""Every error under /api/ is JSON in one shape, drf-standardized-errors':

    {"type": "validation_error" | "client_error" | "server_error",
     "errors": [{"code": "not_found", "detail": "Not found.", "attr": null}]}

DRF views get it from the library's exception handler (settings.REST_FRAMEWORK). What Django
answers before or outside a DRF view, an unknown /api/ path, a crash in middleware, a refused
request, goes through the handlers below (config/urls.py), which answer the same JSON under /api/
and Django's own pages everywhere else.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from drf_standardized_errors.settings import package_settings
from rest_framework import exceptions, status

API_PREFIX = "/api/"


class BadRequest(exceptions.APIException):
    """What Django refuses before a view runs (a suspicious request, too many fields)."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Bad request."
    default_code = "bad_request"


class Conflict(exceptions.APIException):
    """The request is well formed but the resource's state forbids it (409)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state of the resource."
    default_code = "conflict"


def error_body(exc: exceptions.APIException) -> dict[str, Any]:
    """The standardized error body for `exc`, as the DRF exception handler would write it."""
    formatter = package_settings.EXCEPTION_FORMATTER_CLASS
    return formatter(exc, {"view": None, "args": (), "kwargs": {}, "request": None}, exc).run()


def error_response(status_code: int, detail: str, code: str) -> JsonResponse:
    """A JSON answer in the API's error shape, for what is refused outside a DRF view (the body
    size cap, a login lockout). A 4xx is a `client_error`, a 5xx a `server_error`."""
    exc = exceptions.APIException(detail, code)
    exc.status_code = status_code
    return _json(exc)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def _json(exc: exceptions.APIException) -> JsonResponse:
    return JsonResponse(error_body(exc), status=exc.status_code)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _json(BadRequest()) if _is_api(request) else defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json(exceptions.PermissionDenied())
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _json(exceptions.NotFound()) if _is_api(request) else defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        # The generic message of Django's page and of the DRF handler: no internals leak.
        return _json(exceptions.APIException("Server Error (500)"))
    return defaults.server_error(request)
