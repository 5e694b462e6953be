"""API tokens (django-rest-knox): obtained with a username and password, sent as
`Authorization: Token <token>`, expiring after settings.API_TOKEN_TTL_S, revocable at once.

Knox stores only a hash of each token, so a copy of the database gives no working token. Failed
attempts count towards the login lockout (django-axes) like the login page's, and the endpoint
has its own throttle scope (`token`).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from drf_standardized_errors.openapi_serializers import ErrorResponse403Serializer, ErrorResponse429Serializer
from drf_standardized_errors.openapi_validation_errors import extend_validation_errors
from knox.views import LoginView, LogoutAllView, LogoutView
from rest_framework import serializers
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

# User-facing message; tests reuse it.
TOO_MANY_TOKENS = (
    "This account already holds {limit} unexpired tokens: revoke one (POST /api/token/revoke) "
    "or wait until one expires."
)

TokenSerializer = inline_serializer(
    "Token",
    fields={
        "token": serializers.CharField(help_text="send as `Authorization: Token <token>`"),
        "expiry": serializers.DateTimeField(help_text="the token stops working at this time (UTC)"),
    },
)


# A wrong username or password is a validation error with code `authorization` (AuthTokenSerializer).
@extend_validation_errors(["authorization"], field_name="non_field_errors", methods=["post"])
class TokenObtainView(LoginView):
    """POST a username and password, get a new token and its expiry."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_scope = "token"

    def get_token_limit_per_user(self) -> int | None:
        return settings.API_TOKENS_PER_USER or None

    @extend_schema(
        request=AuthTokenSerializer,
        responses={
            200: TokenSerializer,
            403: OpenApiResponse(ErrorResponse403Serializer, description="the account holds too many tokens"),
            429: OpenApiResponse(
                ErrorResponse429Serializer, description="too many attempts (throttled, or locked out)"
            ),
        },
        summary="Obtain an API token (expires after API_TOKEN_TTL_S)",
        auth=[],
    )
    def post(self, request: Request, format: str | None = None) -> Response:
        # The Django request, not DRF's wrapper: django-axes marks it when the login is locked out.
        credentials = AuthTokenSerializer(data=request.data, context={"request": request._request})
        credentials.is_valid(raise_exception=True)
        request.user = credentials.validated_data["user"]
        limit = self.get_token_limit_per_user()
        if limit is not None:
            held = request.user.auth_token_set.filter(expiry__gt=timezone.now()).count()
            if held >= limit:
                raise PermissionDenied(TOO_MANY_TOKENS.format(limit=limit))
        instance, token = self.create_token()
        user_logged_in.send(sender=request.user.__class__, request=request._request, user=request.user)
        return self.get_post_response(request, token, instance)


class TokenRevokeView(LogoutView):
    """Revoke the token this request was sent with."""

    @extend_schema(request=None, responses={204: None}, summary="Revoke this token")
    def post(self, request: Request, format: str | None = None) -> Response:
        return super().post(request, format)


class TokenRevokeAllView(LogoutAllView):
    """Revoke every token of the caller (e.g. after a leak)."""

    @extend_schema(request=None, responses={204: None}, summary="Revoke all of the caller's tokens")
    def post(self, request: Request, format: str | None = None) -> Response:
        return super().post(request, format)
