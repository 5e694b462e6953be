"""Access to the staff pages (review, training, the model registry).

One rule everywhere: an anonymous visitor is sent to the login page; a signed-in user who is not
staff gets 404, so the pages' existence is not revealed; staff without the permission a page
names (catalog.access) get 403 and nothing changes. Being staff is never enough on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

# User-facing message of the 403 answer; tests reuse it.
PERMISSION_NEEDED = "Your account does not have the permission for this page."


def staff_required(
    permission: str,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a view for staff holding `permission` (e.g. `catalog.access.REVIEW_PERMISSION`).

    Anonymous: redirect to login. Not staff: `Http404`. Staff without it: `PermissionDenied` (403).
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not user.is_staff:
                raise Http404("no such page")
            if not user.has_perm(permission):
                raise PermissionDenied(PERMISSION_NEEDED)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
