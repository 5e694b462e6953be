"""What the API keeps for its callers only for a while: the hidden probe listings of
POST /api/classify (capped per user, deleted after a retention period) and expired API tokens."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from catalog.models import ClassificationStatus, Listing
from catalog.services.listings import listings_delete

logger = logging.getLogger(__name__)

# User-facing message; tests reuse it.
TOO_MANY_PROBES_WAITING = (
    "{limit} of your photos are still waiting for classification; poll their results before sending more."
)


class ProbeLimitReached(Exception):
    """The caller already has settings.CLASSIFY_PROBES_PER_USER photos waiting; `str(error)` is shown."""


def classify_probe_room_make(*, user: AbstractBaseUser) -> None:
    """Make room for one more probe listing of `user` under settings.CLASSIFY_PROBES_PER_USER by
    deleting their oldest finished (DONE or FAILED) probes, with their files (after commit).

    Call inside the transaction that creates the probe: the user's row is locked, so concurrent
    calls of one user cannot both take the last place. Raises `ProbeLimitReached` when every
    probe of the user is still waiting for the worker.
    """
    limit = settings.CLASSIFY_PROBES_PER_USER
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        probes = Listing.objects.filter(seller_id=user.pk, is_probe=True)
        excess = probes.count() - limit + 1
        if excess <= 0:
            return
        waiting = [ClassificationStatus.PENDING, ClassificationStatus.QUEUED]
        finished = probes.exclude(images__status__in=waiting)
        oldest = list(finished.order_by("created_at", "id").values_list("pk", flat=True)[:excess])
        if len(oldest) < excess:
            raise ProbeLimitReached(TOO_MANY_PROBES_WAITING.format(limit=limit))
        listings_delete(listings=Listing.objects.filter(pk__in=oldest))


def classify_probes_delete_expired(*, older_than_s: int | None = None, limit: int = 1000) -> int:
    """Delete probe listings sent more than `older_than_s` (default
    settings.CLASSIFY_PROBE_RETENTION_S) seconds ago, whatever their state, with their photos
    and files. At most `limit` per call (the periodic task comes back). Returns how many."""
    older_than_s = settings.CLASSIFY_PROBE_RETENTION_S if older_than_s is None else older_than_s
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    expired = Listing.objects.filter(is_probe=True, created_at__lt=cutoff).order_by("pk")
    batch = list(expired.values_list("pk", flat=True)[:limit])
    deleted = listings_delete(listings=Listing.objects.filter(pk__in=batch))
    if deleted:
        logger.info("deleted %d classification probes older than %d s", deleted, older_than_s)
    return deleted


def api_tokens_delete_expired() -> int:
    """Delete expired API tokens (knox drops one only when it is presented again). Returns how many."""
    from knox.models import get_token_model

    deleted, _ = get_token_model().objects.filter(expiry__lt=timezone.now()).delete()
    return deleted
