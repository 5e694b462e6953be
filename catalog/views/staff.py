"""Access to the staff pages (review, training, the model registry).

One rule everywhere: an anonymous visitor is sent to the login page; a signed-in user who is not
staff, or lacks the permission a page needs, gets 404, so the pages' existence is not revealed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse


def staff_required(
    permission: str | None = None,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a view for staff only (and holders of `permission`, e.g.
    "catalog.activate_modelversion", when given)."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not user.is_staff or (permission is not None and not user.has_perm(permission)):
                raise Http404("no such page")
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
