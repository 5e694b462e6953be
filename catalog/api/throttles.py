"""Request rates of the API (DRF throttles), counted in Django's cache, and who the client is.

Rates come from settings.API_THROTTLE_RATES and are read on every request, so a changed setting
applies without re-importing anything. Throttles fail open: when the cache (Redis) cannot be
reached the request goes through with a warning in the log, because refusing uploads would break
the promise that an upload succeeds while Redis is down.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, BaseThrottle, ScopedRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class _CurrentRates:
    """Reads the rate of `scope` from the settings now (DRF copies them once, at import)."""

    scope: str | None

    def get_rate(self) -> str | None:
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"no throttle rate for the scope {self.scope!r}") from None

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)  # type: ignore[misc]
        except RedisError:
            logger.warning("throttle cache unreachable; %s not throttled", self.scope, exc_info=True)
            return True


class AnonThrottle(_CurrentRates, AnonRateThrottle):
    """Every endpoint, per client address, for callers without a token or session (rate `anon`)."""


class UserThrottle(_CurrentRates, UserRateThrottle):
    """Every endpoint, per user (rate `user`)."""


class ScopedThrottle(_CurrentRates, ScopedRateThrottle):
    """Endpoints with a `throttle_scope` (token, classify, uploads), per user or client address."""


def client_ip(request: HttpRequest | Request) -> str:
    """The client's address as throttles see it: REMOTE_ADDR, or the address the trusted proxies
    (settings.TRUSTED_PROXY_COUNT) put in X-Forwarded-For. django-axes uses it too
    (AXES_CLIENT_IP_CALLABLE), so lockouts and throttles agree on who the client is."""
    return BaseThrottle().get_ident(request)
