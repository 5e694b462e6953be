"""Sign-up, and the answer to a locked-out login. Log in and log out are django.contrib.auth's
views (see config/urls.py); django-axes counts their failures (settings "Login attempts")."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.debug import sensitive_post_parameters

from catalog.api.errors import error_response
from catalog.forms import SignupForm
from catalog.services.listings import user_create

# User-facing message; tests reuse it.
LOGIN_LOCKED_OUT = (
    "Too many failed logins for this account from your address. Try again in {minutes} minutes."
)


@sensitive_post_parameters("password1", "password2")
def signup(request: HttpRequest) -> HttpResponse:
    """Create a seller account, log it in, and go to "My listings"."""
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_create(
            username=form.cleaned_data["username"],
            email=form.cleaned_data.get("email") or "",
            password=form.cleaned_data["password1"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: object = None
) -> HttpResponse:
    """django-axes' answer to a locked-out login (AXES_LOCKOUT_CALLABLE): 429 with the wait, as
    JSON for the API (POST /api/token) and as a page elsewhere."""
    seconds = round(settings.AXES_COOLOFF_TIME.total_seconds())
    message = LOGIN_LOCKED_OUT.format(minutes=max(1, round(seconds / 60)))
    if request.path.startswith("/api/"):
        response: HttpResponse = error_response(429, message, "throttled")
    else:
        response = render(request, "registration/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(seconds)
    return response
