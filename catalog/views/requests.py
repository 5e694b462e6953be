"""The request types views are annotated with: what the middleware and the decorators in front of
a view guarantee about its request, so the view needs no cast or ignore to use them."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class SignedInRequest(HttpRequest):
    """A request behind `login_required` or `staff_required`: `user` is a signed-in `User`;
    `htmx` is set by django-htmx's middleware (falsy for a plain request)."""

    user: User
    htmx: HtmxDetails
